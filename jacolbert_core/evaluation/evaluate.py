"""Evaluate ColBERT models (and a BM25 baseline) on a retrieval or reranking set.

* Retrieval mode (BEIR folder): each model's corpus is indexed into a temporary
  :class:`Index` (documents whole, truncated at ``doc_maxlen``, as in the papers; or an
  existing index with ``index_path``) and every query searched to ``depth``; a document's
  score is its best passage's.
* Rerank mode (reranking JSONL): each query's own candidates are scored with MaxSim
  (:meth:`ColBERT.score`).
* BM25 (:mod:`jacolbert_core.text.lexical`, MeCab + bm25s): over the corpus in retrieval
  mode, over each query's candidates in rerank mode (IDF from those candidates). Skipped
  with a note when that module or its dependencies are missing.

The report prints as a table with one row per system and one column per metric, and
writes as JSON.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jacolbert_core.evaluation import metrics as M
from jacolbert_core.evaluation.datasets import RerankDataset, RetrievalDataset

Run = dict[str, dict[str, float]]


@dataclass
class EvalReport:
    dataset: str
    mode: str
    metrics: list[str]
    queries: int
    results: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def table(self, digits: int = 4) -> str:
        """A paper-style table: systems as rows, metrics as columns."""
        header = ["system", *(_metric_label(m) for m in self.metrics)]
        rows = [
            [name, *(f"{values[m]:.{digits}f}" for m in self.metrics)]
            for name, values in self.results.items()
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
            return "  ".join([first, *rest]).rstrip()

        out = [f"{self.dataset} ({self.mode}, {self.queries} queries)", line(header)]
        out.append("  ".join("-" * w for w in widths))
        out.extend(line(r) for r in rows)
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "mode": self.mode,
            "queries": self.queries,
            "metrics": self.metrics,
            "results": self.results,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "notes": self.notes,
        }

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=2), "utf-8")
        return path


def _metric_label(metric: str) -> str:
    name, k = M.parse_metric(metric)
    label = {"ndcg": "nDCG", "recall": "Recall", "mrr": "MRR", "map": "MAP", "hit": "Hit"}[name]
    return label if k is None else f"{label}@{k}"


def search_depth(metrics: Sequence[str], default: int = 100) -> int:
    """How many results per query the metrics need (``default`` when one has no cut-off)."""
    cuts = [M.parse_metric(m)[1] for m in metrics]
    return max(default if k is None else k for k in cuts)


# -- runs ---------------------------------------------------------------------------------------


def retrieval_run(
    model,
    dataset: RetrievalDataset,
    depth: int,
    *,
    index_path: str | Path | None = None,
    exact: bool | None = None,
    chunking: bool = False,
    batch_size: int = 32,
    show_progress: bool = False,
) -> Run:
    """Search ``dataset.queries`` with ``model`` over its corpus (temporary or given index)."""
    from jacolbert_core.index.index import Index
    from jacolbert_core.text.chunking import ChunkingConfig

    qids = list(dataset.queries)
    with tempfile.TemporaryDirectory(prefix="jacolbert-eval-") as tmp:
        if index_path is not None:
            index = Index.open(index_path, model)
        else:
            index = Index.create(
                Path(tmp) / "index",
                model,
                chunking=None if chunking else ChunkingConfig(enabled=False),
            )
            doc_ids = list(dataset.corpus)
            index.add(
                [dataset.corpus[d] for d in doc_ids],
                ids=doc_ids,
                batch_size=batch_size,
                show_progress=show_progress,
            )
        run: Run = {}
        for start in range(0, len(qids), 256):
            chunk = qids[start : start + 256]
            results = index.search([dataset.queries[q] for q in chunk], k=depth, exact=exact)
            for qid, hits in zip(chunk, results, strict=True):
                scores: dict[str, float] = {}
                for hit in hits:  # best passage per document
                    if hit.document_id not in scores or hit.score > scores[hit.document_id]:
                        scores[hit.document_id] = float(hit.score)
                run[qid] = scores
        return run


def rerank_run(model, dataset: RerankDataset, *, batch_size: int = 32) -> Run:
    """MaxSim of each query against its own candidates."""
    run: Run = {}
    for qid, query in dataset.queries.items():
        candidates = dataset.candidates[qid]
        scores = model.score(query, [text for _, text in candidates], batch_size=batch_size)
        run[qid] = {pid: float(s) for (pid, _), s in zip(candidates, scores, strict=True)}
    return run


def load_bm25() -> tuple[Any, str | None]:
    """(BM25 class, None) or (None, why it is unavailable)."""
    try:
        from jacolbert_core.text.lexical import BM25
    except ImportError as error:  # module not there, or fugashi / bm25s missing
        return None, f"BM25 baseline skipped ({error})"
    return BM25, None


def bm25_retrieval_run(bm25_class, dataset: RetrievalDataset, depth: int) -> Run:
    doc_ids = list(dataset.corpus)
    bm25 = bm25_class.build([dataset.corpus[d] for d in doc_ids])
    qids = list(dataset.queries)
    results = bm25.search([dataset.queries[q] for q in qids], min(depth, len(doc_ids)))
    return {
        qid: {doc_ids[i]: float(s) for i, s in ranked}
        for qid, ranked in zip(qids, results, strict=True)
    }


def bm25_rerank_run(bm25_class, dataset: RerankDataset) -> Run:
    run: Run = {}
    for qid, query in dataset.queries.items():
        candidates = dataset.candidates[qid]
        bm25 = bm25_class.build([text for _, text in candidates])
        [ranked] = bm25.search([query], len(candidates))
        run[qid] = {candidates[i][0]: float(s) for i, s in ranked}
    return run


# -- the whole evaluation -----------------------------------------------------------------------


def evaluate_models(
    dataset: RetrievalDataset | RerankDataset,
    models: Mapping[str, Any] | Sequence[Any],
    metrics: Sequence[str] = M.DEFAULT_METRICS,
    *,
    bm25: bool = True,
    index_path: str | Path | None = None,
    exact: bool | None = None,
    chunking: bool = False,
    depth: int | None = None,
    batch_size: int = 32,
    relevance_level: float = 1,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> EvalReport:
    """Evaluate each model (a :class:`ColBERT` or a checkpoint path / hub id) and BM25.

    ``models`` maps display names to models (a sequence is named by checkpoint names).
    ``index_path`` (retrieval mode, one model) searches an existing index instead of
    building one.
    """
    metrics = list(metrics)
    for metric in metrics:
        M.parse_metric(metric)
    if not isinstance(models, Mapping):
        models = _named(models)
    rerank = isinstance(dataset, RerankDataset)
    if index_path is not None and (rerank or len(models) != 1):
        raise ValueError("--index applies to retrieval mode with exactly one model")
    depth = depth or search_depth(metrics)
    report = EvalReport(
        dataset.name, "rerank" if rerank else "retrieval", metrics, len(dataset.queries)
    )
    if bm25:
        bm25_class, why = load_bm25()
        if bm25_class is None:
            report.notes.append(str(why))
        else:
            began = time.perf_counter()
            if rerank:
                run = bm25_rerank_run(bm25_class, dataset)
            else:
                run = bm25_retrieval_run(bm25_class, dataset, depth)
            report.seconds["BM25"] = time.perf_counter() - began
            report.results["BM25"] = M.evaluate(run, dataset.qrels, metrics, relevance_level)
    for name, model in models.items():
        if log:
            log(f"evaluating {name}")
        model = _load(model)
        began = time.perf_counter()
        if rerank:
            run = rerank_run(model, dataset, batch_size=batch_size)
        else:
            run = retrieval_run(
                model,
                dataset,
                depth,
                index_path=index_path,
                exact=exact,
                chunking=chunking,
                batch_size=batch_size,
                show_progress=show_progress,
            )
        report.seconds[name] = time.perf_counter() - began
        report.results[name] = M.evaluate(run, dataset.qrels, metrics, relevance_level)
    return report


def _named(models: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, model in enumerate(models):
        raw = getattr(model, "name", None) or str(model)
        name = Path(str(raw).rstrip("/")).name or f"model-{i}"
        base, n = name, 2
        while name in out:
            name, n = f"{base}-{n}", n + 1
        out[name] = model
    return out


def _load(model):
    from jacolbert_core.model.colbert import ColBERT

    if isinstance(model, ColBERT):
        return model
    return ColBERT.from_pretrained(model)

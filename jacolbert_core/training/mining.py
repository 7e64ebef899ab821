"""Hard-negative mining: for each training query, passages that retrievers rank high but that
are not known positives.

Inputs are three mappings (all ids are strings): ``queries`` {qid: text}, ``positives``
{qid: [pid, ...]} and ``corpus`` {pid: text}; ``jacolbert_core.datafiles`` reads them from
files (``read_texts``, ``read_positives``). Each :class:`NegativeSource` pairs a retriever
with how many negatives to take from its ranking:

* ``n`` negatives per query;
* ``skip_top``: ranks 1..skip_top of the retriever's ranking are never used (unlabelled
  passages ranked above everything else are often unlabelled positives, i.e. false
  negatives); ranks count every passage, known positives included;
* ``depth``: when set, the ``n`` negatives are sampled uniformly among the eligible passages
  at ranks ``skip_top+1 .. depth``; when ``None`` the ``n`` best eligible ranks are taken;
* known positives are never negatives, and a passage already taken by an earlier source is
  not taken again (the next eligible rank is used instead), so each query's negatives are
  unique and every source yields ``n`` of them unless its ranking runs out (BM25 only ranks
  passages that share a term with the query).

Sampling uses a generator seeded from (``seed``, qid, source name): results do not depend
on batching or on which other queries are mined. Retrievers: :class:`BM25Retriever` (our
Japanese BM25), :class:`ColBERTRetriever` (a jacolbert :class:`~jacolbert_core.Index`,
passed in or built on the corpus) and :class:`SentenceTransformerRetriever` (any
sentence-transformers model, optional dependency). :func:`mine_hard_negatives` sets up the
JaColBERT v1 recipe: 25 dense negatives, then up to 10 BM25 ones.

Output (:func:`write_mined`): JSON Lines, one line per query with at least one positive::

    {"qid": "q1", "query": "...", "positives": ["p7"],
     "negatives": [{"pid": "p3", "source": "dense", "rank": 4},
                   {"pid": "p9", "source": "bm25", "rank": 5}, ...]}

``rank`` is the 1-based rank in that source's ranking; negatives are listed source by source
(in the order sources were given), by rank within a source. :func:`to_triples` turns records
into ``(qid, positive pid, negative pid)`` triples, written by :func:`write_triples` as the
``[qid, pos_pid, neg_pid]`` JSON lines of colbert-ai / RAGatouille, or, with a corpus, into
``(query text, positive text, negative text)`` tuples for ``RAGTrainer.prepare_training_data``.
colbert-ai also wants integer ids that are line numbers of its collection file:
:func:`export_colbert` writes that whole set (collection.tsv, queries.tsv, triples.jsonl and
the id mapping).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from jacolbert_core.datafiles import iter_jsonl, write_jsonl
from jacolbert_core.errors import JaColBERTError, MissingDependencyError

__all__ = [
    "BM25Retriever",
    "ColBERTRetriever",
    "MinedQuery",
    "Negative",
    "NegativeSource",
    "Retriever",
    "SentenceTransformerRetriever",
    "as_retriever",
    "export_colbert",
    "mine",
    "mine_hard_negatives",
    "read_mined",
    "summarize",
    "to_triples",
    "write_mined",
    "write_triples",
]

SENTENCE_TRANSFORMERS_HINT = (
    "dense mining with a sentence-transformers model needs the sentence-transformers "
    "package: pip install sentence-transformers (or mine with a jacolbert index / ColBERT "
    "model instead)"
)
DEFAULT_DENSE = 25  # JaColBERT v1: 25 negatives from a dense retriever...
DEFAULT_BM25 = 10  # ...and up to 10 from BM25
DEFAULT_SKIP_TOP = 3

# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Negative:
    pid: str
    source: str
    rank: int


@dataclass
class MinedQuery:
    """One query with its known positives and mined negatives (one line of the output)."""

    qid: str
    query: str
    positives: list[str]
    negatives: list[Negative] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "qid": self.qid,
            "query": self.query,
            "positives": list(self.positives),
            "negatives": [
                {"pid": n.pid, "source": n.source, "rank": n.rank} for n in self.negatives
            ],
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> MinedQuery:
        try:
            return cls(
                str(row["qid"]),
                str(row["query"]),
                [str(p) for p in row["positives"]],
                [
                    Negative(str(n["pid"]), str(n["source"]), int(n["rank"]))
                    for n in row["negatives"]
                ],
            )
        except (KeyError, TypeError, ValueError) as error:
            raise JaColBERTError(
                f"not a mined-negatives record (need qid, query, positives, negatives "
                f"[{{pid, source, rank}}]): {error!r}"
            ) from error


def write_mined(path: str | Path, records: Iterable[MinedQuery]) -> int:
    """Write records as JSON Lines; returns how many were written."""
    return write_jsonl(path, (record.to_dict() for record in records))


def read_mined(path: str | Path) -> list[MinedQuery]:
    """Read records written by :func:`write_mined`."""
    return [MinedQuery.from_dict(row) for _, row in iter_jsonl(path)]


# -- retrievers -------------------------------------------------------------------------------


@runtime_checkable
class Retriever(Protocol):
    """Anything that ranks corpus ids for a batch of queries (best first, unique ids)."""

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[str]]: ...


class BM25Retriever:
    """Our Japanese BM25 (:class:`~jacolbert_core.text.lexical.BM25`) over a corpus."""

    def __init__(
        self,
        corpus: Mapping[str, str],
        *,
        bm25: Any | None = None,
        k1: float = 1.5,
        b: float = 0.75,
        show_progress: bool = False,
    ):
        """``bm25``: an index already built on ``corpus`` in its iteration order."""
        from jacolbert_core.text.lexical import BM25

        self.pids = [str(pid) for pid in corpus]
        if bm25 is None:
            bm25 = BM25.build(list(corpus.values()), k1=k1, b=b, show_progress=show_progress)
        elif len(bm25) != len(self.pids):
            raise ValueError(
                f"the BM25 index has {len(bm25)} passages but the corpus has {len(self.pids)}; "
                "build it on the same texts in the same order"
            )
        self.bm25 = bm25

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[str]]:
        pids = self.pids
        return [[pids[i] for i, _ in ranking] for ranking in self.bm25.search(list(queries), k)]


class ColBERTRetriever:
    """A jacolbert :class:`~jacolbert_core.Index` as a retriever; documents are ranked by
    their best passage, and their ids must be the corpus ids."""

    def __init__(self, index: Any):
        self.index = index
        self._cleanup: weakref.finalize | None = None

    @classmethod
    def build(
        cls,
        model: Any,
        corpus: Mapping[str, str],
        path: str | Path | None = None,
        *,
        nbits: int = 2,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> ColBERTRetriever:
        """Index ``corpus`` with ``model`` (a ColBERT or a checkpoint name/path), one passage
        per corpus entry (no chunking: texts are truncated at ``doc_maxlen`` as in training).

        Without ``path`` the index lives in a temporary directory removed with the retriever.
        """
        from jacolbert_core.index.index import Index
        from jacolbert_core.model.colbert import ColBERT
        from jacolbert_core.text.chunking import ChunkingConfig

        if not isinstance(model, ColBERT):
            model = ColBERT.from_pretrained(model)
        temporary = path is None
        if temporary:
            path = Path(tempfile.mkdtemp(prefix="jacolbert-mine-")) / "index"
        try:
            index = Index.create(path, model, nbits=nbits, chunking=ChunkingConfig(enabled=False))
            index.add(
                [str(t) for t in corpus.values()],
                ids=[str(pid) for pid in corpus],
                batch_size=batch_size,
                show_progress=show_progress,
            )
        except BaseException:
            if temporary:
                shutil.rmtree(Path(path).parent, ignore_errors=True)
            raise
        retriever = cls(index)
        if temporary:
            retriever._cleanup = weakref.finalize(
                retriever, shutil.rmtree, str(Path(path).parent), True
            )
        return retriever

    def close(self) -> None:
        """Remove the temporary index now (if :meth:`build` made one)."""
        if self._cleanup is not None:
            self._cleanup()

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[str]]:
        queries = list(queries)
        out: list[list[str]] = [[] for _ in queries]
        pending = list(range(len(queries)))
        fetch, total = k, None
        while pending:
            results = self.index.search([queries[i] for i in pending], k=fetch)
            deeper = []
            for i, hits in zip(pending, results, strict=True):
                out[i] = _unique_documents(hits, k)
                # several passages of one document may fill the top: fetch deeper until k
                # documents are found or the ranking is exhausted
                if len(out[i]) < k and len(hits) >= fetch:
                    deeper.append(i)
            if deeper and total is None:
                total = int(self.index.stats()["passages"])
            if not deeper or fetch >= total:
                break
            pending, fetch = deeper, min(2 * fetch, total)
        return out


class SentenceTransformerRetriever:
    """Exhaustive cosine search with a single-vector embedding model.

    ``model`` is a sentence-transformers model name/path (needs the package) or an object
    with a sentence-transformers-like ``encode(texts, **kwargs) -> array``. E5-style models
    want prefixes, e.g. ``query_prefix="query: "``, ``passage_prefix="passage: "``.
    """

    def __init__(
        self,
        model: Any,
        corpus: Mapping[str, str],
        *,
        query_prefix: str = "",
        passage_prefix: str = "",
        batch_size: int = 64,
        device: str | None = None,
        show_progress: bool = False,
    ):
        if isinstance(model, (str, Path)):
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as error:
                raise MissingDependencyError(SENTENCE_TRANSFORMERS_HINT) from error
            model = SentenceTransformer(str(model), device=device)
        if not callable(getattr(model, "encode", None)):
            raise TypeError(
                "model must be a sentence-transformers name/path or have an encode() method"
            )
        self.model = model
        self.query_prefix = query_prefix
        self.batch_size = batch_size
        self.pids = [str(pid) for pid in corpus]
        self.embeddings = self._encode(
            [passage_prefix + str(t) for t in corpus.values()], show_progress
        )

    def _encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=show_progress,
        )
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(f"encode() returned shape {vectors.shape} for {len(texts)} texts")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[str]]:
        queries = list(queries)
        if not queries:
            return []
        q = self._encode([self.query_prefix + text for text in queries])
        k = min(k, len(self.pids))
        out = []
        for start in range(0, len(q), 64):
            scores = q[start : start + 64] @ self.embeddings.T
            for row in scores:
                out.append([self.pids[i] for i in _top_indices(row, k)])
        return out


def _unique_documents(hits: Sequence[Any], k: int) -> list[str]:
    seen: dict[str, None] = {}
    for hit in hits:
        seen.setdefault(hit.document_id, None)
        if len(seen) == k:
            break
    return list(seen)


def _top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first, ties by index."""
    if k < len(scores):
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(len(scores))
    order = np.lexsort((candidates, -scores[candidates]))[:k]
    return candidates[order]


# -- mining -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NegativeSource:
    """Take ``n`` negatives per query from ``retriever``'s ranking (see the module docstring
    for ``skip_top`` and ``depth``); ``name`` labels them in the output."""

    name: str
    retriever: Retriever
    n: int
    skip_top: int = 0
    depth: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a negative source needs a non-empty name")
        for attr in ("n", "skip_top"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{self.name}: {attr} must be an integer >= 0, got {value!r}")
        if self.depth is not None and (
            isinstance(self.depth, bool)
            or not isinstance(self.depth, int)
            or self.depth <= self.skip_top
        ):
            raise ValueError(
                f"{self.name}: depth must be an integer > skip_top ({self.skip_top}), "
                f"got {self.depth!r}"
            )
        if not callable(getattr(self.retriever, "retrieve", None)):
            raise TypeError(f"{self.name}: retriever must have a retrieve(queries, k) method")


def mine(
    queries: Mapping[str, str],
    positives: Mapping[str, Sequence[str]],
    corpus: Mapping[str, str],
    sources: Sequence[NegativeSource],
    *,
    seed: int = 0,
    batch_size: int = 256,
    show_progress: bool = False,
) -> list[MinedQuery]:
    """Mine negatives for every query of ``queries`` that has a positive in ``corpus``, in
    the order of ``queries``. Positives missing from the corpus are dropped."""
    if not sources:
        raise ValueError("no negative sources; pass at least one NegativeSource")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"negative source names must be unique, got {names}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    queries, positives, corpus = _as_str_ids(queries, positives, corpus)
    work = _training_queries(queries, positives, corpus)
    from tqdm.auto import tqdm

    records: list[MinedQuery] = []
    with tqdm(total=len(work), desc="Mining", unit="query", disable=not show_progress) as bar:
        for start in range(0, len(work), batch_size):
            batch = work[start : start + batch_size]
            chosen: list[dict[str, Negative]] = [{} for _ in batch]
            for source in sources:
                if source.n == 0:
                    continue
                _mine_source(source, batch, chosen, corpus, seed)
            records.extend(
                MinedQuery(qid, text, list(pos), list(picked.values()))
                for (qid, text, pos), picked in zip(batch, chosen, strict=True)
            )
            bar.update(len(batch))
    return records


def mine_hard_negatives(
    queries: Mapping[str, str],
    positives: Mapping[str, Sequence[str]],
    corpus: Mapping[str, str],
    *,
    dense: Any | None = None,
    n_dense: int = DEFAULT_DENSE,
    n_bm25: int = DEFAULT_BM25,
    skip_top: int = DEFAULT_SKIP_TOP,
    depth: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    show_progress: bool = False,
) -> list[MinedQuery]:
    """The JaColBERT v1 recipe: ``n_dense`` negatives from ``dense`` (a :class:`Retriever`,
    a jacolbert ``Index`` built on the corpus, or a ``ColBERT`` model, which indexes the
    corpus in a temporary directory), then up to ``n_bm25`` BM25 negatives, both skipping
    the top ``skip_top`` ranks. ``dense=None`` mines with BM25 only."""
    queries, positives, corpus = _as_str_ids(queries, positives, corpus)
    sources = []
    retriever = None
    if dense is not None and n_dense > 0:
        retriever = as_retriever(dense, corpus, show_progress=show_progress)
        sources.append(NegativeSource("dense", retriever, n_dense, skip_top, depth))
    if n_bm25 > 0:
        bm25 = BM25Retriever(corpus, show_progress=show_progress)
        sources.append(NegativeSource("bm25", bm25, n_bm25, skip_top, depth))
    try:
        return mine(
            queries,
            positives,
            corpus,
            sources,
            seed=seed,
            batch_size=batch_size,
            show_progress=show_progress,
        )
    finally:
        if retriever is not None and retriever is not dense and hasattr(retriever, "close"):
            retriever.close()


def as_retriever(dense: Any, corpus: Mapping[str, str], *, show_progress: bool = False) -> Any:
    """A :class:`Retriever` for ``dense``: returned as is when it already is one; a jacolbert
    ``Index`` or ``ColBERT`` becomes a :class:`ColBERTRetriever`."""
    from jacolbert_core.index.index import Index
    from jacolbert_core.model.colbert import ColBERT

    if isinstance(dense, Index):
        return ColBERTRetriever(dense)
    if isinstance(dense, ColBERT):
        return ColBERTRetriever.build(dense, corpus, show_progress=show_progress)
    if isinstance(dense, Retriever):
        return dense
    raise TypeError(
        "dense must be a Retriever, a jacolbert Index or a ColBERT model, "
        f"got {type(dense).__name__}"
    )


def _as_str_ids(queries, positives, corpus):
    return (
        {str(k): v for k, v in queries.items()},
        {
            str(k): [str(v)] if isinstance(v, str) else [str(p) for p in v]
            for k, v in positives.items()
        },
        {str(k): v for k, v in corpus.items()},
    )


def _training_queries(
    queries: Mapping[str, str],
    positives: Mapping[str, Sequence[str]],
    corpus: Mapping[str, str],
) -> list[tuple[str, str, list[str]]]:
    work = []
    labelled = 0
    for qid, text in queries.items():
        if qid not in positives:
            continue
        labelled += 1
        pos = list(dict.fromkeys(p for p in positives[qid] if p in corpus))
        if not pos:
            continue
        if not isinstance(text, str) or not text.strip():
            raise JaColBERTError(f"query {qid!r} has no text; every mined query needs one")
        work.append((qid, text, pos))
    if not work:
        if not labelled:
            raise JaColBERTError(
                "no query id of `positives` (qrels) is a query id of `queries`; check that "
                "both files use the same ids"
            )
        raise JaColBERTError(
            "none of the positive passage ids are in the corpus; check that the qrels and the "
            "corpus use the same ids"
        )
    return work


def _mine_source(
    source: NegativeSource,
    batch: list[tuple[str, str, list[str]]],
    chosen: list[dict[str, Negative]],
    corpus: Mapping[str, str],
    seed: int,
) -> None:
    if source.depth is not None:
        k = source.depth
    else:  # deep enough to skip the top, every positive and every earlier pick
        k = max(
            source.skip_top + source.n + len(pos) + len(picked)
            for (_, _, pos), picked in zip(batch, chosen, strict=True)
        )
    k = max(1, min(k, len(corpus)))
    rankings = source.retriever.retrieve([text for _, text, _ in batch], k)
    if len(rankings) != len(batch):
        raise JaColBERTError(
            f"source {source.name!r} returned {len(rankings)} rankings for {len(batch)} queries"
        )
    for (qid, _, pos), picked, ranking in zip(batch, chosen, rankings, strict=True):
        known = set(pos)
        eligible = []
        for rank, pid in enumerate(ranking[:k], start=1):
            if pid not in corpus:
                raise JaColBERTError(
                    f"source {source.name!r} returned id {pid!r}, which is not in the corpus; "
                    "its index must be built on this corpus with the corpus ids as ids"
                )
            if rank > source.skip_top and pid not in known and pid not in picked:
                eligible.append((rank, pid))
                if source.depth is None and len(eligible) == source.n:
                    break
        if source.depth is not None and len(eligible) > source.n:
            rng = np.random.default_rng(_query_seed(seed, qid, source.name))
            keep = np.sort(rng.choice(len(eligible), size=source.n, replace=False))
            eligible = [eligible[i] for i in keep]
        for rank, pid in eligible:
            picked[pid] = Negative(pid, source.name, rank)


def _query_seed(seed: int, qid: str, source: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x1f{qid}\x1f{source}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def summarize(records: Sequence[MinedQuery], sources: Sequence[NegativeSource] = ()) -> dict:
    """Counts for a printed summary: queries, negatives per source, queries that got fewer
    negatives than a source asked for."""
    per_source: dict[str, int] = {s.name: 0 for s in sources}
    short = dict.fromkeys(per_source, 0)
    for record in records:
        counts: dict[str, int] = {}
        for negative in record.negatives:
            counts[negative.source] = counts.get(negative.source, 0) + 1
        for name, count in counts.items():
            per_source[name] = per_source.get(name, 0) + count
        for source in sources:
            if counts.get(source.name, 0) < source.n:
                short[source.name] += 1
    total = sum(per_source.values())
    return {
        "queries": len(records),
        "positives": sum(len(r.positives) for r in records),
        "negatives": total,
        "negatives_per_query": total / len(records) if records else 0.0,
        "per_source": per_source,
        "queries_short": short,
    }


# -- triples ----------------------------------------------------------------------------------


def to_triples(
    records: Iterable[MinedQuery],
    corpus: Mapping[str, str] | None = None,
    *,
    max_negatives: int | None = None,
) -> list[tuple[str, str, str]]:
    """Every (positive, negative) pair of every record, query by query, positives then
    negatives in record order; at most ``max_negatives`` negatives per query.

    Without ``corpus``: ``(qid, pos_pid, neg_pid)`` (for :func:`write_triples`). With it:
    ``(query, positive text, negative text)``, RAGatouille's ``raw_data`` triplets.
    """
    triples = []
    for record in records:
        negatives = (
            record.negatives[:max_negatives] if max_negatives is not None else record.negatives
        )
        for pos in record.positives:
            for negative in negatives:
                if corpus is None:
                    triples.append((record.qid, pos, negative.pid))
                else:
                    triples.append((record.query, corpus[pos], corpus[negative.pid]))
    return triples


def write_triples(path: str | Path, triples: Iterable[Sequence[Any]]) -> int:
    """Write ``[qid, pos_pid, neg_pid]`` JSON lines (colbert-ai / RAGatouille triples)."""
    return write_jsonl(path, (list(triple) for triple in triples))


def export_colbert(
    records: Sequence[MinedQuery],
    corpus: Mapping[str, str],
    directory: str | Path,
    *,
    nway: bool = False,
    max_negatives: int | None = None,
) -> dict[str, Path]:
    """Write a colbert-ai training set into ``directory``:

    * ``collection.tsv``: ``pid \\t text`` with pid = line number (colbert-ai requires it),
      every corpus passage in corpus order;
    * ``queries.tsv``: ``qid \\t text`` with integer qids (record order);
    * ``triples.jsonl``: ``[qid, pos, neg]`` per pair, or with ``nway=True`` one
      ``[qid, pos, neg1, ..., negN]`` line per (query, positive);
    * ``ids.json``: ``{"pids": [...], "qids": [...]}``, the original ids by integer id.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pid_of = {pid: i for i, pid in enumerate(corpus)}
    paths = {
        name: directory / name
        for name in ("collection.tsv", "queries.tsv", "triples.jsonl", "ids.json")
    }
    with open(paths["collection.tsv"], "w", encoding="utf-8") as handle:
        for i, text in enumerate(corpus.values()):
            handle.write(f"{i}\t{_one_line(text)}\n")
    with (
        open(paths["queries.tsv"], "w", encoding="utf-8") as queries,
        open(paths["triples.jsonl"], "w", encoding="utf-8") as triples,
    ):
        for qid, record in enumerate(records):
            queries.write(f"{qid}\t{_one_line(record.query)}\n")
            negatives = [pid_of[n.pid] for n in record.negatives[:max_negatives]]
            for pos in record.positives:
                if nway:
                    triples.write(json.dumps([qid, pid_of[pos], *negatives]) + "\n")
                else:
                    for negative in negatives:
                        triples.write(json.dumps([qid, pid_of[pos], negative]) + "\n")
    mapping = {"pids": list(corpus), "qids": [r.qid for r in records]}
    paths["ids.json"].write_text(json.dumps(mapping, ensure_ascii=False), encoding="utf-8")
    return paths


def _one_line(text: str) -> str:
    return " ".join(str(text).split())

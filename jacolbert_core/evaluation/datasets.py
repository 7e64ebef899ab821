"""Evaluation sets: BEIR-style retrieval folders and per-query reranking files.

BEIR folder (retrieval mode)::

    corpus.jsonl       {"_id": "d1", "title": "...", "text": "..."}     (title optional)
    queries.jsonl      {"_id": "q1", "text": "..."}
    qrels/test.tsv     query-id <TAB> corpus-id <TAB> score   (header line optional)

Passages with a title are encoded as ``title + " " + text`` (``include_title=False`` to
turn off). Only queries that appear in the chosen qrels split are kept.

Reranking JSONL (rerank mode; each query brings its own candidates, the JQaRA / JaCWIR
shape). One line per (query, candidate)::

    {"qid": "q1", "query": "...", "pid": "p7", "text": "...", "label": 1}

``title`` is optional (prepended like BEIR's). The JQaRA / JaCWIR column names are accepted
as aliases: ``q_id`` for ``qid``, ``question`` for ``query``, ``passage_row_id`` /
``doc_id`` for ``pid``, ``passage`` for ``text``, ``relevance`` / ``score`` for ``label``.
``label`` is the graded relevance (0 = not relevant). A candidate id must be unique within
its query; the query text must be the same on all of its lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jacolbert_core.datafiles import iter_jsonl, read_qrels, read_texts
from jacolbert_core.errors import JaColBERTError

ALIASES = {
    "qid": ("qid", "q_id", "query_id", "query-id"),
    "query": ("query", "question", "query_text"),
    "pid": ("pid", "passage_row_id", "doc_id", "docid", "passage_id", "corpus-id"),
    "text": ("text", "passage", "document", "content"),
    "label": ("label", "relevance", "score", "rel"),
}


@dataclass
class RetrievalDataset:
    """A corpus to search, queries, and their relevance judgements."""

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


@dataclass
class RerankDataset:
    """Queries that each bring their own candidates (``candidates[qid]``: (pid, text))."""

    name: str
    queries: dict[str, str]
    candidates: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


def load_beir(
    folder: str | Path, split: str = "test", *, include_title: bool = True
) -> RetrievalDataset:
    """Read a BEIR-style folder (see the module docstring)."""
    folder = Path(folder)
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / name).is_file():
            raise JaColBERTError(f"{folder} is not a BEIR folder: {name} is missing")
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise JaColBERTError(
            f"{qrels_file} does not exist (splits found: {', '.join(available) or 'none'})"
        )
    corpus = read_texts(folder / "corpus.jsonl", title=include_title)
    all_queries = read_texts(folder / "queries.jsonl")
    qrels = read_qrels(qrels_file)
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise JaColBERTError(f"{qrels_file}: query {missing[0]!r} is not in queries.jsonl")
    queries = {q: all_queries[q] for q in qrels}
    return RetrievalDataset(folder.name, corpus, queries, qrels)


def _field(row: dict, name: str, where: str, required: bool = True):
    for key in ALIASES[name]:
        if key in row:
            return row[key]
    if required:
        raise JaColBERTError(f"{where}: missing field '{name}' (or {', '.join(ALIASES[name][1:])})")
    return None


def load_rerank(path: str | Path, *, include_title: bool = True) -> RerankDataset:
    """Read a reranking JSONL file (see the module docstring)."""
    path = Path(path)
    data = RerankDataset(path.stem, {})
    seen: dict[str, set[str]] = {}
    for number, row in iter_jsonl(path):
        where = f"{path}:{number}"
        qid = str(_field(row, "qid", where))
        query = _field(row, "query", where)
        pid = str(_field(row, "pid", where))
        text = _field(row, "text", where)
        label = _field(row, "label", where, required=False)
        if not isinstance(query, str) or not isinstance(text, str):
            raise JaColBERTError(f"{where}: query and text must be strings")
        title = row.get("title")
        if include_title and isinstance(title, str) and title.strip():
            text = f"{title} {text}"
        if data.queries.setdefault(qid, query) != query:
            raise JaColBERTError(f"{where}: query {qid!r} has two different texts")
        if pid in seen.setdefault(qid, set()):
            raise JaColBERTError(f"{where}: candidate {pid!r} appears twice for query {qid!r}")
        seen[qid].add(pid)
        data.candidates.setdefault(qid, []).append((pid, text))
        try:
            relevance = int(float(label)) if label is not None else 0
        except (TypeError, ValueError):
            raise JaColBERTError(f"{where}: label {label!r} is not a number") from None
        data.qrels.setdefault(qid, {})[pid] = relevance
    if not data.queries:
        raise JaColBERTError(f"{path} holds no rows")
    return data


def load_dataset(
    path: str | Path, split: str = "test", *, include_title: bool = True
) -> RetrievalDataset | RerankDataset:
    """A BEIR folder (retrieval) or a reranking ``.jsonl`` file, told apart by the path."""
    path = Path(path)
    if path.is_dir():
        return load_beir(path, split, include_title=include_title)
    if path.is_file():
        return load_rerank(path, include_title=include_title)
    raise JaColBERTError(f"{path} does not exist: pass a BEIR folder or a reranking .jsonl file")

"""Training data: n-way groups (one query, its positive first, then negatives).

Two inputs are understood, told apart by the keys of their first row:

* **scored n-way JSONL** (teacher scores, for KL distillation; the shape of the released
  MMARCO-japanese-32-scored-triplets data and of ``jacolbert_core.training.teacher``)::

      {"qid": "q1", "pos": "d7", "negs": ["d3", "d9", ...], "scores": [9.1, 2.3, 0.4, ...]}

  ``scores`` lists the positive's score first, then one per negative. An optional
  ``"query"`` field carries the query text; otherwise ``queries`` must map the qid.
* **mined JSONL** (``jacolbert mine``; no scores, for the contrastive loss)::

      {"qid": "q1", "query": "...", "positives": ["d7"],
       "negatives": [{"pid": "d3", "source": "bm25", "rank": 4}, ...]}

  One group per positive; its ``nway - 1`` negatives are drawn without replacement from the
  row's negatives with a seeded RNG (the same seed gives the same groups).

Passage and query texts come from ``corpus`` / ``queries`` maps, read by
:func:`jacolbert_core.datafiles.read_texts` from JSONL, colbert-ai TSV or a BEIR folder.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jacolbert_core.datafiles import iter_jsonl
from jacolbert_core.errors import JaColBERTError


@dataclass(frozen=True)
class TrainingGroup:
    """One query with ``texts[0]`` its positive and the rest negatives (``scores`` aligned)."""

    qid: str
    query: str
    doc_ids: tuple[str, ...]
    texts: tuple[str, ...]
    scores: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.doc_ids) != len(self.texts):
            raise ValueError("doc_ids and texts must have the same length")
        if self.scores is not None and len(self.scores) != len(self.texts):
            raise ValueError(
                f"group {self.qid!r}: {len(self.scores)} scores for {len(self.texts)} documents"
            )

    @property
    def size(self) -> int:
        return len(self.texts)

    def truncate(self, nway: int) -> TrainingGroup:
        """The positive and the first ``nway - 1`` negatives."""
        return TrainingGroup(
            self.qid,
            self.query,
            self.doc_ids[:nway],
            self.texts[:nway],
            None if self.scores is None else self.scores[:nway],
        )


def detect_format(row: Mapping[str, Any]) -> str:
    """``"scored"`` or ``"mined"`` from a row's keys."""
    if "scores" in row and "negs" in row:
        return "scored"
    if "positives" in row and "negatives" in row:
        return "mined"
    raise JaColBERTError(
        "unrecognised training row: expected scored n-way rows "
        '{"qid", "pos", "negs", "scores"} or mined rows {"qid", "query", "positives", '
        f'"negatives"}}; got keys {sorted(row)}'
    )


def _text(table: Mapping[str, str] | None, key: Any, what: str, where: str) -> str:
    if table is None:
        raise JaColBERTError(f"{where}: the {what} texts are needed; pass --{what} FILE")
    try:
        return table[str(key)]
    except KeyError:
        raise JaColBERTError(f"{where}: {what} id {key!r} is not in the {what} file") from None


def load_groups(
    path: str | Path,
    *,
    corpus: Mapping[str, str] | None = None,
    queries: Mapping[str, str] | None = None,
    nway: int | None = None,
    seed: int = 0,
) -> list[TrainingGroup]:
    """Read scored n-way or mined JSONL into :class:`TrainingGroup` s (see the module doc).

    ``nway`` (positive included) truncates scored groups and sizes mined ones; ``None``
    keeps scored groups whole and gives mined groups all their negatives.
    """
    if nway is not None and nway < 2:
        raise ValueError(f"nway must be at least 2 (a positive and a negative), got {nway}")
    groups: list[TrainingGroup] = []
    fmt = None
    for number, row in iter_jsonl(path):
        fmt = fmt or detect_format(row)
        where = f"{path}:{number}"
        if fmt == "scored":
            groups.append(_scored_group(row, corpus, queries, nway, where))
        else:
            groups.extend(_mined_groups(row, corpus, queries, nway, seed, where))
    if not groups:
        raise JaColBERTError(f"{path} holds no training groups")
    return groups


def _scored_group(row, corpus, queries, nway, where) -> TrainingGroup:
    if "pos" not in row:
        raise JaColBERTError(f"{where}: scored rows need 'pos'")
    qid = str(row.get("qid", where))
    query = row.get("query")
    if not isinstance(query, str):
        query = _text(queries, qid, "queries", where)
    pos = row["pos"][0] if isinstance(row["pos"], list) else row["pos"]
    doc_ids = [str(pos), *(str(n) for n in row["negs"])]
    scores = [float(s) for s in row["scores"]]
    if len(scores) != len(doc_ids):
        raise JaColBERTError(
            f"{where}: {len(scores)} scores for 1 positive + {len(doc_ids) - 1} negatives"
        )
    if nway is not None:
        doc_ids, scores = doc_ids[:nway], scores[:nway]
    texts = tuple(_text(corpus, pid, "corpus", where) for pid in doc_ids)
    return TrainingGroup(qid, query, tuple(doc_ids), texts, tuple(scores))


def _mined_groups(row, corpus, queries, nway, seed, where) -> list[TrainingGroup]:
    qid = str(row.get("qid", where))
    query = row.get("query")
    if not isinstance(query, str):
        query = _text(queries, qid, "queries", where)
    positives = [str(p) for p in row["positives"]]
    negatives = []
    for negative in row["negatives"]:
        pid = str(negative["pid"] if isinstance(negative, dict) else negative)
        if pid not in positives and pid not in negatives:
            negatives.append(pid)
    if not negatives:
        return []
    rng = random.Random(f"{seed}:{qid}")
    groups = []
    for pos in positives:
        chosen = negatives
        if nway is not None:
            if len(negatives) < nway - 1:
                continue  # too few negatives for this group size: skipped (counted by caller)
            picks = sorted(rng.sample(range(len(negatives)), nway - 1))
            chosen = [negatives[i] for i in picks]
        doc_ids = (pos, *chosen)
        texts = tuple(_text(corpus, pid, "corpus", where) for pid in doc_ids)
        groups.append(TrainingGroup(qid, query, doc_ids, texts))
    return groups


def uniform_groups(
    groups: Sequence[TrainingGroup], nway: int | None = None
) -> tuple[list[TrainingGroup], int]:
    """Groups of one size (batches need it): ``nway``, or by default the smallest group size
    (nothing is dropped). Larger groups are truncated, smaller ones dropped.
    Returns (groups, nway)."""
    if not groups:
        raise JaColBERTError("no training groups")
    if nway is None:
        nway = min(g.size for g in groups)
    kept = [g.truncate(nway) for g in groups if g.size >= nway]
    if not kept:
        raise JaColBERTError(
            f"no training group has {nway} documents (largest: {max(g.size for g in groups)}); "
            "lower --nway"
        )
    if nway < 2:
        raise JaColBERTError("groups need a positive and at least one negative")
    return kept, nway

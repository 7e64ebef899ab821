"""Teacher scores for n-way groups, for knowledge distillation (JaColBERTv2 / v2.5 recipe).

A group is one query, one positive passage and its negatives. A teacher scores every
(query, passage) pair of the group:

* :class:`CrossEncoderTeacher`: any Hugging Face sequence-classification model
  (``AutoModelForSequenceClassification``: a reranker / cross-encoder). The score is the
  logit of a one-label model; for a two-label model, the logit of label 1 minus the logit
  of label 0 (the log-odds of "relevant", monotone in its softmax probability). Pairs are
  tokenised as ``tokenizer(query, passage)``, truncated to ``max_length`` tokens
  (longest-first), in batches under ``torch.inference_mode``.
* :class:`ColBERTTeacher`: a jacolbert :class:`~jacolbert_core.ColBERT` (``ColBERT.score``,
  MaxSim), e.g. a larger ColBERT distilled into a smaller one.

Scores are the teacher's raw scores; the trainer normalises them (JaColBERTv2.5 min-max
normalises teacher and student scores per group).

Input groups (:func:`read_groups`) come from any of:

* mined negatives (:mod:`jacolbert_core.training.mining`): one group per positive, with the
  record's negatives in order;
* colbert-ai n-way lines ``[qid, pos, neg1, ...]`` (entries may also be ``[pid, score]``);
* groups or scored groups in the format below (existing scores are replaced).

Output (:func:`write_scored`), one JSON line per group::

    {"qid": "q1", "pos": "p7", "negs": ["p3", "p9", ...], "scores": [s_pos, s_p3, s_p9, ...]}

``scores[0]`` is the positive's score, ``scores[i]`` that of ``negs[i - 1]``; a ``"query"``
field with the query text is added so the file trains without a queries file. This is the
information each row of answerdotai/MMARCO-japanese-32-scored-triplets carries (a query id,
a positive id, 31 negative ids and the teacher's 32 scores, positive first), with ids as
strings of our corpus.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jacolbert_core.datafiles import iter_jsonl, write_jsonl
from jacolbert_core.errors import JaColBERTError

__all__ = [
    "ColBERTTeacher",
    "CrossEncoderTeacher",
    "NWayGroup",
    "ScoredGroup",
    "Teacher",
    "groups_from_mined",
    "load_teacher",
    "read_groups",
    "read_scored",
    "score_file",
    "score_groups",
    "write_scored",
]


class Teacher(Protocol):
    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """One float score per text, in input order."""
        ...


# -- groups -----------------------------------------------------------------------------------


@dataclass
class NWayGroup:
    """One query with one positive and its negatives (``query`` text when known)."""

    qid: str
    pos: str
    negs: list[str]
    query: str | None = None


@dataclass
class ScoredGroup:
    qid: str
    pos: str
    negs: list[str]
    scores: list[float]
    query: str | None = None

    def to_dict(self) -> dict[str, Any]:
        row = {"qid": self.qid, "pos": self.pos, "negs": list(self.negs), "scores": self.scores}
        if self.query is not None:
            row["query"] = self.query
        return row


def groups_from_mined(
    records: Iterable[Any], *, max_negatives: int | None = None
) -> list[NWayGroup]:
    """One group per (query, positive) of mined records (``MinedQuery``), keeping at most
    ``max_negatives`` negatives (e.g. 31 for 32-way groups)."""
    groups = []
    for record in records:
        negatives = [n.pid for n in record.negatives][:max_negatives]
        for pos in record.positives:
            groups.append(NWayGroup(record.qid, pos, list(negatives), record.query))
    return groups


def read_groups(path: str | Path, *, max_negatives: int | None = None) -> list[NWayGroup]:
    """Groups from a JSON Lines file in any format listed in the module docstring."""
    groups: list[NWayGroup] = []
    for number, row in iter_jsonl(path, objects=False):
        try:
            groups.extend(_groups_of(row))
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise JaColBERTError(
                f"{path}:{number}: not an n-way group (mined record, [qid, pos, neg...] "
                f"or {{qid, pos, negs}}): {error!r}"
            ) from error
    if max_negatives is not None:
        for group in groups:
            del group.negs[max_negatives:]
    return groups


def _groups_of(row: Any) -> list[NWayGroup]:
    if isinstance(row, list):  # colbert-ai: [qid, pos, neg, ...], entries maybe [pid, score]
        if len(row) < 2:
            raise ValueError("need at least a query id and a positive id")
        ids = [str(e[0]) if isinstance(e, list) else str(e) for e in row[1:]]
        return [NWayGroup(str(row[0]), ids[0], ids[1:])]
    if not isinstance(row, dict):
        raise TypeError(f"expected a JSON list or object, got {type(row).__name__}")
    if "negatives" in row and "positives" in row:  # a mined record
        negatives = [str(n["pid"]) if isinstance(n, dict) else str(n) for n in row["negatives"]]
        qid, query = str(row["qid"]), row.get("query")
        return [NWayGroup(qid, str(p), list(negatives), query) for p in row["positives"]]
    return [
        NWayGroup(str(row["qid"]), str(row["pos"]), [str(n) for n in row["negs"]], row.get("query"))
    ]


def write_scored(path: str | Path, groups: Iterable[ScoredGroup]) -> int:
    """Write scored groups as JSON Lines; returns how many were written."""
    return write_jsonl(path, (group.to_dict() for group in groups))


def read_scored(path: str | Path) -> list[ScoredGroup]:
    """Read scored groups written by :func:`write_scored`, checking their shape."""
    out = []
    for number, row in iter_jsonl(path):
        try:
            group = ScoredGroup(
                str(row["qid"]),
                str(row["pos"]),
                [str(n) for n in row["negs"]],
                [float(s) for s in row["scores"]],
                row.get("query"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise JaColBERTError(
                f"{path}:{number}: not a scored group (need qid, pos, negs, scores): {error!r}"
            ) from error
        if len(group.scores) != len(group.negs) + 1:
            raise JaColBERTError(
                f"{path}:{number}: {len(group.scores)} scores for {len(group.negs) + 1} "
                "passages (need one per passage, positive first)"
            )
        out.append(group)
    return out


# -- teachers ---------------------------------------------------------------------------------


class CrossEncoderTeacher:
    """A Hugging Face sequence-classification model scoring (query, passage) pairs."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 32,
        max_length: int | None = None,
    ):
        num_labels = int(getattr(model.config, "num_labels", 1))
        if num_labels not in (1, 2):
            raise JaColBERTError(
                f"a teacher needs a relevance score: a model with 1 or 2 labels, this one has "
                f"{num_labels}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        limits = [
            max_length,
            getattr(model.config, "max_position_embeddings", None),
            getattr(tokenizer, "model_max_length", None),
            512,
        ]
        self.max_length = min(int(m) for m in limits if m and int(m) < 1_000_000)
        self.num_labels = num_labels

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        dtype: Any = None,
    ) -> CrossEncoderTeacher:
        """Load a reranker (local directory or hub id); ``dtype`` e.g. ``torch.float16``."""
        import transformers
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from jacolbert_core.model.activation import use_native_gelu
        from jacolbert_core.model.colbert import default_device

        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        kwargs = {}
        if dtype is not None:  # transformers renamed torch_dtype to dtype in 4.56
            major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
            kwargs["dtype" if (major, minor) >= (4, 56) else "torch_dtype"] = dtype
        model = AutoModelForSequenceClassification.from_pretrained(str(name_or_path), **kwargs)
        use_native_gelu(model)  # batches of many lengths: see jacolbert_core.model.activation
        model = model.to(device or default_device())
        return cls(model, tokenizer, batch_size=batch_size, max_length=max_length)

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Scores of ``(queries[i], texts[i])``; batches are formed by length (less padding)
        and results returned in input order."""
        import torch

        if len(queries) != len(texts):
            raise ValueError(f"{len(queries)} queries for {len(texts)} texts")
        order = sorted(range(len(texts)), key=lambda i: len(queries[i]) + len(texts[i]))
        out = np.empty(len(texts), dtype=np.float32)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [queries[i] for i in rows],
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(device)
                logits = self.model(**batch).logits.float()
                scores = logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]
                out[rows] = scores.cpu().numpy()
        return out

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        return self.score_pairs([query] * len(texts), list(texts))


class ColBERTTeacher:
    """A jacolbert ColBERT model as teacher (MaxSim scores)."""

    def __init__(self, model: Any, *, batch_size: int = 32):
        self.model = model
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, device: str | None = None, batch_size: int = 32
    ) -> ColBERTTeacher:
        from jacolbert_core.model.colbert import ColBERT

        return cls(ColBERT.from_pretrained(name_or_path, device=device), batch_size=batch_size)

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(
            self.model.score(query, list(texts), batch_size=self.batch_size), dtype=np.float32
        )


def load_teacher(
    name_or_path: str | Path,
    *,
    kind: str = "auto",
    device: str | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
) -> CrossEncoderTeacher | ColBERTTeacher:
    """A teacher from a checkpoint. ``kind``: ``"cross-encoder"``, ``"colbert"`` or
    ``"auto"`` (ColBERT when the directory has ``artifact.metadata`` or its config declares
    a ColBERT architecture, cross-encoder when it declares ``*ForSequenceClassification``)."""
    if kind == "auto":
        kind = _detect_kind(name_or_path)
    if kind == "colbert":
        return ColBERTTeacher.from_pretrained(name_or_path, device=device, batch_size=batch_size)
    if kind == "cross-encoder":
        return CrossEncoderTeacher.from_pretrained(
            name_or_path, device=device, batch_size=batch_size, max_length=max_length
        )
    raise ValueError(f"kind must be 'auto', 'colbert' or 'cross-encoder', got {kind!r}")


def _detect_kind(name_or_path: str | Path) -> str:
    path = Path(name_or_path)
    if path.is_dir() and (path / "artifact.metadata").is_file():
        return "colbert"
    if path.is_dir() and (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        architectures = config.get("architectures") or []
    else:
        from transformers import AutoConfig

        architectures = AutoConfig.from_pretrained(str(name_or_path)).architectures or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "cross-encoder"
    if any("colbert" in a.lower() for a in architectures):
        return "colbert"
    raise JaColBERTError(
        f"cannot tell whether {name_or_path} is a cross-encoder or a ColBERT model "
        f"(architectures: {architectures}); pass kind='cross-encoder' or kind='colbert'"
    )


# -- scoring ----------------------------------------------------------------------------------


def score_groups(
    groups: Sequence[NWayGroup],
    teacher: Teacher,
    corpus: Mapping[str, str],
    queries: Mapping[str, str] | None = None,
    *,
    groups_per_step: int = 16,
    show_progress: bool = False,
) -> Iterator[ScoredGroup]:
    """Score every group with ``teacher`` (positive first, then negatives), in order.

    Query texts come from ``queries`` or, failing that, from the group itself (mined
    records carry them). A cross-encoder scores the pairs of ``groups_per_step`` groups in
    shared batches.
    """
    from tqdm.auto import tqdm

    def text_of(group: NWayGroup) -> str:
        text = queries.get(group.qid) if queries is not None else None
        text = text if text is not None else group.query
        if not isinstance(text, str) or not text.strip():
            raise JaColBERTError(
                f"no text for query {group.qid!r}: pass the queries file (or mined records "
                "that carry the query text)"
            )
        return text

    def passages(group: NWayGroup) -> list[str]:
        missing = [pid for pid in [group.pos, *group.negs] if pid not in corpus]
        if missing:
            raise JaColBERTError(
                f"group of query {group.qid!r} refers to passages missing from the corpus: "
                f"{missing[:5]}"
            )
        return [corpus[pid] for pid in [group.pos, *group.negs]]

    pair_scorer = getattr(teacher, "score_pairs", None)
    with tqdm(total=len(groups), desc="Scoring", unit="group", disable=not show_progress) as bar:
        for start in range(0, len(groups), groups_per_step):
            chunk = groups[start : start + groups_per_step]
            if pair_scorer is not None:
                texts = [passages(g) for g in chunk]
                flat_queries = [text_of(g) for g, t in zip(chunk, texts, strict=True) for _ in t]
                flat = pair_scorer(flat_queries, [p for t in texts for p in t])
                offsets = np.cumsum([0] + [len(t) for t in texts])
                all_scores = [flat[offsets[i] : offsets[i + 1]] for i in range(len(chunk))]
            else:
                all_scores = [teacher.score(text_of(g), passages(g)) for g in chunk]
            for group, scores in zip(chunk, all_scores, strict=True):
                yield ScoredGroup(
                    group.qid,
                    group.pos,
                    list(group.negs),
                    [float(s) for s in scores],
                    text_of(group),
                )
            bar.update(len(chunk))


def score_file(
    groups_path: str | Path,
    out_path: str | Path,
    teacher: Teacher,
    corpus: Mapping[str, str],
    queries: Mapping[str, str] | None = None,
    *,
    max_negatives: int | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Read groups, score them, write the scored JSON Lines; returns a summary."""
    groups = read_groups(groups_path, max_negatives=max_negatives)
    if not groups:
        raise JaColBERTError(f"{groups_path} holds no groups")
    # fail before any scoring (and before writing a partial file) on missing texts
    no_text = [g.qid for g in groups if not g.query and (queries is None or g.qid not in queries)]
    if no_text:
        raise JaColBERTError(
            f"no text for {len(no_text)} queries (e.g. {no_text[:3]}): pass the queries file"
        )
    missing = sorted({p for g in groups for p in [g.pos, *g.negs] if p not in corpus})
    if missing:
        raise JaColBERTError(
            f"{len(missing)} passage ids of {groups_path} are not in the corpus "
            f"(e.g. {missing[:3]}); use the corpus the groups were mined from"
        )
    start = time.perf_counter()
    pairs = 0
    top1 = 0
    margins = []

    def scored() -> Iterator[ScoredGroup]:
        nonlocal pairs, top1
        for group in score_groups(groups, teacher, corpus, queries, show_progress=show_progress):
            pairs += len(group.scores)
            if len(group.scores) == 1 or group.scores[0] > max(group.scores[1:]):
                top1 += 1
            if len(group.scores) > 1:
                margins.append(group.scores[0] - float(np.mean(group.scores[1:])))
            yield group

    written = write_scored(out_path, scored())
    seconds = time.perf_counter() - start
    return {
        "groups": written,
        "pairs": pairs,
        "seconds": seconds,
        "pairs_per_second": pairs / seconds if seconds > 0 else float("inf"),
        "positive_ranked_first": top1 / written,
        "mean_margin": float(np.mean(margins)) if margins else 0.0,
    }

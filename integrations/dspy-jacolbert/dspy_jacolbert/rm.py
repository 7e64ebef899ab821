"""``JaColBERTRM``: a DSPy retrieval model (``dspy.configure(rm=...)``) over a jacolbert index."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dspy.dsp.utils import dotdict

from jacolbert_core import ColBERT, Hit, Index


class JaColBERTRM:
    """Top-``k`` passages of a jacolbert index for ``dspy.Retrieve`` (and any code that calls
    ``dspy.settings.rm(query, k=...)``).

    Each passage is a ``dotdict`` (a dict with attribute access, what ``dspy.ColBERTv2``
    returns) with ``long_text`` and ``text`` (the passage text), ``id``/``pid``/``passage_id``
    (the passage id), ``document_id``, ``score`` (MaxSim), ``rank`` (1-based), ``metadata``
    and ``start``/``end`` (character offsets of the passage in its document).

    ``index`` is an open :class:`~jacolbert_core.Index` or an index directory (then opened
    with ``model``, by default the model recorded in the index). ``k``, ``where`` and
    ``search_kwargs`` (PLAID settings such as ``ndocs`` or ``exact``) are defaults that a call
    overrides: ``rm(query, k=5, where={"lang": "ja"})``; ``where={}`` drops the default filter.

    Example::

        dspy.configure(lm=lm, rm=JaColBERTRM("indexes/faq", k=3))
        passages = dspy.Retrieve(k=2)("返品の期限は？").passages
    """

    def __init__(
        self,
        index: Index | str | Path,
        k: int = 3,
        *,
        model: ColBERT | str | Path | None = None,
        where: dict[str, Any] | None = None,
        **search_kwargs: Any,
    ):
        if isinstance(index, (str, Path)):
            index = Index.open(index, model=model)
        elif model is not None:
            raise ValueError("model= is only used to open an index path; got an open Index")
        if not isinstance(index, Index):
            raise TypeError(
                f"index must be an Index or an index directory, got {type(index).__name__}"
            )
        self.index = index
        self.k = _check_k(k)
        self.where = where
        self.search_kwargs = search_kwargs

    @classmethod
    def from_path(
        cls, path: str | Path, model: ColBERT | str | Path | None = None, **kwargs: Any
    ) -> JaColBERTRM:
        """Open the index at ``path`` (with ``model``, or the one it records)."""
        return cls(Index.open(path, model=model), **kwargs)

    def __call__(
        self,
        query: str | Sequence[str],
        k: int | None = None,
        *,
        where: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[dotdict]:
        """The top ``k`` passages for ``query``, best first.

        For a list of queries the passages of all of them are merged (best score per
        passage) and the top ``k`` of the union is returned, as DSPy's older multi-query
        retrieval did.
        """
        k = self.k if k is None else _check_k(k)
        where = self.where if where is None else (where or None)
        options = {**self.search_kwargs, **kwargs}
        if isinstance(query, str):
            hits = self.index.search(query, k=k, where=where, **options)
        else:
            queries = [q for q in query if isinstance(q, str) and q.strip()]
            if not queries:
                raise ValueError("query must be a non-empty string or a list of them")
            best: dict[str, Hit] = {}
            for hits in self.index.search(queries, k=k, where=where, **options):
                for hit in hits:
                    if hit.passage_id not in best or hit.score > best[hit.passage_id].score:
                        best[hit.passage_id] = hit
            ranked = sorted(best.values(), key=lambda h: (-h.score, h.passage_id))[:k]
            hits = [replace(h, rank=n) for n, h in enumerate(ranked, start=1)]
        return [to_passage(hit) for hit in hits]

    forward = __call__

    def __deepcopy__(self, memo: dict[int, Any]) -> JaColBERTRM:
        # DSPy deep-copies programs; the index (model, memory maps, SQLite) is a shared handle.
        clone = copy.copy(self)
        clone.where = copy.deepcopy(self.where, memo)
        clone.search_kwargs = copy.deepcopy(self.search_kwargs, memo)
        return clone

    def __repr__(self) -> str:
        return f"{type(self).__name__}(index={str(self.index.path)!r}, k={self.k})"


def to_passage(hit: Hit) -> dotdict:
    """A :class:`~jacolbert_core.Hit` as the ``dotdict`` DSPy retrievers return."""
    return dotdict(
        long_text=hit.text,
        text=hit.text,
        id=hit.passage_id,
        pid=hit.passage_id,
        passage_id=hit.passage_id,
        document_id=hit.document_id,
        score=hit.score,
        rank=hit.rank,
        metadata=dict(hit.metadata),
        start=hit.start,
        end=hit.end,
    )


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return k

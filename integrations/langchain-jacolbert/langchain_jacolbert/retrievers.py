"""``JaColBERTRetriever``: a LangChain retriever over a jacolbert :class:`~jacolbert_core.Index`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, model_validator

from jacolbert_core import ColBERT, Hit, Index

#: Metadata keys the retriever adds to each Document (they override user keys of the same name).
HIT_KEYS = ("document_id", "score", "rank", "start", "end")


class JaColBERTRetriever(BaseRetriever):
    """Top-``k`` passages from a jacolbert index, as LangChain ``Document`` objects.

    ``Document.id`` is the passage id, ``page_content`` its text; ``metadata`` is the
    document's metadata plus ``document_id``, ``score`` (MaxSim), ``rank`` (1-based) and
    ``start``/``end`` (character offsets of the passage in its document).

    ``index`` is an open :class:`~jacolbert_core.Index` or an index directory (then opened
    with ``model``, by default the model recorded in the index). ``k``, ``where`` and
    ``search_kwargs`` (PLAID settings such as ``ndocs`` or ``exact``) are defaults that
    ``invoke(query, k=..., where=..., **search_kwargs)`` overrides for one call
    (``where={}`` searches without the default filter).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Index
    k: int = Field(default=4, gt=0)
    where: dict[str, Any] | None = None
    search_kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _open_index(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        model = data.pop("model", None)
        if isinstance(data.get("index"), (str, Path)):
            data["index"] = Index.open(data["index"], model=model)
        elif model is not None:
            raise ValueError("model= is only used to open an index path; got an open Index")
        return data

    @classmethod
    def from_path(
        cls, path: str | Path, model: ColBERT | str | Path | None = None, **kwargs: Any
    ) -> JaColBERTRetriever:
        """Open the index at ``path`` (with ``model``, or the one it records)."""
        return cls(index=Index.open(path, model=model), **kwargs)

    def _search(
        self, query: str, k: int | None = None, where: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        hits = self.index.search(
            query,
            k=self.k if k is None else k,
            where=self.where if where is None else (where or None),
            **{**self.search_kwargs, **kwargs},
        )
        return [to_document(hit) for hit in hits]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return self._search(query, **kwargs)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        # Encoding and scoring are CPU/GPU-bound: keep them off the event loop.
        return await asyncio.to_thread(self._search, query, **kwargs)


def to_document(hit: Hit) -> Document:
    """The LangChain ``Document`` for one search hit."""
    metadata = {
        **hit.metadata,
        "document_id": hit.document_id,
        "score": hit.score,
        "rank": hit.rank,
        "start": hit.start,
        "end": hit.end,
    }
    return Document(id=hit.passage_id, page_content=hit.text, metadata=metadata)

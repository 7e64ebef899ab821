"""``JaColBERTReranker``: rerank LangChain documents with ColBERT MaxSim (no index needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, field_validator

from jacolbert_core import ColBERT


class JaColBERTReranker(BaseDocumentCompressor):
    """Keep the ``top_n`` documents by ColBERT MaxSim score against the query, best first.

    Returns new ``Document`` objects (the inputs are not modified) with the score under
    ``metadata["relevance_score"]``. ``model`` is a :class:`~jacolbert_core.ColBERT` or a
    hub id / local checkpoint directory. Use it alone or as the ``base_compressor`` of a
    ``ContextualCompressionRetriever``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: ColBERT
    top_n: int = Field(default=3, gt=0)
    batch_size: int = Field(default=32, gt=0)

    @field_validator("model", mode="before")
    @classmethod
    def _load_model(cls, value: Any) -> Any:
        return ColBERT.from_pretrained(value) if isinstance(value, (str, Path)) else value

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        texts = [doc.page_content for doc in documents]
        ranked = self.model.rerank(query, texts, k=self.top_n, batch_size=self.batch_size)
        return [
            documents[i].model_copy(
                update={"metadata": {**documents[i].metadata, "relevance_score": score}}
            )
            for i, score in ranked
        ]

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)

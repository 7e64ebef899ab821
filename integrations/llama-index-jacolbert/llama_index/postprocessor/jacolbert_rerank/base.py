"""LlamaIndex node postprocessor that reranks nodes with ColBERT MaxSim scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from jacolbert_core import DEFAULT_MODEL, ColBERT

dispatcher = get_dispatcher(__name__)


class JaColBERTRerank(BaseNodePostprocessor):
    """Rerank nodes by ColBERT late-interaction (MaxSim) score against the query; no index.

    Args:
        model: a loaded :class:`jacolbert_core.ColBERT`, or a hub id / local directory.
        top_n: number of nodes to keep.
        metadata_mode: which node content is scored. The default ``MetadataMode.NONE`` scores
            the node text only, which is what a jacolbert index scores (so reranking jacolbert
            hits reproduces their scores); ``MetadataMode.EMBED`` prepends the metadata that is
            not excluded from embeddings, like LlamaIndex's sentence-transformer reranker.
        device: device to load ``model`` on when it is a name or path.
        batch_size: documents encoded per forward pass.

    Returned nodes are new ``NodeWithScore`` objects (the same nodes, input scores untouched),
    best first, with the ColBERT score as ``score``.
    """

    model: str = Field(default=DEFAULT_MODEL, description="ColBERT model name or path.")
    top_n: int = Field(default=3, gt=0, description="Number of nodes to return.")
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.NONE, description="Node content mode that is scored."
    )
    batch_size: int = Field(default=32, gt=0, description="Documents per encoder batch.")
    _model: ColBERT = PrivateAttr()

    def __init__(
        self,
        model: ColBERT | str | Path = DEFAULT_MODEL,
        top_n: int = 3,
        metadata_mode: MetadataMode = MetadataMode.NONE,
        device: str | None = None,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        loaded = (
            model if isinstance(model, ColBERT) else ColBERT.from_pretrained(model, device=device)
        )
        super().__init__(
            model=loaded.name or str(model),
            top_n=top_n,
            metadata_mode=metadata_mode,
            batch_size=batch_size,
            **kwargs,
        )
        self._model = loaded

    @classmethod
    def class_name(cls) -> str:
        return "JaColBERTRerank"

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError(
                "JaColBERTRerank needs the query: call postprocess_nodes(nodes, query_str=...) "
                "or pass query_bundle"
            )
        if not nodes:
            return []
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=self.top_n, model_name=self.model
            )
        )
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            texts = [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]
            ranked = self._model.rerank(
                query_bundle.query_str, texts, k=self.top_n, batch_size=self.batch_size
            )
            reranked = [NodeWithScore(node=nodes[i].node, score=score) for i, score in ranked]
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked


__all__ = ["JaColBERTRerank"]

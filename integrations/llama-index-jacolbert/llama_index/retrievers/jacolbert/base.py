"""LlamaIndex retriever over a jacolbert :class:`~jacolbert_core.Index`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import (
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilters,
)

from jacolbert_core import ColBERT, Hit, Index

#: Metadata keys the retriever adds to every node; kept out of LLM prompts and embeddings.
INTERNAL_KEYS = ("document_id", "start", "end")

_OPERATORS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}


def filters_to_where(filters: MetadataFilters | dict[str, Any] | None) -> dict[str, Any] | None:
    """A jacolbert ``where`` dict for LlamaIndex ``MetadataFilters`` (a dict passes through).

    Supported: operators ==, !=, >, >=, <, <=, in, nin; conditions and/or, nested."""
    if filters is None or isinstance(filters, dict):
        return filters or None
    if not isinstance(filters, MetadataFilters):
        raise TypeError(
            f"filters must be a jacolbert where dict or MetadataFilters, got {type(filters)!r}"
        )
    parts = []
    for item in filters.filters:
        if isinstance(item, MetadataFilters):
            parts.append(filters_to_where(item))
            continue
        operator = getattr(item, "operator", FilterOperator.EQ)  # ExactMatchFilter has none
        if operator not in _OPERATORS:
            raise ValueError(
                f"filter on {item.key!r}: operator {operator.value!r} is not supported by "
                f"jacolbert; use one of {', '.join(op.value for op in _OPERATORS)}"
            )
        parts.append({item.key: {_OPERATORS[operator]: item.value}})
    condition = filters.condition or FilterCondition.AND
    if condition not in (FilterCondition.AND, FilterCondition.OR):
        raise ValueError(f"filter condition {condition.value!r} is not supported; use and/or")
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return {f"${condition.value}": parts}


def hit_to_node(hit: Hit) -> NodeWithScore:
    """A ``NodeWithScore`` for a jacolbert ``Hit`` (node id = passage id)."""
    node = TextNode(
        id_=hit.passage_id,
        text=hit.text,
        metadata={
            **hit.metadata,
            "document_id": hit.document_id,
            "start": hit.start,
            "end": hit.end,
        },
        excluded_llm_metadata_keys=list(INTERNAL_KEYS),
        excluded_embed_metadata_keys=list(INTERNAL_KEYS),
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit.document_id)},
        start_char_idx=hit.start,
        end_char_idx=hit.end,
    )
    return NodeWithScore(node=node, score=hit.score)


class JaColBERTRetriever(BaseRetriever):
    """Retrieve passages from a jacolbert index with ColBERT late interaction (PLAID).

    Args:
        index: an open :class:`jacolbert_core.Index`, or the path of one.
        similarity_top_k: number of passages to return.
        filters: a jacolbert ``where`` dict (``{"year": {"$gte": 2020}}``) or LlamaIndex
            ``MetadataFilters``; applied to document metadata before scoring.
        model: when ``index`` is a path, the model to open it with (default: the one recorded
            in the index).

    Each node's id is the passage id, its SOURCE relationship points to the document id, and
    its metadata is the document's metadata plus ``document_id``, ``start`` and ``end``
    (character offsets into the document), which are excluded from LLM and embed content.
    The search rank is the node's position in the returned list.
    """

    def __init__(
        self,
        index: Index | str | Path,
        similarity_top_k: int = 4,
        filters: MetadataFilters | dict[str, Any] | None = None,
        *,
        model: ColBERT | str | Path | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if (
            isinstance(similarity_top_k, bool)
            or not isinstance(similarity_top_k, int)
            or similarity_top_k <= 0
        ):
            raise ValueError(
                f"similarity_top_k must be a positive integer, got {similarity_top_k!r}"
            )
        self.index = index if isinstance(index, Index) else Index.open(index, model)
        self.similarity_top_k = similarity_top_k
        self.where = filters_to_where(filters)
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @classmethod
    def class_name(cls) -> str:
        return "JaColBERTRetriever"

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.index.search(query_bundle.query_str, k=self.similarity_top_k, where=self.where)
        return [hit_to_node(hit) for hit in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


__all__ = ["INTERNAL_KEYS", "JaColBERTRetriever", "filters_to_where", "hit_to_node"]

"""jacolbert retriever for LlamaIndex: ``from llama_index.retrievers.jacolbert import ...``."""

from llama_index.retrievers.jacolbert.base import (
    INTERNAL_KEYS,
    JaColBERTRetriever,
    filters_to_where,
    hit_to_node,
)

__all__ = ["INTERNAL_KEYS", "JaColBERTRetriever", "filters_to_where", "hit_to_node"]

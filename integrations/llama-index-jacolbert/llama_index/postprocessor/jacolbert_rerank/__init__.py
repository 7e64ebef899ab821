"""jacolbert reranker for LlamaIndex (a ColBERT MaxSim node postprocessor)."""

from llama_index.postprocessor.jacolbert_rerank.base import JaColBERTRerank

__all__ = ["JaColBERTRerank"]

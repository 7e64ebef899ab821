"""LangChain integration for jacolbert: a retriever over a jacolbert index and a reranker."""

from langchain_jacolbert.rerankers import JaColBERTReranker
from langchain_jacolbert.retrievers import JaColBERTRetriever

__all__ = ["JaColBERTReranker", "JaColBERTRetriever"]
__version__ = "0.1.0"

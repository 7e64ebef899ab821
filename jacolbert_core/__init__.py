"""jacolbert: JaColBERT-style Japanese multi-vector retrieval."""

from jacolbert_core.config import DEFAULT_MODEL, EncodingConfig
from jacolbert_core.errors import CheckpointError, JaColBERTError, MissingDependencyError
from jacolbert_core.index.index import Document, Hit, Index
from jacolbert_core.index.lock import IndexLockedError
from jacolbert_core.index.manifest import IndexNotFoundError
from jacolbert_core.index.segment import CorruptIndexError
from jacolbert_core.model.colbert import ColBERT
from jacolbert_core.search.plaid import SearchParams
from jacolbert_core.text.chunking import ChunkingConfig

__all__ = [
    "DEFAULT_MODEL",
    "CheckpointError",
    "ChunkingConfig",
    "ColBERT",
    "CorruptIndexError",
    "Document",
    "EncodingConfig",
    "Hit",
    "Index",
    "IndexLockedError",
    "IndexNotFoundError",
    "JaColBERTError",
    "MissingDependencyError",
    "SearchParams",
]
__version__ = "0.1.0"

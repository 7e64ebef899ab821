"""jacolbert: JaColBERT-style Japanese multi-vector retrieval."""

from jacolbert_core.config import DEFAULT_MODEL, EncodingConfig
from jacolbert_core.errors import CheckpointError, JaColBERTError, MissingDependencyError
from jacolbert_core.model.colbert import ColBERT

__all__ = [
    "DEFAULT_MODEL",
    "CheckpointError",
    "ColBERT",
    "EncodingConfig",
    "JaColBERTError",
    "MissingDependencyError",
]
__version__ = "0.1.0"

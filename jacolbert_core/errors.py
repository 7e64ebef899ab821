"""Exceptions that name the problem and the fix."""

from __future__ import annotations


class JaColBERTError(Exception):
    """Base class for errors raised by jacolbert."""


class CheckpointError(JaColBERTError, ValueError):
    """A model could not be found or is not a ColBERT checkpoint we can load."""


class MissingDependencyError(JaColBERTError, ImportError):
    """An optional package needed for this operation is not installed."""


JAPANESE_TOKENIZER_HINT = (
    "Japanese tokenization needs MeCab through fugashi with the unidic-lite dictionary: "
    "pip install fugashi unidic-lite"
)


def require_text_list(texts: object, what: str) -> list[str]:
    """Return ``texts`` as a list of non-empty strings, or raise a clear error."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"{what} must be a string or a list of strings, got {type(texts).__name__}")
    if not texts:
        raise ValueError(f"{what} is an empty list; pass at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{what}[{i}] is empty or only whitespace; pass non-empty text")
    return list(texts)

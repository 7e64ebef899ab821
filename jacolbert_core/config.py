"""Encoding settings shared by the encoder, the index manifest and saved checkpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

QueryLength = Literal["fixed", "dynamic"]

DEFAULT_MODEL = "answerdotai/JaColBERTv2.5"


@dataclass(frozen=True)
class EncodingConfig:
    """How texts become token vectors; mirrors the fields of ColBERT's ``artifact.metadata``.

    ``query_length`` chooses how many positions a query gets:

    * ``"fixed"`` (the reference default): every query is truncated or padded with ``[MASK]``
      to exactly ``query_maxlen`` positions.
    * ``"dynamic"`` (JaColBERTv2.5): with ``n`` the query's token count *including* ``[CLS]``,
      the query marker and ``[SEP]``, the length is ``n + 8`` when ``n % 32 <= 8`` and the
      next multiple of 32 otherwise (the rule of the JQaRA evaluator used to report v2.5).
      Queries are never truncated below the model's maximum input length.
    """

    query_maxlen: int = 32
    doc_maxlen: int = 300
    dim: int = 128
    query_token: str = "[unused0]"
    doc_token: str = "[unused1]"
    mask_punctuation: bool = True
    attend_to_mask_tokens: bool = False
    query_length: QueryLength = "fixed"

    def __post_init__(self) -> None:
        if self.query_length not in ("fixed", "dynamic"):
            raise ValueError(
                f"query_length must be 'fixed' or 'dynamic', got {self.query_length!r}"
            )
        for name in ("query_maxlen", "doc_maxlen", "dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], **overrides: Any) -> EncodingConfig:
        """Read a colbert-ai ``artifact.metadata`` dict (unknown keys are ignored)."""
        values: dict[str, Any] = {
            "query_maxlen": metadata.get("query_maxlen", cls.query_maxlen),
            "doc_maxlen": metadata.get("doc_maxlen", cls.doc_maxlen),
            "dim": metadata.get("dim", cls.dim),
            "query_token": metadata.get("query_token_id", cls.query_token),
            "doc_token": metadata.get("doc_token_id", cls.doc_token),
            "mask_punctuation": metadata.get("mask_punctuation", cls.mask_punctuation),
            "attend_to_mask_tokens": metadata.get(
                "attend_to_mask_tokens", cls.attend_to_mask_tokens
            ),
            "query_length": metadata.get("jacolbert_query_length", cls.query_length),
        }
        values.update(overrides)
        return cls(**values)

    def to_metadata(self) -> dict[str, Any]:
        """The colbert-ai ``artifact.metadata`` fields (plus our query-length rule)."""
        return {
            "query_maxlen": self.query_maxlen,
            "doc_maxlen": self.doc_maxlen,
            "dim": self.dim,
            "query_token_id": self.query_token,
            "doc_token_id": self.doc_token,
            "query_token": "[Q]",
            "doc_token": "[D]",
            "mask_punctuation": self.mask_punctuation,
            "attend_to_mask_tokens": self.attend_to_mask_tokens,
            "similarity": "cosine",
            "interaction": "colbert",
            "jacolbert_query_length": self.query_length,
        }

    def replace(self, **changes: Any) -> EncodingConfig:
        return dataclasses.replace(self, **changes)

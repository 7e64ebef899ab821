"""ColBERT input construction: markers, truncation, [MASK] augmentation, punctuation skiplist.

Identical to colbert-ai 0.2.22 (and PyLate): the bare text is tokenized and the query or
document marker is inserted after ``[CLS]``, giving ``[CLS] [Q] tokens [SEP]`` and
``[CLS] [D] tokens [SEP]``. (Older colbert-ai tokenized ``". " + text`` and overwrote the
``.``; with MeCab that prefix can change how the start of a text is split into words.)
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from jacolbert_core.config import EncodingConfig
from jacolbert_core.errors import CheckpointError
from jacolbert_core.model.fast_tokenizer import FastJapaneseTokenizer

MAX_MODEL_LENGTH = 512


@dataclass
class TokenBatch:
    """Padded model inputs; ``lengths[i]`` is how many output rows text ``i`` owns."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: list[int]


def dynamic_query_length(n_tokens: int) -> int:
    """JaColBERTv2.5's query length for ``n_tokens`` (special tokens and marker included)."""
    if n_tokens % 32 <= 8:
        return n_tokens + 8
    return -(-n_tokens // 32) * 32


class ColBERTTokenizer:
    """Turns query and document strings into ColBERT model inputs."""

    def __init__(self, tokenizer: Any, config: EncodingConfig, max_length: int = MAX_MODEL_LENGTH):
        self.hf = tokenizer
        self.config = config
        self.max_length = max_length
        self.fast = FastJapaneseTokenizer.from_tokenizer(tokenizer)
        self.query_marker_id = self._token_id(config.query_token)
        self.doc_marker_id = self._token_id(config.doc_token)
        self.cls_id = _first_id(tokenizer, "cls_token_id", "bos_token_id")
        self.sep_id = _first_id(tokenizer, "sep_token_id", "eos_token_id")
        self.mask_id = _first_id(tokenizer, "mask_token_id")
        self.pad_id = _first_id(tokenizer, "pad_token_id")
        self.skiplist = self._punctuation_ids() if config.mask_punctuation else frozenset()

    def _token_id(self, token: str) -> int:
        token_id = self.hf.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.hf.unk_token_id:
            raise CheckpointError(f"marker token {token!r} is not in the tokenizer's vocabulary")
        return int(token_id)

    def _punctuation_ids(self) -> frozenset[int]:
        """First sub-token id of each ASCII punctuation character (the reference's skiplist)."""
        ids = self.token_ids(list(string.punctuation))
        return frozenset(token_ids[0] for token_ids in ids if token_ids)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        texts = list(texts)
        if self.fast is not None:
            return self.fast.encode(texts)
        return self.hf(texts, add_special_tokens=False)["input_ids"]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Model tokens per text (no special tokens): the unit chunking budgets in."""
        return [len(ids) for ids in self.token_ids(texts)]

    def _wrap(self, ids: list[int], limit: int, marker: int) -> list[int]:
        return [self.cls_id, marker, *ids[: limit - 3], self.sep_id]

    def queries(self, texts: Sequence[str]) -> TokenBatch:
        """``[CLS] [Q] q [SEP] [MASK]...``; MASKs are attended only if the config says so."""
        fixed = self.config.query_length == "fixed"
        limit = self.config.query_maxlen if fixed else self.max_length
        sequences = [self._wrap(ids, limit, self.query_marker_id) for ids in self.token_ids(texts)]
        lengths = [
            limit if fixed else min(dynamic_query_length(len(seq)), self.max_length)
            for seq in sequences
        ]
        width = max(lengths)
        input_ids = torch.full((len(texts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(texts), width), dtype=torch.long)
        mask_attended = int(self.config.attend_to_mask_tokens)
        for row, (seq, length) in enumerate(zip(sequences, lengths, strict=True)):
            input_ids[row, :length] = self.mask_id
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, :length] = mask_attended
            attention[row, : len(seq)] = 1
        return TokenBatch(input_ids, attention, lengths)

    def document_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """``[CLS] [D] d [SEP]`` per text, truncated to ``doc_maxlen``."""
        limit = min(self.config.doc_maxlen, self.max_length)
        return [self._wrap(ids, limit, self.doc_marker_id) for ids in self.token_ids(texts)]

    def pad_documents(self, sequences: Sequence[list[int]]) -> TokenBatch:
        """Right-pad document sequences to the longest one in the batch."""
        width = max(len(seq) for seq in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
        return TokenBatch(input_ids, attention, [len(seq) for seq in sequences])

    def keep_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Document positions that yield vectors: not padding, not punctuation."""
        keep = input_ids != self.pad_id
        if self.skiplist:
            skip = torch.tensor(sorted(self.skiplist), dtype=input_ids.dtype)
            keep &= ~torch.isin(input_ids, skip)
        return keep


def _first_id(tokenizer: Any, *names: str) -> int:
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise CheckpointError(f"the tokenizer defines none of {', '.join(names)}")

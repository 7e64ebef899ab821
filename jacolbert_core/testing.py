"""Tiny, deterministic JaColBERT-shaped checkpoints for tests, examples and benchmarks.

Nothing here downloads anything: the vocabulary comes from MeCab tokens of texts you pass
(by default the sample corpus shipped with the package), the weights from a seeded RNG.
The result is a Stanford-ColBERT Hugging Face directory, the layout of the published
JaColBERT checkpoints.
"""

from __future__ import annotations

import json
import random
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from jacolbert_core.config import EncodingConfig

SPECIAL_TOKENS = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sample_corpus() -> list[dict[str, Any]]:
    """The package's Japanese sample passages (``id``, ``text``, ``metadata``)."""
    return _read_jsonl("sample_ja.jsonl")


def sample_queries() -> list[dict[str, Any]]:
    """Queries over :func:`sample_corpus` (``id``, ``query``, ``relevant`` ids)."""
    return _read_jsonl("sample_queries_ja.jsonl")


def spliced_passages(n: int, seed: int, low: int = 100, high: int = 400) -> list[str]:
    """``n`` passages of ``low``-``high`` characters made of :func:`sample_corpus` sentences in
    seeded random order: realistic Japanese text of any volume for benchmarks."""
    sentences = [
        s for doc in sample_corpus() for s in re.split(r"(?<=[。！？\n])", doc["text"]) if s.strip()
    ]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        target = rng.randint(low, high)
        text = ""
        while len(text) < target:
            text += rng.choice(sentences)
        out.append(text[:target])
    return out


def _read_jsonl(name: str) -> list[dict[str, Any]]:
    text = resources.files("jacolbert_core.data").joinpath(name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def japanese_vocab(texts: Iterable[str], max_words: int = 3000) -> list[str]:
    """A WordPiece vocabulary: special tokens, ASCII punctuation and letters, every character
    of ``texts`` (bare and ``##``-continued) and their most frequent MeCab words."""
    import fugashi
    import unidic_lite

    tagger = fugashi.GenericTagger(f'-d "{unidic_lite.DICDIR}" -r "{unidic_lite.DICDIR}/mecabrc"')
    chars: set[str] = set(string.ascii_letters + string.digits)
    words: Counter[str] = Counter()
    for text in texts:
        normalised = unicodedata.normalize("NFKC", text)
        for node in tagger(normalised):
            if node.surface.strip():
                words[node.surface] += 1
                chars.update(node.surface)
    vocab = list(SPECIAL_TOKENS) + list(string.punctuation)
    seen = set(vocab)
    for token in sorted(chars) + ["##" + c for c in sorted(chars)]:
        if token not in seen and not token.isspace():
            vocab.append(token)
            seen.add(token)
    for word, _ in words.most_common():
        if len(vocab) >= len(SPECIAL_TOKENS) + max_words + 2 * len(chars):
            break
        if word not in seen and len(word) > 1:
            vocab.append(word)
            seen.add(word)
    return vocab


def make_japanese_tokenizer(directory: str | Path, texts: Iterable[str] | None = None):
    """Save a ``BertJapaneseTokenizer`` (MeCab + unidic-lite, WordPiece) into ``directory``."""
    from transformers import BertJapaneseTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if texts is None:
        texts = [doc["text"] for doc in sample_corpus()] + [q["query"] for q in sample_queries()]
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(japanese_vocab(texts)) + "\n", encoding="utf-8")
    tokenizer = BertJapaneseTokenizer(
        vocab_file=str(vocab_file),
        do_lower_case=False,
        word_tokenizer_type="mecab",
        subword_tokenizer_type="wordpiece",
        mecab_kwargs={"mecab_dic": "unidic_lite"},
        model_max_length=512,
    )
    tokenizer.save_pretrained(directory)
    return tokenizer


def make_tiny_checkpoint(
    directory: str | Path,
    *,
    texts: Sequence[str] | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    dim: int = 32,
    query_maxlen: int = 32,
    doc_maxlen: int = 128,
    query_length: str = "fixed",
    architecture: str = "HF_ColBERT",
    residual_scale: float = 1.0,
    seed: int = 0,
) -> Path:
    """Write a small random BERT in the Stanford-ColBERT layout and return its directory.

    ``architecture="BertModel"`` reproduces the config.json of answerdotai/JaColBERTv2.4/2.5.
    ``residual_scale < 1`` shrinks every residual branch and the position/type embeddings so
    outputs stay close to their word embeddings: MaxSim then behaves like lexical matching,
    with realistic, peaked score gaps instead of a random model's flat ones.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    directory = Path(directory)
    tokenizer = make_japanese_tokenizer(directory, texts)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer.vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.architectures = [architecture]
    bert = BertModel(config, add_pooling_layer=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # our own init, so the bytes do not depend on the transformers version
        for name, param in sorted(bert.named_parameters()):
            if "LayerNorm" in name:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
                if (
                    ".output.dense." in name
                    or "position_embeddings" in name
                    or "token_type" in name
                ):
                    param.mul_(residual_scale)  # residual branches and non-lexical embeddings
    linear = torch.randn(dim, hidden_size, generator=generator) * hidden_size**-0.5
    state = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
    state["linear.weight"] = linear
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(directory)
    encoding = EncodingConfig(
        query_maxlen=query_maxlen, doc_maxlen=doc_maxlen, dim=dim, query_length=query_length
    )
    metadata = encoding.to_metadata()
    (directory / "artifact.metadata").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    return directory

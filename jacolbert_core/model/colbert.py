"""The ColBERT encoder: checkpoint in, normalised token vectors out."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from jacolbert_core.config import DEFAULT_MODEL, EncodingConfig
from jacolbert_core.errors import require_text_list
from jacolbert_core.heap import retained_heap
from jacolbert_core.model import checkpoint
from jacolbert_core.model.activation import use_native_gelu
from jacolbert_core.model.bert_forward import bert_forward, supports
from jacolbert_core.model.scoring import maxsim, top_k
from jacolbert_core.model.tokenization import ColBERTTokenizer, TokenBatch

_TOKENIZE_CHUNK = 1024  # texts tokenized at a time by iter_encode_documents


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class ColBERT(torch.nn.Module):
    """A ColBERT model: transformer backbone + bias-free linear projection + L2 normalisation.

    Load with :meth:`from_pretrained`; encode with :meth:`encode_queries` and
    :meth:`encode_documents` (float32 arrays, one row per token vector); rank with
    :meth:`score`, :meth:`rerank` or :meth:`search_encoded`.
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        linear: torch.nn.Linear,
        tokenizer: ColBERTTokenizer,
        name: str = "",
    ):
        super().__init__()
        self.backbone = backbone
        self.linear = linear
        self.tokenizer = tokenizer
        self.name = name

    @property
    def config(self) -> EncodingConfig:
        return self.tokenizer.config

    @property
    def lean_inference(self) -> bool:
        """Whether inference skips transformers' per-call overhead (:mod:`.bert_forward`):
        true for a plain BERT backbone, i.e. every JaColBERT checkpoint."""
        return supports(self.backbone)

    @property
    def device(self) -> torch.device:
        return self.linear.weight.device

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = None,
        revision: str | None = None,
        quantize: bool = False,
        **encoding_overrides: Any,
    ) -> ColBERT:
        """Load a Stanford-ColBERT (JaColBERT), PyLate or plain Hugging Face checkpoint.

        ``name_or_path`` is a local directory or a hub id. ``encoding_overrides`` replace
        settings from the checkpoint (e.g. ``query_length="dynamic"``, ``doc_maxlen=512``).
        A plain encoder gets a new random projection, with a warning that it is untrained.
        ``quantize=True`` (CPU only) runs the transformer's linear layers in dynamic int8:
        faster, with slightly different vectors (see benchmarks/bench_encode.py); vectors of a
        quantized model must not be mixed with an index built in exact mode.
        """
        raw = checkpoint.load(name_or_path, revision, **encoding_overrides)
        hidden = raw.backbone.config.hidden_size
        linear = torch.nn.Linear(hidden, raw.encoding.dim, bias=False)
        if raw.linear is None:
            checkpoint.warn_untrained(raw.path, raw.encoding.dim)
        else:
            if tuple(raw.linear.shape) != (raw.encoding.dim, hidden):
                raise checkpoint.CheckpointError(
                    f"linear.weight has shape {tuple(raw.linear.shape)}, expected "
                    f"({raw.encoding.dim}, {hidden}) for dim={raw.encoding.dim}"
                )
            with torch.no_grad():
                linear.weight.copy_(raw.linear)
        max_length = min(
            getattr(raw.backbone.config, "max_position_embeddings", 512),
            getattr(raw.tokenizer, "model_max_length", 512) or 512,
            512,
        )
        tokenizer = ColBERTTokenizer(raw.tokenizer, raw.encoding, max_length=max_length)
        backbone = raw.backbone
        use_native_gelu(backbone)
        if quantize:
            if str(device or default_device()) != "cpu":
                raise ValueError("quantize=True is a CPU mode; pass device='cpu'")
            backbone = _quantize_dynamic_int8(backbone)
        model = cls(backbone, linear, tokenizer, name=str(name_or_path))
        return model.to(device or default_device()).eval()

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the Stanford-ColBERT layout (colbert-ai, RAGatouille and PyLate load it)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        prefix = getattr(self.backbone, "base_model_prefix", "bert") or "bert"
        state = {
            f"{prefix}.{k}": v.detach().cpu().contiguous()
            for k, v in self.backbone.state_dict().items()
        }
        state["linear.weight"] = self.linear.weight.detach().cpu().contiguous()
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
        config = self.backbone.config.to_dict()
        config["architectures"] = ["HF_ColBERT"]  # how PyLate recognises the Stanford layout
        (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        self.tokenizer.hf.save_pretrained(directory)
        metadata = self.config.to_metadata()
        (directory / "artifact.metadata").write_text(
            json.dumps(metadata, indent=2), encoding="utf-8"
        )
        return directory

    # -- differentiable forward passes (training uses these directly) -------------------------

    def _project(self, batch: TokenBatch) -> torch.Tensor:
        input_ids = batch.input_ids.to(self.device)
        attention = batch.attention_mask.to(self.device)
        if not (torch.is_grad_enabled() or self.backbone.training) and self.lean_inference:
            hidden = bert_forward(self.backbone, input_ids, attention)
        else:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention)[0]
        return self.linear(hidden)

    def query_vectors(self, batch: TokenBatch) -> torch.Tensor:
        """[batch, width, dim] normalised query vectors (rows past ``lengths[i]`` are padding)."""
        return torch.nn.functional.normalize(self._project(batch), p=2, dim=2)

    def document_vectors(self, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised document vectors [batch, width, dim] and the keep mask [batch, width]."""
        keep = self.tokenizer.keep_mask(batch.input_ids).to(self.device)
        vectors = self._project(batch) * keep.unsqueeze(2)
        return torch.nn.functional.normalize(vectors, p=2, dim=2), keep

    # -- inference API ------------------------------------------------------------------------

    def encode_queries(self, texts: str | Sequence[str], batch_size: int = 64) -> list[np.ndarray]:
        """One float32 array [query length, dim] per query."""
        texts = require_text_list(texts, "queries")
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer.queries(texts[start : start + batch_size])
                vectors = self.query_vectors(batch).float().cpu().numpy()
                out.extend(v[:n] for v, n in zip(vectors, batch.lengths, strict=True))
        return out

    def encode_documents(
        self, texts: str | Sequence[str], batch_size: int = 32, show_progress: bool = False
    ) -> list[np.ndarray]:
        """One float32 array [kept tokens, dim] per document (padding and punctuation dropped)."""
        texts = require_text_list(texts, "documents")
        out: list[np.ndarray] = [np.empty(0)] * len(texts)
        for indices, arrays in self.iter_encode_documents(texts, batch_size, show_progress):
            for i, array in zip(indices, arrays, strict=True):
                out[i] = array
        return out

    def iter_encode_documents(
        self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False
    ) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        """Encode in length-sorted batches, yielding (positions in ``texts``, arrays).

        Memory stays bounded by one batch; callers stream the arrays to disk. With more than
        one batch, freed batches stay in the C heap for the next one until the loop ends
        (:func:`retained_heap`; a one-batch call, e.g. a rerank, has nothing to reuse and would
        only fault its pages in again on the next call after the release). The only
        per-collection state is the token ids, tokenized in chunks and kept as one int32
        array (4 bytes a token rather than Python lists of ints), so the global length sort,
        and with it every batch and every vector, is unchanged.
        """
        ids, offsets = self._document_id_table(texts)
        order = np.argsort(np.diff(offsets), kind="stable").tolist()  # = sorted(key=len)
        bar = tqdm(total=len(order), desc="Encoding", unit="doc", disable=not show_progress)
        bulk = retained_heap() if len(order) > batch_size else contextlib.nullcontext()
        with torch.inference_mode(), bulk, bar:
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                batch = self.tokenizer.pad_documents(
                    [ids[offsets[i] : offsets[i + 1]].tolist() for i in indices]
                )
                vectors, keep = self.document_vectors(batch)
                vectors, keep = vectors.float().cpu(), keep.cpu()
                yield indices, [v[k].numpy() for v, k in zip(vectors, keep, strict=True)]
                bar.update(len(indices))

    def _document_id_table(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every text's document token ids, concatenated (int32), and ``[n + 1]`` offsets."""
        parts: list[np.ndarray] = []
        lengths = np.zeros(len(texts) + 1, dtype=np.int64)
        for start in range(0, len(texts), _TOKENIZE_CHUNK):
            sequences = self.tokenizer.document_ids(texts[start : start + _TOKENIZE_CHUNK])
            lengths[start + 1 : start + 1 + len(sequences)] = [len(s) for s in sequences]
            parts.append(np.fromiter(chain.from_iterable(sequences), dtype=np.int32))
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        return ids, np.cumsum(lengths)

    def score(self, query: str, texts: str | Sequence[str], batch_size: int = 32) -> np.ndarray:
        """MaxSim score of ``query`` against each text, in input order."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        [query_vectors] = self.encode_queries([query])
        return maxsim(query_vectors, self.encode_documents(texts, batch_size))

    def rerank(
        self, query: str, texts: str | Sequence[str], k: int | None = None, batch_size: int = 32
    ) -> list[tuple[int, float]]:
        """(index into ``texts``, score) pairs, best first, at most ``k`` of them."""
        scores = self.score(query, texts, batch_size)
        return top_k(scores, _check_k(k, len(scores)))

    def search_encoded(
        self, queries: str | Sequence[str], documents: Sequence[np.ndarray], k: int = 10
    ) -> list[list[tuple[int, float]]]:
        """Exhaustive in-memory search of pre-encoded documents; one ranked list per query."""
        k = _check_k(k, len(documents))
        return [top_k(maxsim(q, documents), k) for q in self.encode_queries(queries)]


def _quantize_dynamic_int8(backbone: torch.nn.Module) -> torch.nn.Module:
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks the quantized tensor API as deprecated
        return quantize_dynamic(backbone, {torch.nn.Linear}, dtype=torch.qint8)


def _check_k(k: int | None, n: int) -> int:
    if k is None:
        return n
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return min(k, n)

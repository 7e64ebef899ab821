"""Finding and reading checkpoints: Stanford ColBERT, PyLate/sentence-transformers, plain HF.

The published JaColBERT checkpoints are Stanford-ColBERT directories: backbone weights under
the model's base prefix (``bert.``), a bias-free ``linear.weight`` [dim, hidden] and an
``artifact.metadata`` JSON. Some declare ``BertModel`` in config.json, so the layout is
detected from the weights, never from the declared architecture.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from jacolbert_core.config import EncodingConfig
from jacolbert_core.errors import JAPANESE_TOKENIZER_HINT, CheckpointError, MissingDependencyError

logger = logging.getLogger(__name__)

CheckpointFormat = Literal["stanford", "pylate", "hf"]
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
LINEAR_KEY = "linear.weight"
DYNAMIC_QUERY_MODELS = re.compile(r"JaColBERTv2[.\-_]?[45]", re.IGNORECASE)


@dataclass
class RawCheckpoint:
    """What a checkpoint directory holds, before it becomes a :class:`ColBERT`."""

    path: Path
    format: CheckpointFormat
    backbone: torch.nn.Module
    tokenizer: Any
    linear: torch.Tensor | None
    encoding: EncodingConfig


def resolve(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local checkpoint directory for a path or a Hugging Face hub id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise CheckpointError(
            f"checkpoint directory {name!r} does not exist; pass the path of a directory "
            "holding config.json and the model weights, or a Hugging Face hub id"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, revision=revision))
    except Exception as error:  # offline, unknown repo, gated, ...
        try:
            return Path(snapshot_download(name, revision=revision, local_files_only=True))
        except Exception:
            pass
        raise CheckpointError(
            f"could not fetch model {name!r} from the Hugging Face hub "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            "Check the id and your network, or download the checkpoint elsewhere and pass its "
            "local directory, e.g. ColBERT.from_pretrained('/path/to/JaColBERTv2.5') or "
            "--model /path/to/JaColBERTv2.5"
        ) from error


def load(name_or_path: str | Path, revision: str | None = None, **overrides: Any) -> RawCheckpoint:
    """Read any supported checkpoint; ``overrides`` replace encoding settings."""
    path = resolve(name_or_path, revision)
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{path} is not a model checkpoint: config.json is missing (expected a Stanford "
            "ColBERT / JaColBERT directory, a PyLate model or a Hugging Face encoder)"
        )
    if (path / "modules.json").is_file() and _dense_dir(path) is not None:
        return _load_pylate(path, overrides)
    linear = _read_tensor(path, LINEAR_KEY)
    metadata = (
        _read_json(path / "artifact.metadata") if (path / "artifact.metadata").is_file() else {}
    )
    if linear is not None or metadata:
        if linear is None:
            raise CheckpointError(
                f"{path} has artifact.metadata but no '{LINEAR_KEY}' in its weights; the trained "
                "ColBERT projection is missing, refusing to replace it with a random one"
            )
        fmt: CheckpointFormat = "stanford"
    else:
        fmt = "hf"
    recorded = "query_length" in overrides or "jacolbert_query_length" in metadata
    if not recorded and DYNAMIC_QUERY_MODELS.search(f"{name_or_path} {path}"):
        overrides["query_length"] = "dynamic"  # JaColBERTv2.4/2.5 were trained and evaluated so
    if linear is not None:
        overrides.setdefault("dim", linear.shape[0])
    encoding = EncodingConfig.from_metadata(metadata, **overrides)
    return RawCheckpoint(
        path=path,
        format=fmt,
        backbone=_load_backbone(path),
        tokenizer=load_tokenizer(path),
        linear=linear,
        encoding=encoding,
    )


def load_tokenizer(path: Path) -> Any:
    """The checkpoint's own Hugging Face tokenizer, with a clear error for missing MeCab."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (ImportError, ModuleNotFoundError) as error:
        raise MissingDependencyError(f"{JAPANESE_TOKENIZER_HINT} ({error})") from error
    except (OSError, ValueError) as error:
        raise CheckpointError(f"could not load the tokenizer of {path}: {error}") from error


def _load_backbone(path: Path) -> torch.nn.Module:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    bar_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # 'linear.weight' is expected to be unused here
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(str(path), dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"could not load the transformer weights of {path}: {error}"
        ) from error
    finally:
        hf_logging.set_verbosity(previous)
        if bar_enabled:
            hf_logging.enable_progress_bar()
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # ColBERT uses token states only; keep no untrained pooler around
    return model.eval()


def _load_pylate(path: Path, overrides: dict[str, Any]) -> RawCheckpoint:
    dense = _dense_dir(path)
    assert dense is not None
    linear = _read_tensor(dense, LINEAR_KEY)
    if linear is None:
        raise CheckpointError(f"PyLate Dense layer in {dense} has no '{LINEAR_KEY}'")
    settings = {}
    if (path / "config_sentence_transformers.json").is_file():
        settings = _read_json(path / "config_sentence_transformers.json")
    metadata = {
        "query_maxlen": settings.get("query_length"),
        "doc_maxlen": settings.get("document_length"),
        "query_token_id": settings.get("query_prefix"),
        "doc_token_id": settings.get("document_prefix"),
        "attend_to_mask_tokens": settings.get("attend_to_expansion_tokens"),
        "dim": linear.shape[0],
    }
    metadata = {k: v for k, v in metadata.items() if v is not None}
    transformer_dir = _transformer_dir(path)
    return RawCheckpoint(
        path=path,
        format="pylate",
        backbone=_load_backbone(transformer_dir),
        tokenizer=load_tokenizer(transformer_dir),
        linear=linear,
        encoding=EncodingConfig.from_metadata(metadata, **overrides),
    )


def _modules(path: Path) -> list[dict[str, Any]]:
    modules = _read_json(path / "modules.json")
    return modules if isinstance(modules, list) else []


def _dense_dir(path: Path) -> Path | None:
    for module in _modules(path):
        if module.get("type", "").endswith("Dense"):
            return path / module.get("path", "")
    return None


def _transformer_dir(path: Path) -> Path:
    for module in _modules(path):
        if module.get("type", "").endswith("Transformer"):
            return path / module.get("path", "")
    return path


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {file}: {error}") from error


def _read_tensor(path: Path, key: str) -> torch.Tensor | None:
    """One tensor from (possibly sharded) safetensors or torch weights, without loading all."""
    for index_name in SHARD_INDEXES:
        if (path / index_name).is_file():
            weight_map = _read_json(path / index_name).get("weight_map", {})
            return _read_tensor_from(path / weight_map[key], key) if key in weight_map else None
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return _read_tensor_from(path / name, key)
    raise CheckpointError(
        f"{path} holds no model weights (looked for {', '.join(WEIGHT_FILES)} and shard indexes)"
    )


def _read_tensor_from(file: Path, key: str) -> torch.Tensor | None:
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as handle:
            return handle.get_tensor(key).float() if key in handle.keys() else None  # noqa: SIM118
    state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    tensor = state.get(key)
    return None if tensor is None else tensor.float()


def warn_untrained(path: Path, dim: int) -> None:
    warnings.warn(
        f"{path} is a plain encoder without a ColBERT projection: a new random projection to "
        f"{dim} dimensions was created. It is untrained; fine-tune it before using it for search.",
        stacklevel=3,
    )

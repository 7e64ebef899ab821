"""Checkpoint merging (JaColBERTv2.5): a parameter-wise weighted average of compatible models.

``merged[key] = sum_i w_i * checkpoint_i[key]`` for every floating-point tensor, with the
weights normalised to sum to one (equal weights by default). Checkpoints must agree on the
parameter names and shapes, on the backbone's architecture settings (config.json), on the
ColBERT encoding settings (artifact.metadata) and on the tokenizer's vocabulary; the first
difference found is reported by name. Integer buffers must be identical and are copied.
The result is written in the Stanford-ColBERT layout with the first checkpoint's tokenizer
and metadata.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from jacolbert_core.errors import JaColBERTError
from jacolbert_core.model.colbert import ColBERT

# config.json fields that name or describe a file rather than the architecture
_CONFIG_IGNORED = {
    "_name_or_path",
    "architectures",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "_attn_implementation_autoset",
    "_commit_hash",
}


class MergeError(JaColBERTError, ValueError):
    """The checkpoints cannot be averaged."""


def stanford_state(model: ColBERT) -> dict[str, torch.Tensor]:
    """The model's tensors under their Stanford-layout names (``bert.*``, ``linear.weight``)."""
    prefix = getattr(model.backbone, "base_model_prefix", "bert") or "bert"
    state = {f"{prefix}.{k}": v for k, v in model.backbone.state_dict().items()}
    state["linear.weight"] = model.linear.weight
    return state


def _architecture(model: ColBERT) -> dict:
    config = model.backbone.config.to_dict()
    return {k: v for k, v in config.items() if k not in _CONFIG_IGNORED}


def check_compatible(reference: ColBERT, other: ColBERT, name: str, ref_name: str) -> None:
    """Raise :class:`MergeError` naming the first difference between two models."""
    ref_enc, enc = reference.config, other.config
    for field in ref_enc.__dataclass_fields__:
        if getattr(ref_enc, field) != getattr(enc, field):
            raise MergeError(
                f"cannot merge {name} with {ref_name}: encoding setting '{field}' differs "
                f"({getattr(enc, field)!r} vs {getattr(ref_enc, field)!r})"
            )
    ref_arch, arch = _architecture(reference), _architecture(other)
    for key in sorted(set(ref_arch) | set(arch)):
        if ref_arch.get(key) != arch.get(key):
            raise MergeError(
                f"cannot merge {name} with {ref_name}: config.json field '{key}' differs "
                f"({arch.get(key)!r} vs {ref_arch.get(key)!r})"
            )
    ref_vocab, vocab = reference.tokenizer.hf.get_vocab(), other.tokenizer.hf.get_vocab()
    if ref_vocab != vocab:
        diff = sorted(set(ref_vocab.items()) ^ set(vocab.items()))
        token = diff[0][0] if diff else "?"
        raise MergeError(
            f"cannot merge {name} with {ref_name}: the tokenizer vocabularies differ "
            f"(first difference at token {token!r}; {len(vocab)} vs {len(ref_vocab)} tokens)"
        )
    ref_state, state = stanford_state(reference), stanford_state(other)
    for key in ref_state:
        if key not in state:
            raise MergeError(f"cannot merge {name} with {ref_name}: {name} has no key '{key}'")
    for key in state:
        if key not in ref_state:
            raise MergeError(
                f"cannot merge {name} with {ref_name}: {name} has an extra key '{key}'"
            )
    for key, tensor in ref_state.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise MergeError(
                f"cannot merge {name} with {ref_name}: key '{key}' has shape "
                f"{tuple(state[key].shape)} vs {tuple(tensor.shape)}"
            )


def normalise_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise MergeError(f"{len(weights)} weights given for {n} checkpoints")
    if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise MergeError(f"weights must be non-negative with a positive sum, got {weights}")
    total = sum(weights)
    return [w / total for w in weights]


def merge_models(
    models: Sequence[ColBERT],
    weights: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
) -> ColBERT:
    """Average ``models`` into the first one (changed in place and returned)."""
    if len(models) < 2:
        raise MergeError("merging needs at least two checkpoints")
    names = list(names) if names is not None else [m.name or f"#{i}" for i, m in enumerate(models)]
    weights = normalise_weights(weights, len(models))
    base = models[0]
    for model, name in zip(models[1:], names[1:], strict=True):
        check_compatible(base, model, name, names[0])
    states = [stanford_state(m) for m in models]
    merged: dict[str, torch.Tensor] = {}
    for key, tensor in states[0].items():
        if tensor.is_floating_point():
            total = torch.zeros_like(tensor, dtype=torch.float64, device="cpu")
            for weight, state in zip(weights, states, strict=True):
                total += weight * state[key].detach().to("cpu", torch.float64)
            merged[key] = total.to(tensor.dtype)
        else:
            for state, name in zip(states[1:], names[1:], strict=True):
                if not torch.equal(state[key].cpu(), tensor.cpu()):
                    raise MergeError(
                        f"cannot merge {name} with {names[0]}: non-float tensor '{key}' differs"
                    )
            merged[key] = tensor.detach().cpu()
    with torch.no_grad():
        for key, tensor in states[0].items():
            tensor.copy_(merged[key].to(tensor.device))
    return base


def merge_checkpoints(
    paths: Sequence[str | Path],
    out: str | Path,
    weights: Sequence[float] | None = None,
) -> Path:
    """Average the checkpoints at ``paths`` and write the result to ``out`` (Stanford layout).

    Checkpoints are loaded one at a time on the CPU; the running sum is kept in float64.
    """
    if len(paths) < 2:
        raise MergeError("merging needs at least two checkpoints")
    weights = normalise_weights(weights, len(paths))
    out = Path(out)
    for path in paths:
        if Path(path).resolve() == out.resolve():
            raise MergeError(f"--out {out} is one of the inputs; choose another directory")
    base = ColBERT.from_pretrained(paths[0], device="cpu")
    base_state = stanford_state(base)
    totals = {
        k: v.detach().to(torch.float64) * weights[0]
        for k, v in base_state.items()
        if v.is_floating_point()
    }
    for path, weight in zip(paths[1:], weights[1:], strict=True):
        other = ColBERT.from_pretrained(path, device="cpu")
        check_compatible(base, other, str(path), str(paths[0]))
        for key, tensor in stanford_state(other).items():
            if key in totals:
                totals[key] += tensor.detach().to(torch.float64) * weight
            elif not torch.equal(tensor, base_state[key]):
                raise MergeError(
                    f"cannot merge {path} with {paths[0]}: non-float tensor '{key}' differs"
                )
        del other
    with torch.no_grad():
        for key, total in totals.items():
            base_state[key].copy_(total.to(base_state[key].dtype))
    base.save_pretrained(out)
    return out

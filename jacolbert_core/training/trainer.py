"""Fine-tuning a ColBERT on n-way groups: KL distillation (v2.5) or contrastive (v1).

One optimiser step consumes ``batch_size * gradient_accumulation`` groups. The data order
is a seeded permutation per epoch, addressed by the micro-batch counter, so a resumed run
sees exactly the batches an uninterrupted one would have seen.

Checkpoints (``output_dir/checkpoint-0000100/``) are Stanford-ColBERT directories written by
:meth:`ColBERT.save_pretrained` (config.json with ``HF_ColBERT``, ``bert.*`` +
``linear.weight`` safetensors, tokenizer, artifact.metadata) plus:

* ``trainer_state.json``: step, micro-batches seen, seed, loss history, the run's settings;
* ``optimizer.pt``: the optimiser's state dict (tensors and numbers only, so it loads with
  ``torch.load(..., weights_only=True)``);
* ``rng_state.pt``: torch CPU (and CUDA) generator states (dropout), same loading rule.

The final model is written to ``output_dir`` itself (same layout), so
``ColBERT.from_pretrained(output_dir)`` gives the trained model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from jacolbert_core.errors import JaColBERTError, MissingDependencyError
from jacolbert_core.model.colbert import ColBERT
from jacolbert_core.model.tokenization import TokenBatch
from jacolbert_core.training import losses
from jacolbert_core.training.data import TrainingGroup, uniform_groups

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng_state.pt"

LossName = Literal["kl", "contrastive"]
OptimizerName = Literal["adamw", "schedulefree"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass
class TrainConfig:
    """Settings of a training run (all recorded in ``trainer_state.json``).

    ``max_steps`` (optimiser steps) wins over ``epochs``. ``warmup_steps`` wins over
    ``warmup_ratio``. AdamW's learning rate rises linearly over the warm-up, then decays
    linearly to zero at the last step; schedule-free AdamW (``optimizer="schedulefree"``,
    needs ``pip install schedulefree``) gets the same warm-up and no decay.
    ``precision="auto"`` is bf16 (or fp16 with loss scaling) autocast on CUDA, fp32 on CPU.
    ``save_every`` > 0 writes a checkpoint every that many steps (``keep_checkpoints`` of
    them are kept, 0 = all); ``resume=True`` continues from the newest checkpoint found in
    ``output_dir``.
    """

    output_dir: str | Path
    loss: LossName = "kl"
    nway: int | None = None
    batch_size: int = 8
    gradient_accumulation: int = 1
    learning_rate: float = 1e-5
    max_steps: int | None = None
    epochs: float = 1.0
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    optimizer: OptimizerName = "adamw"
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    normalize_scores: bool = True
    in_batch_negatives: bool = False
    precision: Precision = "auto"
    save_every: int = 0
    keep_checkpoints: int = 3
    seed: int = 42
    resume: bool = True
    show_progress: bool = True

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if self.loss not in ("kl", "contrastive"):
            raise ValueError(f"loss must be 'kl' or 'contrastive', got {self.loss!r}")
        if self.optimizer not in ("adamw", "schedulefree"):
            raise ValueError(f"optimizer must be 'adamw' or 'schedulefree', got {self.optimizer!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        for name in ("batch_size", "gradient_accumulation"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.max_steps is None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.in_batch_negatives and self.loss != "contrastive":
            raise ValueError("in-batch negatives apply to the contrastive loss only")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["output_dir"] = str(self.output_dir)
        return out


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    start_step: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    nway: int = 0

    @property
    def steps_per_second(self) -> float:
        done = self.steps - self.start_step
        return done / self.seconds if self.seconds > 0 else 0.0


class Trainer:
    """Train ``model`` (a :class:`ColBERT`, changed in place) on ``groups``."""

    def __init__(self, model: ColBERT, groups: Sequence[TrainingGroup], config: TrainConfig):
        if not isinstance(model, ColBERT):
            raise TypeError(f"model must be a ColBERT, got {type(model).__name__}")
        self.model = model
        self.config = config
        self.groups, self.nway = uniform_groups(groups, config.nway)
        if len(self.groups) < len(groups):
            logger.warning(
                "%d of %d groups have fewer than %d documents and are skipped",
                len(groups) - len(self.groups),
                len(groups),
                self.nway,
            )
        if config.loss == "kl" and any(g.scores is None for g in self.groups):
            raise JaColBERTError(
                "the KL distillation loss needs teacher scores (scored n-way data: "
                '{"qid", "pos", "negs", "scores"}); score mined groups with a teacher first, '
                "or train with --loss contrastive"
            )
        if config.loss == "kl" and config.normalize_scores and self.nway < 3:
            raise JaColBERTError(
                "KL distillation with min-max normalised scores needs groups of at least 3 "
                "documents (two always normalise to 0 and 1: no gradient); raise --nway"
            )
        if len(self.groups) < config.batch_size:
            raise JaColBERTError(
                f"{len(self.groups)} training groups are fewer than one batch "
                f"({config.batch_size}); lower the batch size"
            )
        self.batches_per_epoch = len(self.groups) // config.batch_size
        per_step = config.gradient_accumulation
        if config.max_steps is not None:
            self.total_steps = config.max_steps
        else:
            self.total_steps = max(1, math.ceil(self.batches_per_epoch * config.epochs / per_step))
        if config.warmup_steps is not None:
            self.warmup_steps = max(0, min(config.warmup_steps, self.total_steps))
        else:
            self.warmup_steps = int(config.warmup_ratio * self.total_steps)
        self._documents = self._tokenize_documents()
        self.optimizer = self._make_optimizer()
        self.amp_dtype, self.scaler = self._precision()
        self.step = 0
        self.loss_history: list[float] = []
        self._order_epoch: int | None = None
        self._order_cache: list[int] = []

    # -- setup --------------------------------------------------------------------------------

    def _tokenize_documents(self) -> dict[str, list[int]]:
        unique = sorted({text for g in self.groups for text in g.texts})
        ids = self.model.tokenizer.document_ids(unique)
        return dict(zip(unique, ids, strict=True))

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if cfg.optimizer == "schedulefree":
            try:
                import schedulefree
            except ImportError as error:
                raise MissingDependencyError(
                    "optimizer 'schedulefree' needs the schedulefree package: "
                    "pip install schedulefree (or use --optimizer adamw)"
                ) from error
            return schedulefree.AdamWScheduleFree(
                groups, lr=cfg.learning_rate, warmup_steps=self.warmup_steps
            )
        return torch.optim.AdamW(groups, lr=cfg.learning_rate)

    def _precision(self):
        device = self.model.device.type
        wanted = self.config.precision
        if device != "cuda":
            if wanted in ("fp16", "bf16"):
                warnings.warn(
                    f"precision {wanted} is for CUDA; training in fp32 on {device}",
                    stacklevel=3,
                )
            return None, None
        if wanted == "fp32":
            return None, None
        if wanted == "bf16" or (wanted == "auto" and torch.cuda.is_bf16_supported()):
            return torch.bfloat16, None
        return torch.float16, torch.amp.GradScaler("cuda")

    @property
    def schedule_free(self) -> bool:
        return self.config.optimizer == "schedulefree"

    def learning_rate(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based)."""
        base = self.config.learning_rate
        if self.schedule_free:
            return base  # schedulefree applies its own warm-up
        if step < self.warmup_steps:
            return base * (step + 1) / self.warmup_steps
        remaining = self.total_steps - self.warmup_steps
        return base * max(0.0, (self.total_steps - step) / max(1, remaining))

    # -- data ---------------------------------------------------------------------------------

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.groups)))
        random.Random(self.config.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def micro_batch(self, index: int) -> list[TrainingGroup]:
        """The groups of micro-batch ``index`` (counted from the start of training)."""
        epoch, within = divmod(index, self.batches_per_epoch)
        if self._order_epoch != epoch:
            self._order_cache, self._order_epoch = self._order(epoch), epoch
        size = self.config.batch_size
        return [self.groups[i] for i in self._order_cache[within * size : (within + 1) * size]]

    def _inputs(self, batch: list[TrainingGroup]) -> tuple[TokenBatch, TokenBatch]:
        tokenizer = self.model.tokenizer
        queries = tokenizer.queries([g.query for g in batch])
        docs = tokenizer.pad_documents([self._documents[t] for g in batch for t in g.texts])
        return queries, docs

    # -- the loop -----------------------------------------------------------------------------

    def compute_loss(self, batch: list[TrainingGroup]) -> torch.Tensor:
        """The configured loss of one micro-batch (differentiable)."""
        cfg = self.config
        queries, docs = self._inputs(batch)
        autocast = (
            torch.autocast("cuda", dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            q = self.model.query_vectors(queries)
            d, keep = self.model.document_vectors(docs)
        q, d = q.float(), d.float()
        q_mask = losses.query_mask(queries.lengths, q.shape[1], device=q.device)
        if cfg.in_batch_negatives:
            scores = losses.pairwise_scores(q, q_mask, d, keep)
            return losses.contrastive_loss(scores, self.nway, temperature=cfg.temperature)
        scores = losses.group_scores(q, q_mask, d, keep)
        if cfg.loss == "contrastive":
            return losses.contrastive_loss(scores, self.nway, temperature=cfg.temperature)
        teacher = torch.tensor([g.scores for g in batch], dtype=torch.float32)
        return losses.kl_distillation_loss(
            scores,
            teacher,
            temperature=cfg.temperature,
            normalize=cfg.normalize_scores,
        )

    def train(self, stop_at: int | None = None) -> TrainResult:
        """Run (or resume) training to ``total_steps``; the final model goes to
        ``output_dir``. ``stop_at`` ends the run early after that step with a checkpoint
        (resumable later) instead of the final model, e.g. for time-boxed jobs."""
        cfg = self.config
        output = Path(cfg.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        start = 0
        if cfg.resume:
            latest = latest_checkpoint(output)
            if latest is not None:
                start = self.load_checkpoint(latest)
                logger.info("resumed from %s at step %d", latest, start)
        self.step = start
        first = len(self.loss_history)
        self.model.train()
        if self.schedule_free:
            self.optimizer.train()
        accum = cfg.gradient_accumulation
        bar = tqdm(
            total=self.total_steps,
            initial=start,
            desc="Training",
            unit="step",
            disable=not cfg.show_progress,
        )
        began = time.perf_counter()
        running = None
        params = [p for p in self.model.parameters() if p.requires_grad]
        with bar:
            end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
            while self.step < end:
                lr = self.learning_rate(self.step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for micro in range(accum):
                    loss = self.compute_loss(self.micro_batch(self.step * accum + micro)) / accum
                    if self.scaler is not None:
                        self.scaler.scale(loss).backward()
                    else:
                        loss.backward()
                    total += float(loss.detach())
                if not math.isfinite(total):
                    raise JaColBERTError(
                        f"the loss became {total} at step {self.step}; lower the learning rate"
                    )
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)
                if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.step += 1
                self.loss_history.append(total)
                running = total if running is None else 0.9 * running + 0.1 * total
                bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.2e}")
                bar.update(1)
                due = cfg.save_every > 0 and self.step % cfg.save_every == 0
                if due and self.step < end:
                    self.save_checkpoint(output / f"{CHECKPOINT_PREFIX}{self.step:07d}")
                    self._prune(output)
        seconds = time.perf_counter() - began
        result = TrainResult(
            output, self.step, start, self.loss_history[first:], seconds, self.nway
        )
        finished = self.step >= self.total_steps
        due = not finished or (cfg.save_every > 0 and self.step % cfg.save_every == 0)
        if due and self.step > start:
            self.save_checkpoint(output / f"{CHECKPOINT_PREFIX}{self.step:07d}")
            self._prune(output)
        self._eval_weights()
        if not finished:
            return result
        self.model.save_pretrained(output)
        (output / STATE_FILE).write_text(json.dumps(self._state(), indent=2), encoding="utf-8")
        return result

    # -- checkpoints --------------------------------------------------------------------------

    def _eval_weights(self) -> None:
        """Put the weights to keep into the model (schedule-free: its averaged iterate)."""
        self.model.eval()
        if self.schedule_free:
            self.optimizer.eval()

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "total_steps": self.total_steps,
            "micro_batches_seen": self.step * self.config.gradient_accumulation,
            "nway": self.nway,
            "groups": len(self.groups),
            "seed": self.config.seed,
            "base_model": self.model.name,
            "loss_history": [round(x, 6) for x in self.loss_history[-1000:]],
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "config": self.config.to_json(),
        }

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Write the model (Stanford layout), optimiser, RNG and step into ``directory``."""
        directory = Path(directory)
        tmp = directory.with_name(f".tmp-{directory.name}")
        if tmp.exists():
            shutil.rmtree(tmp)
        self._eval_weights()
        try:
            self.model.save_pretrained(tmp)
            torch.save(self.optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            rng = {"cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state_all()
            torch.save(rng, tmp / RNG_FILE)
            (tmp / STATE_FILE).write_text(json.dumps(self._state(), indent=2), encoding="utf-8")
        finally:
            self.model.train()
            if self.schedule_free:
                self.optimizer.train()
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
        return directory

    def load_checkpoint(self, directory: str | Path) -> int:
        """Restore weights, optimiser, RNG and step from a checkpoint; returns the step."""
        directory = Path(directory)
        state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        load_weights(self.model, directory)
        if state.get("nway") not in (None, self.nway):
            raise JaColBERTError(
                f"{directory} was trained with nway={state['nway']}, this run has "
                f"nway={self.nway}; pass the same data and --nway, or a new output directory"
            )
        path = directory / OPTIMIZER_FILE
        optimizer_state = torch.load(path, weights_only=True, map_location=self.model.device)
        self.optimizer.load_state_dict(optimizer_state)
        rng = torch.load(directory / RNG_FILE, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.loss_history = list(state.get("loss_history", []))
        return int(state["step"])

    def _prune(self, output: Path) -> None:
        keep = self.config.keep_checkpoints
        if keep <= 0:
            return
        for old in list_checkpoints(output)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [
        p
        for p in output_dir.iterdir()
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and (p / STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def load_weights(model: ColBERT, directory: str | Path) -> None:
    """Copy a Stanford-layout ``model.safetensors`` (as written by save_pretrained) into
    ``model``; every backbone key and ``linear.weight`` must be present."""
    from safetensors.torch import load_file

    state = load_file(str(Path(directory) / "model.safetensors"), device=str(model.device))
    prefix = (getattr(model.backbone, "base_model_prefix", "bert") or "bert") + "."
    backbone = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = model.backbone.load_state_dict(backbone, strict=False)
    if missing:
        raise JaColBERTError(f"{directory} lacks weights for {missing[0]!r}")
    with torch.no_grad():
        model.linear.weight.copy_(state["linear.weight"])

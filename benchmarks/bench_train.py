"""Training throughput on CPU: optimiser steps per second of ``Trainer``.

    python benchmarks/bench_train.py [--steps 30] [--threads 1 2] [--json out.json]

Models are random checkpoints from jacolbert_core.testing (no download): ``tiny`` (2 layers,
hidden 64, dim 32: the tests' model) and ``small`` (4 layers, hidden 256, 4 heads, dim 128).
Data: n-way groups from the sample corpus (query = a sentence of a passage, positive = that
passage, random negatives, a character-bigram "teacher" score), KL loss, AdamW, fp32,
batch ``--batch-size`` groups of ``--nway`` documents truncated at ``--doc-maxlen`` tokens,
queries at the checkpoint's 32 tokens. Each configuration first runs a few warm-up steps;
the figure is steps / wall time of the measured run (tokenisation, forward, backward, clip,
optimiser step; no checkpoint writes). Per step the model sees ``batch`` queries and
``batch * nway`` documents.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
from pathlib import Path

import torch

from jacolbert_core import ColBERT
from jacolbert_core.testing import make_tiny_checkpoint, sample_corpus
from jacolbert_core.training.data import TrainingGroup
from jacolbert_core.training.trainer import TrainConfig, Trainer

MODELS = {
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=2, dim=32),
    "small": dict(hidden_size=256, num_layers=4, num_heads=4, dim=128),
}


def groups(nway: int, seed: int = 0) -> list[TrainingGroup]:
    corpus = {d["id"]: d["text"] for d in sample_corpus()}
    ids = list(corpus)
    rng = random.Random(seed)
    out = []
    for pid, text in corpus.items():
        for j, sentence in enumerate(s for s in text.split("。") if s.strip()):
            negatives = rng.sample([i for i in ids if i != pid], nway - 1)
            doc_ids = (pid, *negatives)
            grams = {sentence[i : i + 2] for i in range(len(sentence) - 1)}
            scores = tuple(
                len(grams & {corpus[d][i : i + 2] for i in range(len(corpus[d]) - 1)})
                / max(1, len(grams))
                for d in doc_ids
            )
            texts = tuple(corpus[d] for d in doc_ids)
            out.append(TrainingGroup(f"{pid}-{j}", sentence, doc_ids, texts, scores))
    return out


def measure(checkpoint: Path, data, args, threads: int, work: Path) -> dict:
    torch.set_num_threads(threads)
    model = ColBERT.from_pretrained(checkpoint, device="cpu", doc_maxlen=args.doc_maxlen)

    def config(name: str, steps: int) -> TrainConfig:
        return TrainConfig(
            output_dir=work / name,
            loss=args.loss,
            nway=args.nway,
            batch_size=args.batch_size,
            learning_rate=1e-4,
            max_steps=steps,
            resume=False,
            show_progress=False,
        )

    Trainer(model, data, config("warmup", args.warmup)).train()
    trainer = Trainer(model, data, config("measured", args.steps))
    result = trainer.train()
    return {
        "threads": threads,
        "steps": result.steps,
        "seconds": round(result.seconds, 3),
        "steps_per_s": round(result.steps_per_second, 2),
        "groups_per_s": round(result.steps_per_second * args.batch_size, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="Trainer steps/s on CPU.")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--nway", type=int, default=8)
    parser.add_argument("--doc-maxlen", type=int, default=128)
    parser.add_argument("--loss", choices=("kl", "contrastive"), default="kl")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    data = groups(args.nway)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for name in args.models:
            checkpoint = make_tiny_checkpoint(Path(tmp) / name, seed=0, **MODELS[name])
            for threads in dict.fromkeys(args.threads):
                row = {"model": name, **measure(checkpoint, data, args, threads, Path(tmp))}
                rows.append(row)
                print(
                    f"{name:6s} threads={threads}  {row['steps_per_s']:7.2f} steps/s  "
                    f"{row['groups_per_s']:7.1f} groups/s  ({row['parameters']:,} parameters)",
                    flush=True,
                )
    setup = {
        "batch_size": args.batch_size,
        "nway": args.nway,
        "doc_maxlen": args.doc_maxlen,
        "query_maxlen": 32,
        "loss": args.loss,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(setup))
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": setup, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

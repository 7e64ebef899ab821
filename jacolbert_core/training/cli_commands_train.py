"""``jacolbert train`` and ``jacolbert merge``.

Wire into the main parser with ``register(subparsers)``; each command sets ``run``.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    _register_train(subparsers)
    _register_merge(subparsers)


def _register_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune a ColBERT on n-way groups (KL distillation or contrastive)",
        description=(
            "Train from a Stanford-ColBERT / JaColBERT checkpoint or a plain HF encoder. "
            'DATA is scored n-way JSONL ({"qid","pos","negs","scores"}, for --loss kl) or '
            'mined JSONL ({"qid","query","positives","negatives"}, for --loss contrastive); '
            "--corpus maps passage ids to texts, --queries query ids (when rows lack 'query'). "
            "Checkpoints go to OUT/checkpoint-NNNNNNN, the final model to OUT."
        ),
    )
    p.add_argument("data", help="scored n-way or mined JSONL")
    p.add_argument("--model", required=True, help="starting checkpoint (directory or hub id)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--corpus", help="passages: JSONL (id, text), TSV (id<TAB>text), BEIR folder")
    p.add_argument("--queries", help="queries: JSONL (id, text/query) or TSV")
    p.add_argument("--loss", choices=("kl", "contrastive"), default="kl")
    p.add_argument("--nway", type=int, help="documents per group, positive included")
    p.add_argument("--batch-size", type=int, default=8, help="groups per micro-batch")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--steps", type=int, help="optimiser steps (overrides --epochs)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--warmup", type=float, default=0.1, help="warm-up fraction of the steps")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--optimizer", choices=("adamw", "schedulefree"), default="adamw")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="0 turns clipping off")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument(
        "--no-normalize", action="store_true", help="KL on raw scores (no min-max normalisation)"
    )
    p.add_argument("--in-batch-negatives", action="store_true", help="contrastive loss only")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps")
    p.add_argument("--keep", type=int, default=3, help="checkpoints kept (0 = all)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints in --out")
    p.add_argument("--doc-maxlen", type=int, help="override the checkpoint's doc_maxlen")
    p.add_argument("--query-maxlen", type=int, help="override the checkpoint's query_maxlen")
    p.add_argument("--query-length", choices=("fixed", "dynamic"))
    p.add_argument("--dim", type=int, help="projection size for a plain HF encoder")
    p.add_argument("--device", help="cpu, cuda, ... (default: best available)")
    p.set_defaults(run=run_train)


def _register_merge(subparsers) -> None:
    p = subparsers.add_parser(
        "merge",
        help="average compatible checkpoints parameter by parameter",
        description=(
            "Weighted parameter-wise average of checkpoints with the same parameters, "
            "encoding settings and tokenizer; written in the Stanford-ColBERT layout with the "
            "first checkpoint's tokenizer and metadata."
        ),
    )
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    p.add_argument("--out", required=True, help="directory to write the merged model to")
    p.add_argument(
        "--weights", type=float, nargs="+", help="one per checkpoint (normalised to sum 1)"
    )
    p.set_defaults(run=run_merge)


def run_train(args: argparse.Namespace) -> int:
    from jacolbert_core.datafiles import read_texts
    from jacolbert_core.model.colbert import ColBERT
    from jacolbert_core.training.data import load_groups
    from jacolbert_core.training.trainer import TrainConfig, Trainer

    overrides = {
        key: value
        for key, value in (
            ("doc_maxlen", args.doc_maxlen),
            ("query_maxlen", args.query_maxlen),
            ("query_length", args.query_length),
            ("dim", args.dim),
        )
        if value is not None
    }
    config = TrainConfig(
        output_dir=args.out,
        loss=args.loss,
        nway=args.nway,
        batch_size=args.batch_size,
        gradient_accumulation=args.grad_accum,
        learning_rate=args.lr,
        max_steps=args.steps,
        epochs=args.epochs,
        warmup_ratio=args.warmup,
        warmup_steps=args.warmup_steps,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        temperature=args.temperature,
        normalize_scores=not args.no_normalize,
        in_batch_negatives=args.in_batch_negatives,
        precision=args.precision,
        save_every=args.save_every,
        keep_checkpoints=args.keep,
        seed=args.seed,
        resume=not args.no_resume,
        show_progress=sys.stderr.isatty(),
    )
    corpus = read_texts(args.corpus, title=True) if args.corpus else None
    queries = read_texts(args.queries, kind="queries") if args.queries else None
    groups = load_groups(args.data, corpus=corpus, queries=queries, nway=args.nway, seed=args.seed)
    model = ColBERT.from_pretrained(args.model, device=args.device, **overrides)
    trainer = Trainer(model, groups, config)
    print(
        f"training on {len(trainer.groups)} groups of {trainer.nway} for {trainer.total_steps} "
        f"steps ({config.loss} loss, {config.optimizer}, batch {config.batch_size} x "
        f"{config.gradient_accumulation})",
        file=sys.stderr,
    )
    result = trainer.train()
    done = result.steps - result.start_step
    tail = result.losses[-min(len(result.losses), 20) :]
    loss = f", last loss {sum(tail) / len(tail):.4f}" if tail else ""
    print(
        f"trained {done} steps (to step {result.steps}) in {result.seconds:.1f}s "
        f"({result.steps_per_second:.2f} steps/s){loss}; model saved to {result.output_dir}"
    )
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from jacolbert_core.training.merge import merge_checkpoints

    out = merge_checkpoints(args.checkpoints, args.out, args.weights)
    print(f"merged {len(args.checkpoints)} checkpoints into {out}")
    return 0

"""The JaColBERT training recipe end to end, offline, on the bundled sample corpus.

    python examples/train_loop.py [--steps 150] [--keep DIR]

mine -> teacher scores -> train (KL distillation) -> merge -> index -> eval, with tiny random
checkpoints built on the spot (jacolbert_core.testing), so it needs no download and runs in
about a minute on a laptop CPU. The numbers are those of toy models; the steps, files and
commands are the ones to use with a real checkpoint and data set:

1. Training queries: each sentence of a sample passage, its positive being that passage.
2. ``mine_hard_negatives``: negatives from a dense retriever (here the "teacher" ColBERT,
   indexed on the fly) and from BM25, skipping the top rank and known positives
   (``jacolbert mine``).
3. Teacher scores for the n-way groups (``jacolbert score``): the teacher is a tiny ColBERT
   whose scores behave like lexical matching, standing in for a cross-encoder or BGE-M3.
4. ``Trainer`` with the KL loss over min-max normalised scores (``jacolbert train``).
5. ``merge_checkpoints``: the trained model averaged with its starting checkpoint
   (JaColBERTv2.5's merging step; ``jacolbert merge``).
6. An :class:`Index` built with the merged model, searched once.
7. Evaluation on the sample's real questions (held out from training), BM25 included
   (``jacolbert eval``): the paper-style table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from jacolbert_core import ColBERT, Index
from jacolbert_core.evaluation.datasets import RetrievalDataset
from jacolbert_core.evaluation.evaluate import evaluate_models
from jacolbert_core.testing import make_tiny_checkpoint, sample_corpus, sample_queries
from jacolbert_core.text.chunking import ChunkingConfig
from jacolbert_core.training import mining, teacher
from jacolbert_core.training.data import load_groups
from jacolbert_core.training.merge import merge_checkpoints
from jacolbert_core.training.trainer import TrainConfig, Trainer

DOC_MAXLEN = 64
METRICS = ["ndcg@10", "recall@5", "recall@10", "mrr@10"]


def training_queries(corpus: dict[str, str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    queries, positives = {}, {}
    for pid, text in corpus.items():
        for j, sentence in enumerate(s for s in text.split("。") if s.strip()):
            qid = f"{pid}-s{j}"
            queries[qid], positives[qid] = sentence + "。", [pid]
    return queries, positives


def step(message: str) -> None:
    print(f"\n== {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps")
    parser.add_argument("--keep", help="work in this directory instead of a temporary one")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (tiny models: 1 is fastest)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jacolbert-train-loop-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        run(root, args.steps)
    print(f"\ndone in {time.perf_counter() - began:.0f}s")
    return 0


def run(root: Path, steps: int) -> None:
    corpus = {d["id"]: d["text"] for d in sample_corpus()}
    step("checkpoints: a tiny student and a lexical-like tiny teacher (random weights)")
    base = make_tiny_checkpoint(root / "base", doc_maxlen=DOC_MAXLEN, seed=0)
    teacher_dir = make_tiny_checkpoint(
        root / "teacher", doc_maxlen=DOC_MAXLEN, residual_scale=0.05, seed=3
    )
    teacher_model = ColBERT.from_pretrained(teacher_dir, device="cpu")

    step("mine hard negatives (dense = the teacher's index, then BM25)")
    queries, positives = training_queries(corpus)
    t0 = time.perf_counter()
    records = mining.mine_hard_negatives(
        queries, positives, corpus, dense=teacher_model, n_dense=4, n_bm25=4, skip_top=1, seed=0
    )
    mining.write_mined(root / "mined.jsonl", records)
    sources = {}
    for record in records:
        for negative in record.negatives:
            sources[negative.source] = sources.get(negative.source, 0) + 1
    print(
        f"{len(records)} queries, negatives by source {sources} "
        f"({time.perf_counter() - t0:.1f}s) -> {root / 'mined.jsonl'}"
    )

    step("teacher scores for 8-way groups")
    groups = teacher.groups_from_mined(records, max_negatives=7)
    scored = teacher.score_groups(groups, teacher.ColBERTTeacher(teacher_model), corpus)
    teacher.write_scored(root / "scored.jsonl", scored)
    print(f"{len(groups)} groups -> {root / 'scored.jsonl'}")
    print("first:", (root / "scored.jsonl").read_text(encoding="utf-8").splitlines()[0][:160])

    step(f"train {steps} steps, KL distillation over min-max normalised scores")
    training = load_groups(root / "scored.jsonl", corpus=corpus)
    student = ColBERT.from_pretrained(base, device="cpu")
    config = TrainConfig(
        output_dir=root / "trained",
        loss="kl",
        nway=8,
        batch_size=4,
        learning_rate=1e-3,
        max_steps=steps,
        save_every=max(1, steps // 2),
        seed=0,
        show_progress=sys.stderr.isatty(),
    )
    result = Trainer(student, training, config).train()
    losses = result.losses
    head, tail = losses[: min(20, len(losses))], losses[-min(20, len(losses)) :]
    print(
        f"{result.steps} steps in {result.seconds:.1f}s ({result.steps_per_second:.1f} steps/s); "
        f"KL loss {sum(head) / len(head):.4f} -> {sum(tail) / len(tail):.4f}"
    )

    step("merge the trained model with its starting checkpoint (0.5 / 0.5)")
    merged_dir = merge_checkpoints([root / "trained", base], root / "merged")
    merged = ColBERT.from_pretrained(merged_dir, device="cpu")
    print(f"-> {merged_dir}")

    step("index the sample corpus with the merged model")
    index = Index.create(root / "index", merged, chunking=ChunkingConfig(enabled=False))
    index.add(list(corpus.values()), ids=list(corpus))
    question = sample_queries()[0]["query"]
    print(f"{question} ->", [h.document_id for h in index.search(question, k=3)])

    step("evaluate on the sample's questions (not seen in training)")
    data = RetrievalDataset(
        "sample_ja",
        corpus,
        {q["id"]: q["query"] for q in sample_queries()},
        {q["id"]: {pid: 1 for pid in q["relevant"]} for q in sample_queries()},
    )
    models = {
        "tiny (untrained)": ColBERT.from_pretrained(base, device="cpu"),
        "teacher": teacher_model,
        "trained": student,
    }
    report = evaluate_models(data, models, METRICS, exact=True)
    with_index = evaluate_models(
        data, {"merged": merged}, METRICS, bm25=False, index_path=root / "index", exact=True
    )
    report.results.update(with_index.results)
    report.seconds.update(with_index.seconds)
    print(report.table())
    report.write_json(root / "eval.json")
    print(json.dumps({"written": str(root / "eval.json")}))


if __name__ == "__main__":
    sys.exit(main())

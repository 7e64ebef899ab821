"""Japanese BM25 and hard-negative mining throughput.

    python benchmarks/bench_bm25.py [--passages 100000] [--queries 1000] [--dense 0]

Passages are spliced from the package's sample corpus: 2-5 random sentences each (seeded),
about 130 characters, like short MS MARCO / JQaRA passages. Their vocabulary is small
(~1.3k terms), so posting lists are longer than in real text and query times are
pessimistic. Timed:

* terms: MeCab (``-Owakati``) + NFKC + lower-casing + punctuation filter, and for reference a
  node-by-node fugashi parse (what a naive tokenizer does), on a sample;
* build: terms + bm25s index (the whole ``BM25.build``), passages/s;
* save / load, bytes on disk;
* search: one query at a time (p50 / p95 latency) and batches (queries/s), k=10 and k=100;
* mining: ``mine`` with BM25 only (10 negatives, skip_top 3), queries/s; with ``--dense N``
  also dense mining with a tiny random ColBERT over the first N passages (index build time
  and queries/s: the tiny model says nothing about a real one's quality, only about the
  pipeline's overhead).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from jacolbert_core.testing import sample_corpus, sample_queries
from jacolbert_core.text.lexical import BM25, japanese_terms
from jacolbert_core.training.mining import BM25Retriever, NegativeSource, mine


def synthetic_passages(n: int, seed: int = 0) -> list[str]:
    sentences = [s + "。" for d in sample_corpus() for s in d["text"].split("。") if s.strip()]
    rng = random.Random(seed)
    return ["".join(rng.sample(sentences, rng.randint(2, 5))) for _ in range(n)]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def naive_terms(texts: list[str]) -> list[list[str]]:
    import unicodedata

    import fugashi
    import unidic_lite

    tagger = fugashi.GenericTagger(f'-d "{unidic_lite.DICDIR}" -r "{unidic_lite.DICDIR}/mecabrc"')
    return [[n.surface.lower() for n in tagger(unicodedata.normalize("NFKC", t))] for t in texts]


def row(name: str, value: str, note: str = "") -> None:
    print(f"{name:<34} {value:>16}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000, help="queries for search/mining")
    parser.add_argument("--dense", type=int, default=0, help="passages for dense mining (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    passages = synthetic_passages(args.passages, args.seed)
    chars = sum(map(len, passages)) / len(passages)
    rng = random.Random(args.seed + 1)
    picked = rng.sample(range(len(passages)), min(args.queries, len(passages)))
    queries = {f"q{i}": passages[i].split("。")[0] for i in picked}
    positives = {f"q{i}": [str(i)] for i in picked}
    extra = [q["query"] for q in sample_queries()]
    print(
        f"{len(passages):,} synthetic passages ({chars:.0f} chars on average), "
        f"{len(queries):,} queries, {os.cpu_count()} CPUs"
    )
    print(f"{'measure':<34} {'value':>16}  note")
    print("-" * 78)

    sample = passages[: min(10_000, len(passages))]
    japanese_terms(sample[:10])  # load the dictionary
    t_terms, _ = timed(lambda: japanese_terms(sample))
    row("terms (wakati)", f"{len(sample) / t_terms:,.0f} /s", f"on {len(sample):,} passages")
    t_naive, _ = timed(lambda: naive_terms(sample[:2000]))
    row("terms (node-by-node fugashi)", f"{2000 / t_naive:,.0f} /s", "reference, 2,000 passages")

    t_build, bm25 = timed(lambda: BM25.build(passages))
    row("BM25.build", f"{t_build:,.1f} s", f"{len(passages) / t_build:,.0f} passages/s")

    work = Path(tempfile.mkdtemp(prefix="bench-bm25-"))
    try:
        t_save, _ = timed(lambda: bm25.save(work / "bm25"))
        size = sum(p.stat().st_size for p in (work / "bm25").iterdir())
        row("save", f"{t_save * 1000:,.0f} ms", f"{size / 1e6:,.1f} MB on disk")
        t_load, loaded = timed(lambda: BM25.load(work / "bm25"))
        row("load", f"{t_load * 1000:,.0f} ms", f"{len(loaded):,} passages")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    texts = list(queries.values())[:200] + extra
    for k in (10, 100):
        latencies = []
        for text in texts:
            start = time.perf_counter()
            bm25.search(text, k=k)
            latencies.append(time.perf_counter() - start)
        latencies.sort()
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        row(
            f"search k={k}, one query",
            f"{statistics.median(latencies) * 1000:,.2f} ms",
            f"p50; p95 {p95 * 1000:,.2f} ms",
        )
        t_batch, _ = timed(lambda k=k: bm25.search(list(queries.values()), k=k))
        row(f"search k={k}, batch", f"{len(queries) / t_batch:,.0f} q/s", "")

    corpus = {str(i): text for i, text in enumerate(passages)}
    retriever = BM25Retriever(corpus, bm25=bm25)
    source = NegativeSource("bm25", retriever, n=10, skip_top=3)
    t_mine, records = timed(lambda: mine(queries, positives, corpus, [source]))
    negatives = sum(len(r.negatives) for r in records)
    row(
        "mining, BM25 10 negatives",
        f"{len(records) / t_mine:,.0f} q/s",
        f"{negatives / len(records):.1f} negatives per query",
    )
    if args.dense:
        dense_mining(passages[: args.dense], queries, positives, args.dense)


def dense_mining(passages, queries, positives, n) -> None:
    from jacolbert_core.model.colbert import ColBERT
    from jacolbert_core.testing import make_tiny_checkpoint
    from jacolbert_core.training.mining import ColBERTRetriever

    corpus = {str(i): text for i, text in enumerate(passages)}
    keep = {q for q, pos in positives.items() if pos[0] in corpus}
    queries = {q: t for q, t in queries.items() if q in keep}
    work = Path(tempfile.mkdtemp(prefix="bench-dense-"))
    try:
        model = ColBERT.from_pretrained(
            make_tiny_checkpoint(work / "model", residual_scale=0.05), device="cpu"
        )
        t_index, retriever = timed(lambda: ColBERTRetriever.build(model, corpus))
        row("dense: tiny ColBERT index", f"{t_index:,.1f} s", f"{n / t_index:,.0f} passages/s")
        source = NegativeSource("dense", retriever, n=25, skip_top=3)
        t_mine, records = timed(lambda: mine(queries, positives, corpus, [source]))
        row(
            "mining, dense 25 negatives",
            f"{len(records) / t_mine:,.1f} q/s",
            f"{len(records):,} queries over {n:,} passages",
        )
        retriever.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

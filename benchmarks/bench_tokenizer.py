"""Slow BertJapaneseTokenizer vs FastJapaneseTokenizer on realistic Japanese passages.

    python benchmarks/bench_tokenizer.py [--n 10000] [--threads N] [--seed 0]

Passages of 100-400 characters are spliced from sentences of the package's sample corpus;
the WordPiece vocabulary holds every MeCab word of that corpus (as a real 32k vocabulary
covers most words of real text), its characters and their ``##`` forms. Both tokenizers run
``add_special_tokens=False``; the script fails if any text's ids differ. It also splits
each tokenizer's time into the word step (NFKC + MeCab) and the WordPiece step.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

from jacolbert_core.model.fast_tokenizer import FastJapaneseTokenizer
from jacolbert_core.testing import (
    japanese_vocab,
    sample_corpus,
    sample_queries,
    spliced_passages,
)


def build_tokenizer(directory: Path):
    from transformers import BertJapaneseTokenizer

    texts = [d["text"] for d in sample_corpus()] + [q["query"] for q in sample_queries()]
    vocab = japanese_vocab(texts, max_words=1_000_000)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertJapaneseTokenizer(
        vocab_file=str(directory / "vocab.txt"),
        do_lower_case=False,
        word_tokenizer_type="mecab",
        subword_tokenizer_type="wordpiece",
        mecab_kwargs={"mecab_dic": "unidic_lite"},
    )


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall-clock seconds of ``repeat`` runs, and the result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def timed2(fn: Callable[[], object]) -> tuple[float, float, object]:
    """Wall-clock and process CPU seconds (all threads) of one run, and the result."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of passages")
    parser.add_argument("--threads", type=int, default=None, help="MeCab threads (default: CPUs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    texts = spliced_passages(args.n, args.seed)
    n = len(texts)
    chars = sum(map(len, texts))
    with tempfile.TemporaryDirectory() as tmp:
        slow = build_tokenizer(Path(tmp))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    print(f"{n} passages, {chars / n:.0f} chars on average; vocabulary {len(slow.vocab)}; ")
    print(f"{cpus} CPUs, load average {os.getloadavg()[0]:.2f}")

    # The paths take turns on chunks of texts, so that a busy machine slows them alike.
    # Round 1 starts the fast tokenizers with empty word caches; round 2 is steady state.
    fasts = {"fast, 1 thread": FastJapaneseTokenizer.from_tokenizer(slow, num_threads=1)}
    threaded = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=args.threads)
    if threaded is None or fasts["fast, 1 thread"] is None:
        print("FastJapaneseTokenizer.from_tokenizer returned None", file=sys.stderr)
        return 1
    if threaded.num_threads > 1:
        fasts[f"fast, {threaded.num_threads} MeCab threads"] = threaded
    chunk = 1000
    wall = {name: [0.0, 0.0] for name in ["slow", *fasts]}
    cpu = {name: [0.0, 0.0] for name in ["slow", *fasts]}
    expected: list[list[int]] = []
    ok = True
    for round_ in range(2):
        for start in range(0, n, chunk):
            part = texts[start : start + chunk]
            w, c, ids = timed2(lambda part=part: slow(part, add_special_tokens=False)["input_ids"])
            wall["slow"][round_] += w
            cpu["slow"][round_] += c
            if round_ == 0:
                expected += ids
            for name, fast in fasts.items():
                w, c, got = timed2(lambda fast=fast, part=part: fast.encode(part))
                wall[name][round_] += w
                cpu[name][round_] += c
                ok &= got == expected[start : start + chunk]
    w_slow, c_slow = sum(wall.pop("slow")) / 2, sum(cpu.pop("slow")) / 2
    tokens = sum(map(len, expected))
    rows = [("slow BertJapaneseTokenizer", w_slow, c_slow)]
    for name in wall:
        rows.append((f"{name}, first pass (empty word cache)", wall[name][0], cpu[name][0]))
        rows.append((f"{name}, second pass", wall[name][1], cpu[name][1]))
    for fast in fasts.values():
        fast.close()

    print(f"\nidentical ids for all {n} texts ({tokens} tokens): {ok}\n")
    width = max(len(r[0]) for r in rows)
    print(
        f"{'tokenizer':<{width}}  {'texts/s':>8}  {'speed-up':>8}  {'CPU us/text':>11}  "
        f"{'CPU speed-up':>12}"
    )
    for name, w, c in rows:
        print(
            f"{name:<{width}}  {n / w:>8.0f}  {w_slow / w:>7.1f}x  {c / n * 1e6:>11.0f}  "
            f"{c_slow / c:>11.1f}x"
        )
    print(
        "(texts/s and speed-up: wall clock; CPU: process time of all threads, which a busy "
        "machine\n disturbs less but which cannot show the MeCab threads' parallelism)"
    )

    # Where the time goes: word step (NFKC + MeCab) vs WordPiece (+ ids), on a sample.
    texts = texts[:2000]
    n = len(texts)
    word_tokenizer, subword = slow.word_tokenizer, slow.subword_tokenizer
    specials = slow.all_special_tokens
    t_sw, surfaces = timed(
        lambda: [word_tokenizer.tokenize(t, never_split=specials) for t in texts]
    )
    t_sp, _ = timed(
        lambda: [
            slow.convert_tokens_to_ids([p for w in s for p in subword.tokenize(w)])
            for s in surfaces
        ]
    )
    t_slow_once, _ = timed(lambda: slow(texts, add_special_tokens=False))
    fast = FastJapaneseTokenizer.from_tokenizer(slow, num_threads=1)
    t_fw, words = timed(lambda: [fast._words(t) for t in texts], repeat=3)
    t_fp_cold, _ = timed(lambda: [fast._wordpiece(w) for w in words])
    t_fp_warm, _ = timed(lambda: [fast._wordpiece(w) for w in words], repeat=3)
    normalised = [unicodedata.normalize("NFKC", t) for t in texts]
    t_mecab, _ = timed(lambda: [fast._parse(t) for t in normalised], repeat=3)
    print(f"\nbreakdown on {n} texts, us/text   word step  WordPiece+ids  rest")
    print(
        f"slow                            {t_sw / n * 1e6:>9.0f}  {t_sp / n * 1e6:>13.0f}  "
        f"{(t_slow_once - t_sw - t_sp) / n * 1e6:>4.0f}"
    )
    print(
        f"fast, 1 thread                  {t_fw / n * 1e6:>9.0f}  {t_fp_warm / n * 1e6:>13.0f}     "
        f"(WordPiece from an empty cache: {t_fp_cold / n * 1e6:.0f})"
    )
    print(
        f"MeCab alone (wakati parse of NFKC text): {t_mecab / n * 1e6:.0f} us/text, so one "
        f"thread cannot beat {t_slow_once / t_mecab:.1f}x the slow tokenizer here"
    )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

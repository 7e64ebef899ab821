"""``jacolbert mine`` and ``jacolbert score``: hard-negative mining and teacher scoring.

:func:`register` adds both sub-commands to the ``jacolbert`` parser's sub-parsers; each sets
``run`` to a function taking the parsed arguments (errors are ``JaColBERTError`` /
``ValueError`` for the CLI to report).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from jacolbert_core.datafiles import read_positives, read_texts

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``mine`` and ``score`` to ``subparsers`` (from ``parser.add_subparsers()``)."""
    from jacolbert_core.training import mining

    p = subparsers.add_parser(
        "mine",
        help="mine hard negatives with BM25 and a dense retriever",
        description=(
            "Mine hard negatives for training queries. Output: one JSON line per query "
            '{"qid", "query", "positives": [pid], "negatives": [{"pid", "source", "rank"}]}.'
        ),
    )
    p.add_argument("--queries", required=True, help="queries: JSONL (id, text) or TSV id<TAB>text")
    p.add_argument(
        "--qrels",
        help="positives: TSV 'qid pid', BEIR 'query-id corpus-id score', TREC qrels, or JSONL "
        "with a positives/relevant list (default: read them from the queries file)",
    )
    p.add_argument("--corpus", required=True, help="passages: JSONL (id, text) or TSV id<TAB>text")
    p.add_argument("--out", required=True, help="output JSONL of mined negatives")
    dense = p.add_mutually_exclusive_group()
    dense.add_argument("--dense-index", help="a jacolbert index built on the corpus (ids = pids)")
    dense.add_argument(
        "--dense-model",
        help="a ColBERT checkpoint (indexes the corpus in a temporary directory) or a "
        "sentence-transformers model (see --dense-type)",
    )
    p.add_argument(
        "--dense-type",
        choices=("auto", "colbert", "sentence-transformers"),
        default="auto",
        help="kind of --dense-model (auto: sentence-transformers for a local directory with "
        "modules.json and no artifact.metadata, else ColBERT)",
    )
    p.add_argument(
        "--dense",
        type=int,
        default=mining.DEFAULT_DENSE,
        help="dense negatives per query (default %(default)s)",
    )
    p.add_argument(
        "--bm25",
        type=int,
        default=mining.DEFAULT_BM25,
        help="BM25 negatives per query (default %(default)s)",
    )
    p.add_argument(
        "--skip-top",
        type=int,
        default=mining.DEFAULT_SKIP_TOP,
        help="ranks skipped at the top of each ranking, likely unlabelled positives "
        "(default %(default)s)",
    )
    p.add_argument(
        "--depth",
        type=int,
        help="sample the negatives among ranks skip_top+1..depth (default: take the best)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed for --depth sampling (default %(default)s)"
    )
    p.add_argument("--triples", help="also write [qid, pos_pid, neg_pid] JSONL triples here")
    p.add_argument("--query-prefix", default="", help="prefix for sentence-transformers queries")
    p.add_argument("--passage-prefix", default="", help="prefix for sentence-transformers passages")
    p.add_argument("--title", action="store_true", help="prepend BEIR titles to passages")
    p.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="queries per retrieval batch (default %(default)s)",
    )
    p.add_argument("--device", help="device for the dense model (default: best available)")
    p.set_defaults(run=_mine)

    p = subparsers.add_parser(
        "score",
        help="score n-way groups with a teacher (cross-encoder or ColBERT)",
        description=(
            "Score (query, positive, negatives) groups with a teacher. Output: one JSON line "
            'per group {"qid", "pos", "negs": [...], "scores": [pos_score, neg_scores...]}.'
        ),
    )
    p.add_argument(
        "nway",
        help="groups: `jacolbert mine` output, [qid, pos, neg...] lines, or {qid, pos, negs}",
    )
    p.add_argument(
        "--teacher", required=True, help="reranker or ColBERT checkpoint (dir or hub id)"
    )
    p.add_argument("--teacher-type", choices=("auto", "cross-encoder", "colbert"), default="auto")
    p.add_argument("--corpus", required=True, help="passages: JSONL (id, text) or TSV")
    p.add_argument(
        "--queries", help="queries: JSONL or TSV (not needed for `jacolbert mine` output)"
    )
    p.add_argument("--out", required=True, help="output JSONL of scored groups")
    p.add_argument(
        "--max-negatives", type=int, help="keep at most this many negatives per group (31: 32-way)"
    )
    p.add_argument(
        "--batch-size", type=int, default=32, help="pairs per teacher batch (default %(default)s)"
    )
    p.add_argument("--max-length", type=int, help="cross-encoder token limit per pair")
    p.add_argument("--title", action="store_true", help="prepend BEIR titles to passages")
    p.add_argument("--device", help="device for the teacher (default: best available)")
    p.set_defaults(run=_score)


# -- mine -------------------------------------------------------------------------------------


def _mine(args: argparse.Namespace) -> int:
    from jacolbert_core.training import mining

    for name in ("dense", "bm25", "skip_top"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative")
    if args.batch_size <= 0:
        raise ValueError("--batch-size must be positive")
    queries = read_texts(args.queries)
    positives = read_positives(args.qrels or args.queries)
    corpus = read_texts(args.corpus, title=args.title)
    print(
        f"read {len(queries):,} queries, positives for {len(positives):,}, "
        f"{len(corpus):,} passages",
        file=sys.stderr,
    )
    started = time.perf_counter()
    sources = []
    retriever = None
    has_dense = args.dense_index or args.dense_model
    if has_dense and args.dense > 0:
        retriever = _dense_retriever(args, corpus)
        sources.append(
            mining.NegativeSource("dense", retriever, args.dense, args.skip_top, args.depth)
        )
    elif args.dense > 0:
        print("no --dense-index/--dense-model: mining BM25 negatives only", file=sys.stderr)
    if args.bm25 > 0:
        bm25 = mining.BM25Retriever(corpus, show_progress=True)
        sources.append(mining.NegativeSource("bm25", bm25, args.bm25, args.skip_top, args.depth))
    if not sources:
        raise ValueError("nothing to mine: --dense and --bm25 are both 0 (or no dense source)")
    prepared = time.perf_counter()
    try:
        records = mining.mine(
            queries,
            positives,
            corpus,
            sources,
            seed=args.seed,
            batch_size=args.batch_size,
            show_progress=True,
        )
    finally:
        if retriever is not None and hasattr(retriever, "close"):
            retriever.close()
    mined = time.perf_counter()
    mining.write_mined(args.out, records)
    summary = mining.summarize(records, sources)
    per_source = ", ".join(f"{n:,} {name}" for name, n in summary["per_source"].items())
    print(
        f"mined {summary['queries']:,} queries ({summary['positives']:,} positives): "
        f"{summary['negatives']:,} negatives ({per_source}; "
        f"{summary['negatives_per_query']:.1f} per query)"
    )
    short = {name: n for name, n in summary["queries_short"].items() if n}
    if short:
        print(
            "queries with fewer negatives than asked: "
            + ", ".join(f"{name} {n:,}" for name, n in short.items())
        )
    skipped = len(queries) - summary["queries"]
    if skipped:
        print(f"skipped {skipped:,} queries without a positive in the corpus")
    rate = summary["queries"] / max(mined - prepared, 1e-9)
    print(
        f"retrievers ready in {prepared - started:.1f} s, mining {mined - prepared:.1f} s "
        f"({rate:,.1f} queries/s); wrote {args.out}"
    )
    if args.triples:
        count = mining.write_triples(args.triples, mining.to_triples(records))
        print(f"wrote {count:,} [qid, pos, neg] triples to {args.triples}")
    return 0


def _dense_retriever(args: argparse.Namespace, corpus: dict[str, str]) -> Any:
    from jacolbert_core.training import mining

    if args.dense_index:
        from jacolbert_core.index.index import Index

        return mining.ColBERTRetriever(Index.open(args.dense_index, device=args.device))
    kind = args.dense_type
    if kind == "auto":
        kind = _guess_dense_type(args.dense_model)
    if kind == "sentence-transformers":
        return mining.SentenceTransformerRetriever(
            args.dense_model,
            corpus,
            query_prefix=args.query_prefix,
            passage_prefix=args.passage_prefix,
            device=args.device,
            show_progress=True,
        )
    from jacolbert_core.model.colbert import ColBERT

    model = ColBERT.from_pretrained(args.dense_model, device=args.device)
    return mining.ColBERTRetriever.build(model, corpus, show_progress=True)


def _guess_dense_type(name: str) -> str:
    path = Path(name)
    if not path.is_dir() or (path / "artifact.metadata").is_file():
        return "colbert"
    modules = path / "modules.json"
    if modules.is_file() and "pylate" not in modules.read_text(encoding="utf-8").lower():
        return "sentence-transformers"
    return "colbert"


# -- score ------------------------------------------------------------------------------------


def _score(args: argparse.Namespace) -> int:
    from jacolbert_core.training import teacher

    if args.batch_size <= 0:
        raise ValueError("--batch-size must be positive")
    if args.max_negatives is not None and args.max_negatives < 0:
        raise ValueError("--max-negatives must not be negative")
    corpus = read_texts(args.corpus, title=args.title)
    queries = read_texts(args.queries) if args.queries else None
    model = teacher.load_teacher(
        args.teacher,
        kind=args.teacher_type,
        device=args.device,
        batch_size=args.batch_size,
        max_length=args.max_length,
    )
    summary = teacher.score_file(
        args.nway,
        args.out,
        model,
        corpus,
        queries,
        max_negatives=args.max_negatives,
        show_progress=True,
    )
    print(
        f"scored {summary['groups']:,} groups ({summary['pairs']:,} pairs) with "
        f"{type(model).__name__} {args.teacher} in {summary['seconds']:.1f} s "
        f"({summary['pairs_per_second']:,.1f} pairs/s)"
    )
    print(
        f"teacher ranks the positive first in {summary['positive_ranked_first']:.1%} of groups; "
        f"mean margin positive - negatives {summary['mean_margin']:.3f}; wrote {args.out}"
    )
    return 0

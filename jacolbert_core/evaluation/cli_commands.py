"""``jacolbert eval``: metrics of one or more models (and BM25) on a retrieval or rerank set.

Wire into the main parser with ``register(subparsers)``; each command sets ``run``.
"""

from __future__ import annotations

import argparse
import sys

from jacolbert_core.config import DEFAULT_MODEL
from jacolbert_core.evaluation.metrics import DEFAULT_METRICS


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval",
        help="evaluate models (and BM25) on a BEIR folder or a reranking JSONL file",
        description=(
            "Retrieval mode for a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv): "
            "the corpus is indexed in a temporary directory (or --index is searched). Rerank "
            "mode for a JSONL file with one line per (query, candidate): qid/q_id, "
            "query/question, pid/passage_row_id, text, label. Prints a table (systems x "
            "metrics) and optionally writes JSON."
        ),
    )
    p.add_argument("data", help="BEIR folder, or reranking .jsonl file")
    p.add_argument(
        "--model",
        action="append",
        help=f"checkpoint or hub id; repeat to compare several (default {DEFAULT_MODEL})",
    )
    p.add_argument("--name", action="append", help="display name per --model, in order")
    p.add_argument("--split", default="test", help="qrels split of a BEIR folder (default test)")
    p.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        metavar="METRIC",
        help="ndcg/recall/mrr/map/hit with @k (default: %(default)s)",
    )
    p.add_argument("--index", help="search this existing index (retrieval mode, one model)")
    p.add_argument("--no-bm25", action="store_true", help="leave out the BM25 baseline")
    p.add_argument("--exact", action="store_true", help="exhaustive (exact) search")
    p.add_argument(
        "--chunk", action="store_true", help="chunk long documents (best passage counts)"
    )
    p.add_argument("--no-title", action="store_true", help="do not prepend titles to texts")
    p.add_argument("--depth", type=int, help="results per query (default: largest @k)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--query-length",
        choices=("fixed", "dynamic"),
        help="override the models' query-length rule",
    )
    p.add_argument("--json", dest="json_out", metavar="FILE", help="also write the report here")
    p.set_defaults(run=run_eval)
    return p


def run_eval(args: argparse.Namespace) -> int:
    from jacolbert_core.evaluation.datasets import load_dataset
    from jacolbert_core.evaluation.evaluate import _named, evaluate_models

    dataset = load_dataset(args.data, args.split, include_title=not args.no_title)
    paths = args.model or [DEFAULT_MODEL]
    if args.name and len(args.name) != len(paths):
        raise ValueError(f"{len(args.name)} --name for {len(paths)} --model")
    overrides = {"query_length": args.query_length} if args.query_length else {}
    models = {}
    from jacolbert_core.model.colbert import ColBERT

    names = args.name or list(_named(paths))
    for name, path in zip(names, paths, strict=True):
        models[name] = ColBERT.from_pretrained(path, **overrides)
    report = evaluate_models(
        dataset,
        models,
        args.metrics,
        bm25=not args.no_bm25,
        index_path=args.index,
        exact=True if args.exact else None,
        chunking=args.chunk,
        depth=args.depth,
        batch_size=args.batch_size,
        show_progress=sys.stderr.isatty(),
    )
    print(report.table())
    if args.json_out:
        print(f"wrote {report.write_json(args.json_out)}")
    return 0

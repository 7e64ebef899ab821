"""``jacolbert`` command line: index, add, search, delete, compact, info, rerank, tiny-model."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any

from jacolbert_core.config import DEFAULT_MODEL
from jacolbert_core.errors import JaColBERTError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except (JaColBERTError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jacolbert", description="Japanese ColBERT retrieval.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="build an index from a JSONL/CSV/TSV file or a folder")
    p.add_argument(
        "input", help=".jsonl (id, text, metadata), .csv/.tsv (id, text, ...), or a folder"
    )
    p.add_argument("--index", required=True, help="index directory to create")
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"hub id or local checkpoint (default {DEFAULT_MODEL})",
    )
    p.add_argument("--nbits", type=int, default=2, choices=(1, 2, 4))
    p.add_argument(
        "--max-tokens", type=int, help="passage size in model tokens (default doc_maxlen-3)"
    )
    p.add_argument("--no-chunking", action="store_true", help="index each text whole")
    p.add_argument(
        "--keep-vectors", action="store_true", help="also store fp16 vectors for exact scores"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing index")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(run=_index)

    p = sub.add_parser("add", help="add or update documents in an existing index")
    p.add_argument("input")
    p.add_argument("--index", required=True)
    p.add_argument("--model", help="override the model recorded in the index")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(run=_add)

    p = sub.add_parser(
        "import-plaid",
        help="convert a colbert-ai / RAGatouille index into a jacolbert index (no re-encoding)",
    )
    p.add_argument("plaid_dir", metavar="PLAID_DIR", help="the colbert-ai index folder")
    p.add_argument(
        "collection",
        metavar="COLLECTION",
        nargs="?",
        help="passages in pid order: colbert-ai .tsv (pid<TAB>text), .jsonl or .json "
        "(default: RAGatouille's collection.json in PLAID_DIR)",
    )
    p.add_argument("--index", required=True, help="index directory to create")
    p.add_argument("--model", help="checkpoint (default: the one named in the index metadata)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index")
    p.set_defaults(run=_import_plaid)

    p = sub.add_parser("search", help="search an index")
    p.add_argument("index")
    p.add_argument("queries", nargs="+", metavar="QUERY")
    p.add_argument("-k", type=int, default=10)
    p.add_argument(
        "--where", type=json.loads, help='metadata filter as JSON, e.g. \'{"lang": "ja"}\''
    )
    p.add_argument("--model", help="override the model recorded in the index")
    p.add_argument("--exact", action="store_true", help="score every passage exactly")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_search)

    p = sub.add_parser("delete", help="delete documents by id")
    p.add_argument("index")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(run=_delete)

    p = sub.add_parser("compact", help="merge segments and drop deleted passages")
    p.add_argument("index")
    p.set_defaults(run=_compact)

    p = sub.add_parser("info", help="show index statistics")
    p.add_argument("index")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_info)

    p = sub.add_parser("rerank", help="rerank the texts of a file for a query (no index)")
    p.add_argument("query")
    p.add_argument("input")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_rerank)

    p = sub.add_parser(
        "serve", help="serve an index over HTTP (ColBERTv2 /api/search, JSON /v1/search)"
    )
    p.add_argument("index")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8893, help="port (default 8893; 0 picks one)")
    p.add_argument("--model", help="override the model recorded in the index")
    p.add_argument("--max-k", type=int, default=100, help="largest k a request may ask for")
    p.add_argument("--threads", type=int, help="torch threads per search (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="do not log each request")
    p.set_defaults(run=_serve)

    p = sub.add_parser(
        "tiny-model", help="write a tiny random Japanese checkpoint (offline demos/tests)"
    )
    p.add_argument("directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_tiny_model)

    from jacolbert_core.evaluation.cli_commands import register as register_eval
    from jacolbert_core.training.cli_commands import register as register_mining
    from jacolbert_core.training.cli_commands_train import register as register_training

    for register in (register_mining, register_training, register_eval):
        register(sub)
    return parser


def _model(name: str | None):
    if name is None:
        return None
    from jacolbert_core.model.colbert import ColBERT

    return ColBERT.from_pretrained(name)


def _index(args: argparse.Namespace) -> None:
    from jacolbert_core.index.index import Index
    from jacolbert_core.readers import read_records
    from jacolbert_core.text.chunking import ChunkingConfig

    records = read_records(args.input)
    model = _model(args.model)
    chunking = None
    if args.no_chunking:
        chunking = ChunkingConfig(enabled=False)
    elif args.max_tokens:
        chunking = ChunkingConfig(max_tokens=args.max_tokens)
    index = Index.create(
        args.index,
        model,
        nbits=args.nbits,
        chunking=chunking,
        keep_vectors=args.keep_vectors,
        overwrite=args.overwrite,
    )
    _add_records(index, records, args.batch_size)


def _add(args: argparse.Namespace) -> None:
    from jacolbert_core.index.index import Index
    from jacolbert_core.readers import read_records

    records = read_records(args.input)
    _add_records(Index.open(args.index, _model(args.model)), records, args.batch_size)


def _add_records(index, records, batch_size: int) -> None:
    index.add(
        [r.text for r in records],
        ids=[r.id for r in records],
        metadatas=[r.metadata for r in records],
        batch_size=batch_size,
        show_progress=True,
    )
    stats = index.stats()
    print(
        f"indexed {len(records)} documents -> {stats['documents']} documents, "
        f"{stats['passages']} passages, {stats['token_vectors']} vectors in {index.path}"
    )


def _import_plaid(args: argparse.Namespace) -> None:
    from jacolbert_core.index.plaid_import import import_plaid_index

    index = import_plaid_index(
        args.plaid_dir, args.collection, args.index, args.model, overwrite=args.overwrite
    )
    stats = index.stats()
    print(
        f"imported {args.plaid_dir} -> {stats['documents']} documents, {stats['passages']} "
        f"passages, {stats['token_vectors']} vectors, {stats['centroids']} centroids "
        f"in {index.path}"
    )


def _search(args: argparse.Namespace) -> None:
    from jacolbert_core.index.index import Index

    index = Index.open(args.index, _model(args.model))
    results = index.search(list(args.queries), k=args.k, where=args.where, exact=args.exact or None)
    if args.json:
        payload = [
            {"query": q, "hits": [h.__dict__ for h in hits]}
            for q, hits in zip(args.queries, results, strict=True)
        ]
        print(json.dumps(payload if len(payload) > 1 else payload[0], ensure_ascii=False, indent=2))
        return
    for query, hits in zip(args.queries, results, strict=True):
        print(f"\nQuery: {query}")
        _table(
            ["rank", "score", "passage", "text"],
            [[h.rank, f"{h.score:.3f}", h.passage_id, h.text] for h in hits],
        )


def _delete(args: argparse.Namespace) -> None:
    from jacolbert_core.index.index import Index

    index = Index.open(args.index)
    print(f"deleted {index.delete(list(args.ids))} of {len(args.ids)} documents")


def _compact(args: argparse.Namespace) -> None:
    from jacolbert_core.index.index import Index

    index = Index.open(args.index)
    before = index.stats()
    index.compact()
    after = index.stats()
    print(
        f"compacted {before['segments']} segments -> {after['segments']}, "
        f"{before['bytes_on_disk']:,} -> {after['bytes_on_disk']:,} bytes"
    )


def _info(args: argparse.Namespace) -> None:
    from jacolbert_core.index.index import Index

    stats = Index.open(args.index).stats()
    if args.json:
        print(json.dumps(stats, ensure_ascii=False, indent=2))
    else:
        _table(["field", "value"], [[k, v] for k, v in stats.items()])


def _rerank(args: argparse.Namespace) -> None:
    from jacolbert_core.readers import read_records

    records = read_records(args.input)
    ranked = _model(args.model).rerank(args.query, [r.text for r in records], k=args.k)
    rows = [
        {"rank": n, "score": score, "id": records[i].id, "text": records[i].text}
        for n, (i, score) in enumerate(ranked, start=1)
    ]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        _table(
            ["rank", "score", "id", "text"],
            [[r["rank"], f"{r['score']:.3f}", r["id"], r["text"]] for r in rows],
        )


def _serve(args: argparse.Namespace) -> None:
    from jacolbert_core.index.index import Index
    from jacolbert_core.server import serve

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    index = Index.open(args.index, _model(args.model))
    serve(index, args.host, args.port, args.max_k, log_requests=not args.quiet)


def _tiny_model(args: argparse.Namespace) -> None:
    from jacolbert_core.testing import make_tiny_checkpoint

    print(
        f"wrote {make_tiny_checkpoint(args.directory, seed=args.seed)} "
        "(random weights: for demos and tests only)"
    )


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    out, used = [], 0
    for ch in text:
        w = _width(ch)
        if used + w > width - 1:
            return "".join(out) + "…"
        out.append(ch)
        used += w
    return "".join(out)


def _table(header: list[str], rows: list[list[Any]], max_width: int = 60) -> None:
    cells = [[_clip(str(c), max_width) for c in row] for row in [header, *rows]]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print(
            "  ".join(c + " " * (w - _width(c)) for c, w in zip(row, widths, strict=True)).rstrip()
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))
    if not rows:
        print("(no results)")


if __name__ == "__main__":
    sys.exit(main())

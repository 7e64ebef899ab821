"""HTTP search service throughput and latency on loopback (``jacolbert_core.server``).

    python benchmarks/bench_server.py [--requests 64] [--clients 1 4 16] [--k 10]
        [--workers N] [--threads 1] [--post] [--deadline 100]

Builds the package's Japanese sample corpus (48 documents) into a temporary index with the
tiny offline checkpoint (:func:`jacolbert_core.testing.make_tiny_checkpoint`, the "peaked"
variant the tests use), starts the server in a SEPARATE process (so client threads and server
threads do not share one GIL) on 127.0.0.1 with a free port, then, for each client count,
sends ``--requests`` ColBERTv2 ``/api/search`` requests in total, split evenly over that many
client threads, each thread on its own keep-alive connection, cycling through the 24 sample
queries. Reports requests/s and p50/p95/p99 latency per level, plus the in-process
``Index.search`` latency (no HTTP) as a baseline. Every response is checked (status 200,
``k`` hits). Everything is bounded: a fixed request count, a ``--deadline`` (seconds for the
whole run, default 100) after which remaining loops stop (flagged in the table), and socket
timeouts; the server process is always stopped.

The tiny model makes query encoding cheap, so this measures the server (HTTP parsing, JSON,
threading, the index's search path), not a real encoder: with JaColBERTv2.5 (BERT-base) on
CPU, query encoding dominates and requests/s is bounded by it. The server uses ``--threads``
torch intra-op threads (default 1: concurrency comes from the server's ``workers``; on a busy
machine several OpenMP threads per request oversubscribe the cores and are several times
slower). The load average is printed: on a shared machine, wall-clock numbers are noisy.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

SERVER_READY = "READY "


def build_index(root: Path):
    from jacolbert_core import ColBERT, Index
    from jacolbert_core.testing import make_tiny_checkpoint, sample_corpus

    checkpoint = make_tiny_checkpoint(root / "model", residual_scale=0.05, seed=3)
    model = ColBERT.from_pretrained(checkpoint, device="cpu")
    index = Index.create(root / "index", model)
    corpus = sample_corpus()
    index.add(
        [d["text"] for d in corpus],
        ids=[d["id"] for d in corpus],
        metadatas=[d["metadata"] for d in corpus],
    )
    return index


def run_server(index_dir: str, workers: int | None, threads: int) -> None:
    """Server process: open the index, listen on a free loopback port, report it, serve."""
    import torch

    torch.set_num_threads(threads)
    from jacolbert_core import Index
    from jacolbert_core.server import serve

    index = Index.open(index_dir)
    serve(
        index,
        port=0,
        log_requests=False,
        workers=workers,
        ready=lambda srv: print(f"{SERVER_READY}{srv.server_address[1]} {srv.workers}", flush=True),
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def client_loop(
    port: int,
    queries: list[str],
    n: int,
    offset: int,
    k: int,
    post: bool,
    deadline: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for i in range(n):
            if time.monotonic() > deadline:
                errors.append("deadline")
                return
            query = queries[(offset + i) % len(queries)]
            start = time.perf_counter()
            if post:
                body = json.dumps({"query": query, "k": k}).encode("utf-8")
                conn.request(
                    "POST", "/api/search", body, headers={"Content-Type": "application/json"}
                )
            else:
                conn.request(
                    "GET", "/api/search?" + urllib.parse.urlencode({"query": query, "k": k})
                )
            response = conn.getresponse()
            payload = response.read()
            latencies.append(time.perf_counter() - start)
            if response.status != 200 or len(json.loads(payload)["topk"]) != k:
                errors.append(f"status {response.status}")
    except (OSError, http.client.HTTPException, ValueError) as error:
        errors.append(f"{type(error).__name__}: {error}")
    finally:
        conn.close()


def run_level(
    port: int, queries: list[str], clients: int, total: int, args, deadline: float
) -> dict:
    per_client = max(1, total // clients)
    latencies: list[float] = []
    errors: list[str] = []
    threads = [
        threading.Thread(
            target=client_loop,
            args=(port, queries, per_client, c * 7, args.k, args.post, deadline, latencies, errors),
            daemon=True,
        )
        for c in range(clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.monotonic() + 35))
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len([e for e in errors if e != "deadline"]),
        "cut": "deadline" in errors,
        "wall": wall,
        "rps": len(latencies) / wall if wall else 0.0,
        "p50": percentile(latencies, 50) * 1000 if latencies else float("nan"),
        "p95": percentile(latencies, 95) * 1000 if latencies else float("nan"),
        "p99": percentile(latencies, 99) * 1000 if latencies else float("nan"),
        "first_error": next((e for e in errors if e != "deadline"), ""),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64, help="requests per level (total)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--workers", type=int, help="server's concurrent searches (default auto)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads in the server (default 1)"
    )
    parser.add_argument("--post", action="store_true", help="POST instead of GET")
    parser.add_argument(
        "--deadline", type=float, default=100.0, help="seconds for the whole run (levels stop)"
    )
    parser.add_argument("--serve", metavar="INDEX", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.workers, args.threads)
        return 0

    import torch

    from jacolbert_core.testing import sample_queries

    torch.set_num_threads(args.threads)  # the same setting for the in-process baseline
    queries = [q["query"] for q in sample_queries()]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        index = build_index(Path(tmp))
        n_passages = index.stats()["passages"]
        direct = []
        index.search(queries[0], k=args.k)
        for query in queries:
            t0 = time.perf_counter()
            index.search(query, k=args.k)
            direct.append(time.perf_counter() - t0)

        command = [sys.executable, __file__, "--serve", str(index.path)]
        command += ["--threads", str(args.threads)]
        if args.workers:
            command += ["--workers", str(args.workers)]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline()
            if not line.startswith(SERVER_READY):
                print(f"server did not start: {line!r}", file=sys.stderr)
                return 1
            port, workers = (int(x) for x in line[len(SERVER_READY) :].split())
            deadline = started + args.deadline - 5  # leave time to stop and print
            warm: list[float] = []
            client_loop(port, queries, 8, 0, args.k, args.post, deadline, warm, [])
            results = [
                run_level(port, queries, c, args.requests, args, deadline) for c in args.clients
            ]
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n### jacolbert server on loopback: {'POST' if args.post else 'GET'} /api/search, "
        f"k={args.k}, sample index ({n_passages} passages, {len(queries)} queries cycled), "
        f"server workers={workers}\n"
    )
    print(
        f"cpus={os.cpu_count()}  torch threads={torch.get_num_threads()}  load average={load}  "
        f"in-process Index.search p50={statistics.median(direct) * 1000:.1f} ms "
        f"p95={percentile(direct, 95) * 1000:.1f} ms\n"
    )
    print("| clients | requests | errors | wall s | req/s | p50 ms | p95 ms | p99 ms |")
    print("|--------:|---------:|-------:|-------:|------:|-------:|-------:|-------:|")
    for r in results:
        cut = " (deadline)" if r["cut"] else ""
        print(
            f"| {r['clients']:>7} | {r['requests']:>8}{cut} | {r['errors']:>6} | "
            f"{r['wall']:>6.2f} | {r['rps']:>5.1f} | {r['p50']:>6.1f} | {r['p95']:>6.1f} | "
            f"{r['p99']:>6.1f} |"
        )
    failures = [r["first_error"] for r in results if r["first_error"]]
    if failures:
        print(f"\nfirst error: {failures[0]}")
    print(f"\ntotal time {time.monotonic() - started:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

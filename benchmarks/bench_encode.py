"""Document encoding on CPU: speed vs colbert-ai, streaming memory, and the int8 fast mode.

    python benchmarks/bench_encode.py [--reference-python /root/venvs/colbert/bin/python]
        [--passages 1000] [--layers 4 --hidden 256 --heads 4 --dim 128] [--threads 2]

The checkpoint is a random Stanford-ColBERT directory from
:func:`jacolbert_core.testing.make_tiny_checkpoint` (default 4 layers x 256 hidden, dim 128,
doc_maxlen 300, so one passage costs what it would in a small real model; JaColBERT itself is
BERT-base, 12 layers x 768 hidden: pass ``--layers 12 --hidden 768 --heads 12`` with fewer
``--passages`` for that, about 10x slower per passage). Passages are 150-400 characters spliced
from sentences of the package's Japanese sample corpus (seeded), ~180 tokens each.

Three measurements, one run:

1. ``encode_documents`` (exact fp32) vs colbert-ai 0.2.22 ``Checkpoint.docFromText`` on the same
   checkpoint and passages (batch 32, torch threads = ``--threads`` in both, both warmed up,
   the reference in a subprocess of ``--reference-python``); the vectors of the first
   ``--check`` passages must agree. Both timings include tokenization.
2. Peak RSS growth while streaming 2k and 10k passages through ``iter_encode_documents`` with a
   small model, each in a fresh subprocess with 1 torch thread (``/proc/self/clear_refs``
   resets the high-water mark after loading), and the RSS left after ``malloc_trim``: live
   memory is bounded by the batch (plus the token ids of the collection), and so is the peak,
   since GELU runs on torch's native kernel (``jacolbert_core.model.activation``), not through
   oneDNN's per-shape primitive cache, whose blocks fragment glibc's heap. The same runs with
   ``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0`` show that the cache no longer matters.
3. ``quantize=True`` (dynamic int8 linear layers): speed-up over exact mode and its effect on
   MaxSim scores of 20 sample queries x all passages (absolute deviation, top-10 overlap).

The three encoders of (1) take turns on chunks of ``--chunk`` passages, so that a busy machine
slows them alike. Timings are wall clock and process CPU time. On a shared machine the wall
clock is noisy (the load average is printed); CPU time is disturbed less.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jacolbert_core.model.colbert import ColBERT
from jacolbert_core.model.scoring import maxsim
from jacolbert_core.testing import (
    make_tiny_checkpoint,
    sample_queries,
    spliced_passages,
)

BATCH_SIZE = 32

# Runs in the reference virtual environment and imports nothing from this repository. It loads
# the checkpoint and the passages once, then answers one JSON command per stdin line on the
# stdout it started with (anything colbert-ai prints goes to stderr).
REFERENCE_SCRIPT = r"""
import json, os, sys, time, warnings
os.environ["CUDA_VISIBLE_DEVICES"] = ""
warnings.filterwarnings("ignore")
reply = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
import numpy as np
import torch

path, texts_file = sys.argv[1:3]
threads, bsize = map(int, sys.argv[3:5])
torch.set_num_threads(threads)
from colbert.infra import ColBERTConfig
from colbert.modeling.checkpoint import Checkpoint
import colbert, transformers

texts = json.load(open(texts_file, encoding="utf-8"))
ck = Checkpoint(path, colbert_config=ColBERTConfig())
ck.eval()
versions = (
    f"colbert-ai {getattr(colbert, '__version__', '0.2.22')}, "
    f"transformers {transformers.__version__}, torch {torch.__version__}"
)
print(json.dumps({"versions": versions}), file=reply, flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    part = texts[cmd["start"] : cmd["stop"]]
    answer = {}
    with torch.inference_mode():
        wall, cpu = time.perf_counter(), time.process_time()
        if cmd["op"] == "tokenize":
            ck.doc_tokenizer.tensorize(part, bsize=bsize)
        else:
            flat, doclens = ck.docFromText(part, bsize=bsize, keep_dims="flatten")
        answer = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    if cmd["op"] == "save":
        np.savez(cmd["out"], vectors=flat.float().numpy(), doclens=np.asarray(doclens))
    print(json.dumps(answer), file=reply, flush=True)
"""


class Reference:
    """colbert-ai ``Checkpoint.docFromText`` in a long-lived subprocess of another Python."""

    def __init__(self, python: str, path: Path, texts: list[str], threads: int, tmp: Path):
        self.tmp = tmp
        script, texts_file = tmp / "reference.py", tmp / "texts.json"
        script.write_text(REFERENCE_SCRIPT, encoding="utf-8")
        texts_file.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        self.log = open(tmp / "reference.log", "w+")  # noqa: SIM115
        command = [python, str(script), str(path), str(texts_file), str(threads), str(BATCH_SIZE)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self.versions = self._read()["versions"]

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError(f"the reference process failed:\n{self.log.read()[-3000:]}")
        return json.loads(line)

    def call(self, op: str, start: int, stop: int, **extra: Any) -> dict:
        command = {"op": op, "start": start, "stop": stop, **extra}
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def vectors(self, stop: int) -> tuple[np.ndarray, np.ndarray]:
        out = self.tmp / "reference.npz"
        self.call("save", 0, stop, out=str(out))
        with np.load(out) as data:
            return data["vectors"], data["doclens"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.log.close()


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall-clock and process CPU seconds (all threads) of one call, and its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


# -- memory: runs in a fresh interpreter ---------------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_worker(path: str, n: int, seed: int, threads: int) -> None:
    torch.set_num_threads(threads)
    texts = spliced_passages(n, seed, low=150)
    model = ColBERT.from_pretrained(path, device="cpu")
    for _ in model.iter_encode_documents(texts[:256], BATCH_SIZE):  # warm up allocator, caches
        pass
    gc.collect()
    try:  # reset the high-water mark so loading the model does not count
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    before = _status_kb("VmRSS")
    produced = vectors = 0
    biggest_batch = 0
    for _, arrays in model.iter_encode_documents(texts, BATCH_SIZE):
        batch_bytes = sum(a.nbytes for a in arrays)  # an indexer would write these to disk now
        produced += batch_bytes
        vectors += sum(len(a) for a in arrays)
        biggest_batch = max(biggest_batch, batch_bytes)
    peak = _status_kb("VmHWM")
    try:  # hand free heap pages back: what is left is what the process still holds
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        trimmed = (_status_kb("VmRSS") - before) / 1024
    except OSError:
        trimmed = float("nan")
    # The one O(collection) structure the stream keeps: every text's token ids (Python lists).
    ids = model.tokenizer.document_ids(texts)
    int_objects = {id(i): sys.getsizeof(i) for seq in ids for i in seq}
    ids_bytes = sum(sys.getsizeof(seq) for seq in ids) + sum(int_objects.values())
    print(
        json.dumps(
            {
                "n": n,
                "reset": reset,
                "before_mb": before / 1024,
                "growth_mb": (peak - before) / 1024,
                "trimmed_mb": trimmed,
                "produced_mb": produced / 2**20,
                "biggest_batch_mb": biggest_batch / 2**20,
                "vectors": vectors,
                "ids_mb": ids_bytes / 2**20,
            }
        )
    )


def measure_memory(path: Path, n: int, env_extra: dict[str, str], args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--memory-worker", str(path), str(n)]
    command += ["--seed", str(args.seed), "--threads", "1"]
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    env.update(env_extra)
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- main ----------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-python", default=os.environ.get("JACOLBERT_REFERENCE_PYTHON"))
    parser.add_argument("--passages", type=int, default=1000)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=None, help="default: hidden // 64")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--doc-maxlen", type=int, default=300)
    parser.add_argument(
        "--residual-scale", type=float, default=0.5, help="see make_tiny_checkpoint"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (both sides)")
    parser.add_argument("--warmup", type=int, default=64, help="passages encoded before timing")
    parser.add_argument("--check", type=int, default=64, help="passages whose vectors are compared")
    parser.add_argument("--chunk", type=int, default=200, help="passages per turn")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--memory-sizes", default="2000,10000", help="'' skips the memory part")
    parser.add_argument("--no-quantize", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--memory-worker", nargs=2, metavar=("CHECKPOINT", "N"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.memory_worker:
        memory_worker(args.memory_worker[0], int(args.memory_worker[1]), args.seed, args.threads)
        return 0

    torch.set_num_threads(args.threads)
    heads = args.heads or max(1, args.hidden // 64)
    texts = spliced_passages(args.passages, args.seed, low=150)
    tmp = tempfile.TemporaryDirectory()
    path = make_tiny_checkpoint(
        Path(tmp.name, "bench"),
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=heads,
        dim=args.dim,
        doc_maxlen=args.doc_maxlen,
        residual_scale=args.residual_scale,
        seed=args.seed,
    )
    model = ColBERT.from_pretrained(path, device="cpu")
    print(
        f"checkpoint: random BERT {args.layers} layers x {args.hidden} hidden, {heads} heads, "
        f"dim {args.dim}, doc_maxlen {args.doc_maxlen} (JaColBERT is BERT-base, 12 x 768)"
    )
    n_tokens = sum(map(len, model.tokenizer.document_ids(texts)))
    print(
        f"{len(texts)} passages, {sum(map(len, texts)) / len(texts):.0f} chars and "
        f"{n_tokens / len(texts):.0f} tokens on average; torch threads {args.threads}, batch "
        f"{BATCH_SIZE}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n"
    )

    # 1. speed: ours exact, colbert-ai, ours int8, taking turns on chunks of passages so that a
    # busy machine slows them alike; the order rotates from chunk to chunk.
    n = len(texts)
    quant = None if args.no_quantize else ColBERT.from_pretrained(path, device="cpu", quantize=True)
    reference = None
    if args.reference_python:
        reference = Reference(args.reference_python, path, texts, args.threads, Path(tmp.name))
        print(f"reference: {reference.versions}")
    outputs: dict[str, list[np.ndarray]] = {"exact": [], "int8": []}

    def ours(name: str, encoder: ColBERT) -> Callable[[int, int], tuple[float, float]]:
        def run(start: int, stop: int) -> tuple[float, float]:
            wall, cpu, arrays = timed(lambda: encoder.encode_documents(texts[start:stop]))
            outputs[name] += arrays
            return wall, cpu

        return run

    contestants: dict[str, Callable[[int, int], tuple[float, float]]] = {
        "jacolbert encode_documents (exact fp32)": ours("exact", model)
    }
    if reference is not None:
        contestants["colbert-ai Checkpoint.docFromText"] = lambda start, stop: tuple(
            reference.call("encode", start, stop).values()
        )
    if quant is not None:
        contestants["jacolbert quantize=True (int8 dynamic)"] = ours("int8", quant)
    for encoder in (model, quant):
        if encoder is not None:
            encoder.encode_documents(texts[: args.warmup], BATCH_SIZE)
    if reference is not None:
        reference.call("encode", 0, args.warmup)
    totals = {name: [0.0, 0.0] for name in contestants}
    names = list(contestants)
    for turn, start in enumerate(range(0, n, args.chunk)):
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            wall, cpu = contestants[name](start, min(n, start + args.chunk))
            totals[name][0] += wall
            totals[name][1] += cpu
    exact_docs, quant_docs = outputs["exact"], outputs["int8"]

    t_tok, _, _ = timed(lambda: model.tokenizer.document_ids(texts))
    tokenize = {name: t_tok for name in names if name.startswith("jacolbert")}
    parity = ""
    if reference is not None:
        tokenize["colbert-ai Checkpoint.docFromText"] = reference.call("tokenize", 0, n)["wall"]
        vectors, doclens = reference.vectors(args.check)
        reference.close()
        mine = exact_docs[: args.check]
        if list(doclens) == [len(v) for v in mine]:
            mine = np.concatenate(mine)
            parity = (
                f"vectors of the first {args.check} passages ({len(mine)} x {mine.shape[1]}), "
                f"ours vs colbert-ai: max abs diff {np.abs(mine - vectors).max():.2e}"
            )
        else:
            parity = f"MISMATCH: token counts of the first {args.check} passages differ"
    base = totals.get("colbert-ai Checkpoint.docFromText", [None])[0]
    rows = [
        [
            name,
            f"{n / wall:.1f}",
            f"{cpu / n * 1e3:.1f}",
            f"{tokenize[name] / n * 1e3:.2f}",
            "" if base is None else f"{base / wall:.2f}x",
        ]
        for name, (wall, cpu) in totals.items()
    ]
    print(
        f"\n### Document encoding, {n} passages in turns of {args.chunk} (load average now "
        f"{os.getloadavg()[0]:.2f})\n"
    )
    header = ["implementation", "passages/s", "CPU ms/passage", "tokenize ms/passage"]
    print(table([*header, "speed vs colbert-ai (wall)"], rows))
    print(
        "(passages/s: wall clock; CPU: process time of all threads; tokenize: the tokenizer "
        "alone, included in both)"
    )
    exact_wall, exact_cpu = totals[names[0]]
    if parity:
        ref_wall, ref_cpu = totals["colbert-ai Checkpoint.docFromText"]
        print(f"\n{parity}")
        print(
            f"ours / colbert-ai: {ref_wall / exact_wall:.2f}x wall, {ref_cpu / exact_cpu:.2f}x CPU"
        )
    if quant is not None:
        q_wall, q_cpu = totals["jacolbert quantize=True (int8 dynamic)"]
        print(
            f"quantize=True / exact: {exact_wall / q_wall:.2f}x wall, {exact_cpu / q_cpu:.2f}x CPU"
        )

    # 3. effect of int8 on vectors and MaxSim ---------------------------------------------------
    if quant is not None:
        queries = [q["query"] for q in sample_queries()][: args.queries]
        exact_scores = np.stack([maxsim(q, exact_docs) for q in model.encode_queries(queries)])
        quant_scores = np.stack([maxsim(q, quant_docs) for q in quant.encode_queries(queries)])
        deviation = np.abs(exact_scores - quant_scores)
        k = min(10, n)
        top_exact = np.argsort(-exact_scores, axis=1, kind="stable")[:, :k]
        top_quant = np.argsort(-quant_scores, axis=1, kind="stable")[:, :k]
        overlap = [len(set(a) & set(b)) / k for a, b in zip(top_exact, top_quant, strict=True)]
        cosine = float(
            np.mean([(a * b).sum(1).mean() for a, b in zip(exact_docs, quant_docs, strict=True)])
        )
        gap = np.sort(exact_scores, axis=1)[:, ::-1]
        print(
            f"\n### quantize=True vs exact: MaxSim of {len(queries)} queries x {n} passages "
            f"(query length {model.config.query_maxlen})\n"
        )
        print(
            table(
                ["metric", "value"],
                [
                    ["max abs score deviation", f"{deviation.max():.4f}"],
                    ["mean abs score deviation", f"{deviation.mean():.4f}"],
                    ["mean exact score (for scale)", f"{exact_scores.mean():.3f}"],
                    [
                        "mean gap exact rank 1 - rank 10",
                        f"{(gap[:, 0] - gap[:, k - 1]).mean():.4f}",
                    ],
                    ["top-10 overlap, mean (min)", f"{np.mean(overlap):.3f} ({min(overlap):.1f})"],
                    [
                        "same top-1",
                        f"{int((top_exact[:, 0] == top_quant[:, 0]).sum())}/{len(queries)}",
                    ],
                    ["mean cosine of token vectors", f"{cosine:.5f}"],
                ],
            )
        )

    # 2. streaming memory --------------------------------------------------------------------------
    sizes = [int(s) for s in args.memory_sizes.split(",") if s.strip()]
    if sizes:
        small = make_tiny_checkpoint(Path(tmp.name, "small"), doc_maxlen=args.doc_maxlen)
        rows = []
        for env in ({}, {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"}):
            for size in sizes:
                r = measure_memory(small, size, env, args)
                rows.append(
                    [
                        " ".join(f"{k}={v}" for k, v in env.items()) or "torch defaults",
                        str(r["n"]),
                        f"{r['growth_mb']:.1f}",
                        f"{r['trimmed_mb']:.1f}",
                        f"{r['produced_mb']:.0f}",
                        f"{r['biggest_batch_mb']:.2f}",
                        f"{r['ids_mb']:.1f}",
                    ]
                )
                if not r["reset"]:
                    print("(/proc/self/clear_refs unavailable: growth includes loading the model)")
        print(
            "\n### Peak RSS growth while streaming iter_encode_documents (small model: 2 layers x "
            f"64, dim 32, doc_maxlen {args.doc_maxlen}; fresh process each, 1 torch thread)\n"
        )
        header = [
            "environment",
            "passages",
            "peak RSS growth (MB)",
            "after malloc_trim (MB)",
            "vectors streamed (MB)",
            "largest batch (MB)",
            "token ids held (MB)",
        ]
        print(table(header, rows))
        print(
            "(peak growth: VmHWM after streaming - VmRSS before; after malloc_trim: what is still "
            "resident once\n free heap pages go back to the OS, i.e. live memory. oneDNN's "
            "primitive cache would hold a JIT\n GELU per batch shape and fragment glibc's heap; "
            "our GELU bypasses oneDNN, so both rows\n should match.)"
        )
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

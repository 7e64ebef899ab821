"""Indexing, index size, start-up, search latency and PLAID quality, side by side with colbert-ai.

    python benchmarks/bench_index.py [--passages 5000] [--queries 100]
        [--reference-python /root/venvs/colbert/bin/python] [--index-rounds 2]
        [--layers 4 --hidden 256 --dim 128 --doc-maxlen 180] [--out results.json]

Same machine, same passages, same checkpoint, nbits=2, in one run (the colbert-ai side is
``benchmarks/reference_colbert.py`` under ``--reference-python``; without it only our side runs).

Data. Two random BERT checkpoints in the Stanford-ColBERT layout from
:func:`jacolbert_core.testing.make_tiny_checkpoint` (``--layers`` x ``--hidden``, dim ``--dim``,
doc_maxlen ``--doc-maxlen``): (i) *random* (flat MaxSim scores, the hard case) and (ii) *peaked*
(``residual_scale=0.05``: outputs stay near their token embeddings, so MaxSim behaves like
lexical matching with realistic score gaps). Passages: sentences of the package's Japanese
sample corpus spliced in seeded random order into 100-400 character passages, one passage per
document (chunking disabled, so both sides index identical units). Queries: 12-40 character
fragments of other passages made the same way (not indexed).

Measured (each side in a fresh process; ``ru_maxrss`` of the child from ``wait4``):

1. Indexing end to end (encode + build; model load excluded) and peak RSS, ours (``Index.create``
   + ``Index.add``) vs colbert-ai's ``Indexer``; encoding time inside the indexing run (time
   spent in ``ColBERT.iter_encode_documents`` / colbert-ai's ``CollectionEncoder.encode_passages``,
   which colbert-ai calls twice: k-means sample and collection) and the build time without it.
   Times are the medians of ``--index-rounds`` runs a side (default 2), ours and colbert-ai's
   alternating; peak RSS, phases and sizes come from the first run.
2. Bytes on disk per token vector (codes + residuals + IVF; and whole directories), resident
   memory added by opening the index and answering one query (model excluded: its RSS is
   measured around the model load plus one warm-up query encoding, ``WARM_UP_QUERY``, and
   subtracted on both sides), and the time from process start to the first answered query with
   the model imports (torch, transformers), the checkpoint load and that warm-up excluded;
   colbert-ai also once with an empty ``TORCH_EXTENSIONS_DIR`` (cold: it compiles its C++
   extensions on first use).
3. Search latency, k=10, p50/p95 over the queries (one warm pass first), with query encoding
   (``index.search(text)`` / ``Searcher.search``) and without (``model.encode_queries`` answered
   from a cache / ``Searcher.dense_search`` on pre-encoded queries), both at the k<=10 defaults
   (ncells 1, threshold 0.5, ndocs 256).
4. Quality against exact MaxSim over the ORIGINAL float32 vectors (``encode_documents`` + brute
   force): agreement@10 (overlap of the top-10 sets) and recall of the exact top 10 within the top
   100 (a k=100 search at that k's settings), nbits 1/2/4, default and ``SearchParams.high_recall``,
   on both checkpoints, with colbert-ai's at its defaults (nbits=2) beside them. "exact=True"
   is exhaustive scoring of the compressed vectors: the ceiling of candidate generation.
   A diagnostic row searches colbert-ai's own index (its k-means, codes and residuals, read by
   ``import_plaid_index``) with our PLAID: it separates our codec from our search.
5. ``keep_vectors=True`` (float16 vectors for an exact final rerank): size, latency, agreement.

Each checkpoint's passages go through the model once for quality: the random checkpoint's
float32 vectors are saved by the indexing worker of step 1 (outside its timings), the peaked
one's come from ``encode_documents``. Our quality indexes are built in this process from those
vectors (``iter_encode_documents`` answered from them: what ``Index.add`` would compute), and
k-means runs once per checkpoint (its centroids depend on the vectors and the seeded sample, not
on nbits; the random checkpoint's come from the step-1 worker). colbert-ai's peaked index, used
for quality only, is built from the same vectors too (``encode_passages`` answered from them;
the query vectors of both libraries are compared and agree). Only step 1 times indexing.

Wall-clock figures on a shared machine are noisy: the load average is printed and saved, and
the process CPU time per query is reported beside the latencies.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

T_MAIN = time.time()  # worker processes: after interpreter start-up, before heavy imports
HERE = Path(__file__).resolve().parent
QUERY_MAXLEN = 32
# Encoded once as part of the model load on both sides, before the index is opened: the first
# forward pass pages in model weights and kernels, which are the model's memory, not the index's.
WARM_UP_QUERY = "検索を始める前の準備として一度だけ問い合わせを符号化します"

TARGETS = {
    "index_time": 0.3,
    "index_memory": 0.25,
    "build_time": 0.3,
    "bytes_per_vector": 36.0,
    "resident": 0.5,
    "first_answer_s": 1.0,
    "latency": 0.5,
    "high_recall_agreement": 0.9,
    "high_recall_latency": 3.0,
}


# -- data ----------------------------------------------------------------------------------------


def make_queries(n: int, seed: int) -> list[str]:
    """``n`` distinct 12-40 character fragments of passages that are not indexed."""
    from jacolbert_core.testing import spliced_passages

    rng = random.Random(seed)
    others = spliced_passages(4 * n, seed)
    out: list[str] = []
    for passage in others:
        length = rng.randint(12, 40)
        start = rng.randint(0, max(0, len(passage) - length))
        fragment = passage[start : start + length].strip()
        if fragment and fragment not in out:
            out.append(fragment)
        if len(out) == n:
            break
    return out


# -- process helpers -----------------------------------------------------------------------------


def rss_kb() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(line.split()[1])
    return out


def load() -> float:
    return round(os.getloadavg()[0], 2)


def run_child(command: list[str], log: Path, env: dict | None = None) -> dict[str, Any]:
    """Run ``command``; wall time, the child's ``ru_maxrss`` (kB; the largest of it and any child
    it waited for) and its start time."""
    with open(log, "w") as handle:
        t_popen = time.time()
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": child.returncode,
        "wall_s": time.perf_counter() - start,
        "maxrss_kb": usage.ru_maxrss,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "t_popen": t_popen,
        "log": str(log),
    }


def log_tail(path: str | Path, n: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return ""


def run_worker(kind: str, spec: dict, tmp: Path, env: dict | None = None) -> dict[str, Any]:
    """Start this file (``kind='ours'``) or the reference script (``kind`` = its python) on a
    spec; returns the child's JSON result merged with the process figures."""
    name = f"{spec['mode']}-{spec.get('tag', '')}-{time.time_ns()}"
    spec_file, out_file = tmp / f"{name}.spec.json", tmp / f"{name}.out.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    if kind == "ours":
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_file)]
    else:
        command = [kind, str(HERE / "reference_colbert.py"), str(spec_file)]
    command.append(str(out_file))
    proc = run_child(command, tmp / f"{name}.log", env)
    if proc["returncode"] != 0 or not out_file.exists():
        raise RuntimeError(
            f"{'ours' if kind == 'ours' else 'colbert-ai'} {spec['mode']} worker failed "
            f"(exit {proc['returncode']}):\n{log_tail(proc['log'])}"
        )
    result = json.loads(out_file.read_text(encoding="utf-8"))
    result["process"] = proc
    return result


# -- our workers (fresh processes) ---------------------------------------------------------------


def import_model_stack() -> None:
    """What loading a BERT checkpoint needs whatever the library (torch, transformers' BERT
    model and Japanese tokenizer, MeCab): imported first on both sides and counted as model
    load, so the library import that follows is what the library adds."""
    import fugashi  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401
    import unidic_lite  # noqa: F401
    from transformers import (  # noqa: F401
        AutoModel,
        AutoTokenizer,
        BertJapaneseTokenizer,
        BertModel,
        BertTokenizerFast,
    )


def _import_model_stack(out: dict) -> None:
    start = time.perf_counter()
    import_model_stack()
    out["model_imports_s"] = time.perf_counter() - start
    start = time.perf_counter()
    import jacolbert_core.index.index  # noqa: F401

    out["library_import_s"] = time.perf_counter() - start


def _load_model(out: dict, checkpoint: str, warm_up: str | None = None):
    """Load the model, timing it and measuring the RSS it adds; with ``warm_up``, encoding that
    query once counts as part of the load (the weights are memory-mapped and paged in by the
    first forward pass; the reference side counts its warm-up the same way)."""
    from jacolbert_core.model.colbert import ColBERT

    before, start = rss_kb()["VmRSS"], time.perf_counter()
    model = ColBERT.from_pretrained(checkpoint, device="cpu")
    if warm_up:
        model.encode_queries([warm_up])
    out["model_load_s"] = time.perf_counter() - start
    out["model_rss_kb"] = rss_kb()["VmRSS"] - before
    return model


def _time_encoding(model, out: dict, dump: str | None = None) -> None:
    """Count the time spent inside ``model.iter_encode_documents`` (an instance override).

    With ``dump``, also append each batch's float32 vectors to ``dump`` (raw) and record their
    order and lengths, for the quality step to reuse instead of encoding again; the time that
    takes is recorded as ``dump_s`` (and subtracted from the indexing time by the caller)."""
    import numpy as np

    original = model.iter_encode_documents
    out["encode_s"] = out["dump_s"] = 0.0
    order: list[int] = []
    lengths: list[int] = []
    handle = open(dump, "wb") if dump else None  # noqa: SIM115

    def timed(*args, **kwargs):
        stream = original(*args, **kwargs)
        while True:
            start = time.perf_counter()
            try:
                item = next(stream)
            except StopIteration:
                out["encode_s"] += time.perf_counter() - start
                out.setdefault("memory", {})["after encode"] = rss_kb()["VmHWM"] // 1024
                if handle is not None:
                    handle.close()
                    out["dump_order"], out["dump_lengths"] = order, lengths
                return
            out["encode_s"] += time.perf_counter() - start
            if handle is not None:
                start = time.perf_counter()
                for i, array in zip(*item, strict=True):
                    handle.write(np.ascontiguousarray(array, dtype=np.float32).tobytes())
                    order.append(int(i))
                    lengths.append(len(array))
                out["dump_s"] += time.perf_counter() - start
            yield item

    model.iter_encode_documents = timed


def _time_phases(out: dict) -> None:
    """Time the build steps of ``Index.add`` by wrapping the functions it calls; also record the
    process's RSS high-water mark (VmHWM, MB) when each step ends (``memory``), to show which
    step sets the peak."""
    from jacolbert_core.index import codec, segment, store

    phases = out.setdefault("phases", {})
    memory = out.setdefault("memory", {})

    def wrap(fn, key):
        def wrapped(*args, **kwargs):
            start = time.perf_counter()
            memory[f"before {key}"] = rss_kb()["VmHWM"] // 1024
            try:
                return fn(*args, **kwargs)
            finally:
                phases[key] = phases.get(key, 0.0) + time.perf_counter() - start
                memory[f"after {key}"] = rss_kb()["VmHWM"] // 1024

        return wrapped

    timed_kmeans = wrap(codec._kmeans, "kmeans")
    codec._kmeans = timed_kmeans
    if out.get("kmeans_dir"):  # keep the centroids for the quality step (not timed)

        def saving(*args, **kwargs):
            result = timed_kmeans(*args, **kwargs)
            start = time.perf_counter()
            save_kmeans(out["kmeans_dir"], args, kwargs, result)
            out["dump_s"] += time.perf_counter() - start
            return result

        codec._kmeans = saving
    codec.ResidualCodec.train = staticmethod(wrap(codec.ResidualCodec.train, "train_codec"))
    codec.ResidualCodec.compress = wrap(codec.ResidualCodec.compress, "compress")
    segment.Segment.write = staticmethod(wrap(segment.Segment.write, "write_segment"))
    store.Store.write = wrap(store.Store.write, "sqlite_write")


def kmeans_key(args: tuple, kwargs: dict) -> str:
    """A key for a call of ``codec._kmeans(x, ...)``: every 1000th row of ``x`` and the rest."""
    import hashlib

    import numpy as np

    x = args[0]
    rows = np.ascontiguousarray(x[:: max(1, len(x) // 1000)], dtype=np.float32)
    digest = hashlib.sha1(rows.tobytes()).hexdigest()[:16]
    return f"{digest}-{x.shape}-{args[1:]!r}-{sorted(kwargs.items())!r}"


def save_kmeans(directory: str, args: tuple, kwargs: dict, centroids) -> None:
    import hashlib

    import numpy as np

    key = kmeans_key(args, kwargs)
    name = hashlib.sha1(key.encode()).hexdigest()[:16]
    np.save(Path(directory) / f"{name}.npy", centroids)
    (Path(directory) / f"{name}.key").write_text(key)


KMEANS_MEMO: dict[str, Any] = {}


def memoize_kmeans(directory: Path | None = None) -> None:
    """In this process, k-means runs once per sample: the centroids do not depend on nbits or
    keep_vectors (same vectors, same seeded sample), so the quality indexes of one checkpoint
    share them, and those of the indexing worker (saved in ``directory``) are reused."""
    import numpy as np

    from jacolbert_core.index import codec

    if directory is not None:
        for key_file in Path(directory).glob("*.key"):
            KMEANS_MEMO[key_file.read_text()] = np.load(key_file.with_suffix(".npy"))
    if getattr(codec._kmeans, "memoized", False):
        return
    original = codec._kmeans

    def memo(*args, **kwargs):
        key = kmeans_key(args, kwargs)
        if key not in KMEANS_MEMO:
            KMEANS_MEMO[key] = original(*args, **kwargs)
        return KMEANS_MEMO[key].copy()

    memo.memoized = True
    codec._kmeans = memo


def worker_index(spec: dict) -> dict:
    out: dict = {"t_main": T_MAIN, "kmeans_dir": spec.get("kmeans_dir")}
    _import_model_stack(out)
    from jacolbert_core.index.index import Index
    from jacolbert_core.text.chunking import ChunkingConfig

    model = _load_model(out, spec["checkpoint"])
    texts = json.loads(Path(spec["texts"]).read_text(encoding="utf-8"))
    out["rss_before_kb"] = rss_kb()
    _time_encoding(model, out, spec.get("dump"))
    _time_phases(out)
    start = time.perf_counter()
    index = Index.create(
        spec["path"], model, nbits=spec["nbits"], chunking=ChunkingConfig(enabled=False)
    )
    index.add(texts, ids=[str(i) for i in range(len(texts))])
    out["index_call_s"] = time.perf_counter() - start - out["dump_s"]
    out["rss_after_kb"] = rss_kb()
    out["stats"] = index.stats()
    return out


def _clock(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _ids(hits) -> list[int]:
    return [int(hit.document_id) for hit in hits]


def worker_open(spec: dict) -> dict:
    out: dict = {"t_main": T_MAIN}
    _import_model_stack(out)
    model = _load_model(out, spec["checkpoint"], spec.get("warm_up"))
    queries = json.loads(Path(spec["queries"]).read_text(encoding="utf-8"))
    out["rss_before_kb"] = rss_kb()
    from jacolbert_core.index.index import Index

    start = time.perf_counter()
    index = Index.open(spec["path"], model=model)
    out["open_s"] = time.perf_counter() - start
    start = time.perf_counter()
    index.search(queries[0], k=10)
    out["first_search_s"] = time.perf_counter() - start
    out["t_first_answer"] = time.time()
    out["rss_after_first_kb"] = rss_kb()
    if not spec.get("latency"):
        return out
    for query in queries[:5]:  # warm-up, as on the reference side
        index.search(query, k=10)
    full = [_clock(lambda q=q: index.search(q, k=10)) for q in queries]
    out["lat_full_s"] = [w for w, _, _ in full]
    out["cpu_full_s"] = [c for _, c, _ in full]
    cache = dict(zip(queries, model.encode_queries(queries), strict=True))
    model.encode_queries = lambda texts, batch_size=64: [cache[t] for t in texts]
    bare = [_clock(lambda q=q: index.search(q, k=10)) for q in queries]
    out["lat_search_s"] = [w for w, _, _ in bare]
    out["cpu_search_s"] = [c for _, c, _ in bare]
    out["top10"] = [_ids(hits) for _, _, hits in bare]
    out["rss_end_kb"] = rss_kb()
    return out


# -- quality (this process) ----------------------------------------------------------------------


def exact_topk(docs: list, queries: list, k: int):
    """Exact MaxSim of every query over every passage's float32 vectors: top-k ids and scores."""
    import numpy as np
    import torch

    q_all = torch.from_numpy(np.ascontiguousarray(np.concatenate(queries).T, dtype=np.float32))
    owner = torch.from_numpy(np.repeat(np.arange(len(queries)), [len(q) for q in queries]))
    dim = q_all.shape[0]
    scores = np.empty((len(docs), len(queries)), dtype=np.float32)
    step = 64  # passages per block: [64, <=doc_maxlen, query vectors] float32 similarities
    for lo in range(0, len(docs), step):
        block = docs[lo : lo + step]
        width = max(len(d) for d in block)
        padded = np.zeros((len(block), width, dim), dtype=np.float32)
        pad = np.ones((len(block), width), dtype=bool)
        for i, d in enumerate(block):
            padded[i, : len(d)] = d
            pad[i, : len(d)] = False
        sims = torch.from_numpy(padded) @ q_all  # [block, width, query vectors]
        sims.masked_fill_(torch.from_numpy(pad)[:, :, None], float("-inf"))
        best = sims.amax(dim=1)  # [block, query vectors]
        per_query = torch.zeros(len(block), len(queries)).index_add_(1, owner, best)
        scores[lo : lo + len(block)] = per_query.numpy()
    order = np.arange(len(docs))
    tops = [np.lexsort((order, -scores[:, j]))[:k] for j in range(len(queries))]
    return tops, [scores[t, j] for j, t in enumerate(tops)]


def overlap(found, truth) -> float:
    return len(set(map(int, found)) & set(map(int, truth))) / len(truth)


def mean_overlap(found_lists: list, truth: list, k: int = 10) -> float:
    """Mean share of each query's exact top ``k`` found in its list (one list per query)."""
    pairs = zip(found_lists, truth[: len(found_lists)], strict=True)
    return sum(overlap(found, exact[:k]) for found, exact in pairs) / len(found_lists)


def build_from_vectors(path: Path, model, texts: list[str], docs: list, nbits: int, keep: bool):
    """An index of ``texts`` whose encoder answers from ``docs`` (their cached vectors)."""
    from jacolbert_core.index.index import Index
    from jacolbert_core.text.chunking import ChunkingConfig

    index = Index.create(
        path,
        model,
        nbits=nbits,
        chunking=ChunkingConfig(enabled=False),
        keep_vectors=keep,
        overwrite=True,
    )

    def cached(passages, batch_size=32, show_progress=False):
        assert len(passages) == len(docs)
        for lo in range(0, len(docs), batch_size):
            positions = list(range(lo, min(lo + batch_size, len(docs))))
            yield positions, [docs[i] for i in positions]

    model.iter_encode_documents = cached
    try:
        index.add(texts, ids=[str(i) for i in range(len(texts))])
    finally:
        del model.iter_encode_documents
    return index


def high_recall_params(k: int):
    from jacolbert_core.search.plaid import SearchParams

    if hasattr(SearchParams, "high_recall"):
        return SearchParams.high_recall(k)
    return SearchParams(ncells=4, centroid_score_threshold=0.3, ndocs=4096)


def evaluate_index(index, queries: list[str], truth: list, ceiling_queries: int) -> dict:
    """Agreement@10, recall 10@100 and latency (query encoding cached) at both presets."""
    import numpy as np

    out: dict[str, Any] = {}
    for preset in ("default", "high_recall"):
        knobs10: dict = {}
        knobs100: dict = {}
        if preset == "high_recall":
            p10, p100 = high_recall_params(10), high_recall_params(100)
            knobs10 = {
                "ncells": p10.ncells,
                "centroid_score_threshold": p10.centroid_score_threshold,
                "ndocs": p10.ndocs,
            }
            knobs100 = {
                "ncells": p100.ncells,
                "centroid_score_threshold": p100.centroid_score_threshold,
                "ndocs": p100.ndocs,
            }
            out["high_recall_params"] = [p10.ncells, p10.centroid_score_threshold, p10.ndocs]
        for query in queries[:5]:
            index.search(query, k=10, **knobs10)
        runs = [_clock(lambda q=q, kw=knobs10: index.search(q, k=10, **kw)) for q in queries]
        top10 = [_ids(hits) for _, _, hits in runs]
        top100 = [_ids(index.search(q, k=100, **knobs100)) for q in queries]
        lat = np.array([w for w, _, _ in runs]) * 1e3
        cpu = np.array([c for _, c, _ in runs]) * 1e3
        out[preset] = {
            "agreement10": mean_overlap(top10, truth),
            "recall10_at100": mean_overlap(top100, truth),
            "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)),
            "cpu_p50_ms": float(np.percentile(cpu, 50)),
        }
    if ceiling_queries:
        sub = queries[:ceiling_queries]
        exact = [_ids(index.search(q, k=10, exact=True)) for q in sub]
        out["exact_compressed_agreement10"] = mean_overlap(exact, truth)
        out["ceiling_queries"] = len(sub)
    return out


def load_dump(path: str, order: list[int], lengths: list[int], dim: int) -> list:
    """The float32 vectors the indexing worker dumped, back in passage order."""
    import numpy as np

    flat = np.fromfile(path, dtype=np.float32).reshape(-1, dim)
    bounds = np.concatenate(([0], np.cumsum(lengths)))
    docs: list = [None] * len(order)
    for j, i in enumerate(order):
        docs[i] = flat[bounds[j] : bounds[j + 1]]
    return docs


def prepare_quality(
    name: str, checkpoint: Path, texts: list[str], queries: list[str], docs: list | None = None
) -> tuple[dict, Any, list]:
    """Exact ground truth for one checkpoint: (result dict, model, float vectors).

    ``docs``: the passages' float vectors if already computed (by the indexing worker with the
    same model and batch size, so identical to ``encode_documents``). The returned model answers
    ``encode_queries`` from a cache of the queries' vectors."""
    import numpy as np

    from jacolbert_core.model.colbert import ColBERT

    model = ColBERT.from_pretrained(checkpoint, device="cpu")
    start = time.perf_counter()
    reused = docs is not None
    if docs is None:
        docs = model.encode_documents(texts)
    encode_s = time.perf_counter() - start
    query_vectors = model.encode_queries(queries)
    cache = dict(zip(queries, query_vectors, strict=True))
    start = time.perf_counter()
    truth, truth_scores = exact_topk(docs, query_vectors, 100)
    exact_s = time.perf_counter() - start
    gaps = np.array([[s[0] - s[9], s[9] - s[10]] for s in truth_scores])
    result: dict[str, Any] = {
        "encode_documents_s": encode_s,
        "vectors_from_indexing_worker": reused,
        "exact_maxsim_s": exact_s,
        "n_vectors": int(sum(len(d) for d in docs)),
        "query_lengths": sorted({len(q) for q in query_vectors}),
        "mean_top1_score": float(np.mean([s[0] for s in truth_scores])),
        "mean_gap_1_10": float(gaps[:, 0].mean()),
        "mean_gap_10_11": float(gaps[:, 1].mean()),
        "truth": [t.tolist() for t in truth],
        "query_vectors": query_vectors,
        "ours": {},
    }
    print(
        f"[{name}] {'reused indexing vectors' if reused else 'encode_documents'} "
        f"{encode_s:.0f}s, exact MaxSim {exact_s:.1f}s, "
        f"{result['n_vectors']} vectors; load {load()}",
        flush=True,
    )
    model.encode_queries = lambda texts_, batch_size=64: [cache[t] for t in texts_]
    return result, model, docs


def our_quality(
    name: str, model, texts: list[str], docs: list, queries: list[str], truth: list, tmp, args
) -> dict:
    """Our indexes at each nbits (and keep_vectors) built from ``docs``, evaluated."""
    ours: dict[str, Any] = {}
    configs = [(nbits, False) for nbits in args.nbits]
    if not args.no_keep_vectors:
        configs.append((2, True))
    for nbits, keep in configs:
        path = tmp / f"q-{name}-{nbits}{'-keep' if keep else ''}"
        index = build_from_vectors(path, model, texts, docs, nbits, keep)
        stats = index.stats()
        row = evaluate_index(index, queries, truth, args.ceiling_queries)
        row["stats"] = stats
        ours[f"{nbits}{'+fp16' if keep else ''}"] = row
        print(
            f"[{name}] nbits={nbits}{' keep_vectors' if keep else ''}: "
            f"agreement default {row['default']['agreement10']:.3f} "
            f"high-recall {row['high_recall']['agreement10']:.3f}; "
            f"p50 {row['default']['p50_ms']:.1f} / {row['high_recall']['p50_ms']:.1f} ms; "
            f"load {load()}",
            flush=True,
        )
        del index
    return ours


def imported_quality(
    name: str, model, texts: list[str], ref_index: str, queries, truth, tmp, args
) -> dict:
    """Diagnostic: colbert-ai's index (its k-means, codes, residuals) imported with
    ``import_plaid_index`` and searched by our PLAID: separates the codec from the search."""
    from jacolbert_core.index.plaid_import import import_plaid_index

    start = time.perf_counter()
    index = import_plaid_index(ref_index, list(texts), tmp / f"imported-{name}", model=model)
    row = evaluate_index(index, queries, truth, args.ceiling_queries)
    row["import_s"] = time.perf_counter() - start
    print(
        f"[{name}] ours on colbert-ai's codec: agreement default "
        f"{row['default']['agreement10']:.3f} high-recall {row['high_recall']['agreement10']:.3f}",
        flush=True,
    )
    return row


def write_vectors(path: Path, docs: list) -> list[int]:
    """Float32 vectors of ``docs`` in passage order, raw, for the reference; their lengths."""
    import numpy as np

    with open(path, "wb") as handle:
        for d in docs:
            handle.write(np.ascontiguousarray(d, dtype=np.float32).tobytes())
    return [len(d) for d in docs]


# -- sizes ---------------------------------------------------------------------------------------


def dir_bytes(path: Path, predicate=lambda p: True) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and predicate(p))


def our_sizes(path: Path, stats: dict) -> dict:
    n = stats["token_vectors"]
    core = dir_bytes(
        path / "segments",
        lambda p: p.name in ("codes.npy", "residuals.npy", "ivf.npy", "ivf_offsets.npy"),
    )
    no_store = dir_bytes(path, lambda p: "store.sqlite3" not in p.name)
    total = dir_bytes(path)
    return {
        "n_vectors": n,
        "stats_bytes_per_vector": stats["bytes_per_vector"],
        "core_bytes_per_vector": core / n,
        "index_bytes_per_vector": no_store / n,
        "dir_bytes_per_vector": total / n,
        "dir_bytes": total,
    }


def reference_sizes(path: Path) -> dict:
    metadata = json.loads((path / "metadata.json").read_text())
    n = int(metadata["num_embeddings"])
    core = dir_bytes(
        path,
        lambda p: p.name.endswith((".codes.pt", ".residuals.pt")) or p.name.startswith("ivf"),
    )
    total = dir_bytes(path)
    return {
        "n_vectors": n,
        "core_bytes_per_vector": core / n,
        "index_bytes_per_vector": total / n,
        "dir_bytes_per_vector": total / n,
        "dir_bytes": total,
    }


# -- report --------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values) * 1e3, q))


def startup_excluding_model(result: dict) -> float:
    """Process start -> first answer, minus model imports (torch, transformers) and load."""
    total = result["t_first_answer"] - result["process"]["t_popen"]
    return total - result["model_imports_s"] - result.get("model_load_s", 0.0)


def resident_kb(result: dict) -> float:
    """RSS added by opening the index and answering one query, the model's RSS excluded."""
    grown = result["rss_after_first_kb"]["VmRSS"] - result["rss_before_kb"]["VmRSS"]
    return grown - (result.get("model_rss_kb", 0) if "searcher_init_s" in result else 0)


def indexing_times(result: dict, side: str) -> dict[str, float]:
    """An indexing worker's end-to-end time (model load excluded) and its encoding time; ours
    records ``encode_s``, colbert-ai's (``side="colbert-ai"``) its ``encode`` phase and the
    checkpoint load it does inside ``Indexer.index``."""
    if side == "ours":
        return {"total_s": result["index_call_s"], "encode_s": result["encode_s"]}
    phases = result["phases"]
    return {
        "total_s": result["index_call_s"] - phases.get("model_load_s", 0.0),
        "encode_s": phases.get("encode", 0.0),
    }


def median_times(rounds: list[dict[str, float]]) -> tuple[float, float]:
    """Median end-to-end and encoding time over indexing rounds."""
    return (
        statistics.median(r["total_s"] for r in rounds),
        statistics.median(r["encode_s"] for r in rounds),
    )


def report(res: dict, args) -> None:
    n = args.passages
    ours_ix, ref_ix = res["ours_index"], res.get("ref_index")
    print(
        f"\n## bench_index: {n} passages, {len(res['queries'])} queries, nbits=2, "
        f"random {args.layers}-layer x {args.hidden} checkpoint, dim {args.dim}, "
        f"doc_maxlen {args.doc_maxlen}\n"
    )
    print(
        f"machine: {os.cpu_count()} CPUs; load average (1 min) at start {res['load']['start']}, "
        f"during ours/colbert-ai indexing {res['load'].get('ours_index')}/"
        f"{res['load'].get('ref_index')}, at end {res['load'].get('end')}; {res['versions']}"
    )
    if res.get("parity"):
        print(f"parity: {res['parity']}")

    # 1. indexing
    def ratio(a, b):
        return None if (a is None or b in (None, 0)) else a / b

    rounds = res["index_rounds"]
    o_total, o_enc = median_times(rounds["ours"])
    o_peak = ours_ix["process"]["maxrss_kb"] / 1024
    o_grow = o_peak - ours_ix["rss_before_kb"]["VmRSS"] / 1024
    r_total = r_enc = r_peak = r_grow = None
    if ref_ix:
        ph = ref_ix["phases"]
        r_total, r_enc = median_times(rounds["colbert-ai"])
        r_peak = ref_ix["process"]["maxrss_kb"] / 1024
        r_grow = r_peak - (ref_ix["rss_before_kb"]["VmRSS"] + ph.get("model_rss_kb", 0)) / 1024
    rows = []

    def add(label, o, r, target_key=None, unit_fmt=".1f", absolute=None):
        rt = ratio(o, r)
        target = TARGETS.get(target_key) if target_key else None
        if absolute is not None:
            ok = None if o is None else o <= absolute
            rows.append(
                [label, fmt(o, unit_fmt), fmt(r, unit_fmt), fmt(rt), f"<= {absolute}", verdict(ok)]
            )
        else:
            ok = None if (rt is None or target is None) else rt <= target
            rows.append(
                [
                    label,
                    fmt(o, unit_fmt),
                    fmt(r, unit_fmt),
                    fmt(rt),
                    f"<= {target}x" if target else "",
                    verdict(ok) if target else "",
                ]
            )

    add(
        f"indexing end to end, s (encode + build; model load excluded; median of "
        f"{len(rounds['ours'])} run(s))",
        o_total,
        r_total,
        "index_time",
    )
    add("  of which encoding, s (colbert-ai: 2 passes)", o_enc, r_enc)
    add(
        "  build excluding encoding, s",
        o_total - o_enc,
        None if r_total is None else r_total - r_enc,
        "build_time",
    )
    add("peak RSS of the indexing process, MB", o_peak, r_peak, "index_memory", ".0f")
    add("  peak RSS above imports + model, MB", o_grow, r_grow, None, ".0f")
    wall_o, wall_r = ours_ix["process"]["wall_s"], ref_ix["process"]["wall_s"] if ref_ix else None
    add("whole indexing process wall, s (start-up, imports, model load included)", wall_o, wall_r)
    print(f"\n### 1. Indexing ({n} passages, random checkpoint, nbits=2)\n")
    print(table(["metric", "ours", "colbert-ai", "ours/colbert-ai", "target", "pass"], rows))
    for side, runs in rounds.items():
        if runs:
            listed = ", ".join(f"{r['total_s']:.1f} (encoding {r['encode_s']:.1f})" for r in runs)
            print(f"{side} indexing runs, s: {listed}")
    ph = ours_ix.get("phases", {})
    print(
        "\nour phases (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in ph.items())
        + f", encode {o_enc:.1f}, model load {ours_ix['model_load_s']:.1f} (excluded)"
    )
    if ours_ix.get("memory"):
        print(
            "our RSS high-water mark (MB) as the build goes: "
            + ", ".join(f"{k} {v}" for k, v in ours_ix["memory"].items())
        )
    if ref_ix:
        ph = ref_ix["phases"]
        print(
            "colbert-ai phases (s): "
            + ", ".join(
                f"{k} {ph[k]:.1f}"
                for k in ("setup", "train", "index", "finalize", "encode", "model_load_s")
                if k in ph
            )
            + f" (encode_passages called {ph.get('encode_calls', 0)}x)"
        )

    # 2. size, resident, start-up
    rows = []
    o_sz, r_sz = res["ours_sizes"], res.get("ref_sizes")
    o_bpv = o_sz["stats_bytes_per_vector"]
    rows.append(
        [
            "bytes/vector: codes + residuals + IVF",
            fmt(o_sz["core_bytes_per_vector"]),
            fmt(r_sz and r_sz["core_bytes_per_vector"]),
            "<= 36",
            verdict(o_sz["core_bytes_per_vector"] <= TARGETS["bytes_per_vector"]),
        ]
    )
    rows.append(
        [
            "bytes/vector: stats()['bytes_per_vector'] (all segment files)",
            fmt(o_bpv),
            "",
            "<= 36",
            verdict(o_bpv <= TARGETS["bytes_per_vector"]),
        ]
    )
    rows.append(
        [
            "bytes/vector: index dir without the text store (codec, manifest)",
            fmt(o_sz["index_bytes_per_vector"]),
            fmt(r_sz and r_sz["index_bytes_per_vector"]),
            "",
            "",
        ]
    )
    rows.append(
        [
            "bytes/vector: whole dir (ours incl. SQLite texts + metadata)",
            fmt(o_sz["dir_bytes_per_vector"]),
            fmt(r_sz and r_sz["dir_bytes_per_vector"]),
            "",
            "",
        ]
    )
    rows.append(["token vectors", str(o_sz["n_vectors"]), str(r_sz and r_sz["n_vectors"]), "", ""])
    print("\n### 2a. Index size on disk (nbits=2)\n")
    print(table(["metric", "ours", "colbert-ai", "target", "pass"], rows))

    o_open, r_open, r_cold = res["ours_open"], res.get("ref_search"), res.get("ref_cold")
    rows = []
    o_res = resident_kb(o_open) / 1024
    r_res = resident_kb(r_open) / 1024 if r_open else None
    rt = ratio(o_res, r_res)
    rows.append(
        [
            "RSS added by open + first query, MB (model excluded)",
            fmt(o_res, ".1f"),
            fmt(r_res, ".1f"),
            fmt(rt),
            "<= 0.5x",
            verdict(None if rt is None else rt <= TARGETS["resident"]),
        ]
    )
    o_anon = (o_open["rss_after_first_kb"]["RssAnon"] - o_open["rss_before_kb"]["RssAnon"]) / 1024
    r_anon = None
    if r_open:
        r_anon = (
            r_open["rss_after_first_kb"]["RssAnon"]
            - r_open["rss_before_kb"]["RssAnon"]
            - r_open.get("model_rss_kb", 0)
        ) / 1024
    rows.append(
        [
            "  of which anonymous (private) memory, MB (colbert-ai: minus its model's RSS)",
            fmt(o_anon, ".1f"),
            fmt(r_anon, ".1f"),
            fmt(ratio(o_anon, r_anon)),
            "",
            "",
        ]
    )
    rows.append(
        [
            "  RSS of the process after first query, MB (all)",
            fmt(o_open["rss_after_first_kb"]["VmRSS"] / 1024, ".0f"),
            fmt(r_open and r_open["rss_after_first_kb"]["VmRSS"] / 1024, ".0f"),
            "",
            "",
            "",
        ]
    )
    o_start = startup_excluding_model(o_open)
    r_start = startup_excluding_model(r_open) if r_open else None
    c_start = startup_excluding_model(r_cold) if r_cold else None
    rows.append(
        [
            "process start -> first answer, s (model imports + load excluded; warm)",
            fmt(o_start),
            fmt(r_start),
            fmt(ratio(o_start, r_start)),
            "<= 1 s",
            verdict(o_start <= TARGETS["first_answer_s"]),
        ]
    )
    if r_cold or res.get("ref_cold_error"):
        rows.append(
            [
                "  colbert-ai cold (empty TORCH_EXTENSIONS_DIR: compiles its C++)",
                "",
                fmt(c_start) if r_cold else "failed",
                "",
                "",
                "",
            ]
        )
    for label, key in (
        ("  model imports (torch, transformers), s", "model_imports_s"),
        ("  model load, s", "model_load_s"),
        ("  library import, s", "library_import_s"),
        ("  Index.open / Searcher(...) minus model load, s", None),
        ("  first search (incl. query encoding), s", "first_search_s"),
    ):
        if key is None:
            o_v = o_open["open_s"]
            r_v = r_open and r_open["searcher_init_s"] - r_open.get("model_load_s", 0.0)
        else:
            o_v, r_v = o_open.get(key), r_open and r_open.get(key)
        rows.append([label, fmt(o_v), fmt(r_v), "", "", ""])
    print("\n### 2b. Opening: resident memory and time to first answer (fresh process each)\n")
    print(table(["metric", "ours", "colbert-ai", "ours/colbert-ai", "target", "pass"], rows))

    # 3. latency
    rows = []
    for label, key, cpu_key in (
        ("k=10 with query encoding", "lat_full_s", "cpu_full_s"),
        ("k=10 without query encoding", "lat_search_s", "cpu_search_s"),
    ):
        o50, o95 = pct(o_open[key], 50), pct(o_open[key], 95)
        oc = pct(o_open[cpu_key], 50)
        r50 = r95 = rc = None
        if r_open:
            r50, r95, rc = pct(r_open[key], 50), pct(r_open[key], 95), pct(r_open[cpu_key], 50)
        rt = ratio(o50, r50)
        rows.append(
            [
                label,
                f"{o50:.1f} / {o95:.1f}",
                "-" if r50 is None else f"{r50:.1f} / {r95:.1f}",
                f"{oc:.1f}",
                fmt(rc, ".1f"),
                fmt(rt),
                "(<= 0.5x at 100k)",
                verdict(None if rt is None else rt <= TARGETS["latency"]),
            ]
        )
    print(
        f"\n### 3. Search latency, {len(res['queries'])} queries, k=10, defaults (1, 0.5, 256), "
        f"{n} passages (the 100k target is bench_search.py's)\n"
    )
    print(
        table(
            [
                "",
                "ours p50 / p95 ms",
                "colbert-ai p50 / p95 ms",
                "ours CPU p50 ms",
                "colbert-ai CPU p50 ms",
                "p50 ratio",
                "target",
                "pass",
            ],
            rows,
        )
    )

    # 4. quality
    rows = []
    for ck in ("random", "peaked"):
        q = res["quality"][ck]
        ref_q = res.get("ref_quality", {}).get(ck)
        ref_agree = ref_q and ref_q["agreement10"]
        for key, row in q["ours"].items():
            if "+fp16" in key:
                continue
            d, h = row["default"], row["high_recall"]
            ok_default = None
            if ref_agree is not None and key == "2":
                ok_default = d["agreement10"] >= ref_agree - 1e-9
            lat_ratio = h["p50_ms"] / d["p50_ms"]
            ok_hr = None
            if ck == "peaked":
                ok_hr = (
                    h["agreement10"] >= TARGETS["high_recall_agreement"] - 1e-9
                    and lat_ratio <= TARGETS["high_recall_latency"]
                )
            rows.append(
                [
                    ck,
                    key,
                    f"{d['agreement10']:.3f}",
                    f"{d['recall10_at100']:.3f}",
                    f"{d['p50_ms']:.1f}",
                    f"{h['agreement10']:.3f}",
                    f"{h['recall10_at100']:.3f}",
                    f"{h['p50_ms']:.1f} ({lat_ratio:.1f}x)",
                    fmt(row.get("exact_compressed_agreement10"), ".3f"),
                    fmt(ref_agree, ".3f") if key == "2" else "",
                    fmt(ref_q and ref_q["recall10_at100"], ".3f") if key == "2" else "",
                    verdict(ok_default),
                    verdict(ok_hr),
                ]
            )
        imp = q.get("imported")
        if imp:
            d, h = imp["default"], imp["high_recall"]
            rows.append(
                [
                    ck,
                    "2: colbert-ai's index imported, our search (diagnostic)",
                    f"{d['agreement10']:.3f}",
                    f"{d['recall10_at100']:.3f}",
                    f"{d['p50_ms']:.1f}",
                    f"{h['agreement10']:.3f}",
                    f"{h['recall10_at100']:.3f}",
                    f"{h['p50_ms']:.1f} ({h['p50_ms'] / d['p50_ms']:.1f}x)",
                    fmt(imp.get("exact_compressed_agreement10"), ".3f"),
                    "",
                    "",
                    "",
                    "",
                ]
            )
    hr = res["quality"]["random"]["ours"][str(args.nbits[0])].get("high_recall_params")
    print(
        "\n### 4. Quality vs exact MaxSim over the original float vectors "
        f"(k=10; latency p50 without query encoding; high-recall preset {tuple(hr or ())})\n"
    )
    print(
        table(
            [
                "checkpoint",
                "nbits",
                "agree@10 default",
                "recall 10@100 default",
                "p50 ms default",
                "agree@10 high-recall",
                "recall 10@100 high-recall",
                "p50 ms high-recall (x default)",
                "agree@10 exact=True (compressed)",
                "colbert-ai agree@10",
                "colbert-ai recall 10@100",
                "default >= colbert-ai",
                "high-recall >= 0.9 within 3x",
            ],
            rows,
        )
    )
    rows = []
    for ck in ("random", "peaked"):
        q = res["quality"][ck]
        rows.append(
            [
                ck,
                f"{q['mean_top1_score']:.2f}",
                f"{q['mean_gap_1_10']:.3f}",
                f"{q['mean_gap_10_11']:.4f}",
                str(q["n_vectors"]),
            ]
        )
    print("\nexact score shape (query length 32):\n")
    print(
        table(
            ["checkpoint", "mean top-1 score", "mean gap 1->10", "mean gap 10->11", "vectors"], rows
        )
    )

    # 5. keep_vectors
    if not args.no_keep_vectors:
        rows = []
        for ck in ("random", "peaked"):
            q = res["quality"][ck]["ours"]
            base, keep = q.get("2"), q.get("2+fp16")
            if not base or not keep:
                continue
            for label, row in (("nbits=2", base), ("nbits=2 + fp16 rerank", keep)):
                rows.append(
                    [
                        ck,
                        label,
                        fmt(row["stats"]["bytes_on_disk"] / row["stats"]["token_vectors"], ".1f"),
                        fmt(row["stats"]["bytes_on_disk"] / 2**20, ".1f"),
                        f"{row['default']['p50_ms']:.1f} / {row['default']['p95_ms']:.1f}",
                        f"{row['default']['agreement10']:.3f}",
                        f"{row['high_recall']['agreement10']:.3f}",
                        f"{row['high_recall']['p50_ms']:.1f}",
                    ]
                )
        print("\n### 5. keep_vectors=True (float16 vectors, exact final scores)\n")
        print(
            table(
                [
                    "checkpoint",
                    "index",
                    "dir bytes/vector",
                    "dir MB",
                    "p50 / p95 ms default",
                    "agree@10 default",
                    "agree@10 high-recall",
                    "p50 ms high-recall",
                ],
                rows,
            )
        )
    for key, error in res.get("reference_errors", {}).items():
        print(f"\ncolbert-ai {key} failed: {error.strip().splitlines()[-1] if error else ''}")


# -- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--reference-python", default=os.environ.get("JACOLBERT_REFERENCE_PYTHON"))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--doc-maxlen", type=int, default=180)
    parser.add_argument("--nbits", type=int, nargs="+", default=[2, 1, 4])
    parser.add_argument(
        "--ceiling-queries",
        type=int,
        default=25,
        help="queries scored with exact=True (exhaustive; 0 skips)",
    )
    parser.add_argument(
        "--index-rounds",
        type=int,
        default=2,
        help="with a reference: index this many times on each side, alternating, and compare "
        "the medians (drift of a shared machine then falls on both alike)",
    )
    parser.add_argument("--no-keep-vectors", action="store_true")
    parser.add_argument(
        "--no-import-diagnostic",
        action="store_true",
        help="skip searching colbert-ai's imported index with our PLAID",
    )
    parser.add_argument(
        "--no-cold", action="store_true", help="skip colbert-ai's cold start (C++ compile)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results.json")
    parser.add_argument("--keep-tmp", action="store_true")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.index_rounds < 1:
        parser.error("--index-rounds must be at least 1")
    if args.worker:
        spec = json.loads(Path(args.worker[0]).read_text(encoding="utf-8"))
        result = worker_index(spec) if spec["mode"] == "index" else worker_open(spec)
        Path(args.worker[1]).write_text(json.dumps(result), encoding="utf-8")
        return 0
    return run(args)


def run(args) -> int:
    import numpy as np
    import torch
    import transformers

    from jacolbert_core.testing import make_tiny_checkpoint, spliced_passages

    started = time.perf_counter()
    res: dict[str, Any] = {"args": vars(args), "load": {"start": load()}, "targets": TARGETS}
    res["versions"] = (
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"numpy {np.__version__}, python {sys.version.split()[0]}"
    )
    print(f"{os.cpu_count()} CPUs, load average {load()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench_index_"))
    texts = spliced_passages(args.passages, args.seed)
    queries = make_queries(args.queries, args.seed + 1)
    res["queries"] = queries
    (tmp / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    (tmp / "queries.json").write_text(json.dumps(queries, ensure_ascii=False), encoding="utf-8")
    heads = max(1, args.hidden // 64)
    checkpoints = {}
    for name, scale in (("random", 1.0), ("peaked", 0.05)):
        checkpoints[name] = make_tiny_checkpoint(
            tmp / f"ck-{name}",
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=heads,
            dim=args.dim,
            query_maxlen=QUERY_MAXLEN,
            doc_maxlen=args.doc_maxlen,
            residual_scale=scale,
            seed=args.seed,
        )
    print(
        f"{len(texts)} passages ({np.mean([len(t) for t in texts]):.0f} chars on average), "
        f"{len(queries)} queries; checkpoints in {tmp}",
        flush=True,
    )
    ref_python = args.reference_python
    errors: dict[str, str] = {}
    res["reference_errors"] = errors
    spec_common = {"texts": str(tmp / "texts.json"), "queries": str(tmp / "queries.json")}

    def reference(key: str, spec: dict, env=None) -> dict | None:
        try:
            return run_worker(ref_python, {**spec_common, **spec, "tag": key}, tmp, env)
        except Exception as error:  # record why and carry on with our side
            errors[key] = str(error)
            print(f"colbert-ai {key} FAILED: {str(error)[-1500:]}", flush=True)
            return None

    def ref_spec(ck: str, mode: str, **extra) -> dict:
        return {
            "mode": mode,
            "checkpoint": str(checkpoints[ck]),
            "root": str(tmp / "colbert"),
            "experiment": "bench",
            "name": f"{ck}.nbits2",
            "index_root": str(tmp / "colbert" / "bench" / "indexes"),
            "nbits": 2,
            "doc_maxlen": args.doc_maxlen,
            "query_maxlen": QUERY_MAXLEN,
            **extra,
        }

    # 1. indexing, random checkpoint, nbits=2: ours then colbert-ai
    ours_path = tmp / "ours-random-2"
    (tmp / "kmeans").mkdir()
    spec = {
        "mode": "index",
        "checkpoint": str(checkpoints["random"]),
        "path": str(ours_path),
        "nbits": 2,
        "tag": "ours",
    }
    keep = {"dump": str(tmp / "random-vectors.f32"), "kmeans_dir": str(tmp / "kmeans")}
    res["load"]["ours_index"] = load()
    res["ours_index"] = run_worker("ours", {**spec_common, **spec, **keep}, tmp)
    print(
        f"ours: indexed in {res['ours_index']['index_call_s']:.1f}s "
        f"(encoding {res['ours_index']['encode_s']:.1f}s), peak RSS "
        f"{res['ours_index']['process']['maxrss_kb'] / 1024:.0f} MB; load {load()}",
        flush=True,
    )
    res["ours_sizes"] = our_sizes(ours_path, res["ours_index"]["stats"])
    if ref_python:
        res["load"]["ref_index"] = load()
        res["ref_index"] = reference("index-random", ref_spec("random", "index"))
        if res["ref_index"]:
            ri = res["ref_index"]
            print(
                f"colbert-ai: indexed in {ri['index_call_s']:.1f}s (encoding "
                f"{ri['phases'].get('encode', 0):.1f}s), peak RSS "
                f"{ri['process']['maxrss_kb'] / 1024:.0f} MB; load {load()}",
                flush=True,
            )
            res["ref_sizes"] = reference_sizes(Path(ri["index_path"]))
    res["index_rounds"] = {"ours": [indexing_times(res["ours_index"], "ours")], "colbert-ai": []}
    if res.get("ref_index"):
        res["index_rounds"]["colbert-ai"].append(indexing_times(res["ref_index"], "colbert-ai"))
        for r in range(1, args.index_rounds):  # again, alternating, into throw-away indexes
            again = tmp / f"round-{r}"
            o = run_worker("ours", {**spec_common, **spec, "path": str(again / "ours")}, tmp)
            c = reference(
                f"index-random-{r}",
                ref_spec("random", "index", root=str(again), index_root=str(again / "indexes")),
            )
            shutil.rmtree(again, ignore_errors=True)
            if c is None:
                break
            res["index_rounds"]["ours"].append(indexing_times(o, "ours"))
            res["index_rounds"]["colbert-ai"].append(indexing_times(c, "colbert-ai"))
            print(
                f"round {r + 1}: ours indexed in {o['index_call_s']:.1f}s, colbert-ai in "
                f"{c['index_call_s']:.1f}s; load {load()}",
                flush=True,
            )

    # 2-3. open, first answer, latency: ours then colbert-ai (warm), colbert-ai cold
    res["load"]["open"] = load()
    res["ours_open"] = run_worker(
        "ours",
        {
            **spec_common,
            "mode": "open",
            "checkpoint": str(checkpoints["random"]),
            "path": str(ours_path),
            "latency": True,
            "warm_up": WARM_UP_QUERY,
            "tag": "ours",
        },
        tmp,
    )
    print(f"ours: opened and searched; load {load()}", flush=True)
    if ref_python and res.get("ref_index"):
        res["ref_search"] = reference(
            "search-random", ref_spec("random", "search", latency=True, warm_up=WARM_UP_QUERY)
        )
        print(f"colbert-ai: opened and searched; load {load()}", flush=True)
        if not args.no_cold:
            env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp / "cold_extensions"))
            res["ref_cold"] = reference(
                "cold-start", ref_spec("random", "search", warm_up=WARM_UP_QUERY), env
            )
            if res["ref_cold"]:
                print(
                    f"colbert-ai cold start: {startup_excluding_model(res['ref_cold']):.1f}s "
                    f"to first answer; load {load()}",
                    flush=True,
                )

    # 4-5. quality, both checkpoints; colbert-ai on the peaked one too (from the same vectors)
    res["quality"] = {}
    res["ref_quality"] = {}
    memoize_kmeans(tmp / "kmeans")
    for ck in ("random", "peaked"):
        docs = None
        if ck == "random":
            ix = res["ours_index"]
            docs = load_dump(
                str(tmp / "random-vectors.f32"),
                ix.pop("dump_order"),
                ix.pop("dump_lengths"),
                args.dim,
            )
        quality, model, docs = prepare_quality(ck, checkpoints[ck], texts, queries, docs)
        truth = quality["truth"]
        query_vectors = quality.pop("query_vectors")
        res["quality"][ck] = quality
        ref = None
        ref_index_path = None
        if ref_python:
            if ck == "random":
                ref = res.get("ref_search")
                ref_index_path = (res.get("ref_index") or {}).get("index_path")
            else:
                lengths = write_vectors(tmp / "peaked-vectors.f32", docs)
                (tmp / "peaked-lengths.json").write_text(json.dumps(lengths))
                vectors = {
                    "vectors": str(tmp / "peaked-vectors.f32"),
                    "lengths": str(tmp / "peaked-lengths.json"),
                    "dim": args.dim,
                }
                ri = reference("index-peaked", ref_spec("peaked", "index", **vectors))
                res["ref_index_peaked"] = ri
                if ri:
                    ref_index_path = ri["index_path"]
                    print(
                        f"colbert-ai: peaked indexed in {ri['index_call_s']:.1f}s "
                        f"(our vectors, no encoding); load {load()}",
                        flush=True,
                    )
                    ref = reference("search-peaked", ref_spec("peaked", "search", latency=True))
        if ref and "top10" in ref:
            res["ref_quality"][ck] = {
                "agreement10": mean_overlap(ref["top10"], truth),
                "recall10_at100": mean_overlap(ref["top100"], truth),
                "p50_ms": pct(ref["lat_search_s"], 50),
            }
            ref_q = np.load(ref["query_vectors"])
            mine = np.stack(query_vectors)
            if ref_q.shape == mine.shape:
                diff = float(np.abs(ref_q - mine).max())
                res["ref_quality"][ck]["query_vector_max_abs_diff"] = diff
                res.setdefault("parity", "")
                res["parity"] += f"{ck}: query vectors vs colbert-ai max abs diff {diff:.1e}; "
            else:
                res["ref_quality"][ck]["query_vector_shapes"] = [ref_q.shape, mine.shape]
            print(f"colbert-ai [{ck}] agreement@10 {res['ref_quality'][ck]['agreement10']:.3f}")
        quality["ours"] = our_quality(ck, model, texts, docs, queries, truth, tmp, args)
        if ref_index_path and not args.no_import_diagnostic:
            try:
                quality["imported"] = imported_quality(
                    ck, model, texts, ref_index_path, queries, truth, tmp, args
                )
            except Exception as error:  # a diagnostic only: record and go on
                quality["imported_error"] = repr(error)
                print(f"[{ck}] import of colbert-ai's index failed: {error!r}", flush=True)
        del docs, model
    o_top = res["ours_open"].get("top10")
    if o_top:
        res["ours_open_agreement10"] = mean_overlap(o_top, res["quality"]["random"]["truth"])
    res["load"]["end"] = load()
    res["total_s"] = time.perf_counter() - started
    report(res, args)
    print(f"\ntotal {res['total_s']:.0f}s", flush=True)
    for ck in res["quality"]:
        res["quality"][ck].pop("truth", None)
    for key in ("ref_search", "ref_index", "ref_cold", "ref_index_peaked", "ours_open"):
        if res.get(key):
            res[key].pop("query_vectors", None)
    Path(args.out).write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    print(f"saved {args.out}")
    if args.keep_tmp:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

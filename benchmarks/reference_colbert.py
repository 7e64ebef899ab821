"""The colbert-ai 0.2.22 side of ``benchmarks/bench_index.py`` and ``benchmarks/bench_search.py``.
Runs in the colbert-ai venv.

    /root/venvs/colbert/bin/python benchmarks/reference_colbert.py SPEC.json OUT.json

``SPEC.json`` says what to do (``mode``: ``index``, ``search`` or ``search_vectors``) and where;
``bench_index.py`` (or ``bench_search.py``)
writes it, starts this script in a fresh process and reads ``OUT.json``. Only colbert-ai, torch,
transformers, numpy and the standard library are imported: nothing from this repository, and no
colbert-ai code is copied here; its classes are used as a user would, with timers wrapped around
a few of their methods to split the phases:

* ``index``: ``Indexer(checkpoint, ColBERTConfig(nbits, doc_maxlen, query_maxlen))`` and
  ``Indexer.index(...)`` with colbert-ai's defaults (``kmeans_niters=4``, ``index_bsize=64``),
  ``nranks=1, gpus=0``. ``avoid_fork_if_possible=True`` runs the indexer in this process
  rather than a spawned child, so the timers see it; it saves colbert-ai a process start.
  Time inside ``CollectionEncoder.encode_passages`` (both its calls: the k-means sample and the
  whole collection) is reported as encoding; ``Checkpoint`` construction as model load.
  With ``vectors`` in the spec (a raw float32 file of every passage's token vectors in passage
  order, and their ``lengths``), ``encode_passages`` returns those instead of running the model:
  used for quality-only indexes, when the caller already has the very vectors colbert-ai's
  ``docFromText`` computes (same checkpoint; ``bench_index.py`` checks the query side).
* ``search``: ``Searcher(index, collection)``, the first ``search`` (time from process start
  is measured by the caller), RSS before/after, then, with ``latency``: k=10 latency with
  (``search``) and without (``dense_search`` on pre-encoded queries) query encoding, top-10 at
  the k<=10 defaults and top-100 at the k<=100 defaults, and the encoded queries (for a parity
  check with ours).
* ``search_vectors`` (``benchmarks/bench_search.py``): ``Searcher(index, checkpoint=...)`` on an
  index the caller wrote in colbert-ai's layout, ``dense_search`` latency on the caller's
  pre-encoded query vectors for each PLAID ``settings`` triple, and ``encode`` latency (one
  query text per call) on the same checkpoint.
"""

import json
import os
import sys
import time

T_MAIN = time.time()  # after interpreter start-up, before any heavy import

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def rss_kb() -> dict:
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(line.split()[1])
    return out


def timer(store: dict, key: str, fn):
    def wrapped(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            store[key] = store.get(key, 0.0) + time.perf_counter() - start
            store[key + "_calls"] = store.get(key + "_calls", 0) + 1

    return wrapped


def timed_checkpoint(store: dict, cls, warm_up: str | None = None):
    """A stand-in for ``Checkpoint`` that times its construction and the RSS it adds; with
    ``warm_up``, encoding that query once is counted as part of the load (the model's first
    forward pages in its weights and kernels, as ``bench_index.py`` counts on our side)."""

    def make(*args, **kwargs):
        before, start = rss_kb()["VmRSS"], time.perf_counter()
        checkpoint = cls(*args, **kwargs)
        if warm_up:
            checkpoint.queryFromText([warm_up])
        store["model_load_s"] = store.get("model_load_s", 0.0) + time.perf_counter() - start
        store["model_rss_kb"] = store.get("model_rss_kb", 0) + rss_kb()["VmRSS"] - before
        return checkpoint

    return make


def import_model_stack(out: dict) -> None:
    # the same list as bench_index.import_model_stack: counted as model load on both sides
    start = time.perf_counter()
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

    out["model_imports_s"] = time.perf_counter() - start
    start = time.perf_counter()
    import colbert  # noqa: F401

    out["library_import_s"] = time.perf_counter() - start
    out["version"] = f"colbert-ai {getattr(colbert, '__version__', '0.2.22')}"


def run_index(spec: dict) -> dict:
    out: dict = {"t_main": T_MAIN}
    import_model_stack(out)
    import colbert.indexing.collection_indexer as collection_indexer
    from colbert import Indexer
    from colbert.indexing.collection_encoder import CollectionEncoder
    from colbert.infra import ColBERTConfig, Run, RunConfig

    phases: dict = {}
    CollectionEncoder.encode_passages = timer(phases, "encode", CollectionEncoder.encode_passages)
    indexer_cls = collection_indexer.CollectionIndexer
    for name in ("setup", "train", "index", "finalize"):
        setattr(indexer_cls, name, timer(phases, name, getattr(indexer_cls, name)))
    collection_indexer.Checkpoint = timed_checkpoint(phases, collection_indexer.Checkpoint)

    with open(spec["texts"], encoding="utf-8") as handle:
        texts = json.load(handle)
    if spec.get("vectors"):
        import numpy as np
        import torch

        with open(spec["lengths"], encoding="utf-8") as handle:
            lengths = json.load(handle)
        flat = np.fromfile(spec["vectors"], dtype=np.float32).reshape(-1, spec["dim"])
        bounds = np.concatenate(([0], np.cumsum(lengths)))
        position = {text: i for i, text in enumerate(texts)}

        def precomputed(self, passages):
            if len(passages) == 0:
                return None, None
            parts = [flat[bounds[position[p]] : bounds[position[p] + 1]] for p in passages]
            return torch.from_numpy(np.concatenate(parts)), [len(x) for x in parts]

        CollectionEncoder.encode_passages = timer(phases, "encode", precomputed)
        out["precomputed_vectors"] = True
    out["rss_before_kb"] = rss_kb()
    run_config = RunConfig(
        nranks=1,
        gpus=0,
        experiment=spec["experiment"],
        root=spec["root"],
        avoid_fork_if_possible=True,  # Run().config would otherwise override the one below
    )
    with Run().context(run_config):
        config = ColBERTConfig(
            nbits=spec["nbits"],
            doc_maxlen=spec["doc_maxlen"],
            query_maxlen=spec["query_maxlen"],
            avoid_fork_if_possible=True,
        )
        start = time.perf_counter()
        indexer = Indexer(checkpoint=spec["checkpoint"], config=config, verbose=1)
        path = indexer.index(
            name=spec["name"], collection=texts, overwrite="force_silent_overwrite"
        )
        out["index_call_s"] = time.perf_counter() - start
    out["index_path"] = path
    out["phases"] = phases
    out["rss_after_kb"] = rss_kb()
    return out


def run_search(spec: dict) -> dict:
    out: dict = {"t_main": T_MAIN}
    import_model_stack(out)
    import colbert.searcher as searcher_module
    import numpy as np
    from colbert import Searcher
    from colbert.infra import Run, RunConfig

    timers: dict = {}
    searcher_module.Checkpoint = timed_checkpoint(
        timers, searcher_module.Checkpoint, spec.get("warm_up")
    )
    with open(spec["texts"], encoding="utf-8") as handle:
        texts = json.load(handle)
    with open(spec["queries"], encoding="utf-8") as handle:
        queries = json.load(handle)
    out["rss_before_kb"] = rss_kb()
    run_config = RunConfig(nranks=1, gpus=0, experiment=spec["experiment"], root=spec["root"])
    with Run().context(run_config):
        start = time.perf_counter()
        searcher = Searcher(
            index=spec["name"], index_root=spec["index_root"], collection=texts, verbose=1
        )
        out["searcher_init_s"] = time.perf_counter() - start
        start = time.perf_counter()
        searcher.search(queries[0], k=10)
        out["first_search_s"] = time.perf_counter() - start
        out["t_first_answer"] = time.time()
        out["rss_after_first_kb"] = rss_kb()
        out.update(timers)
        if not spec.get("latency"):
            return out

        def clock(fn):
            wall, cpu = time.perf_counter(), time.process_time()
            result = fn()
            return time.perf_counter() - wall, time.process_time() - cpu, result

        for query in queries[:5]:  # warm-up, as on our side
            searcher.search(query, k=10)
        with_encoding = [clock(lambda q=q: searcher.search(q, k=10)) for q in queries]
        out["lat_full_s"] = [w for w, _, _ in with_encoding]
        out["cpu_full_s"] = [c for _, c, _ in with_encoding]
        encoded = searcher.encode(queries)
        out["query_vectors"] = spec["out"] + ".queries.npy"
        np.save(out["query_vectors"], encoded.float().numpy())
        without = [
            clock(lambda i=i: searcher.dense_search(encoded[i : i + 1], k=10))
            for i in range(len(queries))
        ]
        out["lat_search_s"] = [w for w, _, _ in without]
        out["cpu_search_s"] = [c for _, c, _ in without]
        out["top10"] = [list(map(int, r[0])) for _, _, r in without]
        out["top10_with_encoding"] = [list(map(int, r[0])) for _, _, r in with_encoding]
        # dense_search keeps the settings of its first call: set the k<=100 defaults explicitly
        searcher.configure(ncells=2, centroid_score_threshold=0.45, ndocs=1024)
        out["top100"] = [
            list(map(int, searcher.dense_search(encoded[i : i + 1], k=100)[0]))
            for i in range(len(queries))
        ]
        out["rss_end_kb"] = rss_kb()
    return out


def run_search_vectors(spec: dict) -> dict:
    """Search latency of ``Searcher.dense_search`` on pre-encoded query vectors (the caller's
    synthetic queries, ``[n, q, D]`` float32 ``.npy``) for each ``settings`` triple, and query
    encoding latency of ``Searcher.encode`` on ``texts``, one query per call, with
    ``torch.set_num_threads(spec["threads"])``."""
    out: dict = {"t_main": T_MAIN}
    import_model_stack(out)
    import numpy as np
    import torch
    from colbert import Searcher
    from colbert.infra import Run, RunConfig

    torch.set_num_threads(int(spec["threads"]))
    out["torch_threads"] = torch.get_num_threads()
    query_vectors = torch.from_numpy(np.load(spec["query_vectors"]))
    with open(spec["texts"], encoding="utf-8") as handle:
        texts = json.load(handle)
    run_config = RunConfig(nranks=1, gpus=0, experiment=spec["experiment"], root=spec["root"])
    with Run().context(run_config):
        start = time.perf_counter()
        searcher = Searcher(
            index=spec["name"],
            index_root=spec["index_root"],
            checkpoint=spec["checkpoint"],
            collection=[f"passage {i}" for i in range(spec["n_passages"])],
            verbose=1,
        )
        out["searcher_init_s"] = time.perf_counter() - start
        out["rss_after_init_kb"] = rss_kb()

        def clock(fn):
            wall, cpu = time.perf_counter(), time.process_time()
            result = fn()
            return time.perf_counter() - wall, time.process_time() - cpu, result

        out["settings"] = []
        n = len(query_vectors)
        for ncells, threshold, ndocs in spec["settings"]:
            # dense_search keeps settings once set: set all three explicitly
            searcher.configure(ncells=ncells, centroid_score_threshold=threshold, ndocs=ndocs)
            for i in range(min(n, 5)):  # warm-up, as on our side
                searcher.dense_search(query_vectors[i : i + 1], k=10)
            runs = [
                clock(lambda i=i: searcher.dense_search(query_vectors[i : i + 1], k=10))
                for _ in range(spec["repeats"])
                for i in range(n)
            ]
            out["settings"].append(
                {
                    "params": [ncells, threshold, ndocs],
                    "lat_s": [w for w, _, _ in runs],
                    "cpu_s": [c for _, c, _ in runs],
                    "top10": [list(map(int, r[0])) for _, _, r in runs[:n]],
                }
            )
        for text in texts[:5]:
            searcher.encode(text)
        runs = [
            clock(lambda t=t: searcher.encode(t)) for _ in range(spec["repeats"]) for t in texts
        ]
        out["encode_lat_s"] = [w for w, _, _ in runs]
        out["encode_cpu_s"] = [c for _, c, _ in runs]
        out["encode_shape"] = list(runs[0][2].shape)
        out["rss_end_kb"] = rss_kb()
    return out


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    spec["out"] = sys.argv[2]
    modes = {"index": run_index, "search": run_search, "search_vectors": run_search_vectors}
    result = modes[spec["mode"]](spec)
    with open(sys.argv[2], "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())

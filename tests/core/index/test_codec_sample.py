"""Codec training inside ``Index.add``: the k-means sample and settings are fixed and seeded."""

from __future__ import annotations

import numpy as np
import pytest

from jacolbert_core.index import codec as codec_module
from jacolbert_core.index import index as index_module
from jacolbert_core.index.codec import default_num_centroids
from jacolbert_core.index.index import kmeans_sample


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (10, 10),  # tiny: every vector
        (20_000, 20_000),
        (50_000, 50_000),  # fewer than 32 per centroid (2048 centroids): every vector
        (700_378, 32 * 8192),  # the 5000-passage bench: 32 points per centroid
        (10_000_000, 32 * 32768),
    ],
)
def test_sample_size(n: int, expected: int) -> None:
    k = default_num_centroids(n)
    assert index_module.KMEANS_POINTS_PER_CENTROID == 32
    assert len(kmeans_sample(n, k, seed=1)) == expected


def test_sample_is_deterministic_sorted_and_distinct() -> None:
    a = kmeans_sample(700_378, 8192, seed=3)
    np.testing.assert_array_equal(a, kmeans_sample(700_378, 8192, seed=3))
    assert np.all(np.diff(a) > 0) and a[0] >= 0 and a[-1] < 700_378
    assert not np.array_equal(a, kmeans_sample(700_378, 8192, seed=4))


def test_index_trains_with_the_module_settings(make_index, monkeypatch) -> None:
    calls = []
    original = codec_module._kmeans

    def spy(x, k, iters, seed):
        calls.append((len(x), k, iters))
        return original(x, k, iters, seed)

    monkeypatch.setattr(codec_module, "_kmeans", spy)
    index = make_index(n=12)
    [(rows, k, iters)] = calls
    assert iters == index_module.KMEANS_ITERS
    assert k == index.stats()["centroids"] <= rows


def test_release_pages_keeps_the_data(tmp_path) -> None:
    path = tmp_path / "spill.f16"
    data = np.arange(4096 * 8, dtype=np.float16).reshape(-1, 8)
    data.tofile(path)
    spill = np.memmap(path, dtype=np.float16, mode="r", shape=data.shape)
    assert float(spill[::7].astype(np.float32).sum()) == float(data[::7].astype(np.float32).sum())
    index_module.release_pages(spill)  # pages leave RSS, the mapping stays valid
    np.testing.assert_array_equal(spill, data)
    index_module.release_pages(data)  # in-memory arrays: no-op


def _rss_anon_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(
    getattr(index_module._libc(), "malloc_trim", None) is None, reason="needs glibc"
)
def test_release_heap_returns_fragmented_free_memory() -> None:
    # 64 KiB blocks come from glibc's heap (below its mmap threshold); keeping every 16th
    # alive pins the heap's top, so free() alone gives nothing back
    blocks = [np.ones(1 << 13) for _ in range(3200)]  # 200 MiB
    kept = blocks[::16]
    del blocks
    before = _rss_anon_mb()
    index_module.release_heap()
    assert before - _rss_anon_mb() > 100
    assert all(float(block[-1]) == 1.0 for block in kept)  # live blocks are untouched


def test_add_releases_the_heap_after_encoding(make_index, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(index_module, "release_heap", lambda: calls.append(1))
    make_index(n=12)
    assert calls == [1]


def test_training_reads_exactly_the_sample_window_by_window(make_index, monkeypatch) -> None:
    seen = {}
    original = codec_module.ResidualCodec.train

    def spy(sample, *args, **kwargs):
        seen["rows"] = np.array(sample)
        return original(sample, *args, **kwargs)

    real_train = index_module.Index._train_codec

    def capture(self, vectors, nbits, generation):
        seen["expected"] = np.asarray(
            vectors[
                kmeans_sample(
                    len(vectors), index_module.default_num_centroids(len(vectors)), generation
                )
            ],
            dtype=np.float32,
        )
        return real_train(self, vectors, nbits, generation)

    # a sparse sample (10 rows) over many spill windows of 5 rows: most windows hold none
    monkeypatch.setattr(index_module, "COMPRESS_CHUNK", 5)
    monkeypatch.setattr(index_module, "default_num_centroids", lambda n: 10)
    monkeypatch.setattr(index_module, "KMEANS_POINTS_PER_CENTROID", 1)
    monkeypatch.setattr(codec_module.ResidualCodec, "train", staticmethod(spy))
    monkeypatch.setattr(index_module.Index, "_train_codec", capture)
    make_index(n=12)
    assert len(seen["rows"]) == 10 and len(seen["expected"]) == 10
    np.testing.assert_array_equal(seen["rows"], seen["expected"])

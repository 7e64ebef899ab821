"""Codec training inside ``Index.add``: the k-means sample and settings are fixed and seeded."""

from __future__ import annotations

import numpy as np
import pytest

from jacolbert_core import heap as heap_module
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


def test_add_releases_the_heap_before_training(make_index, monkeypatch) -> None:
    events = []
    monkeypatch.setattr(heap_module, "release_heap", lambda: events.append("release"))
    original = codec_module.ResidualCodec.train

    def spy(*args, **kwargs):
        events.append("train")
        return original(*args, **kwargs)

    monkeypatch.setattr(codec_module.ResidualCodec, "train", staticmethod(spy))
    make_index(n=48)  # more passages than one encoder batch (32)
    assert events == ["release", "train"]


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

"""Codec training rows: seeded draws, the module settings, reading a memory-mapped collection
window by window."""

from __future__ import annotations

import numpy as np
import pytest

from jacolbert_core.index import codec as codec_module
from jacolbert_core.index import spill
from jacolbert_core.index.codec import ResidualCodec, default_num_centroids, training_rows


@pytest.mark.parametrize(
    ("n", "heldout", "train"),
    [
        (10, 0, 10),  # tiny: nothing held out, every row trains
        (639, 0, 639),  # 5% would be 31 rows: too few to hold out
        (20_000, 1_000, 19_000),  # 2048 centroids x 16 > the rest: every other row trains
        (700_378, 35_018, 16 * 8192),  # the 5000-passage bench: 16 rows per centroid
        (10_000_000, 50_000, 16 * 32768),  # held-out rows capped at 50,000
    ],
)
def test_training_row_counts(n: int, heldout: int, train: int) -> None:
    k = default_num_centroids(n)
    held, rows = training_rows(
        n, k, 0.05, codec_module.KMEANS_POINTS_PER_CENTROID, np.random.default_rng(1)
    )
    assert (len(held), len(rows)) == (heldout, train)


def test_training_rows_are_seeded_sorted_and_disjoint() -> None:
    held, rows = training_rows(700_378, 8192, 0.05, 32, np.random.default_rng(3))
    again = training_rows(700_378, 8192, 0.05, 32, np.random.default_rng(3))
    np.testing.assert_array_equal(held, again[0])
    np.testing.assert_array_equal(rows, again[1])
    for ids in (held, rows):
        assert np.all(np.diff(ids) > 0) and ids[0] >= 0 and ids[-1] < 700_378
    assert not np.intersect1d(held, rows).size
    assert not np.array_equal(
        rows, training_rows(700_378, 8192, 0.05, 32, np.random.default_rng(4))[1]
    )


def test_index_trains_with_the_module_settings(make_index, monkeypatch) -> None:
    calls = []
    original = codec_module._lloyd

    def spy(x, rows, centroids, iters):
        calls.append((len(x), len(rows), len(centroids), iters))
        return original(x, rows, centroids, iters)

    monkeypatch.setattr(codec_module, "_lloyd", spy)
    index = make_index(n=12)
    [(n, rows, k, iters)] = calls
    assert iters == codec_module.KMEANS_ITERS
    held_out = int(0.05 * n)  # ~1300 vectors: 5% held out, every other row trains
    assert rows == min(
        n - held_out, codec_module.KMEANS_POINTS_PER_CENTROID * default_num_centroids(n)
    )
    assert k == index.stats()["centroids"] <= rows


def test_release_pages_keeps_the_data(tmp_path) -> None:
    path = tmp_path / "spill.f16"
    data = np.arange(4096 * 8, dtype=np.float16).reshape(-1, 8)
    data.tofile(path)
    mapped = np.memmap(path, dtype=np.float16, mode="r", shape=data.shape)
    assert float(mapped[::7].astype(np.float32).sum()) == float(data[::7].astype(np.float32).sum())
    spill.release_pages(mapped)  # pages leave RSS, the mapping stays valid
    np.testing.assert_array_equal(mapped, data)
    spill.release_pages(data)  # in-memory arrays: no-op


def test_read_rows_yields_exactly_the_rows_window_by_window(tmp_path, monkeypatch) -> None:
    data = np.random.default_rng(0).standard_normal((23, 8)).astype(np.float16)
    rows = np.array([0, 1, 7, 8, 9, 22])
    monkeypatch.setattr(spill, "READ_WINDOW", 5)  # windows 0-4, 5-9, 10-14 (none), 15-19, 20-22
    blocks = list(spill.read_rows(data, rows))
    assert [len(b) for b in blocks] == [2, 3, 1] and all(b.dtype == np.float32 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), data[rows].astype(np.float32))
    assert list(spill.read_rows(data, rows[:0])) == []


def test_training_on_a_memory_mapped_spill_equals_training_in_memory(tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    path = tmp_path / "vectors.f16"
    x.tofile(path)
    mapped = np.memmap(path, dtype=np.float16, mode="r", shape=x.shape)
    monkeypatch.setattr(spill, "READ_WINDOW", 100)  # 30 windows
    released = []
    real_release = spill.release_pages
    monkeypatch.setattr(spill, "release_pages", lambda a: released.append(1) or real_release(a))
    a = ResidualCodec.train(mapped, nbits=2, n_centroids=32, points_per_centroid=20, seed=5)
    b = ResidualCodec.train(
        x.astype(np.float32), nbits=2, n_centroids=32, points_per_centroid=20, seed=5
    )
    for name in ("centroids", "bucket_cutoffs", "bucket_weights", "avg_residual"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert len(released) >= 30  # every window read from the map was released after it


def test_lloyd_moves_centroids_to_the_normalised_means() -> None:
    x = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], dtype=np.float32)
    start = np.array([[1, 0], [0, 1]], dtype=np.float32)
    out = codec_module._lloyd(np.tile(x, (1, 4)), np.arange(4), np.tile(start, (1, 4)), 1)
    mean = np.array([1.8, 0.6]) / np.linalg.norm([1.8, 0.6])
    np.testing.assert_allclose(out[:, :2] * 2, [mean, mean[::-1]], atol=1e-6)

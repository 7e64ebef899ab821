"""Tests for the ColBERTv2/PLAID residual codec (jacolbert_core.index.codec)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jacolbert_core.index import codec as codec_module
from jacolbert_core.index.codec import (
    ResidualCodec,
    default_num_centroids,
    divisor_norms,
    residual_buckets,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
NBITS = (1, 2, 4)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int = 64, n_topics: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors scattered around fixed directions (same for every seed), like token
    embeddings; ``seed`` draws different vectors from the same distribution."""
    topics = unit_rows(np.random.default_rng(dim).standard_normal((n_topics, dim)))
    rng = np.random.default_rng(seed)
    x = topics[rng.integers(0, n_topics, n)] + 0.35 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return unit_rows(x)


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return clustered(6000, seed=1)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(2000, seed=2)


@pytest.fixture(scope="module")
def codecs(sample: np.ndarray) -> dict[int, ResidualCodec]:
    return {nbits: ResidualCodec.train(sample, nbits=nbits, seed=0) for nbits in NBITS}


def packbits_reference_layout(buckets: np.ndarray, nbits: int) -> np.ndarray:
    """The layout spelled out: nbits bits per dim, LSB first, dim-major, np.packbits."""
    bits = (buckets[..., None] >> np.arange(nbits, dtype=np.uint8)) & 1
    return np.packbits(bits.reshape(len(buckets), -1), axis=1)


# ---------------------------------------------------------------------- centroid count


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, 1),
        (3, 3),
        (20, 20),
        (64, 64),
        (100, 100),
        (1000, 256),
        (10_000, 1024),
        (1_000_000, 8192),
    ],
)
def test_default_num_centroids(n: int, expected: int) -> None:
    assert default_num_centroids(n) == expected


def test_default_num_centroids_rejects_zero() -> None:
    with pytest.raises(ValueError, match="n_vectors"):
        default_num_centroids(0)


# ---------------------------------------------------------------------- bit layout


def test_bit_layout_by_hand() -> None:
    cutoffs = np.array([-0.5, 0.0, 0.5], np.float32)
    weights = np.array([-0.75, -0.25, 0.25, 0.75], np.float32)
    codec = ResidualCodec(np.zeros((1, 8), np.float32), cutoffs, weights, np.zeros(8), nbits=2)
    buckets = np.array([1, 2, 3, 0, 0, 1, 2, 3])
    codes, packed = codec.compress(weights[buckets][None, :])
    # dims 0-3: buckets 1,2,3,0 -> LSB-first bit pairs 10 01 11 00 -> 0b10011100
    # dims 4-7: buckets 0,1,2,3 -> 00 10 01 11 -> 0b00100111
    assert codes.tolist() == [0]
    assert packed.tolist() == [[0b10011100, 0b00100111]]
    np.testing.assert_array_equal(codec.decompress_residuals(packed)[0], weights[buckets])


@pytest.mark.parametrize("nbits", NBITS)
def test_bit_layout_matches_packbits_spelling(nbits: int) -> None:
    rng = np.random.default_rng(nbits)
    dim = 40  # a multiple of 8 but not of 32: the layout still holds
    edges = np.sort(rng.standard_normal(2 * (1 << nbits) - 1)).astype(np.float32)
    weights, cutoffs = edges[0::2], edges[1::2]  # each weight lies inside its bucket
    centroids = np.zeros((1, dim), np.float32)
    codec = ResidualCodec(centroids, cutoffs, weights, np.zeros(dim), nbits=nbits)
    buckets = rng.integers(0, 1 << nbits, (300, dim)).astype(np.uint8)
    _, packed = codec.compress(weights[buckets])
    assert packed.shape == (300, dim * nbits // 8)
    np.testing.assert_array_equal(packed, packbits_reference_layout(buckets, nbits))
    np.testing.assert_array_equal(codec.decompress_residuals(packed), weights[buckets])


def test_value_on_cutoff_goes_to_lower_bucket() -> None:
    cutoffs = np.array([-0.5, 0.0, 0.5], np.float32)
    weights = np.array([-0.75, -0.25, 0.25, 0.75], np.float32)
    codec = ResidualCodec(np.zeros((1, 8), np.float32), cutoffs, weights, np.zeros(8), nbits=2)
    x = np.array([[-0.5, 0.0, 0.5, 0.5001, -0.5001, 9.0, -9.0, 0.0001]], np.float32)
    recon = codec.decompress_residuals(codec.compress(x)[1])[0]
    np.testing.assert_array_equal(recon, [-0.75, -0.25, 0.25, 0.75, -0.75, 0.75, -0.75, 0.25])


# ---------------------------------------------------------------------- reference golden


def load_golden(nbits: int) -> dict[str, np.ndarray]:
    path = FIXTURES / f"codec_golden_{nbits}bit.npz"
    assert path.is_file(), f"missing {path}; run tests/fixtures/make_codec_golden.py"
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("case", ["rand", "grid"])
def test_matches_reference_compress_and_decompress(nbits: int, case: str) -> None:
    g = load_golden(nbits)
    assert int(g["nbits"]) == nbits
    centroids = g["grid_centroids"] if case == "grid" else g["centroids"]
    codec = ResidualCodec(
        centroids, g["bucket_cutoffs"], g["bucket_weights"], g["avg_residual"], nbits=nbits
    )
    codes, packed = codec.compress(g[f"{case}_vectors"])
    np.testing.assert_array_equal(codes, g[f"{case}_codes"])
    np.testing.assert_array_equal(packed, g[f"{case}_residuals"])
    # The reference CPU path is float32 (its GPU path is fp16), so agreement is tight.
    recon = codec.decompress(g[f"{case}_codes"], g[f"{case}_residuals"])
    np.testing.assert_allclose(recon, g[f"{case}_decompressed"], atol=1e-6)


@pytest.mark.parametrize("nbits", NBITS)
def test_matches_reference_on_every_byte_value(nbits: int) -> None:
    g = load_golden(nbits)
    assert set(np.unique(g["bytes_residuals"]).tolist()) == set(range(256))
    codec = ResidualCodec(
        g["centroids"], g["bucket_cutoffs"], g["bucket_weights"], g["avg_residual"], nbits=nbits
    )
    recon = codec.decompress(g["bytes_codes"], g["bytes_residuals"])
    np.testing.assert_allclose(recon, g["bytes_decompressed"], atol=1e-6)


# ---------------------------------------------------------------------- training


@pytest.mark.parametrize("nbits", NBITS)
def test_train_shapes_and_statistics(codecs: dict[int, ResidualCodec], nbits: int) -> None:
    codec = codecs[nbits]
    assert codec.nbits == nbits
    assert codec.num_centroids == default_num_centroids(6000) == 1024
    assert codec.centroids.shape == (1024, 64) and codec.centroids.dtype == np.float16
    norms = np.linalg.norm(codec.centroids.astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)  # normalised, then rounded to float16
    assert codec.bucket_cutoffs.shape == ((1 << nbits) - 1,)
    assert codec.bucket_weights.shape == (1 << nbits,)
    assert codec.avg_residual.shape == (64,) and np.all(codec.avg_residual > 0)
    # cut-offs sit between the bucket values, all ascending
    merged = np.empty(2 * (1 << nbits) - 1, np.float32)
    merged[0::2], merged[1::2] = codec.bucket_weights, codec.bucket_cutoffs
    assert np.all(np.diff(merged) > 0)


def test_train_statistics_come_from_the_heldout_residuals(sample: np.ndarray) -> None:
    codec = ResidualCodec.train(sample, nbits=2, n_centroids=64, heldout_fraction=0.1, seed=3)
    shuffled = sample.copy()
    np.random.default_rng(3).shuffle(shuffled)
    heldout = shuffled[-600:]
    residuals = heldout - codec.centroids[codec.assign(heldout)]
    cutoffs, weights = residual_buckets(residuals, 2)
    np.testing.assert_array_equal(codec.bucket_cutoffs, cutoffs)
    np.testing.assert_array_equal(codec.bucket_weights, weights)
    np.testing.assert_allclose(codec.avg_residual, np.abs(residuals).mean(axis=0), atol=1e-6)


def _bucket_mse(values: np.ndarray, cutoffs: np.ndarray, weights: np.ndarray) -> float:
    return float(np.mean((values - weights[np.searchsorted(cutoffs, values)]) ** 2))


@pytest.mark.parametrize(
    ("nbits", "cutoffs", "weights"),
    [  # Lloyd-Max quantisers of the standard normal (Max, 1960)
        (1, [0.0], [-0.7979, 0.7979]),
        (2, [-0.9816, 0.0, 0.9816], [-1.5104, -0.4528, 0.4528, 1.5104]),
    ],
)
def test_residual_buckets_are_the_least_squares_quantiser(
    nbits: int, cutoffs: list[float], weights: list[float]
) -> None:
    half = np.random.default_rng(0).standard_normal(200_000)
    values = np.concatenate([half, -half])  # symmetric, as the normal distribution
    got_cutoffs, got_weights = residual_buckets(values, nbits, rounds=None)  # converged
    np.testing.assert_allclose(got_cutoffs, cutoffs, atol=0.01)
    np.testing.assert_allclose(got_weights, weights, atol=0.01)


@pytest.mark.parametrize("nbits", NBITS)
def test_residual_buckets_fixed_point_and_error(nbits: int) -> None:
    # peaked at zero with long tails, like residual coordinates
    values = np.random.default_rng(nbits).laplace(0.0, 0.01, 100_000).astype(np.float32)
    cutoffs, weights = residual_buckets(values, nbits, rounds=None)
    assert cutoffs.dtype == weights.dtype == np.float32
    merged = np.empty(2 * len(weights) - 1)
    merged[0::2], merged[1::2] = weights, cutoffs
    assert np.all(np.diff(merged) > 0)
    # each weight is the mean of its bucket, each cut-off the midpoint of its neighbours
    buckets = np.searchsorted(cutoffs, values)  # = number of cut-offs strictly below
    means = [values[buckets == j].mean() for j in range(len(weights))]
    np.testing.assert_allclose(weights, means, atol=1e-5)
    np.testing.assert_allclose(cutoffs, (weights[1:] + weights[:-1]) / 2, atol=1e-5)
    # and it reconstructs better than the reference's quantile buckets
    n_buckets = len(weights)
    levels = np.arange(n_buckets) / n_buckets
    quantile_mse = _bucket_mse(
        values, np.quantile(values, levels[1:]), np.quantile(values, levels + 0.5 / n_buckets)
    )
    assert _bucket_mse(values, cutoffs, weights) < 0.95 * quantile_mse


@pytest.mark.parametrize("nbits", NBITS)
def test_residual_buckets_rounds_refine_the_quantile_buckets(nbits: int) -> None:
    values = np.random.default_rng(nbits).laplace(0.0, 0.01, 100_000).astype(np.float32)
    n_buckets = 1 << nbits
    levels = np.arange(n_buckets) / n_buckets
    start = residual_buckets(values, nbits, rounds=0)  # the reference's rule
    np.testing.assert_allclose(start[0], np.quantile(values, levels[1:]), rtol=1e-6)
    np.testing.assert_allclose(start[1], np.quantile(values, levels + 0.5 / n_buckets), rtol=1e-6)
    errors = [
        _bucket_mse(values, *residual_buckets(values, nbits, rounds)) for rounds in (0, 1, 2, None)
    ]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(errors, errors[1:], strict=False))
    default = residual_buckets(values, nbits)  # RESIDUAL_BUCKET_ROUNDS rounds
    np.testing.assert_array_equal(default[0], residual_buckets(values, nbits, rounds=3)[0])
    assert errors[-1] < _bucket_mse(values, *default) < errors[0]


def test_residual_buckets_degenerate_inputs() -> None:
    cutoffs, weights = residual_buckets(np.zeros((5, 8)), 2)  # every vector is a centroid
    np.testing.assert_array_equal(cutoffs, 0.0)
    np.testing.assert_array_equal(weights, 0.0)
    with pytest.raises(ValueError, match="empty"):
        residual_buckets(np.zeros((0, 8)), 2)
    with pytest.raises(ValueError, match="rounds"):
        residual_buckets(np.ones(8), 2, rounds=-1)


def test_train_leaves_the_sample_alone_unless_overwrite(sample: np.ndarray) -> None:
    before = sample.copy()
    kept = ResidualCodec.train(sample, nbits=2, n_centroids=32, seed=5)
    np.testing.assert_array_equal(sample, before)
    mine = sample.copy()
    shuffled = ResidualCodec.train(mine, nbits=2, n_centroids=32, seed=5, overwrite=True)
    assert not np.array_equal(mine, before)  # shuffled in place: the same rows, reordered
    np.testing.assert_array_equal(np.sort(mine, axis=0), np.sort(before, axis=0))
    np.testing.assert_array_equal(kept.centroids, shuffled.centroids)
    np.testing.assert_array_equal(kept.bucket_weights, shuffled.bucket_weights)


def test_train_is_deterministic_given_seed(sample: np.ndarray) -> None:
    a = ResidualCodec.train(sample, nbits=2, n_centroids=128, seed=7)
    b = ResidualCodec.train(sample, nbits=2, n_centroids=128, seed=7)
    c = ResidualCodec.train(sample, nbits=2, n_centroids=128, seed=8)
    for name in ("centroids", "bucket_cutoffs", "bucket_weights", "avg_residual"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.centroids, c.centroids)


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("n", [1, 2, 3, 20, 39])
def test_tiny_inputs(nbits: int, n: int) -> None:
    # e.g. 3 short documents of ~7 tokens each: far fewer vectors than default centroids
    x = clustered(n, dim=32, seed=n)
    codec = ResidualCodec.train(x, nbits=nbits)
    assert 1 <= codec.num_centroids <= n
    codes, packed = codec.compress(x)
    assert codes.shape == (n,) and packed.shape == (n, 32 * nbits // 8)
    recon = codec.decompress(codes, packed)
    assert np.all(np.isfinite(recon))
    # Nothing is held out of so few rows and every vector becomes a centroid: exact.
    assert codec.num_centroids == n
    assert np.min(np.sum(recon * x, axis=1)) > 0.9999


@pytest.mark.parametrize("heldout_fraction", [0.0, 0.5])
def test_tiny_inputs_with_explicit_settings(heldout_fraction: float) -> None:
    x = clustered(20, dim=16, seed=3)
    codec = ResidualCodec.train(
        x, nbits=2, n_centroids=1000, heldout_fraction=heldout_fraction, kmeans_iters=1
    )
    assert codec.num_centroids == 20  # n_centroids clamped; 10 held-out rows are too few
    # every vector is a centroid: only the float16 rounding of the centroids is left
    np.testing.assert_allclose(codec.decompress(*codec.compress(x)), x, atol=2e-4)


def test_float32_centroids_stay_float32_and_code_alike(
    codecs: dict[int, ResidualCodec], queries: np.ndarray
) -> None:
    # codecs made before float16 centroids (and any other float dtype given) keep float32;
    # the same values in either dtype compress, decompress and quantise alike
    half = codecs[2]
    for dtype in (np.float32, np.float64):
        single = dataclasses.replace(half, centroids=half.centroids.astype(dtype))
        assert single.centroids.dtype == np.float32
        assert single.centroids.nbytes == 2 * half.centroids.nbytes
        codes, packed = half.compress(queries)
        np.testing.assert_array_equal(single.compress(queries)[0], codes)
        np.testing.assert_array_equal(single.compress(queries)[1], packed)
        np.testing.assert_array_equal(
            single.decompress(codes, packed), half.decompress(codes, packed)
        )
        np.testing.assert_array_equal(single.centroids_int8.codes, half.centroids_int8.codes)


def test_train_accepts_float64(sample: np.ndarray) -> None:
    a = ResidualCodec.train(sample[:500], nbits=2, n_centroids=16)
    b = ResidualCodec.train(sample[:500].astype(np.float64), nbits=2, n_centroids=16)
    np.testing.assert_array_equal(a.centroids, b.centroids)


# ---------------------------------------------------------------------- round trip


def test_codes_equal_brute_force_argmax(
    codecs: dict[int, ResidualCodec], queries: np.ndarray
) -> None:
    codec = codecs[2]
    expected = np.argmax(queries @ codec.centroids.T, axis=1)
    assert codec.assign(queries).dtype == np.int32
    np.testing.assert_array_equal(codec.assign(queries), expected)
    np.testing.assert_array_equal(codec.compress(queries)[0], expected)
    assert codec.assign(queries[:0]).shape == (0,)


def test_faiss_blocks_apply_inside_and_are_restored(
    codecs: dict[int, ResidualCodec], queries: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    cvar = codec_module._faiss().cvar
    before = (cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs)
    # blocks far smaller than the data: assignment reduces over several blocks each way
    monkeypatch.setattr(codec_module, "_FAISS_BLOCKS", (5, 7))
    seen: list[tuple[int, int]] = []
    codec = codecs[2]
    index = codec._flat_index()
    search = index.search

    def spy(x: np.ndarray, k: int):
        seen.append((cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs))
        return search(x, k)

    monkeypatch.setattr(index, "search", spy)
    np.testing.assert_array_equal(
        codec.assign(queries), np.argmax(queries @ codec.centroids.T, axis=1)
    )
    assert seen and set(seen) == {(5, 7)}
    assert (cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs) == before
    ResidualCodec.train(queries, 2, n_centroids=8, kmeans_iters=2)  # k-means searches too
    assert (cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs) == before


@pytest.mark.parametrize("nbits", NBITS)
def test_reconstruction_error_bounded_by_bucket_gap(
    codecs: dict[int, ResidualCodec], queries: np.ndarray, nbits: int
) -> None:
    codec = codecs[nbits]
    codes, packed = codec.compress(queries)
    residual = queries - codec.centroids[codes]
    unnormalised = codec.centroids[codes] + codec.decompress_residuals(packed)
    err = np.abs(unnormalised - queries)
    w, c = codec.bucket_weights, codec.bucket_cutoffs
    # A residual between the outermost bucket values is at most one bucket width from its value.
    gap = np.max(np.diff(np.concatenate([w[:1], c, w[-1:]])))
    inside = (residual >= w[0]) & (residual <= w[-1])
    assert inside.mean() > 1 - 1.5 / (1 << nbits)
    assert np.all(err[inside] <= gap + 1e-6)
    # Outside, the nearest extreme value is used.
    extreme = np.where(residual < w[0], w[0], w[-1])
    np.testing.assert_allclose(err[~inside], np.abs(residual - extreme)[~inside], atol=1e-6)


def test_reconstruction_quality_improves_with_bits(
    codecs: dict[int, ResidualCodec], queries: np.ndarray
) -> None:
    cosine = {}
    for nbits, codec in codecs.items():
        recon = codec.decompress(*codec.compress(queries))
        assert recon.dtype == np.float32 and recon.shape == queries.shape
        np.testing.assert_allclose(np.linalg.norm(recon, axis=1), 1.0, atol=1e-5)
        cosine[nbits] = float(np.mean(np.sum(recon * queries, axis=1)))
    centroid_only = float(np.mean(np.max(queries @ codecs[1].centroids.T, axis=1)))
    assert centroid_only < cosine[1] < cosine[2] < cosine[4]
    assert cosine[1] > 0.95 and cosine[2] > 0.98 and cosine[4] > 0.995


def test_chunked_compress_and_decompress_agree(
    codecs: dict[int, ResidualCodec], queries: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = codecs[4]
    codes, packed = codec.compress(queries)
    recon = codec.decompress(codes, packed)
    monkeypatch.setattr(codec_module, "_COMPRESS_CHUNK", 333)
    monkeypatch.setattr(codec_module, "_DECOMPRESS_CHUNK", 7)
    codes2, packed2 = codec.compress(queries)
    np.testing.assert_array_equal(codes2, codes)
    np.testing.assert_array_equal(packed2, packed)
    np.testing.assert_array_equal(codec.decompress(codes2, packed2), recon)


def test_empty_batch(codecs: dict[int, ResidualCodec]) -> None:
    codec = codecs[2]
    codes, packed = codec.compress(np.zeros((0, 64), np.float32))
    assert codes.shape == (0,) and packed.shape == (0, 16) and packed.dtype == np.uint8
    assert codec.decompress(codes, packed).shape == (0, 64)


# ---------------------------------------------------------------------- persistence


@pytest.mark.parametrize("nbits", NBITS)
def test_save_load_round_trip(
    codecs: dict[int, ResidualCodec], queries: np.ndarray, tmp_path: Path, nbits: int
) -> None:
    codec = codecs[nbits]
    codec.save(tmp_path / "codec")
    files = sorted(p.name for p in (tmp_path / "codec").iterdir())
    assert files == [
        "avg_residual.npy",
        "bucket_cutoffs.npy",
        "bucket_weights.npy",
        "centroids.npy",
        "codec.json",
    ]
    meta = json.loads((tmp_path / "codec" / "codec.json").read_text())
    assert meta["nbits"] == nbits and meta["dim"] == 64 and meta["num_centroids"] == 1024
    loaded = ResidualCodec.load(tmp_path / "codec")
    assert loaded.nbits == nbits
    for name in ("centroids", "bucket_cutoffs", "bucket_weights", "avg_residual"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(codec, name))
        assert getattr(loaded, name).dtype == (np.float16 if name == "centroids" else np.float32)
    codes, packed = codec.compress(queries[:100])
    codes2, packed2 = loaded.compress(queries[:100])
    np.testing.assert_array_equal(codes2, codes)
    np.testing.assert_array_equal(packed2, packed)
    np.testing.assert_array_equal(loaded.decompress(codes, packed), codec.decompress(codes, packed))


def test_load_errors(codecs: dict[int, ResidualCodec], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="codec.json"):
        ResidualCodec.load(tmp_path / "nowhere")
    codecs[1].save(tmp_path)
    meta = json.loads((tmp_path / "codec.json").read_text())
    (tmp_path / "codec.json").write_text(json.dumps({**meta, "version": 999}))
    with pytest.raises(ValueError, match="version"):
        ResidualCodec.load(tmp_path)
    (tmp_path / "codec.json").write_text(json.dumps({**meta, "dim": 32}))
    with pytest.raises(ValueError, match="disagree"):
        ResidualCodec.load(tmp_path)


# ---------------------------------------------------------------------- immutability, errors


def test_codec_is_immutable(codecs: dict[int, ResidualCodec]) -> None:
    codec = codecs[2]
    with pytest.raises(dataclasses.FrozenInstanceError):
        codec.nbits = 4  # type: ignore[misc]
    with pytest.raises(ValueError):
        codec.centroids[0, 0] = 1.0
    assert "num_centroids=1024" in repr(codec)


def test_constructor_copies_and_accepts_reference_scalar_avg_residual() -> None:
    centroids = np.eye(2, 8, dtype=np.float32)
    codec = ResidualCodec(centroids, [0.0], [-0.1, 0.1], np.float32(0.05), nbits=1)
    centroids[0, 0] = 5.0
    assert codec.centroids[0, 0] == 1.0
    np.testing.assert_array_equal(codec.avg_residual, np.full(8, 0.05, np.float32))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample": np.zeros((0, 32), np.float32)}, "empty"),
        ({"sample": np.ones(32, np.float32)}, "2-D"),
        ({"sample": np.ones((10, 32), np.int64)}, "floating"),
        ({"sample": np.ones((10, 12), np.float32)}, "multiple of 8"),
        ({"sample": np.full((10, 32), np.nan, np.float32)}, "NaN"),
        ({"nbits": 3}, "nbits"),
        ({"nbits": 8}, "nbits"),
        ({"nbits": True}, "nbits"),
        ({"n_centroids": 0}, "n_centroids"),
        ({"heldout_fraction": 1.0}, "heldout_fraction"),
        ({"kmeans_iters": 0}, "kmeans_iters"),
    ],
)
def test_train_errors(kwargs: dict, match: str) -> None:
    args = {"sample": clustered(50, dim=32)} | kwargs
    with pytest.raises(ValueError, match=match):
        ResidualCodec.train(**args)


def test_encode_decode_errors(codecs: dict[int, ResidualCodec]) -> None:
    codec = codecs[2]
    good = clustered(4, dim=64)
    codes, packed = codec.compress(good)
    with pytest.raises(ValueError, match="dim 32"):
        codec.compress(np.ones((3, 32), np.float32))
    with pytest.raises(ValueError, match="floating"):
        codec.assign(np.ones((3, 64), np.int32))
    with pytest.raises(ValueError, match="2-D"):
        codec.compress(good[0])
    with pytest.raises(ValueError, match="uint8"):
        codec.decompress(codes, packed.astype(np.int64))
    with pytest.raises(ValueError, match=r"\[n, 16\]"):
        codec.decompress(codes, packed[:, :8])
    with pytest.raises(ValueError, match="one entry per residual row"):
        codec.decompress(codes[:3], packed)
    with pytest.raises(ValueError, match="range"):
        codec.decompress(np.full(4, 1024), packed)
    with pytest.raises(ValueError, match="integers"):
        codec.decompress(codes.astype(np.float32), packed)


@pytest.mark.parametrize(
    ("cutoffs", "weights", "match"),
    [
        ([0.0, 0.1], [-0.1, 0.1], "bucket_cutoffs must have 1"),
        ([0.0], [-0.1, 0.0, 0.1], "bucket_weights must have 2"),
        ([np.nan], [-0.1, 0.1], "NaN"),
    ],
)
def test_constructor_errors(cutoffs: list, weights: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ResidualCodec(np.eye(2, 8, dtype=np.float32), cutoffs, weights, np.zeros(8), nbits=1)


def test_constructor_rejects_unsorted_cutoffs() -> None:
    with pytest.raises(ValueError, match="ascending"):
        ResidualCodec(
            np.eye(2, 8, dtype=np.float32), [0.1, 0.0, 0.2], np.zeros(4), np.zeros(8), nbits=2
        )


def test_centroids_int8_block_by_block(codecs: dict[int, ResidualCodec], monkeypatch) -> None:
    import torch

    codec = dataclasses.replace(codecs[2])  # a fresh codec: centroids_int8 is cached
    monkeypatch.setattr(codec_module, "_INT8_BLOCK", 7)  # blocks, and a short last one
    assert codec.num_centroids % 7
    codes, scale, max_error, max_norm = codec.centroids_int8
    centroids = torch.from_numpy(codec.centroids).float()
    assert scale == pytest.approx(float(centroids.abs().max()) / 127, rel=1e-6)
    assert codes.dtype == torch.int8 and int(codes.abs().max()) == 127  # one scale for all
    assert torch.equal(codes, torch.round(centroids / scale).to(torch.int8))
    error = torch.linalg.vector_norm(centroids - codes * scale, dim=1)
    assert max_error == pytest.approx(float(error.max()), rel=1e-6) and max_error > 0
    assert max_norm == pytest.approx(float(torch.linalg.vector_norm(centroids, dim=1).max()))


def test_decompress_unchecked_equals_decompress(
    codecs: dict[int, ResidualCodec], queries: np.ndarray
) -> None:
    codec = codecs[2]
    codes, packed = codec.compress(queries)
    small = codes.astype(np.uint16)  # the dtype segments store
    np.testing.assert_array_equal(
        codec.decompress_unchecked(small, packed), codec.decompress(codes, packed)
    )
    for nbits, each in codecs.items():  # into the first rows of a larger buffer
        codes, packed = each.compress(queries)
        out = np.full((len(codes) + 5, each.dim), 7.0, dtype=np.float32)
        got = each.decompress_unchecked(codes, packed, out)
        assert np.shares_memory(got, out) and got.shape == (len(codes), each.dim), nbits
        np.testing.assert_array_equal(got, each.decompress(codes, packed))
        assert (out[len(codes) :] == 7.0).all()
    for bad_out in (out[:3], out[:, :-1], out.astype(np.float64), np.asfortranarray(out)):
        with pytest.raises(ValueError, match="out must be"):  # a reshape would copy it
            codecs[4].decompress_unchecked(codes, packed, bad_out)
    bad = codes.copy()
    bad[3] = codecs[4].num_centroids
    with pytest.raises(IndexError):  # unchecked, but not unsafe
        codecs[4].decompress_unchecked(bad, packed)


def test_decompress_unchecked_without_normalising(
    codecs: dict[int, ResidualCodec], queries: np.ndarray
) -> None:
    for nbits, codec in codecs.items():
        codes, packed = codec.compress(queries)
        raw = codec.decompress_unchecked(codes, packed, normalise=False)
        expected = codec.centroids[codes].astype(np.float32) + codec.decompress_residuals(packed)
        np.testing.assert_array_equal(raw, expected, err_msg=f"nbits={nbits}")
        unit = raw / divisor_norms(torch.from_numpy(raw)).numpy()
        np.testing.assert_allclose(unit, codec.decompress(codes, packed), rtol=0, atol=1e-7)


@pytest.mark.parametrize("bad", [[np.nan], [np.inf], [np.inf, -np.inf]])
def test_train_rejects_non_finite_samples(sample: np.ndarray, bad: list[float]) -> None:
    broken = sample[:200].copy()
    broken[7, : len(bad)] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        ResidualCodec.train(broken, 2, 8)


_CORE_PROBE = """
import ctypes, glob, json, os
from jacolbert_core.index import codec
faiss = codec._faiss()
folder = os.path.join(os.path.dirname(os.path.dirname(faiss.__file__)), "faiss_cpu.libs")
libs = glob.glob(os.path.join(folder, "libopenblas*"))
core = None
if libs:
    lib = ctypes.CDLL(libs[0])
    lib.openblas_get_corename.restype = ctypes.c_char_p
    core = lib.openblas_get_corename().decode()
print(json.dumps({"core": core, "env": os.environ.get("OPENBLAS_CORETYPE")}))
"""


def _faiss_openblas_core(env: dict[str, str]) -> dict:
    """The kernel set ("core") that faiss's bundled OpenBLAS runs in a fresh process that
    imports faiss through the codec, and OPENBLAS_CORETYPE there afterwards."""
    done = subprocess.run(
        [sys.executable, "-c", _CORE_PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_faiss_openblas_runs_the_kernels_of_the_cpu() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    seen = _faiss_openblas_core(env)
    if seen["core"] is None:
        pytest.skip("this faiss has no bundled OpenBLAS")
    assert seen["env"] is None  # set for faiss's import only
    expected = codec_module._OPENBLAS_CORES.get(torch.backends.cpu.get_cpu_capability())
    if expected is None:
        return  # not an x86 CPU with AVX2: OpenBLAS's own choice stands
    assert seen["core"] == expected
    # a core the user chose stands (Prescott: SSE3, which every x86-64 CPU runs)
    assert _faiss_openblas_core({**env, "OPENBLAS_CORETYPE": "Prescott"}) == {
        "core": "Prescott",
        "env": "Prescott",
    }

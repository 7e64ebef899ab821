"""Tests for PLAID search over one segment (jacolbert_core.search.plaid).

Every stage is checked against a brute-force computation written out with Python loops over
passages; the whole pipeline against exhaustive exact MaxSim.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from jacolbert_core.index.codec import ResidualCodec, quantise_rows
from jacolbert_core.index.segment import CorruptIndexError, Segment
from jacolbert_core.search import plaid
from jacolbert_core.search.plaid import SearchParams

DIM = 32
FILES = ("codes", "residuals", "doclens", "ivf", "ivf_offsets")
# probe's products: float32, and each int8 kernel that runs here (torch._int_mm runs anywhere)
KERNELS = [
    None,
    "int_mm",
    pytest.param(
        "onednn",
        marks=pytest.mark.skipif(
            plaid._ONEDNN_LEVELS is None, reason="oneDNN's int8 product is missing or inexact"
        ),
    ),
]


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Data:
    """A synthetic collection: passages about topics, tokens clustered around word centers."""

    def __init__(self, n_passages: int = 300, seed: int = 0, zero_length: tuple = (7, 150)):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.topics = unit_rows(rng.standard_normal((12, DIM)))
        self.words = unit_rows(rng.standard_normal((150, DIM)))
        self.doclens = rng.integers(1, 25, n_passages).astype(np.int32)
        self.doclens[list(zero_length)] = 0  # passages without tokens are never returned
        self.topic = rng.integers(0, len(self.topics), n_passages)
        self.vectors = self.tokens(np.repeat(self.topic, self.doclens))

    def tokens(self, topic: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = self.rng if rng is None else rng
        word = rng.integers(0, len(self.words), len(topic))
        x = self.words[word] + 0.5 * self.topics[topic]
        return unit_rows(x + 0.15 * rng.standard_normal(x.shape))

    def query(self, q: int, seed: int = 0) -> np.ndarray:
        """``q`` vectors about one topic; the same for the same ``(q, seed)``."""
        rng = np.random.default_rng([q, seed])
        return self.tokens(np.full(q, rng.integers(0, len(self.topics))), rng)


def write_segment(
    directory: Path,
    codec: ResidualCodec,
    vectors: np.ndarray,
    doclens: np.ndarray,
    store_vectors: bool = False,
) -> Segment:
    codes, residuals = codec.compress(vectors)
    Segment.write(
        directory,
        codes,
        residuals,
        doclens,
        codec.num_centroids,
        vectors=vectors if store_vectors else None,
    )
    names = FILES + (("vectors",) if store_vectors else ())
    return Segment.load(directory, directory.name, 0, files={f"{n}.npy": "" for n in names})


@pytest.fixture(scope="module")
def data() -> Data:
    return Data()


@pytest.fixture(scope="module")
def codec(data: Data) -> ResidualCodec:
    return ResidualCodec.train(
        data.vectors[np.random.default_rng(1).permutation(len(data.vectors))], nbits=2, seed=0
    )


@pytest.fixture(scope="module")
def segment(tmp_path_factory: pytest.TempPathFactory, data: Data, codec: ResidualCodec) -> Segment:
    return write_segment(
        tmp_path_factory.mktemp("plaid") / "seg", codec, data.vectors, data.doclens
    )


@pytest.fixture(scope="module")
def vector_segment(
    tmp_path_factory: pytest.TempPathFactory, data: Data, codec: ResidualCodec
) -> Segment:
    directory = tmp_path_factory.mktemp("plaid_vectors") / "seg"
    return write_segment(directory, codec, data.vectors, data.doclens, store_vectors=True)


# ---------------------------------------------------------------------- brute force


def passage_rows(segment: Segment, pid: int) -> slice:
    offsets = segment.offsets
    return slice(int(offsets[pid]), int(offsets[pid + 1]))


def brute_exact(codec, segment, query, pids, vectors: np.ndarray | None = None) -> np.ndarray:
    if vectors is None:
        vectors = codec.decompress(np.asarray(segment.codes), np.asarray(segment.residuals))
    out = []
    for pid in pids:
        sims = query.astype(np.float64) @ vectors[passage_rows(segment, pid)].astype(np.float64).T
        out.append(sims.max(axis=1).sum() if sims.shape[1] else -np.inf)
    return np.array(out, dtype=np.float64)


def brute_approx(segment, scores_cq, pids, threshold=None) -> np.ndarray:
    scores_cq = scores_cq.T
    best = scores_cq.max(axis=0)
    out = []
    for pid in pids:
        codes = np.asarray(segment.codes)[passage_rows(segment, pid)]
        if threshold is not None:
            codes = [c for c in codes if best[c] >= threshold]
        if len(codes) == 0:
            out.append(-np.inf)
        else:
            out.append(sum(max(scores_cq[i, c] for c in codes) for i in range(len(scores_cq))))
    return np.array(out, dtype=np.float64)


def brute_cells(scores_cq, ncells) -> np.ndarray:
    cells = set()
    for row in scores_cq.T:
        cells.update(np.argsort(-row, kind="stable")[:ncells].tolist())
    return np.array(sorted(cells), dtype=np.int64)


def brute_candidates(segment, scores_cq, ncells, allowed=None) -> np.ndarray:
    cells = set(brute_cells(scores_cq, ncells).tolist())
    out = []
    for pid in range(segment.n_passages):
        codes = np.asarray(segment.codes)[passage_rows(segment, pid)]
        if any(int(c) in cells for c in codes) and (allowed is None or allowed[pid]):
            out.append(pid)
    return np.array(out, dtype=np.int64)


def brute_top(pids: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Best first, ties by lower pid, passages without a score (-inf) dropped."""
    order = np.lexsort((pids, -scores))[:n]
    order = order[np.isfinite(scores[order])]
    return pids[order], scores[order]


def brute_search(codec, segment, query, k, allowed=None, vectors=None):
    pids = np.arange(segment.n_passages)
    if allowed is not None:
        pids = pids[allowed]
    return brute_top(pids, brute_exact(codec, segment, query, pids, vectors), k)


def brute_plaid(codec, segment, query, k, params, allowed=None):
    """The four stages spelled out with the brute-force pieces."""
    # probe's centroid scores (checked on their own in test_centroid_scores; with an int8
    # product, which entries are recomputed in float32 depends on ncells), so that a centroid
    # on the threshold is judged alike
    scores_cq = plaid.centroid_scores(codec, query, params.ncells).astype(np.float64)
    pids = brute_candidates(segment, scores_cq, params.ncells, allowed)
    approx = brute_approx(segment, scores_cq, pids, params.centroid_score_threshold)
    pids = np.sort(pids[np.lexsort((pids, -approx))[: max(k, params.ndocs)]])
    approx = brute_approx(segment, scores_cq, pids)
    pids = np.sort(pids[np.lexsort((pids, -approx))[: max(k, params.ndocs // 4)]])
    return brute_top(pids, brute_exact(codec, segment, query, pids), k)


def no_pruning(codec: ResidualCodec, segment: Segment) -> SearchParams:
    """Every cell, no threshold, and ndocs // 4 >= passages so stage 3 drops nothing."""
    return SearchParams(
        ncells=codec.num_centroids,
        centroid_score_threshold=-np.inf,
        ndocs=4 * max(segment.n_passages, 1),
    )


def assert_same(result, expected) -> None:
    pids, scores = result
    assert pids.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(pids, expected[0])
    np.testing.assert_allclose(scores, expected[1], rtol=1e-5, atol=1e-5)


def search(codec, segment, query, k, params, allowed=None, exact_vectors=False):
    probed = plaid.probe(codec, query, params.ncells)
    return plaid.search_segment(
        codec, segment, query, probed, k, params, allowed=allowed, exact_vectors=exact_vectors
    )


# ---------------------------------------------------------------------- exhaustive


@pytest.mark.parametrize("q", [1, 4, 32])
@pytest.mark.parametrize("k", [1, 10, 1000])
def test_exhaustive_equals_brute_force(data, codec, segment, q, k) -> None:
    query = data.query(q)
    expected = brute_search(codec, segment, query, k)
    assert_same(plaid.exhaustive_search(codec, segment, query, k), expected)
    assert len(expected[0]) == min(k, int((data.doclens > 0).sum()))


def test_exhaustive_with_stored_vectors(data, codec, vector_segment) -> None:
    query = data.query(8)
    stored = np.asarray(vector_segment.vectors, dtype=np.float32)
    expected = brute_search(codec, vector_segment, query, 20, vectors=stored)
    assert_same(
        plaid.exhaustive_search(codec, vector_segment, query, 20, exact_vectors=True), expected
    )
    # stored vectors are the originals, so they score differently from decompressed ones
    decompressed = plaid.exhaustive_search(codec, vector_segment, query, 20)
    assert not np.allclose(decompressed[1], expected[1], atol=1e-5)


def test_blocks_do_not_change_results(data, codec, segment, vector_segment, monkeypatch) -> None:
    query = data.query(16)
    scores_cq = plaid.centroid_scores(codec, query)
    pids = np.arange(segment.n_passages)
    whole = plaid.exhaustive_search(codec, segment, query, 50)
    approx = [plaid.approximate_scores(segment, scores_cq, pids, t) for t in (None, 0.3)]
    stored = plaid.exhaustive_search(codec, vector_segment, query, 50, exact_vectors=True)
    blocks = ((7, 1 << 20, 4096), (1 << 16, 1 << 20, 3), (1 << 16, 600, 4096), (7, 1, 1))
    for block, token_score_bytes, rows in blocks:
        # several passages per block, or one; each block's tokens scored a few rows at a time
        monkeypatch.setattr(plaid, "_BLOCK_TOKENS", block)
        monkeypatch.setattr(plaid, "_TOKEN_SCORE_BYTES", token_score_bytes)
        monkeypatch.setattr(plaid, "_DECOMPRESS_ROWS", rows)
        assert_same(plaid.exhaustive_search(codec, segment, query, 50), whole)
        assert_same(
            plaid.exhaustive_search(codec, vector_segment, query, 50, exact_vectors=True), stored
        )
        for threshold, expected in zip((None, 0.3), approx, strict=True):
            got = plaid.approximate_scores(segment, scores_cq, pids, threshold)
            np.testing.assert_array_equal(got, expected)


def test_each_thread_decompresses_into_a_buffer_of_its_own(data, codec, segment) -> None:
    query = data.query(8)
    expected = plaid.exhaustive_search(codec, segment, query, 20)
    buffer = plaid._BUFFERS.vectors_for(codec.dim)
    assert buffer.shape == (plaid._DECOMPRESS_ROWS, codec.dim)
    assert plaid._BUFFERS.vectors_for(codec.dim) is buffer  # kept between searches
    others: list[np.ndarray] = []

    def search_in_a_thread() -> None:
        assert_same(plaid.exhaustive_search(codec, segment, query, 20), expected)
        others.append(plaid._BUFFERS.vectors_for(codec.dim))

    threads = [threading.Thread(target=search_in_a_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(others) == 2 and not any(np.shares_memory(o, buffer) for o in others)
    assert not np.shares_memory(*others)


# ---------------------------------------------------------------------- full pipeline


@pytest.mark.parametrize("q", [1, 5, 32, 64])
def test_search_without_pruning_equals_exhaustive(data, codec, segment, q) -> None:
    query = data.query(q)
    params = no_pruning(codec, segment)
    for k in (1, 10, 500):
        assert_same(
            search(codec, segment, query, k, params),
            plaid.exhaustive_search(codec, segment, query, k),
        )


@pytest.mark.parametrize(
    "params",
    [
        SearchParams.for_k(10),
        SearchParams(ncells=2, centroid_score_threshold=0.4, ndocs=16),
        SearchParams(ncells=3, centroid_score_threshold=0.6, ndocs=8),
        SearchParams.high_recall(10),
    ],
)
def test_search_equals_stage_by_stage_brute_force(data, codec, segment, params) -> None:
    for q in (1, 8, 32):
        query = data.query(q)
        assert_same(
            search(codec, segment, query, 5, params), brute_plaid(codec, segment, query, 5, params)
        )


def test_search_finds_most_of_the_exact_top_k(data, codec, segment) -> None:
    found = []
    for seed in range(20):
        query = data.query(32, seed)
        exact = plaid.exhaustive_search(codec, segment, query, 10)[0]
        pids = search(codec, segment, query, 10, SearchParams.high_recall(10))[0]
        found.append(len(np.intersect1d(exact, pids)) / 10)
    assert np.mean(found) >= 0.8


def test_search_with_stored_vectors(data, codec, vector_segment) -> None:
    query = data.query(32)
    params = no_pruning(codec, vector_segment)
    assert_same(
        search(codec, vector_segment, query, 10, params, exact_vectors=True),
        plaid.exhaustive_search(codec, vector_segment, query, 10, exact_vectors=True),
    )
    # without stored vectors exact_vectors falls back to decompression
    assert_same(
        search(codec, vector_segment, query, 10, params),
        plaid.exhaustive_search(codec, vector_segment, query, 10),
    )


@pytest.mark.parametrize("threshold", [0.3, -np.inf])  # stage 2, and stage 3 alone
@pytest.mark.parametrize("bad_code", ["beyond", "negative"])
def test_corrupted_codes_are_an_error_not_a_wild_read(
    data, codec, segment, threshold, bad_code
) -> None:
    # a code outside the codec's centroids would index past the centroid scores
    bad = np.array(segment.codes, dtype=np.int32)  # int32: the dtype of > 65536 centroids
    bad[len(bad) // 2 :] = codec.num_centroids + 5 if bad_code == "beyond" else -3
    corrupted = dataclasses.replace(segment, codes=bad)
    params = SearchParams(ncells=4, centroid_score_threshold=threshold, ndocs=8)
    with pytest.raises(CorruptIndexError, match="codes file is corrupted"):
        search(codec, corrupted, data.query(9), 1, params)
    # stage 4 and exhaustive scoring read the same codes: the same error
    last = np.array([corrupted.n_passages - 1])
    with pytest.raises(CorruptIndexError, match="codes file is corrupted"):
        plaid.exact_scores(codec, corrupted, data.query(9), last)
    with pytest.raises(CorruptIndexError, match="codes file is corrupted"):
        plaid.exhaustive_search(codec, corrupted, data.query(9), 3)


def test_scores_of_another_codec_are_refused(data, codec, segment) -> None:
    # fewer centroid scores than the segment has centroids: its codes could index past them
    scores_cq = plaid.centroid_scores(codec, data.query(4))[:-1]
    with pytest.raises(ValueError, match="built with this codec"):
        plaid.approximate_scores(segment, scores_cq, np.arange(segment.n_passages))


# ---------------------------------------------------------------------- stages


@pytest.mark.parametrize("ncells", [1, 2, 7])
def test_probe_cells(data, codec, ncells) -> None:
    # the scores probe picks from: its column's n best are float32 (no int8 ties among them)
    scores_cq = plaid.centroid_scores(codec, data.query(9), ncells)
    np.testing.assert_array_equal(
        plaid.probe_cells(scores_cq, ncells), brute_cells(scores_cq, ncells)
    )
    everything = plaid.probe_cells(scores_cq, codec.num_centroids + 5)
    np.testing.assert_array_equal(everything, np.arange(codec.num_centroids))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("ncells", [1, 3, 8, 10_000])  # 8 > the blocks of 64; 10k > C
def test_probe_picks_the_cells_of_its_scores(data, codec, monkeypatch, kernel, ncells) -> None:
    monkeypatch.setattr(plaid, "INT8_KERNEL", kernel)
    for query in (data.query(2), data.query(9)):
        probed = plaid.probe(codec, query, ncells)
        assert probed.ncells == ncells and probed.cells.dtype == np.int64
        np.testing.assert_array_equal(probed.cells, brute_cells(probed.scores, ncells))
        np.testing.assert_array_equal(probed.scores, plaid.centroid_scores(codec, query, ncells))
        np.testing.assert_array_equal(probed.centroid_maxima, probed.scores.max(axis=1))
        assert probed.centroid_maxima is probed.centroid_maxima  # computed once


@pytest.mark.parametrize("n_centroids", [63, 64, 1000, 4099])
@pytest.mark.parametrize("ncells", [1, 2, 5, 40])
def test_probe_cells_over_blocks(n_centroids, ncells) -> None:
    # probe_cells searches blocks of centroids; full blocks, a short last one, and more cells
    # than blocks
    rng = np.random.default_rng(n_centroids + ncells)
    scores_cq = rng.standard_normal((n_centroids, 7)).astype(np.float32)
    np.testing.assert_array_equal(
        plaid.probe_cells(scores_cq, ncells), brute_cells(scores_cq, ncells)
    )


@pytest.mark.parametrize("kernel", KERNELS)
def test_centroid_scores(data, codec, monkeypatch, kernel) -> None:
    monkeypatch.setattr(plaid, "INT8_KERNEL", kernel)
    monkeypatch.setattr(plaid, "_PRODUCT_BLOCK", 37)  # float32 products of float16 blocks
    assert codec.centroids.dtype == np.float16 and codec.num_centroids % 37
    query = data.query(5)
    scores_cq = plaid.centroid_scores(codec, query)
    assert scores_cq.shape == (codec.num_centroids, 5) and scores_cq.dtype == np.float32
    assert scores_cq.flags.c_contiguous
    exact = codec.centroids.astype(np.float64) @ query.T.astype(np.float64)
    if kernel is None:
        np.testing.assert_allclose(scores_cq, exact, rtol=1e-5, atol=1e-6)
        return
    # the int8 product: exact on the quantised rows, within quantisation error of float32
    (c8, c_scale, *_), (q8, q_scale) = codec.centroids_int8, quantised_query(query)
    quantised = (c8.numpy().astype(np.int64) @ q8.astype(np.int64).T).astype(np.float64)
    approx = quantised * c_scale * q_scale.astype(np.float64)
    # ... but for the entries that may be a column's best (ncells=1), recomputed in float32
    rescored = ~np.isclose(scores_cq, approx, rtol=1e-6, atol=0)
    np.testing.assert_allclose(scores_cq[rescored], exact[rescored], rtol=1e-5, atol=1e-6)
    best = scores_cq.argmax(axis=0)
    assert rescored[best, np.arange(5)].all() and not rescored.all()
    # |q.c - q'.c'| <= |q|_1 |c - c'|_inf + |c|_1 |q - q'|_inf + D |c - c'|_inf |q - q'|_inf
    q_l1, c_l1 = np.abs(query).sum(axis=1), np.abs(codec.centroids).sum(axis=1)[:, None]
    bound = 0.5 * c_scale * q_l1 + 0.5 * q_scale * c_l1
    bound += 0.25 * codec.dim * c_scale * q_scale
    assert np.all(np.abs(scores_cq - exact) <= bound + 1e-6)
    assert np.abs(scores_cq - exact).max() < 1e-2


@pytest.mark.parametrize("kernel", KERNELS[1:])
@pytest.mark.parametrize("ncells", [1, 2, 5, 9])  # 9 > the 7 blocks of 64 centroids
def test_int8_centroid_scores_probe_the_float32_cells(codec, monkeypatch, kernel, ncells) -> None:
    # near-duplicate centroids (as k-means leaves for frequent tokens) score within int8's
    # error of each other: the int8 product alone would often probe the wrong twin
    rng = np.random.default_rng(ncells)
    base = unit_rows(rng.standard_normal((100, DIM)).astype(np.float32))
    twins = unit_rows(np.repeat(base, 4, axis=0) + 1e-3 * rng.standard_normal((400, DIM)))
    near = dataclasses.replace(codec, centroids=twins)
    query = unit_rows(base[rng.integers(0, 100, 24)] + 3e-2 * rng.standard_normal((24, DIM)))
    monkeypatch.setattr(plaid, "INT8_KERNEL", None)
    exact = plaid.centroid_scores(near, query)
    monkeypatch.setattr(plaid, "INT8_KERNEL", kernel)
    probed = plaid.probe(near, query, ncells)
    scores = probed.scores
    # the cells picked among the rescored entries are those of the whole table
    np.testing.assert_array_equal(probed.cells, plaid.probe_cells(scores, ncells))
    for column in range(len(query)):  # the n best, up to float32 rounding
        best = np.sort(exact[:, column])[::-1][:ncells]
        picked = np.argsort(-scores[:, column])[:ncells]
        np.testing.assert_allclose(np.sort(exact[picked, column])[::-1], best, atol=1e-6)
    # the rest keeps its int8 approximation (within quantisation error)
    assert np.abs(scores - exact).max() < 1e-2
    c8, c_scale, *_ = near.centroids_int8
    (q8, q_scale) = quantised_query(query)
    approx = (c8.numpy().astype(np.int64) @ q8.astype(np.int64).T).astype(np.float64)
    approx *= c_scale * q_scale
    if ncells <= 7:
        assert np.mean(np.isclose(scores, approx, rtol=1e-6, atol=0)) > 0.5
    with pytest.raises(ValueError, match="ncells"):
        plaid.centroid_scores(near, query, 0)


def quantised_query(query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The query codes and scales probe multiplies with the patched INT8_KERNEL."""
    return quantise_rows(np.ascontiguousarray(query, dtype=np.float32), plaid._query_levels())


def test_quantise_rows() -> None:
    x = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.0, -2.0]], dtype=np.float32)
    codes, scale = quantise_rows(x)
    assert codes.dtype == np.int8 and scale.dtype == np.float32
    assert np.abs(codes).max(axis=1).tolist() == [127, 0, 127]  # each row spans the range
    np.testing.assert_allclose(codes * scale[:, None], x, atol=3.0 / 254)
    codes, scale = quantise_rows(x, levels=63)
    assert np.abs(codes).max(axis=1).tolist() == [63, 0, 63]
    np.testing.assert_allclose(codes * scale[:, None], x, atol=3.0 / 126)
    for levels in (0, 128):
        with pytest.raises(ValueError, match="levels"):
            quantise_rows(x, levels)


@pytest.mark.parametrize("kernel", KERNELS[1:])
def test_int8_scores_are_exact_products_scaled(monkeypatch, kernel) -> None:
    # full-range centroid codes against query codes at the kernel's levels, D = 128
    monkeypatch.setattr(plaid, "INT8_KERNEL", kernel)
    rng = np.random.default_rng(1)
    levels = plaid._query_levels()
    # 2000 x 32 results: above torch's grain, so a conversion in place runs on several threads
    codes = torch.from_numpy(rng.integers(-127, 128, (2000, 128), dtype=np.int8))
    codes[:3] = 127  # whole rows at the extremes, the sums that saturate int16 pairs
    vectors = torch.from_numpy(rng.integers(-levels, levels + 1, (32, 128), dtype=np.int8))
    vectors[0], vectors[1] = levels, -levels
    exact = (codes.long() @ vectors.long().T).float()
    product = plaid._int8_scores(codes, 1.0, vectors, torch.ones(32), kernel)
    assert product.dtype == torch.float32 and product.shape == (2000, 32)
    torch.testing.assert_close(product, exact, rtol=0, atol=0)
    # the scales: one for the codes, one per query vector
    vector_scale = torch.from_numpy(rng.uniform(1e-3, 1e-2, 32).astype(np.float32))
    scaled = plaid._int8_scores(codes, 0.004, vectors, vector_scale, kernel)
    torch.testing.assert_close(scaled, exact * 0.004 * vector_scale, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("avx512", "vnni", "amx", "onednn_levels", "expected"),
    [
        (True, True, True, 127, "onednn"),  # AMX: scales applied in the kernel
        (True, True, False, 127, "int_mm"),  # oneDNN runs its reference kernel there
        (True, False, False, 127, None),  # ... also without VNNI: float32
        (True, True, True, None, "int_mm"),  # oneDNN missing or inexact
        (False, False, False, 63, "onednn"),  # AVX2 without VNNI: 7-bit query codes
        (False, False, False, 127, "onednn"),  # AVX2 with AVX-VNNI
        (False, False, False, None, None),  # oneDNN missing or inexact, or not x86
    ],
)
def test_int8_kernel_choice(monkeypatch, avx512, vnni, amx, onednn_levels, expected) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: avx512, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: vnni, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert plaid._int8_kernel(onednn_levels) == expected


@pytest.mark.parametrize(
    ("capability", "exact_at", "expected"),
    [
        ("AVX512", (127, 63), 127),
        ("AVX2", (63,), 63),
        ("AVX2", (), None),
        ("DEFAULT", (127, 63), None),  # not x86 with AVX2
    ],
)
def test_onednn_levels(monkeypatch, capability, exact_at, expected) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(plaid, "_onednn_is_exact", lambda levels: levels in exact_at)
    assert plaid._onednn_levels() == expected


@pytest.mark.parametrize("ncells", [1, 3])
def test_candidates(data, codec, segment, ncells) -> None:
    scores_cq = plaid.centroid_scores(codec, data.query(6))
    cells = plaid.probe_cells(scores_cq, ncells)
    pids = plaid.candidates(segment, cells)
    assert pids.dtype == np.int64 and len(pids)
    np.testing.assert_array_equal(pids, brute_candidates(segment, scores_cq, ncells))
    allowed = np.random.default_rng(3).random(segment.n_passages) < 0.5
    np.testing.assert_array_equal(
        plaid.candidates(segment, cells, allowed),
        brute_candidates(segment, scores_cq, ncells, allowed),
    )


@pytest.mark.parametrize("threshold", [None, 0.3, 0.6, 0.95])
def test_approximate_scores(data, codec, segment, threshold) -> None:
    scores_cq = plaid.centroid_scores(codec, data.query(7))
    pids = np.arange(segment.n_passages)
    got = plaid.approximate_scores(segment, scores_cq, pids, threshold)
    expected = brute_approx(segment, scores_cq, pids, threshold)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-5)
    if threshold == 0.95:  # most passages lose every token
        assert (~finite).sum() > segment.n_passages // 2
    # any subset, in any order
    subset = np.random.default_rng(4).permutation(segment.n_passages)[:40]
    np.testing.assert_array_equal(
        plaid.approximate_scores(segment, scores_cq, subset, threshold), got[subset]
    )


def test_exact_scores(data, codec, segment) -> None:
    query = data.query(11)
    pids = np.random.default_rng(5).permutation(segment.n_passages)[:60]
    pids = np.concatenate([pids, [7]])  # a passage without tokens
    got = plaid.exact_scores(codec, segment, query, pids)
    expected = brute_exact(codec, segment, query, pids)
    assert got[-1] == -np.inf and expected[-1] == -np.inf
    np.testing.assert_allclose(got[:-1], expected[:-1], rtol=1e-5, atol=1e-5)
    assert plaid.exact_scores(codec, segment, query, np.zeros(0, np.int64)).shape == (0,)


# ---------------------------------------------------------------------- allowed masks


def test_allowed_mask_is_honoured(data, codec, segment) -> None:
    rng = np.random.default_rng(5)
    for seed, fraction in enumerate((0.02, 0.3, 0.9)):
        allowed = rng.random(segment.n_passages) < fraction
        query = data.query(16, seed)
        for params in (SearchParams.for_k(10), SearchParams(2, 0.3, 4)):
            pids, _ = search(codec, segment, query, 10, params, allowed)
            assert allowed[pids].all()
            assert_same((pids, _), brute_plaid(codec, segment, query, 10, params, allowed))
        expected = brute_search(codec, segment, query, 10, allowed)
        assert_same(
            search(codec, segment, query, 10, no_pruning(codec, segment), allowed), expected
        )
        assert_same(plaid.exhaustive_search(codec, segment, query, 10, allowed), expected)


def test_disallowed_passages_take_no_slots(data, codec, segment) -> None:
    query = data.query(32)
    params = SearchParams(ncells=2, centroid_score_threshold=0.0, ndocs=12)  # keeps 12, then 3
    best = search(codec, segment, query, 3, params)[0]
    allowed = np.ones(segment.n_passages, dtype=bool)
    allowed[best] = False
    pids, _ = search(codec, segment, query, 3, params, allowed)
    assert len(pids) == 3 and not np.isin(pids, best).any()


def test_nothing_allowed(data, codec, segment) -> None:
    query = data.query(4)
    allowed = np.zeros(segment.n_passages, dtype=bool)
    for result in (
        search(codec, segment, query, 10, SearchParams.for_k(10), allowed),
        plaid.exhaustive_search(codec, segment, query, 10, allowed),
    ):
        assert result[0].shape == (0,) and result[0].dtype == np.int64
        assert result[1].shape == (0,) and result[1].dtype == np.float32


def test_k_larger_than_allowed(data, codec, segment) -> None:
    query = data.query(4)
    allowed = np.zeros(segment.n_passages, dtype=bool)
    allowed[[3, 7, 40, 41, 299]] = True  # 7 has no tokens
    expected = brute_search(codec, segment, query, 10, allowed)
    assert len(expected[0]) == 4
    assert_same(search(codec, segment, query, 10, no_pruning(codec, segment), allowed), expected)
    assert_same(plaid.exhaustive_search(codec, segment, query, 10, allowed), expected)


def test_bad_allowed_mask_is_rejected(data, codec, segment) -> None:
    query = data.query(2)
    with pytest.raises(ValueError, match="bool mask"):
        search(codec, segment, query, 5, SearchParams.for_k(5), np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="bool mask"):
        plaid.exhaustive_search(codec, segment, query, 5, np.ones(segment.n_passages))


# ---------------------------------------------------------------------- parameters


def test_defaults_by_k() -> None:
    assert SearchParams.for_k(1) == SearchParams(1, 0.5, 256)
    assert SearchParams.for_k(10) == SearchParams(1, 0.5, 256)
    assert SearchParams.for_k(11) == SearchParams(2, 0.45, 1024)
    assert SearchParams.for_k(100) == SearchParams(2, 0.45, 1024)
    assert SearchParams.for_k(101) == SearchParams(4, 0.4, 4096)
    assert SearchParams.for_k(1024) == SearchParams(4, 0.4, 4096)
    assert SearchParams.for_k(2000) == SearchParams(4, 0.4, 8000)
    for k in (1, 10, 50, 100, 1000, 5000):
        base, wide = SearchParams.for_k(k), SearchParams.high_recall(k)
        assert wide.ncells >= base.ncells and wide.ndocs > base.ndocs
        assert wide.centroid_score_threshold < base.centroid_score_threshold


def test_defaults_do_not_stick(data, codec, segment) -> None:
    query = data.query(32)
    first = search(codec, segment, query, 10, SearchParams.for_k(10))
    assert SearchParams.for_k(1000) == SearchParams(4, 0.4, 4096)
    search(codec, segment, query, 1000, SearchParams.for_k(1000))
    search(
        codec, segment, query, 3, SearchParams(ncells=50, centroid_score_threshold=-1.0, ndocs=5)
    )
    assert SearchParams.for_k(10) == SearchParams(1, 0.5, 256)
    assert_same(search(codec, segment, query, 10, SearchParams.for_k(10)), first)
    params = SearchParams.for_k(10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.ncells = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ncells": 0, "centroid_score_threshold": 0.5, "ndocs": 10},
        {"ncells": 1, "centroid_score_threshold": 0.5, "ndocs": 0},
        {"ncells": 1.5, "centroid_score_threshold": 0.5, "ndocs": 10},
        {"ncells": 1, "centroid_score_threshold": float("nan"), "ndocs": 10},
        {"ncells": 1, "centroid_score_threshold": "high", "ndocs": 10},
    ],
)
def test_bad_params_are_rejected(kwargs) -> None:
    with pytest.raises(ValueError):
        SearchParams(**kwargs)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_is_rejected(data, codec, segment, k) -> None:
    with pytest.raises(ValueError, match="k must be"):
        SearchParams.for_k(k)
    with pytest.raises(ValueError, match="k must be"):
        plaid.exhaustive_search(codec, segment, data.query(2), k)


def test_bad_query_and_scores_are_rejected(data, codec, segment) -> None:
    params = SearchParams.for_k(10)
    with pytest.raises(ValueError, match="query must be"):
        plaid.centroid_scores(codec, np.zeros((3, DIM + 8), np.float32))
    with pytest.raises(ValueError, match="query must be"):
        plaid.centroid_scores(codec, np.zeros((0, DIM), np.float32))
    query = data.query(3)
    with pytest.raises(TypeError, match="probed must be a Probe"):
        plaid.search_segment(codec, segment, query, np.zeros((codec.num_centroids, 3)), 5, params)
    wrong = plaid.Probe(np.zeros((codec.num_centroids, 2), np.float32), np.arange(1), 1)
    with pytest.raises(ValueError, match="scores_cq"):
        plaid.search_segment(codec, segment, query, wrong, 5, params)
    with pytest.raises(ValueError, match="params.ncells"):
        plaid.search_segment(codec, segment, query, plaid.probe(codec, query, 2), 5, params)
    with pytest.raises(ValueError, match="cells must lie in"):
        plaid.candidates(segment, np.array([codec.num_centroids]))
    with pytest.raises(ValueError, match="cells must be a 1-D integer array"):
        plaid.candidates(segment, np.array([0.5]))


# ---------------------------------------------------------------------- ties and edge cases


def test_ties_are_broken_by_lower_passage_number(tmp_path, data, codec) -> None:
    # passages 1-10 of the data written three times: passage p, p + 10 and p + 20 are copies
    offsets = np.concatenate(([0], np.cumsum(data.doclens)))
    block = data.vectors[offsets[1] : offsets[11]]
    doclens = np.tile(data.doclens[1:11], 3)
    segment = write_segment(tmp_path / "ties", codec, np.concatenate([block] * 3), doclens)
    query = data.query(8)
    for params in (SearchParams.for_k(10), no_pruning(codec, segment)):
        pids, scores = search(codec, segment, query, 30, params)
        assert len(pids) % 3 == 0 and len(pids) >= 3
        if params.ncells > 1:
            assert len(pids) == 27  # 9 non-empty passages, three copies each
        for _ in range(3):
            again = search(codec, segment, query, 30, params)
            np.testing.assert_array_equal(again[0], pids)
            np.testing.assert_array_equal(again[1], scores)
        # copies score alike (BLAS may round a column differently by its position in the block)
        by_pid = dict(zip(pids.tolist(), scores.tolist(), strict=True))
        for p in (p for p in range(10) if p in by_pid):
            assert by_pid[p] == pytest.approx(by_pid[p + 10], abs=1e-5)
            assert by_pid[p] == pytest.approx(by_pid[p + 20], abs=1e-5)
        assert np.all(np.diff(scores) <= 0)
        tied = scores[:-1] == scores[1:]
        assert np.all(pids[:-1][tied] < pids[1:][tied])
        top = int(pids[:3].min())
        assert sorted(pids[:3].tolist()) == [top, top + 10, top + 20]
    pids, _ = plaid.exhaustive_search(codec, segment, query, 3)
    assert sorted(pids.tolist()) == [top, top + 10, top + 20]


def test_top_indices_ties() -> None:
    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0, -np.inf, 2.0], dtype=np.float32)
    assert plaid._top_indices(scores, 2).tolist() == [1, 2]
    assert plaid._top_indices(scores, 4).tolist() == [1, 2, 4, 3]
    assert plaid._top_indices(scores, 100).tolist() == [1, 2, 4, 3, 6, 0, 5]
    assert plaid._top_indices(scores, 0).tolist() == []


def test_segment_smaller_than_k(tmp_path, data, codec) -> None:
    segment = write_segment(tmp_path / "small", codec, data.vectors[:5], np.array([2, 0, 3]))
    query = data.query(3)
    for params in (SearchParams.for_k(100), SearchParams.for_k(10)):
        pids, _ = search(codec, segment, query, 100, params)
        assert set(pids.tolist()) <= {0, 2}
    assert_same(
        search(codec, segment, query, 100, no_pruning(codec, segment)),
        brute_search(codec, segment, query, 100),
    )
    assert len(plaid.exhaustive_search(codec, segment, query, 100)[0]) == 2


def test_no_candidates_in_this_segment(tmp_path, data, codec) -> None:
    # a segment whose tokens all sit in one cell, searched with a query about another cell
    codes, _ = codec.compress(data.vectors)
    cell = int(np.bincount(codes).argmax())
    rows = data.vectors[codes == cell][:6]
    segment = write_segment(tmp_path / "one_cell", codec, rows, np.array([3, 3]))
    query = codec.centroids[[(cell + 1) % codec.num_centroids]]
    pids, scores = search(codec, segment, query, 10, SearchParams(1, 0.5, 256))
    assert pids.shape == (0,) and scores.shape == (0,)
    assert pids.dtype == np.int64 and scores.dtype == np.float32
    assert len(plaid.exhaustive_search(codec, segment, query, 10)[0]) == 2


def test_one_vector_query_as_row_or_flat(data, codec, segment) -> None:
    query = data.query(1)
    params = SearchParams.for_k(10)
    as_row = search(codec, segment, query, 10, params)
    as_flat = plaid.search_segment(
        codec, segment, query[0], plaid.probe(codec, query[0]), 10, params
    )
    assert_same(as_flat, as_row)
    assert len(as_row[0]) >= 1


def test_empty_segment(tmp_path, codec, data) -> None:
    segment = write_segment(
        tmp_path / "empty", codec, np.zeros((0, DIM), np.float32), np.zeros(0, np.int32)
    )
    query = data.query(3)
    assert len(search(codec, segment, query, 10, SearchParams.for_k(10))[0]) == 0
    assert len(plaid.exhaustive_search(codec, segment, query, 10)[0]) == 0
    assert plaid.choose_exhaustive(segment, 0, SearchParams.for_k(10))


# ---------------------------------------------------------------------- exhaustive switch


def fake_segment(n_passages: int, mean_len: int) -> Segment:
    n_tokens = n_passages * mean_len
    zeros = np.zeros(1, dtype=np.int32)
    return Segment(
        name="fake",
        pid_base=0,
        codes=np.broadcast_to(zeros, (n_tokens,)),
        residuals=np.broadcast_to(np.zeros((1, 32), np.uint8), (n_tokens, 32)),
        doclens=np.full(n_passages, mean_len, dtype=np.int32),
        ivf=zeros,
        ivf_offsets=np.zeros(2, dtype=np.int64),
    )


def test_choose_exhaustive() -> None:
    params = SearchParams.for_k(10)
    big = fake_segment(100_000, 60)
    assert not plaid.choose_exhaustive(big, 100_000, params)
    assert not plaid.choose_exhaustive(big, 10_000, params)
    assert plaid.choose_exhaustive(big, 50, params)  # a very selective filter
    assert plaid.choose_exhaustive(big, 0, params)
    small = fake_segment(300, 60)
    assert plaid.choose_exhaustive(small, 300, params)
    # a larger ndocs makes PLAID decompress more passages, so exhaustive wins for longer
    wide = SearchParams.for_k(5000)
    n = ((wide.ndocs // 4) * 60 + plaid.EXHAUSTIVE_MAX_TOKENS) // 120  # between the two
    assert plaid.choose_exhaustive(big, n, wide) and not plaid.choose_exhaustive(big, n, params)

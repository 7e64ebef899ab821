"""ColBERTv2 / PLAID residual codec: nearest centroid plus an n-bit residual per dimension.

A token vector ``x`` is stored as the id of its nearest centroid ``c`` (max inner product)
and, for every dimension, the index of the quantile bucket that ``x - c`` falls into.
Reconstruction is ``normalise(c + bucket_weights[bucket])``.

Bit layout (identical to colbert-ai 0.2.22, so indexes can be exchanged): for every
dimension, in dimension order, the bucket index is written as ``nbits`` bits, least
significant bit first; the resulting bit sequence of one vector is packed with
``np.packbits`` (first bit in the most significant position of each byte). A vector
therefore takes ``dim * nbits // 8`` bytes.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "Int8Centroids",
    "ResidualCodec",
    "default_num_centroids",
    "quantise_rows",
    "residual_buckets",
    "row_norms",
]

FORMAT_NAME = "jacolbert-residual-codec"
FORMAT_VERSION = 1
SUPPORTED_NBITS = (1, 2, 4)

_COMPRESS_CHUNK = 1 << 13  # vectors per compress chunk (cache-sized blocks)
# vectors whose centroids decompression adds and normalises at a time when it allocates its
# output: the float16 gather of centroid rows stays at 256 KiB (D=128). Given ``out=``, the
# caller has bounded the rows (search: plaid._DECOMPRESS_ROWS) and they go in one step: fewer
# rounds of ~7 operations (100k passages: -3 to -4% against 1024-row rounds).
_DECOMPRESS_CHUNK = 1 << 10
# faiss's exhaustive search (assignment, and each k-means iteration) multiplies blocks of
# queries by blocks of centroids with BLAS and reduces each block's scores. Assigning 65536
# rows to 8192 centroids at D=128 on 2 cores: faiss's default blocks (4096 x 1024) take
# 0.78 s, 2048 x 8192 (64 MiB of scores) 0.85 s, 512 x 8192 (16 MiB) 0.67 s on an AVX-512
# Xeon; on a 2-core EPYC the default ran at ~70 GFLOPS and wide blocks at ~105-120.
_FAISS_BLOCKS = (512, 8192)
# The OpenBLAS core (kernel set) that faiss's bundled OpenBLAS is told to use, by torch's CPU
# capability (see _faiss).
_OPENBLAS_CORES = {"AVX512": "SkylakeX", "AVX2": "Haswell"}
# Centroids quantised to int8 at a time (128 KiB float32 blocks at D=128): the blocks' float
# temporaries stay in glibc's heap after the first query; at 8k centroids the heap that the
# first centroid product left behind fell from 3.0 to 1.6 MB against 1024-row blocks.
_INT8_BLOCK = 1 << 8
_MAX_HELDOUT = 50_000  # the reference caps the held-out split here too
_MIN_HELDOUT = 32  # a smaller held-out split is not worth it: fit and measure on all rows
_LLOYD_MAX_ITERS = 10_000  # residual_buckets(rounds=None): rounds until convergence, at most
# residual_buckets' default: rounds of (bucket means, midpoints) after the quantile start
RESIDUAL_BUCKET_ROUNDS = 3
_ARRAY_FILES = ("centroids", "bucket_cutoffs", "bucket_weights", "avg_residual")


def _spend_readonly_warning() -> None:
    """Search and decoding wrap read-only arrays (the codec's frozen arrays, memory-mapped
    segment files) in tensors with ``torch.from_numpy`` and only read them. torch warns once
    per process that such a tensor is writable; that one warning is raised here, silenced, at
    import (before any search thread runs: ``catch_warnings`` is not thread-safe)."""
    frozen = np.zeros(1, dtype=np.float32)
    frozen.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.from_numpy(frozen)


_spend_readonly_warning()


def default_num_centroids(n_vectors: int) -> int:
    """PLAID's centroid count: ``2**floor(log2(16 * sqrt(n)))``, clamped to ``[1, n]``."""
    n = int(n_vectors)
    if n < 1:
        raise ValueError(f"n_vectors must be >= 1, got {n_vectors}")
    k = 2 ** int(math.floor(math.log2(16.0 * math.sqrt(n))))
    return max(1, min(k, n))


def _as_vectors(vectors: object, dim: int | None = None, name: str = "vectors") -> np.ndarray:
    """Validate a 2-D floating array (``dim`` columns if given) and return it as float32."""
    arr = np.asarray(vectors)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n, dim], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must have a floating dtype (float32 expected), got {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} have dim {arr.shape[1]}, but the codec was built for dim {dim}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_nbits(nbits: int) -> int:
    if isinstance(nbits, bool) or not isinstance(nbits, (int, np.integer)):
        raise ValueError(f"nbits must be one of {SUPPORTED_NBITS}, got {nbits!r}")
    if int(nbits) not in SUPPORTED_NBITS:
        raise ValueError(f"nbits must be one of {SUPPORTED_NBITS}, got {nbits}")
    return int(nbits)


def residual_buckets(
    residuals: np.ndarray, nbits: int, rounds: int | None = RESIDUAL_BUCKET_ROUNDS
) -> tuple[np.ndarray, np.ndarray]:
    """Bucket cut-offs ``[2**nbits - 1]`` and weights ``[2**nbits]`` (float32, ascending) for
    the coordinates of ``residuals``: the reference's quantile buckets, refined by ``rounds``
    rounds of the least-squares (Lloyd-Max) scalar quantiser (``None``: until it converges).

    The start is the reference's rule (cut-offs at the quantiles ``i / 2**nbits``, weights at
    ``(i + 0.5) / 2**nbits``); a round makes each weight the mean of the values in its bucket
    and each cut-off the midpoint of its neighbouring weights. The mean squared reconstruction
    error never increases along the way. Residual coordinates cluster near zero with long
    tails, where equal-population buckets waste levels. Measured on the 5k passages of
    ``benchmarks/bench_index.py`` (nbits=2, default PLAID search, agreement@10 with exact
    MaxSim, 400 queries, mean over codec seeds, 8 k-means points per centroid): converged
    buckets help flat scores (random checkpoint: 0.337 -> 0.429, two seeds) but hardly peaked
    ones (0.919 -> 0.921, three seeds), where 3 rounds did best (0.927; on the random one
    0.402). With the index's k-means (32 points per centroid, 2 iterations) 3 rounds gave
    0.943 on the peaked checkpoint (three seeds; colbert-ai's own index: 0.937), hence the
    default. The bit layout is unchanged: only ``bucket_cutoffs`` and ``bucket_weights`` do.
    """
    n_buckets = 1 << _check_nbits(nbits)
    if rounds is not None and (
        isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 0
    ):
        raise ValueError(f"rounds must be None or an integer >= 0, got {rounds!r}")
    values = np.sort(np.asarray(residuals, dtype=np.float64).ravel())
    if not len(values):
        raise ValueError("cannot fit residual buckets on an empty array")
    levels = np.arange(n_buckets, dtype=np.float64) / n_buckets
    cutoffs = np.quantile(values, levels[1:])
    weights = np.quantile(values, levels + 0.5 / n_buckets)
    prefix = np.concatenate([[0.0], np.cumsum(values)])
    scale = max(float(values[-1] - values[0]), 1e-30)
    for _ in range(_LLOYD_MAX_ITERS if rounds is None else int(rounds)):
        # bucket j holds the values in (cutoffs[j - 1], cutoffs[j]]: #{cutoffs < value} = j
        inner = np.searchsorted(values, cutoffs, side="right")
        bounds = np.concatenate([[0], inner, [len(values)]])
        counts = np.diff(bounds)
        filled = counts > 0  # an empty bucket keeps its weight
        weights[filled] = np.diff(prefix[bounds])[filled] / counts[filled]
        np.maximum.accumulate(weights, out=weights)  # (only an empty bucket could break order)
        moved = (weights[1:] + weights[:-1]) / 2
        if np.max(np.abs(moved - cutoffs)) <= 1e-10 * scale:
            break
        cutoffs = moved
    return cutoffs.astype(np.float32), weights.astype(np.float32)


class Int8Centroids(NamedTuple):
    """The centroids quantised to int8 with one scale for every row, with the two maxima that
    bound the error of a product with them (``plaid.probe``). One scale, not one per row:
    oneDNN's int8 product takes a single scale for this operand and applies it in the
    kernel, which then writes the float32 scores directly."""

    codes: torch.Tensor  # [C, D] int8: centroids ~= codes * scale
    scale: float
    max_error: float  # max over rows of ||centroid - codes * scale|| (L2)
    max_norm: float  # max over rows of ||centroid|| (L2)


def quantise_rows(x: np.ndarray, levels: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantisation per row of float32 ``x [n, D]``: ``(codes, scale)`` with
    ``x ~= codes * scale[:, None]``, ``scale = max |x_row| / levels`` (codes within
    ``+-levels``, at most 127; a zero row gets a tiny scale and all-zero codes)."""
    if not 1 <= levels <= 127:
        raise ValueError(f"levels must lie in [1, 127], got {levels}")
    scale = np.abs(x).max(axis=1) / np.float32(levels)
    np.maximum(scale, np.float32(1e-30), out=scale)
    return np.rint(x / scale[:, None]).astype(np.int8), scale


def _check_dim(dim: int) -> None:
    if dim < 8 or dim % 8:
        raise ValueError(f"vector dim must be a positive multiple of 8, got {dim}")


def row_norms(x: np.ndarray) -> np.ndarray:
    """L2 norms of the rows of ``x [n, D]``."""
    return np.sqrt(np.einsum("ij,ij->i", x, x))


def divisor_norms(rows: torch.Tensor) -> torch.Tensor:
    """L2 norms of the rows of ``rows [n, D]``, at least 1e-12, ``[n, 1]``: the divisors that
    L2-normalise decompressed vectors as the reference does."""
    return torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_(min=1e-12)


def _l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation in place (rows of norm < eps are divided by eps)."""
    norms = row_norms(x)
    np.maximum(norms, eps, out=norms)
    x /= norms[:, None]
    return x


def _bit_reverse_table(nbits: int) -> np.ndarray:
    """``rev[b]`` = ``b`` with its ``nbits`` bits in reverse order (LSB-first <-> MSB-first)."""
    values = np.arange(1 << nbits, dtype=np.uint8)
    rev = np.zeros_like(values)
    for bit in range(nbits):
        rev |= ((values >> bit) & 1) << (nbits - 1 - bit)
    return rev


def _frozen(arr: np.ndarray, dtype: type, name: str, ndim: int) -> np.ndarray:
    out = np.array(arr, dtype=dtype, copy=True, order="C")
    if out.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {out.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or infinite values")
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class ResidualCodec:
    """Centroids and residual buckets shared by every segment of an index.

    Attributes:
        centroids: ``[C, D]`` L2-normalised k-means centroids, float16 as :meth:`train`
            makes them (colbert-ai saves its centroids in half precision too; half the memory
            of float32, and exact: residuals are taken against the rounded centroids), or
            float32 (given as any other float dtype, e.g. by indexes made before float16).
        bucket_cutoffs: ``[2**nbits - 1]`` float32, ascending; a residual coordinate ``r`` goes
            to bucket ``#{cutoffs < r}`` (``torch.bucketize`` with ``right=False``).
        bucket_weights: ``[2**nbits]`` float32, the value each bucket decodes to.
        avg_residual: ``[D]`` float32, mean absolute held-out residual per dimension
            (informational; colbert-ai saves only its mean as ``avg_residual.pt``).
        nbits: bits per dimension, 1, 2 or 4.
    """

    centroids: np.ndarray
    bucket_cutoffs: np.ndarray
    bucket_weights: np.ndarray
    avg_residual: np.ndarray
    nbits: int
    _pack_shifts: np.ndarray = field(init=False, repr=False, compare=False)
    _bit_reverse: np.ndarray = field(init=False, repr=False, compare=False)
    _byte_table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nbits = _check_nbits(self.nbits)
        given = np.asarray(self.centroids)
        half = given.dtype == np.float16
        centroids = _frozen(given, np.float16 if half else np.float32, "centroids", 2)
        n_centroids, dim = centroids.shape
        if n_centroids < 1:
            raise ValueError("centroids must contain at least one row")
        _check_dim(dim)
        cutoffs = _frozen(self.bucket_cutoffs, np.float32, "bucket_cutoffs", 1)
        weights = _frozen(self.bucket_weights, np.float32, "bucket_weights", 1)
        avg = _frozen(np.atleast_1d(self.avg_residual), np.float32, "avg_residual", 1)
        if avg.shape == (1,):  # a reference-style scalar: broadcast it over dimensions
            avg = np.full(dim, avg[0], dtype=np.float32)
            avg.setflags(write=False)
        if cutoffs.shape != ((1 << nbits) - 1,):
            raise ValueError(
                f"bucket_cutoffs must have {(1 << nbits) - 1} entries for nbits={nbits}, "
                f"got shape {cutoffs.shape}"
            )
        if weights.shape != (1 << nbits,):
            raise ValueError(
                f"bucket_weights must have {1 << nbits} entries for nbits={nbits}, "
                f"got shape {weights.shape}"
            )
        if np.any(np.diff(cutoffs) < 0):
            raise ValueError("bucket_cutoffs must be sorted in ascending order")
        if avg.shape != (dim,):
            raise ValueError(f"avg_residual must have shape ({dim},), got {avg.shape}")

        per_byte = 8 // nbits
        # Dimension j of a byte group sits at bit offset 8 - nbits * (j + 1) (MSB first).
        shifts = (8 - nbits * (np.arange(per_byte) + 1)).astype(np.uint8)
        rev = _bit_reverse_table(nbits)
        # Byte value -> the bucket weights of the 8 // nbits dimensions it holds.
        byte_values = np.arange(256, dtype=np.uint8)[:, None]
        buckets = rev[(byte_values >> shifts[None, :]) & ((1 << nbits) - 1)]
        table = np.ascontiguousarray(weights[buckets])
        for arr in (shifts, rev, table):
            arr.setflags(write=False)

        set_ = object.__setattr__
        set_(self, "nbits", nbits)
        set_(self, "centroids", centroids)
        set_(self, "bucket_cutoffs", cutoffs)
        set_(self, "bucket_weights", weights)
        set_(self, "avg_residual", avg)
        set_(self, "_pack_shifts", shifts)
        set_(self, "_bit_reverse", rev)
        set_(self, "_byte_table", table)

    def __repr__(self) -> str:
        return (
            f"ResidualCodec(num_centroids={self.num_centroids}, dim={self.dim}, nbits={self.nbits})"
        )

    @property
    def dim(self) -> int:
        """Vector dimension D."""
        return int(self.centroids.shape[1])

    @property
    def num_centroids(self) -> int:
        """Number of centroids C."""
        return int(self.centroids.shape[0])

    @cached_property
    def centroids_int8(self) -> Int8Centroids:
        """The centroids quantised to int8 (one scale: the largest coordinate is +-127), made
        on first use and kept: the operand of the int8 centroid product in search
        (``plaid.probe``).

        Made block by block: whole-matrix float temporaries (4 of them, each 4x the int8
        codes) stayed in glibc's heap after the first query, +11 MB of resident memory at
        8k centroids."""
        centroids = torch.from_numpy(self.centroids)
        starts = range(0, len(centroids), _INT8_BLOCK)
        largest = max(
            (float(centroids[s : s + _INT8_BLOCK].abs().amax()) for s in starts), default=0
        )
        scale = max(largest, 1e-30) / 127
        codes = torch.empty(centroids.shape, dtype=torch.int8)
        max_error = max_norm = 0.0
        for start in starts:
            block = centroids[start : start + _INT8_BLOCK].float()
            block_codes = torch.round(block / scale).to(torch.int8)
            codes[start : start + len(block)] = block_codes
            error = torch.linalg.vector_norm(block - block_codes * scale, dim=1)
            max_error = max(max_error, float(error.max()))
            max_norm = max(max_norm, float(torch.linalg.vector_norm(block, dim=1).max()))
        return Int8Centroids(codes, scale, max_error, max_norm)

    @property
    def bytes_per_vector(self) -> int:
        """Packed residual bytes per vector (the centroid code is stored separately)."""
        return self.dim * self.nbits // 8

    # ------------------------------------------------------------------ training

    @classmethod
    def train(
        cls,
        sample: np.ndarray,
        nbits: int = 2,
        n_centroids: int | None = None,
        *,
        heldout_fraction: float = 0.05,
        kmeans_iters: int = 20,
        seed: int = 0,
        overwrite: bool = False,
    ) -> ResidualCodec:
        """Fit centroids and residual buckets on a sample of token vectors, as ColBERTv2.

        The sample's rows are shuffled (``np.random.default_rng(seed).shuffle``) and the last
        ``heldout_fraction`` of them (at most 50,000 rows) are held out; faiss k-means runs on
        the rest and its centroids are L2-normalised and rounded to float16. The coordinates of
        the held-out vectors' residuals (against the rounded centroids) give the buckets
        (:func:`residual_buckets`: the reference's quantiles, refined into a least-squares
        quantiser) and ``avg_residual``.

        Tiny samples (where the reference fails with fewer rows than centroids) work: when
        fewer than 32 rows would be held out, nothing is held out (k-means and statistics use
        every row), and the centroid count is clamped to the training rows. A small collection
        indexed with its own codec is then reconstructed closely (to float16 rounding when every
        vector is a centroid) rather than one unlucky held-out row setting large buckets for all.

        Args:
            sample: ``[n, D]`` float vectors (L2-normalised token embeddings), ``n >= 1``.
            nbits: bits per dimension (1, 2 or 4).
            n_centroids: number of centroids; defaults to ``default_num_centroids(n)``.
                Clamped to the number of training rows.
            heldout_fraction: fraction of rows held out for the residual statistics, in [0, 1).
            kmeans_iters: k-means iterations (``Index`` passes 2 on a sample of 32 points per
                centroid: see ``jacolbert_core.index.index.KMEANS_ITERS``).
            seed: seed for the shuffle and faiss k-means; training is deterministic given it.
            overwrite: shuffle a float32 C-contiguous ``sample`` in place instead of a copy
                (``Index`` passes its own sample: 128 MiB less at 8192 centroids).
        """
        nbits = _check_nbits(nbits)
        x = _as_vectors(sample, name="sample")
        n, dim = x.shape
        if n == 0:
            raise ValueError("cannot train a codec on an empty sample")
        _check_dim(dim)
        if not np.all(np.isfinite(x)):
            raise ValueError("sample contains NaN or infinite values")
        if not 0.0 <= heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
        if kmeans_iters < 1:
            raise ValueError(f"kmeans_iters must be >= 1, got {kmeans_iters}")
        if n_centroids is not None and int(n_centroids) < 1:
            raise ValueError(f"n_centroids must be >= 1, got {n_centroids}")

        n_heldout = min(int(heldout_fraction * n), _MAX_HELDOUT)
        if n_heldout < _MIN_HELDOUT:
            n_heldout = 0
        if not overwrite and np.shares_memory(x, sample):
            x = x.copy()
        np.random.default_rng(seed).shuffle(x)
        train_x, heldout = x[: n - n_heldout], x[n - n_heldout :]
        k = default_num_centroids(n) if n_centroids is None else int(n_centroids)
        k = min(k, len(train_x))

        centroids = _kmeans(train_x, k, kmeans_iters, seed).astype(np.float16)
        stats_x = heldout if len(heldout) else train_x
        provisional = cls(
            centroids=centroids,
            bucket_cutoffs=np.zeros((1 << nbits) - 1, np.float32),
            bucket_weights=np.zeros(1 << nbits, np.float32),
            avg_residual=np.zeros(dim, np.float32),
            nbits=nbits,
        )
        residuals = stats_x - provisional.centroids[provisional.assign(stats_x)]
        cutoffs, weights = residual_buckets(residuals, nbits)
        avg_residual = np.abs(residuals).mean(axis=0, dtype=np.float64).astype(np.float32)
        return cls(
            centroids=provisional.centroids,
            bucket_cutoffs=cutoffs,
            bucket_weights=weights,
            avg_residual=avg_residual,
            nbits=nbits,
        )

    # ------------------------------------------------------------------ encoding

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """Index of the nearest centroid (max inner product, first on ties), int32 ``[n]``.

        Exact: a faiss ``IndexFlatIP`` search with k=1 (blocked BLAS GEMM on all threads with
        the arg-max fused into each block of ``_FAISS_BLOCKS``, so no ``[n, C]`` score matrix is
        materialised: one block's scores, at most 16 MiB, whatever ``n``); the cost of ``compress``.
        One call for all rows: 4096-row calls cost 1.45x as much (65536 rows, 8192 centroids,
        2-core EPYC: 1.24-1.33 s against 0.86-0.92 s)."""
        x = _as_vectors(vectors, self.dim)
        with _faiss_blocks():
            _, ids = self._flat_index().search(x, 1)
        return ids[:, 0].astype(np.int32)

    def _flat_index(self):
        """A faiss inner-product index over the centroids, built once per codec."""
        index = self.__dict__.get("_faiss_index")
        if index is None:
            index = _faiss().IndexFlatIP(self.dim)
            index.add(np.ascontiguousarray(self.centroids, dtype=np.float32))
            object.__setattr__(self, "_faiss_index", index)
        return index

    def compress(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encode vectors as ``(codes int32 [n], residuals uint8 [n, D * nbits // 8])``."""
        x = _as_vectors(vectors, self.dim)
        n = len(x)
        codes = self.assign(x)
        packed = np.empty((n, self.bytes_per_vector), dtype=np.uint8)
        for start in range(0, n, _COMPRESS_CHUNK):
            stop = min(start + _COMPRESS_CHUNK, n)
            residual = x[start:stop] - np.take(self.centroids, codes[start:stop], axis=0)
            packed[start:stop] = self._pack(self._bucketize(residual))
        return codes, packed

    def _bucketize(self, residual: np.ndarray) -> np.ndarray:
        """Bucket index per coordinate: number of cut-offs strictly below the value."""
        buckets = np.zeros(residual.shape, dtype=np.uint8)
        above = np.empty(residual.shape, dtype=bool)
        for cutoff in self.bucket_cutoffs:  # at most 15 passes: faster than searchsorted
            np.greater(residual, cutoff, out=above)
            buckets += above
        return buckets

    def _pack(self, buckets: np.ndarray) -> np.ndarray:
        """Pack ``[m, D]`` bucket indices into the reference bit layout, ``[m, D*nbits/8]``."""
        per_byte = 8 // self.nbits
        if self.nbits > 1:
            buckets = np.take(self._bit_reverse, buckets)
        groups = buckets.reshape(len(buckets), -1, per_byte)
        out = groups[:, :, 0] << self._pack_shifts[0]
        for j in range(1, per_byte):
            out |= groups[:, :, j] << self._pack_shifts[j]
        return out

    # ------------------------------------------------------------------ decoding

    def decompress_residuals(self, residuals: np.ndarray) -> np.ndarray:
        """Decode packed residuals to their bucket weights, float32 ``[n, D]``."""
        packed = self._check_packed(residuals)
        return np.take(self._byte_table, packed, axis=0).reshape(len(packed), self.dim)

    def decompress(self, codes: np.ndarray, residuals: np.ndarray) -> np.ndarray:
        """Reconstruct ``normalise(centroids[codes] + bucket_weights[buckets])``, float32."""
        codes_arr = np.asarray(codes)
        packed = self._check_packed(residuals)
        if codes_arr.ndim != 1 or len(codes_arr) != len(packed):
            raise ValueError(
                f"codes must be 1-D with one entry per residual row ({len(packed)}), "
                f"got shape {codes_arr.shape}"
            )
        if not np.issubdtype(codes_arr.dtype, np.integer):
            raise ValueError(f"codes must be integers, got dtype {codes_arr.dtype}")
        if len(codes_arr) and (codes_arr.min() < 0 or codes_arr.max() >= self.num_centroids):
            raise ValueError(f"codes must lie in [0, {self.num_centroids}), got out-of-range ids")
        return self.decompress_unchecked(codes_arr, packed)

    def decompress_unchecked(
        self,
        codes: np.ndarray,
        residuals: np.ndarray,
        out: np.ndarray | None = None,
        normalise: bool = True,
    ) -> np.ndarray:
        """:meth:`decompress` without its argument checks, for rows read from a segment of
        this codec (integer ``codes [n]``, uint8 ``residuals [n, bytes_per_vector]``); an
        out-of-range code still raises (torch's gather checks it). Search decompresses a few
        thousand rows a query, where the checks cost ~15% of the work. With ``out`` (float32
        ``[>= n, D]``, C-contiguous) the vectors are written into its first n rows, which are
        returned, all n in one step (the caller bounds n). With ``normalise=False`` the rows
        are ``centroids[codes] + bucket_weights[buckets]`` before their L2 normalisation (search
        divides their scores by the norms instead: a ``[n, q]`` division, not a ``[n, D]`` one)."""
        n = len(residuals)
        step = _DECOMPRESS_CHUNK if out is None else max(n, 1)  # rows added per round
        if out is None:
            out = np.empty((n, self.dim), dtype=np.float32)
        elif not (
            out.dtype == np.float32
            and out.flags.c_contiguous
            and out.ndim == 2
            and out.shape[0] >= n
            and out.shape[1] == self.dim
        ):
            raise ValueError(
                f"out must be a C-contiguous float32 array of shape [>= {n}, {self.dim}], "
                f"got {out.dtype} {out.shape}"
            )
        out = out[:n]
        # numpy's byte-table gather (2x torch's); a byte indexes the 256 rows of the table,
        # always in range: "clip" lets numpy write into ``out`` directly (with "raise" it
        # gathers into a temporary first)
        table = self._byte_table
        buckets = out.reshape(residuals.shape + table.shape[1:])  # [n, bytes, values a byte]
        np.take(table, residuals, axis=0, out=buckets, mode="clip")
        result, centroids = torch.from_numpy(out), torch.from_numpy(self.centroids)
        for start in range(0, n, step):
            stop = min(start + step, n)
            block = result[start:stop]
            block += centroids.index_select(0, torch.from_numpy(codes[start:stop]).long())
            if normalise:
                block /= divisor_norms(block)
        return out

    def _check_packed(self, residuals: np.ndarray) -> np.ndarray:
        packed = np.asarray(residuals)
        if packed.dtype != np.uint8:
            raise ValueError(f"residuals must be uint8 packed bytes, got dtype {packed.dtype}")
        if packed.ndim != 2 or packed.shape[1] != self.bytes_per_vector:
            raise ValueError(
                f"residuals must have shape [n, {self.bytes_per_vector}] "
                f"(dim {self.dim} x {self.nbits} bits / 8), got {packed.shape}"
            )
        return packed

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path | str) -> None:
        """Write ``codec.json`` and one ``.npy`` per array into ``directory`` (no pickles)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in _ARRAY_FILES:
            np.save(directory / f"{name}.npy", getattr(self, name), allow_pickle=False)
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "nbits": self.nbits,
            "dim": self.dim,
            "num_centroids": self.num_centroids,
        }
        (directory / "codec.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path | str) -> ResidualCodec:
        """Read a codec written by :meth:`save`."""
        directory = Path(directory)
        meta_path = directory / "codec.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no codec.json in {directory}; was the codec saved there?")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_NAME:
            raise ValueError(f"{meta_path} is not a {FORMAT_NAME} file")
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path} has codec format version {meta.get('version')}, "
                f"this jacolbert reads version {FORMAT_VERSION}"
            )
        arrays = {
            name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in _ARRAY_FILES
        }
        codec = cls(nbits=meta["nbits"], **arrays)
        if codec.dim != meta["dim"] or codec.num_centroids != meta["num_centroids"]:
            raise ValueError(
                f"{directory}: arrays disagree with codec.json (dim {codec.dim} vs "
                f"{meta['dim']}, centroids {codec.num_centroids} vs {meta['num_centroids']})"
            )
        return codec


def _kmeans(x: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """faiss k-means on ``x`` with ``k <= len(x)`` clusters; returns normalised centroids.

    Each iteration is an exact nearest-centroid search of every row (blocked BLAS on all of
    faiss's OpenMP threads) plus a centroid update: time ~ ``len(x) * k * dim * iters``."""
    faiss = _faiss()
    if k == len(x):
        # Every point is its own cluster; faiss would only shuffle them.
        centroids = x.copy()
    else:
        kmeans = faiss.Kmeans(
            x.shape[1],
            k,
            niter=iters,
            seed=seed,
            spherical=True,
            verbose=False,
            # Small samples are fine (faiss would warn); above 256 points per centroid faiss
            # trains on a seeded random subset, which bounds the time as in the reference.
            min_points_per_centroid=1,
        )
        with _faiss_blocks():
            kmeans.train(x)
        centroids = np.array(kmeans.centroids, dtype=np.float32)
    return _l2_normalise(centroids)


def _faiss() -> ModuleType:
    """The faiss module, imported so that the OpenBLAS bundled with faiss-cpu's wheels runs
    kernels for the CPU's vector instructions.

    That OpenBLAS (0.3.15 in faiss-cpu 1.15) picks its kernels by CPU model when it loads, and
    on models newer than itself it falls back to its SSE3 kernels: on a 2-core Xeon (model
    207, no AMX exposed) its products ran at 36-57 GFLOP/s where SkylakeX's AVX-512 kernels
    run at 83-169 and torch's at 115; indexing 5k passages, k-means took 32 s instead of 6,
    the assignment 39 s instead of 9. Unless the user has chosen a core
    (``OPENBLAS_CORETYPE``), the first import sets it from torch's CPU capability (AVX-512 ->
    SkylakeX, AVX2 -> Haswell: those kernels' instruction sets) and removes it again, so no
    other library sees it; elsewhere OpenBLAS's own choice stands."""
    if "faiss" in sys.modules:
        return sys.modules["faiss"]
    core = _OPENBLAS_CORES.get(torch.backends.cpu.get_cpu_capability())
    override = core is not None and "OPENBLAS_CORETYPE" not in os.environ
    if override:
        os.environ["OPENBLAS_CORETYPE"] = core
    try:
        import faiss
    finally:
        if override:
            del os.environ["OPENBLAS_CORETYPE"]
    return faiss


@contextmanager
def _faiss_blocks() -> Iterator[None]:
    """Within the ``with`` block, faiss's exhaustive searches multiply ``_FAISS_BLOCKS``
    (query rows, database rows) at a time; faiss's process-wide setting is restored after."""
    import faiss

    cvar = faiss.cvar
    saved = (cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs)
    cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs = _FAISS_BLOCKS
    try:
        yield
    finally:
        cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs = saved

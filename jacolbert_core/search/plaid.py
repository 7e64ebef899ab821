"""PLAID search over ONE index segment, given encoded query vectors.

The index calls :func:`probe` once per query (the centroids are shared by every segment),
then :func:`search_segment` (or :func:`exhaustive_search`, see :func:`choose_exhaustive`) per
segment, and merges the per-segment top-k lists.

PLAID (Santhanam et al., 2022) in four stages, each exposed as a function of its own:

1. :func:`probe` - the centroid scores and the union of the ``ncells`` best centroids of every
   query vector (:func:`probe_cells`); :func:`candidates` - the passages that the segment's
   inverted file lists under those cells.
2. :func:`approximate_scores` with a threshold - each candidate is scored from centroid scores
   alone (every token stands in for its centroid), ignoring tokens whose centroid scores below
   ``centroid_score_threshold`` against every query vector; the best ``ndocs`` survive.
3. :func:`approximate_scores` without a threshold - the survivors are re-scored from centroid
   scores over all their tokens; the best ``max(k, ndocs // 4)`` survive.
4. :func:`exact_scores` - their residuals are decompressed (or the stored float16 vectors are
   read) and exact MaxSim picks the final top k.

Scores are late-interaction MaxSim: ``sum_i max_t <q_i, d_t>`` over query vectors ``i`` and the
passage's token vectors ``t``. Every selection breaks ties by the lower passage number, so
results are deterministic. A passage without token vectors has no score and is never returned.

The heavy lifting runs in torch on CPU, on zero-copy ``torch.from_numpy`` views of the numpy
arrays (read-only ones are only read): one thread pool then serves query encoding and scoring.
Centroid scores are laid out ``[C, q]`` (the product is twice as fast in that orientation).
Stages 2 and 3 take each passage's maxima over its tokens' centroid rows in one fused gather:
the product of a sparse ``[passages, C]`` incidence matrix (CSR, a 1 where a passage holds a
centroid) with the scores, reduced by ``amax`` instead of summed. Stage 4 scores the tokens'
vectors into a ``[tokens, q]`` table and takes the same product with the identity pattern
(a 1 where a passage holds a token). The maxima are then summed over query vectors.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial

import numpy as np
import torch

from jacolbert_core.index.codec import ResidualCodec, divisor_norms, quantise_rows, row_norms
from jacolbert_core.index.segment import Segment, ranges, sorted_unique

__all__ = [
    "EXHAUSTIVE_MAX_TOKENS",
    "INT8_KERNEL",
    "Probe",
    "SearchParams",
    "approximate_scores",
    "candidates",
    "centroid_scores",
    "choose_exhaustive",
    "exact_scores",
    "exhaustive_search",
    "probe",
    "probe_cells",
    "search_segment",
]

# Approximate and exact scoring walk the candidates' tokens in blocks of up to _BLOCK_TOKENS
# (their row numbers, codes and kept positions: ~20 bytes a token). Exact scoring keeps a
# block's [tokens, q] scores within _TOKEN_SCORE_BYTES (8192 tokens at q=32: the 64 passages
# of a k=10 search in one block). Small temporaries stay in cache, and they keep glibc from
# holding on to freed memory: it raises its mmap threshold to the largest block freed and then
# serves (and retains) blocks up to that size from its heap. Scoring whole 64k-token blocks
# (8 MiB of token scores) left ~16 MiB of heap behind after the first query on 5k passages,
# 2 MiB temporaries ~10 MiB, 512 KiB ones ~1 MiB. Blocks of 128k tokens rather than 64k: the
# ~110k candidate tokens of stage 2 at 100k passages in one block, -0.1 ms, +0.6 MB. Smaller
# token blocks would add a per-block overhead that shows at 100k passages.
_BLOCK_TOKENS = 1 << 17
_TOKEN_SCORE_BYTES = 1 << 20

# Exact scoring decompresses up to _DECOMPRESS_ROWS token vectors at a time into a float32
# buffer that each searching thread makes on first use and keeps (_Buffers; 3 MiB at D=128).
# Fewer steps are cheaper (each is ~10 array operations): at 100k passages, k=10, against
# 1024-row steps into fresh temporaries, 4096-row steps into the buffer took 11% less in
# stage 4 (-0.2 ms) and 3.5% less in the search, for +0.9-2.0 MB of RSS after opening a
# 5k-passage index and one query (fresh 4096-row temporaries instead of the buffer: +4-5 MB).
# 6144 rows hold the ~4.3k tokens of that search's 64 finalists in one step: another -3 to -4%
# (same-process A/B), RSS after opening the 5k-passage index unchanged (21.7-22.2 MB). Each step
# is decompressed in one go (ResidualCodec.decompress_unchecked with out=).
_DECOMPRESS_ROWS = 6144

# Centroid rows per float32 product in probe where there is no int8 kernel.
_PRODUCT_BLOCK = 1 << 12

# Centroids per block in probe_cells: a query vector's n best centroids lie in the n blocks
# whose maxima are its best, so only those blocks are searched.
_PROBE_BLOCK = 64

# Allowed tokens up to which choose_exhaustive prefers exact scoring of every allowed passage.
# Measured with benchmarks/bench_search.py (D=128, 32 query vectors, nbits=2, process CPU time
# with 2 threads): exhaustive scoring costs 0.7-0.9 us of CPU per token (decompression and the
# [t, D] x [D, q] product), and one default k=10 PLAID search of a 100k-passage / 6M-token
# segment costs 13-15 ms of CPU (6.6-7.4 ms wall) including the centroid scores. 24k tokens
# (~400 passages of 60 tokens) cost exhaustive scoring up to ~1.4x that, for exact results
# where PLAID finds only 13-21% of the allowed passages' exact top 10.
EXHAUSTIVE_MAX_TOKENS = 24_000


def _spend_sparse_warning() -> None:
    """torch warns once per process that its sparse CSR tensors are a beta feature; that one
    warning is raised here, silenced, at import (before any search thread runs:
    ``catch_warnings`` is not thread-safe)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        empty = torch.zeros(0, dtype=torch.long)
        torch.sparse_csr_tensor(torch.zeros(1, dtype=torch.long), empty, empty.float(), (0, 1))


_spend_sparse_warning()


# Query codes of the "onednn" product keep 7 bits where 8 would not be exact: without VNNI,
# oneDNN sums pairs of unsigned x signed byte products in int16, which saturates beyond
# 2 * 255 * 63.
_ONEDNN_SAFE_LEVELS = 63


def _onednn_levels() -> int | None:
    """The query code range at which oneDNN's int8 product is exact here
    (:func:`_onednn_is_exact`): 127 (with VNNI or AMX), else 63; ``None`` where it is missing
    or rounds at both, and on CPUs other than x86 with AVX2 or AVX-512."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    for levels in (127, _ONEDNN_SAFE_LEVELS):
        if _onednn_is_exact(levels):
            return levels
    return None


def _int8_kernel(onednn_levels: int | None) -> str | None:
    """The int8 matrix product :func:`probe` uses (``None``: float32), given
    :func:`_onednn_levels`; decided once at import.

    ``"onednn"`` (oneDNN's quantised linear layer) applies both operands' scales in the kernel
    and writes float32 scores, where ``torch._int_mm`` writes int32 sums that take two more
    passes over the ``[C, q]`` table. It is used where it multiplies exactly and fast: with
    AMX (34k centroids: 0.49 against 0.9 ms with the scaling, the whole 100k-passage search
    -4%) and on CPUs without AVX-512 (AVX2 without VNNI: ~2 ms a query against float32's
    3.0-3.8 and ``torch._int_mm``'s 61). On AVX-512 CPUs without AMX it runs its reference
    kernel with signed codes (2-core AMD EPYC with AVX-512 VNNI: 1.5 s a query; the same with
    oneDNN limited to AVX-512 without VNNI), so there ``"int_mm"`` serves where the CPU has
    VNNI dot-product instructions (with codes offset to unsigned, oneDNN was 4-8% slower over
    the whole search), and float32 where it has not. Decided by the CPU's features, not by
    timing: a timed check at import picked float32 while another process loaded both cores.
    """
    has_vnni = getattr(torch.cpu, "_is_vnni_supported", lambda: False)
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    has_avx512 = getattr(torch.cpu, "_is_avx512_supported", lambda: True)  # unknown: assume so
    onednn_fast = bool(has_amx()) or not has_avx512()
    if onednn_levels is not None and onednn_fast:
        return "onednn"
    return "int_mm" if hasattr(torch, "_int_mm") and bool(has_vnni()) else None


def _int8_scores(
    codes: torch.Tensor,
    scale: float,
    vectors: torch.Tensor,
    vector_scale: torch.Tensor,
    kernel: str,
) -> torch.Tensor:
    """``(codes @ vectors.T) * scale * vector_scale`` as float32 ``[C, q]``, for int8
    ``codes [C, D]`` and int8 ``vectors [q, D]`` (within the kernel's query code range), the
    product exact in int32 before the scaling."""
    if kernel == "int_mm":
        product = torch._int_mm(codes, vectors.T.contiguous())
        # converted in place (each element from its own int32): one [C, q] buffer, not two.
        # Freeing two per query let glibc trim its heap and the next query page-fault ~2k
        # fresh pages (100k passages, 34k centroids: probe 0.9 -> 3-4 ms in a search loop)
        return product.view(torch.float32).copy_(product).mul_(vector_scale * scale)
    n = len(vectors)
    weight = torch.ops.onednn.qlinear_prepack(vectors, list(codes.shape))
    # float32 output, no zero points: the int32 sums times scale * vector_scale[j]
    return torch.ops.onednn.qlinear_pointwise(
        codes, scale, 0, weight, vector_scale, torch.zeros(n, dtype=torch.long), None,
        1.0, 0, torch.float32, "none", [], "",
    )  # fmt: skip


def _onednn_is_exact(levels: int) -> bool:
    """True when oneDNN's product equals the exact one on extreme operands (full-range codes
    against query codes at +-levels); False where it is missing or rounds."""
    full = 127
    codes = torch.tensor([[full, -full] * 32, [-full] * 64, [full] * 64], dtype=torch.int8)
    vectors = torch.tensor(
        [[levels] * 64, [-levels] * 64, [levels, -levels] * 32], dtype=torch.int8
    )
    try:
        product = _int8_scores(codes, 1.0, vectors, torch.ones(3), "onednn")
    except (AttributeError, NotImplementedError, RuntimeError):
        return False
    return torch.equal(product, (codes.long() @ vectors.long().T).float())


# oneDNN's exact query code range here, and the int8 product probe uses (None: float32).
_ONEDNN_LEVELS = _onednn_levels()
INT8_KERNEL = _int8_kernel(_ONEDNN_LEVELS)


def _query_levels() -> int:
    """The range of query codes that :data:`INT8_KERNEL` multiplies exactly."""
    return (_ONEDNN_LEVELS or _ONEDNN_SAFE_LEVELS) if INT8_KERNEL == "onednn" else 127


@dataclass(frozen=True)
class SearchParams:
    """PLAID knobs for one search; plain values, so nothing carries over between calls.

    Attributes:
        ncells: centroids probed per query vector (stage 1).
        centroid_score_threshold: stage 2 ignores tokens whose centroid scores below this
            against every query vector (``-inf`` switches pruning off).
        ndocs: candidates kept after stage 2; stage 3 keeps ``max(k, ndocs // 4)``.
    """

    ncells: int
    centroid_score_threshold: float
    ndocs: int

    def __post_init__(self) -> None:
        for name in ("ncells", "ndocs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"SearchParams.{name} must be an integer >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))
        threshold = self.centroid_score_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)):
            raise ValueError(
                f"SearchParams.centroid_score_threshold must be a number, got {threshold!r}"
            )
        if math.isnan(float(threshold)):
            raise ValueError("SearchParams.centroid_score_threshold must not be NaN")
        object.__setattr__(self, "centroid_score_threshold", float(threshold))

    @classmethod
    def for_k(cls, k: int) -> SearchParams:
        """The reference defaults: k <= 10 -> (1, 0.5, 256); k <= 100 -> (2, 0.45, 1024);
        otherwise (4, 0.4, max(4k, 4096))."""
        k = _check_k(k)
        if k <= 10:
            return cls(ncells=1, centroid_score_threshold=0.5, ndocs=256)
        if k <= 100:
            return cls(ncells=2, centroid_score_threshold=0.45, ndocs=1024)
        return cls(ncells=4, centroid_score_threshold=0.4, ndocs=max(4 * k, 4096))

    @classmethod
    def high_recall(cls, k: int) -> SearchParams:
        """A slower preset that finds more of the exact top k: the defaults for ``k`` with the
        same probed cells, a threshold 0.05 lower and four times ``ndocs`` (so stage 4 scores
        four times as many passages exactly). At k=10: (1, 0.45, 1024).

        Measured at k=10 (nbits=2, CPU time on one core, agreement@10 with exact MaxSim over the
        original float vectors), against the defaults (1, 0.5, 256):

        * 5k passages of a peaked checkpoint (``benchmarks/bench_index.py``): agreement 0.928
          -> 0.930 for 2.26x the latency (the previous preset, (2, 0.45, 2048): 0.937 at 4.8x;
          (2, 0.45, 1024): 0.937 at 3.0x);
        * the synthetic 100k-passage segment of ``benchmarks/bench_search.py``: 0.906 -> 0.956
          for 1.8-2.2x (exhaustive scoring of the compressed vectors reaches 0.962; (2, 0.45,
          2048): 0.962 at 2.9-4.2x; (1, 0.45, 2048): 0.962 at 2.2-2.9x; (2, 0.45, 1024): 0.956
          at 2.4-3.2x).

        Of the three knobs ``ndocs`` matters most: the centroid-only ranking of stages 2-3 is
        what drops true top-k passages, while a second probed cell doubles the candidates for
        little gain. Use it for evaluation, or when recall matters more than latency.
        """
        base = cls.for_k(k)
        return cls(
            ncells=base.ncells,
            centroid_score_threshold=base.centroid_score_threshold - 0.05,
            ndocs=4 * base.ndocs,
        )


# ---------------------------------------------------------------------- public entry points


@dataclass(frozen=True)
class Probe:
    """Stage 1 of one query up to the inverted files: what :func:`probe` computes once and every
    segment's search reads (the segments share the codec).

    Attributes:
        scores: float32 ``[C, q]`` centroid scores, C-contiguous (see :func:`probe`).
        cells: int64 sorted unique ids of the ``ncells`` best centroids of each query vector.
        ncells: the centroids probed per query vector (:attr:`SearchParams.ncells`).
    """

    scores: np.ndarray
    cells: np.ndarray
    ncells: int

    @cached_property
    def centroid_maxima(self) -> np.ndarray:
        """float32 ``[C]``: each centroid's best score over the query vectors, which stage 2
        compares with its threshold; computed on first use (~0.13 ms at 34k centroids) and
        then shared by every segment's search."""
        return torch.from_numpy(self.scores).amax(dim=1).numpy()


def probe(codec: ResidualCodec, query: np.ndarray, ncells: int = 1) -> Probe:
    """Centroid scores ``codec.centroids @ query.T`` and the probed cells of one query; compute
    it once per query and pass it to the search of every segment.

    Where the CPU multiplies int8 fast (:data:`INT8_KERNEL`) the centroids (one scale for all,
    :attr:`ResidualCodec.centroids_int8`) and the query vectors (row by row,
    :func:`quantise_rows`) are quantised to int8, multiplied exactly in int32 and scaled back:
    the largest cost of a search then falls by 3.5x with VNNI (100k passages, 34k centroids,
    2 cores: 3.6 -> 1.0 ms per query), by 1.5x with oneDNN on AVX2 (5.5 -> 3.6 ms; the whole
    search 12.2 -> 9.7 ms). Those scores differ from float32 ones by ~9e-4 on average, at most
    ~6e-3 (unit vectors, D=128; more with oneDNN's 7-bit query codes), so every score
    that may be among its query vector's ``ncells`` best is recomputed in float32
    (:func:`_rescore_best`), and the cells are picked among those: stage 1 probes the cells
    float32 scores pick (up to float32 rounding). That matters: k-means leaves near-duplicate
    centroids for frequent tokens, closer than int8's error, and on a peaked checkpoint int8
    probing alone kept 0.929 of the exact top 10 where float32 kept 0.938 (5k passages,
    colbert-ai's index, 400 queries; this 0.938); int8 scores in stages 2 and 3 changed
    nothing. It costs ~0.3 ms at 34k centroids, and picking the cells among the rescored
    entries saves :func:`probe_cells` (~0.3 ms).
    """
    scores, cells = _scores_and_cells(codec, query, ncells)
    return Probe(scores, probe_cells(scores, ncells) if cells is None else cells, int(ncells))


def centroid_scores(codec: ResidualCodec, query: np.ndarray, ncells: int = 1) -> np.ndarray:
    """``probe(codec, query, ncells).scores``: float32 ``[C, q]``, C-contiguous, exact in
    float32 for every entry that may be among its column's ``ncells`` best (see :func:`probe`)."""
    return _scores_and_cells(codec, query, ncells)[0]


def _scores_and_cells(
    codec: ResidualCodec, query: np.ndarray, ncells: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`probe`'s scores, and its cells where the int8 path picked them (else ``None``)."""
    query = _check_query(codec, query)
    if isinstance(ncells, bool) or not isinstance(ncells, (int, np.integer)) or ncells < 1:
        raise ValueError(f"ncells must be an integer >= 1, got {ncells!r}")
    if INT8_KERNEL is None:
        return _float_product(codec.centroids, query), None
    centroids = codec.centroids_int8
    vectors, query_scale = quantise_rows(query, _query_levels())
    scores = _int8_scores(
        centroids.codes, centroids.scale, torch.from_numpy(vectors),
        torch.from_numpy(query_scale), INT8_KERNEL,
    ).numpy()  # fmt: skip
    # with c', q' the dequantised rows: |c.q - c'.q'| = |c.(q - q') + (c - c').q'|
    #   <= |c| |q - q'| + |c - c'| |q'|, plus float32 rounding of the scaling
    dequantised = vectors * query_scale[:, None]
    error = centroids.max_norm * row_norms(query - dequantised)
    error += centroids.max_error * row_norms(dequantised) + 1e-5
    return scores, _rescore_best(scores, codec.centroids, query, error, int(ncells))


def _float_product(centroids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``centroids @ query.T`` in float32, ``[C, q]``; float16 centroids are converted
    ``_PRODUCT_BLOCK`` rows at a time, never all at once."""
    rows, query_t = torch.from_numpy(centroids), torch.from_numpy(query).T
    out = torch.empty(len(rows), len(query))
    for start in range(0, len(rows), _PRODUCT_BLOCK):
        block = slice(start, start + _PRODUCT_BLOCK)
        torch.mm(rows[block].float(), query_t, out=out[block])
    return out.numpy()


def search_segment(
    codec: ResidualCodec,
    segment: Segment,
    query: np.ndarray,
    probed: Probe,
    k: int,
    params: SearchParams,
    allowed: np.ndarray | None = None,
    exact_vectors: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """PLAID top-k of one segment.

    (1) the union of the top-``ncells`` centroids of each query vector gives candidate passages
    through the IVF; (2) each candidate is scored from centroid scores only, ignoring tokens
    whose centroid's best score over all query vectors is below ``centroid_score_threshold``,
    and the top ``max(k, ndocs)`` are kept; (3) those are re-scored without pruning and the top
    ``max(k, ndocs // 4)`` kept; (4) their residuals are decompressed (or ``segment.vectors``
    used when ``exact_vectors`` and present) for exact MaxSim, and the top ``k`` returned.

    Args:
        codec: the index codec (its centroids produced ``segment.codes``).
        segment: the segment to search.
        query: float ``[q, D]`` query vectors (``q >= 1``; a ``[D]`` vector is one row).
        probed: ``probe(codec, query, params.ncells)``.
        k: results wanted (>= 1); fewer come back when fewer passages are reachable.
        params: PLAID knobs, e.g. ``SearchParams.for_k(k)``.
        allowed: optional bool mask over the segment's passages (tombstones and metadata
            filters applied): disallowed passages are dropped before stages 2-4, so they take
            no slots, and are never returned.
        exact_vectors: score stage 4 with the stored float16 vectors when the segment has them.

    Returns:
        ``(local passage numbers int64 [<=k], scores float32)``, best first, ties broken by
        the lower passage number.
    """
    query = _check_query(codec, query)
    k = _check_k(k)
    if not isinstance(params, SearchParams):
        raise TypeError(f"params must be a SearchParams, got {type(params).__name__}")
    if not isinstance(probed, Probe):
        raise TypeError(
            f"probed must be a Probe (use probe(codec, query, ncells)), got {type(probed).__name__}"
        )
    if probed.ncells != params.ncells:
        raise ValueError(
            f"probed has {probed.ncells} cells per query vector but params.ncells is "
            f"{params.ncells}; use probe(codec, query, params.ncells)"
        )
    scores_cq = _check_scores(probed.scores, codec.num_centroids, len(query))
    allowed = _check_allowed(segment, allowed)

    pids = candidates(segment, probed.cells, allowed)
    offsets = segment.offsets
    keep = max(k, params.ndocs)
    if len(pids) > keep:  # otherwise stage 2 would keep every candidate
        threshold = params.centroid_score_threshold
        approx = _approximate(segment, offsets, scores_cq, pids, threshold, probed)
        pids = pids[np.sort(_top_indices(approx, keep))]
    keep = max(k, params.ndocs // 4)
    if len(pids) > keep:
        approx = _approximate(segment, offsets, scores_cq, pids, None)
        pids = pids[np.sort(_top_indices(approx, keep))]
    scores = _exact(codec, segment, offsets, query, pids, exact_vectors)
    order = _top_indices(scores, k)
    return pids[order], scores[order]


def exhaustive_search(
    codec: ResidualCodec,
    segment: Segment,
    query: np.ndarray,
    k: int,
    allowed: np.ndarray | None = None,
    exact_vectors: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact MaxSim over every allowed passage (decompressed, or the stored float16 vectors
    with ``exact_vectors``); the same return contract as :func:`search_segment`.

    Used for small segments and very selective filters (see :func:`choose_exhaustive`) and as
    the reference in tests. Memory stays bounded: tokens are scored in blocks.
    """
    query = _check_query(codec, query)
    k = _check_k(k)
    allowed = _check_allowed(segment, allowed)
    doclens = np.asarray(segment.doclens)
    mask = doclens > 0
    if allowed is not None:
        mask &= allowed
    pids = np.flatnonzero(mask)
    scores = _exact(codec, segment, segment.offsets, query, pids, exact_vectors)
    order = _top_indices(scores, k)
    return pids[order], scores[order]


def choose_exhaustive(segment: Segment, n_allowed: int, params: SearchParams) -> bool:
    """True when exhaustive exact scoring of the allowed passages should replace PLAID.

    Exhaustive cost is proportional to the allowed tokens (~0.8 us of CPU per token, D=128,
    q=32); the allowed token count is estimated as ``n_allowed`` times the segment's mean
    passage length. It is chosen when that count is at most
    ``max(EXHAUSTIVE_MAX_TOKENS, (ndocs // 4) * mean length)``:

    * up to ``ndocs // 4`` passages, PLAID's stage 4 would decompress and score as many tokens
      anyway, so exhaustive scoring does no more exact work, skips stages 1-3, and is exact;
    * up to ``EXHAUSTIVE_MAX_TOKENS`` (24k) tokens, exhaustive scoring costs at most ~1.4x
      one default PLAID search of a 100k-passage segment (13-15 ms of CPU, measured in
      ``benchmarks/bench_search.py``), so exactness comes within the usual latency.

    Measured per segment, with the centroid scores already paid for, PLAID on a small segment
    or a small allowed set is faster still (it scores only the few candidates that share the
    query's best centroids: 1-2 ms for 300-1000 allowed passages out of 100k) but it then
    finds only 20-40% of the exact top 10 among the allowed passages (the rest share no
    probed centroid), which is why small allowed sets - very selective filters, small
    segments - go to exhaustive scoring. When every segment of an index goes exhaustive the
    centroid scores need not be computed at all.
    """
    n_passages = segment.n_passages
    n_allowed = int(n_allowed)
    if n_allowed <= 0 or n_passages == 0:
        return True
    n_allowed = min(n_allowed, n_passages)
    n_tokens = len(segment.codes)
    mean_len = n_tokens / n_passages
    allowed_tokens = n_tokens if n_allowed == n_passages else n_allowed * mean_len
    return allowed_tokens <= max(EXHAUSTIVE_MAX_TOKENS, (params.ndocs // 4) * mean_len)


# ---------------------------------------------------------------------- stages


def probe_cells(scores_cq: np.ndarray, ncells: int) -> np.ndarray:
    """Stage 1a: sorted unique ids (int64) of the ``ncells`` best centroids of each query
    vector (every centroid when ``ncells >= C``; among equal scores, any).

    A full top-n down each column of the ``[C, q]`` scores is slow (strided); instead the
    maxima of blocks of ``_PROBE_BLOCK`` consecutive centroids are taken, and the n best
    centroids of a column are picked among the rows of its n best blocks, which hold them.
    """
    scores_cq = _check_scores(scores_cq)
    ncells = int(ncells)
    if ncells < 1:
        raise ValueError(f"ncells must be >= 1, got {ncells}")
    n_centroids, n_query = scores_cq.shape
    if ncells >= n_centroids:
        return np.arange(n_centroids, dtype=np.int64)
    scores = torch.from_numpy(scores_cq)
    maxima = _block_maxima(scores)
    blocks = maxima.topk(min(ncells, len(maxima)), dim=0).indices.T  # [q, blocks]
    rows = (blocks[:, :, None] * _PROBE_BLOCK + torch.arange(_PROBE_BLOCK)).flatten(1)
    inside = rows < n_centroids  # the last block may be short
    rows.clamp_(max=n_centroids - 1)
    values = scores[rows, torch.arange(n_query)[:, None]].masked_fill_(~inside, -torch.inf)
    cells = rows.gather(1, values.topk(ncells, dim=1).indices)
    return np.unique(cells.numpy()).astype(np.int64, copy=False)


def candidates(
    segment: Segment,
    cells: np.ndarray,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Stage 1: sorted local passage numbers (int64) that the segment's IVF lists under the
    centroids ``cells`` (e.g. :attr:`Probe.cells`), restricted to ``allowed`` when given."""
    allowed = _check_allowed(segment, allowed)
    cells = np.asarray(cells)
    if cells.ndim != 1 or (len(cells) and not np.issubdtype(cells.dtype, np.integer)):
        raise ValueError(f"cells must be a 1-D integer array, got {cells.dtype} {cells.shape}")
    if len(cells) and (cells.min() < 0 or cells.max() >= segment.n_centroids):
        raise ValueError(
            f"cells must lie in [0, {segment.n_centroids}), the segment's IVF centroids; "
            "was the segment built with this codec?"
        )
    pids = sorted_unique(segment.ivf_passages(cells))
    return pids if allowed is None else pids[allowed[pids]]


def approximate_scores(
    segment: Segment,
    scores_cq: np.ndarray,
    pids: np.ndarray,
    centroid_score_threshold: float | None = None,
) -> np.ndarray:
    """Stages 2 and 3: MaxSim of passages ``pids`` with every token replaced by its centroid,
    ``sum_i max_t scores_cq[codes[t], i]``, float32 ``[len(pids)]``.

    With a threshold (stage 2), tokens whose centroid scores below it against every query
    vector are ignored; ``None`` (stage 3) uses every token. A passage left without tokens
    scores ``-inf``.
    """
    scores_cq = _check_scores(scores_cq)
    pids = _check_pids(segment, pids)
    return _approximate(segment, segment.offsets, scores_cq, pids, centroid_score_threshold)


def exact_scores(
    codec: ResidualCodec,
    segment: Segment,
    query: np.ndarray,
    pids: np.ndarray,
    exact_vectors: bool = False,
) -> np.ndarray:
    """Stage 4: exact MaxSim of passages ``pids`` over their decompressed token vectors (or the
    stored float16 vectors with ``exact_vectors``, when present), float32 ``[len(pids)]``.
    A passage without tokens scores ``-inf``."""
    query = _check_query(codec, query)
    pids = _check_pids(segment, pids)
    return _exact(codec, segment, segment.offsets, query, pids, exact_vectors)


# ---------------------------------------------------------------------- helpers


def _rescore_best(
    scores: np.ndarray,
    centroids: np.ndarray,
    query: np.ndarray,
    error: np.ndarray,
    ncells: int,
) -> np.ndarray:
    """Recompute in float32, in place, every entry of ``scores [C, q]`` that may be among its
    column's ``ncells`` best, given ``|scores - exact| <= error [q]`` column by column, and
    return the probed cells (:func:`probe_cells` of the result).

    With ``a_n`` the column's n-th best approximate score, an entry of the exact top n has an
    approximate score >= ``a_n - 2 * error``; every other entry keeps a score below the
    exact n-th, so the column's top n are then exactly those of float32 scores, and they are
    the n best of the recomputed entries. ``a_n`` is at least the n-th best of the column's
    block maxima (:func:`_block_maxima`), and only the blocks whose maximum reaches that bound
    minus ``2 * error`` are searched: a few per column (a full ``[C, q]`` mask and its
    ``nonzero`` took 1.6 ms at C = 34k, this 0.2 ms).
    """
    n_centroids, n_query = scores.shape
    maxima = _block_maxima(torch.from_numpy(scores))
    if ncells > len(maxima):  # fewer blocks than cells: the maxima bound nothing
        scores[:] = centroids @ query.T
        return probe_cells(scores, ncells)
    nth = (maxima.amax(dim=0) if ncells == 1 else maxima.topk(ncells, dim=0).values[-1]).numpy()
    floor = nth - 2 * error  # [q]
    # flat positions and a divmod: np.nonzero of the 2-D mask took ~50 us more
    blocks, cols = np.divmod(np.flatnonzero(maxima.numpy() >= floor), n_query)
    rows = (blocks[:, None] * _PROBE_BLOCK + np.arange(_PROBE_BLOCK)).ravel()
    cols = np.repeat(cols, _PROBE_BLOCK)
    inside = rows < n_centroids  # the last block may be short
    rows, cols = rows[inside], cols[inside]
    near = scores[rows, cols] >= floor[cols]
    rows, cols = rows[near], cols[near]
    exact = np.einsum("ij,ij->i", centroids[rows], query[cols])
    scores[rows, cols] = exact
    # each column holds at least n of them (its n best blocks' maxima) unless scores are NaN
    if np.bincount(cols, minlength=n_query).min() < ncells:
        return probe_cells(scores, ncells)
    order = np.lexsort((-exact, cols))  # column by column, best first
    first = np.searchsorted(cols[order], np.arange(n_query))
    best = order[(first[:, None] + np.arange(ncells)).ravel()]
    return np.unique(rows[best])


def _block_maxima(scores: torch.Tensor) -> torch.Tensor:
    """Column maxima of each block of ``_PROBE_BLOCK`` consecutive rows of ``[C, q]`` scores
    (the last block may be short): ``[ceil(C / _PROBE_BLOCK), q]``."""
    n_centroids, n_query = scores.shape
    full = n_centroids // _PROBE_BLOCK * _PROBE_BLOCK
    maxima = scores[:full].view(-1, _PROBE_BLOCK, n_query).amax(dim=1)
    if full < n_centroids:
        maxima = torch.cat([maxima, scores[full:].amax(dim=0, keepdim=True)])
    return maxima


def _approximate(
    segment: Segment,
    offsets: np.ndarray,
    scores_cq: np.ndarray,
    pids: np.ndarray,
    threshold: float | None,
    probed: Probe | None = None,
) -> np.ndarray:
    """Centroid-only MaxSim of ``pids`` over the tokens whose centroid reaches ``threshold``
    against some query vector (all tokens for ``None``); ``probed`` (the probe of
    ``scores_cq``) supplies those centroid maxima once per query instead of once per call."""
    if segment.n_centroids > len(scores_cq):  # the product below does not check its codes
        raise ValueError(
            f"segment {segment.name} has {segment.n_centroids} centroids but the scores cover "
            f"{len(scores_cq)}; was the segment built with this codec?"
        )
    scores = torch.from_numpy(scores_cq)
    kept_centroids = None
    if threshold is not None and threshold > -np.inf:
        maxima = scores.amax(dim=1).numpy() if probed is None else probed.centroid_maxima
        kept_centroids = maxima >= threshold
    out = np.empty(len(pids), dtype=np.float32)
    lengths = offsets[pids + 1] - offsets[pids]
    for lo, hi in _blocks(lengths, _BLOCK_TOKENS):
        block = lengths[lo:hi]
        codes = segment.take_codes(ranges(offsets[pids[lo:hi]], block))  # < n_centroids
        ends = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(block, out=ends[1:])
        if kept_centroids is not None:
            # a few % to most of the tokens; each passage's run of them found by bisection
            kept = np.flatnonzero(np.take(kept_centroids, codes, mode="clip"))  # (in range)
            codes, ends = codes.take(kept), np.searchsorted(kept, ends)
        out[lo:hi] = _sum_of_run_maxima(scores, codes, ends)
    return out


def _sum_of_run_maxima(scores: torch.Tensor, codes: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per run ``j`` of codes, ``codes[ends[j]:ends[j + 1]]``: the sum over columns of the
    maxima of its codes' rows of ``scores [rows, q]``; ``-inf`` for an empty run.

    One fused gather-and-max, ``torch.sparse.mm`` of the CSR matrix ``[runs, rows]`` that holds
    a 1 at each (run, code) with ``reduce="amax"``: no ``[codes, q]`` temporary. Against
    ``index_select`` + ``scatter_reduce`` 4096 rows at a time (100k passages, k=10): stage 2
    1.5 -> 1.15 ms, stage 3 0.62 -> 0.20 ms, same results; in stage 4 (its ``[tokens, q]``
    scores and ``codes = arange(tokens)``, against a ``scatter_reduce`` per 1024 rows) 1.85 ->
    1.70 ms. Its indices are int32 (a block holds far fewer than 2^31 codes): half the
    temporaries of int64 ones, and a slightly faster product."""
    incidence = torch.sparse_csr_tensor(
        torch.from_numpy(ends.astype(np.int32)),
        torch.from_numpy(codes.astype(np.int32, copy=False)),
        torch.ones(len(codes)),
        size=(len(ends) - 1, len(scores)),
    )
    sums = torch.sparse.mm(incidence, scores, reduce="amax").sum(dim=1).numpy()
    return np.where(ends[1:] > ends[:-1], sums, -np.inf)


def _exact(
    codec: ResidualCodec,
    segment: Segment,
    offsets: np.ndarray,
    query: np.ndarray,
    pids: np.ndarray,
    exact_vectors: bool,
) -> np.ndarray:
    out = np.empty(len(pids), dtype=np.float32)
    lengths = offsets[pids + 1] - offsets[pids]
    use_vectors = exact_vectors and segment.vectors is not None
    query_t = torch.from_numpy(query).T
    block_tokens = max(1, min(_BLOCK_TOKENS, _TOKEN_SCORE_BYTES // (4 * len(query))))
    for lo, hi in _blocks(lengths, block_tokens):
        rows = ranges(offsets[pids[lo:hi]], lengths[lo:hi])
        if use_vectors:
            vectors = partial(_stored_rows, segment.take_vectors(rows))
        else:
            codes, residuals = segment.take_codes(rows), segment.take_residuals(rows)
            vectors = partial(_decompressed_rows, codec, codes, residuals)
        ends = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(lengths[lo:hi], out=ends[1:])
        scores = _token_scores(vectors, query_t, len(rows))
        out[lo:hi] = _sum_of_run_maxima(scores, np.arange(len(rows), dtype=np.int32), ends)
    return out


class _Buffers(threading.local):
    """The current thread's decompression buffer (see _DECOMPRESS_ROWS)."""

    def __init__(self) -> None:
        self.vectors = np.empty((0, 0), dtype=np.float32)

    def vectors_for(self, dim: int) -> np.ndarray:
        """float32 ``[_DECOMPRESS_ROWS, dim]``, made on first use (or when either changes)."""
        if self.vectors.shape != (_DECOMPRESS_ROWS, dim):
            self.vectors = np.empty((_DECOMPRESS_ROWS, dim), dtype=np.float32)
        return self.vectors


_BUFFERS = _Buffers()


# Rows of token vectors as _token_scores reads them: float32 [rows, D], and the [rows, 1]
# divisors of their scores (None: none).
_Rows = tuple[torch.Tensor, torch.Tensor | None]


def _stored_rows(vectors: np.ndarray, a: int, b: int, out: np.ndarray) -> _Rows:
    """Rows ``a:b`` of stored float16 vectors, as float32, written into ``out``."""
    rows = out[: b - a]
    np.copyto(rows, vectors[a:b])
    return torch.from_numpy(rows), None


def _decompressed_rows(
    codec: ResidualCodec,
    codes: np.ndarray,
    residuals: np.ndarray,
    a: int,
    b: int,
    out: np.ndarray,
) -> _Rows:
    """Rows ``a:b``, decompressed into ``out`` but not normalised, and their norms: dividing
    the ``[rows, q]`` scores by them is cheaper than dividing the ``[rows, D]`` vectors
    (stage 4 at 100k passages: -0.1 ms), and equal up to float32 rounding."""
    rows = codec.decompress_unchecked(codes[a:b], residuals[a:b], out, normalise=False)
    vectors = torch.from_numpy(rows)
    return vectors, divisor_norms(vectors)


def _token_scores(
    vectors: Callable[[int, int, np.ndarray], _Rows], query_t: torch.Tensor, n_rows: int
) -> torch.Tensor:
    """``[n_rows, q]`` exact token scores against ``query_t [D, q]``, ``vectors(a, b, out)``
    giving the rows ``a:b`` (in ``out``); the rows go through the thread's buffer
    (:class:`_Buffers`) ``_DECOMPRESS_ROWS`` at a time."""
    buffer = _BUFFERS.vectors_for(query_t.shape[0])
    scores = torch.empty(n_rows, query_t.shape[1])
    for a in range(0, n_rows, len(buffer)):
        b = min(a + len(buffer), n_rows)
        rows, divisors = vectors(a, b, buffer)
        torch.mm(rows, query_t, out=scores[a:b])
        if divisors is not None:
            scores[a:b] /= divisors
    return scores


def _top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices (int64) of the ``n`` highest scores, best first, equal scores by lower index."""
    if n <= 0 or not len(scores):
        return np.zeros(0, dtype=np.int64)
    if n < len(scores):
        nth = np.partition(scores, len(scores) - n)[len(scores) - n]
        pool = np.flatnonzero(scores >= nth)  # ascending; more than n when the n-th is tied
    else:
        pool = np.arange(len(scores))
    order = np.argsort(-scores[pool], kind="stable")[:n]
    return pool[order].astype(np.int64, copy=False)


def _blocks(lengths: np.ndarray, budget: int):
    """Consecutive ``(lo, hi)`` runs of passages with at most ``budget`` tokens each (a longer
    passage gets a run of its own)."""
    ends = np.cumsum(lengths)
    lo, n = 0, len(lengths)
    while lo < n:
        before = ends[lo - 1] if lo else 0
        hi = max(int(np.searchsorted(ends, before + budget, side="right")), lo + 1)
        yield lo, hi
        lo = hi


def _check_scores(
    scores_cq: np.ndarray, n_centroids: int | None = None, n_query: int | None = None
) -> np.ndarray:
    """scores_cq as a C-contiguous float32 ``[C, q]`` array (a copy only when needed)."""
    scores_cq = np.asarray(scores_cq)
    ok = scores_cq.ndim == 2 and scores_cq.shape[1] >= 1
    if ok and n_centroids is not None:
        ok = scores_cq.shape == (n_centroids, n_query)
    if not ok:
        expected = "[C, q >= 1]" if n_centroids is None else f"[{n_centroids}, {n_query}]"
        raise ValueError(
            f"scores_cq must have shape {expected} (use centroid_scores(codec, query)), "
            f"got {scores_cq.shape}"
        )
    return np.ascontiguousarray(scores_cq, dtype=np.float32)


def _check_query(codec: ResidualCodec, query: np.ndarray) -> np.ndarray:
    query = np.asarray(query)
    if query.ndim == 1:
        query = query[None, :]
    if query.ndim != 2 or query.shape[0] < 1 or query.shape[1] != codec.dim:
        raise ValueError(
            f"query must be [q >= 1, {codec.dim}] float vectors, got shape {query.shape}"
        )
    if not np.issubdtype(query.dtype, np.floating):
        raise ValueError(f"query must have a floating dtype, got {query.dtype}")
    return np.ascontiguousarray(query, dtype=np.float32)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def _check_allowed(segment: Segment, allowed: np.ndarray | None) -> np.ndarray | None:
    if allowed is None:
        return None
    allowed = np.asarray(allowed)
    if allowed.dtype != np.bool_ or allowed.shape != (segment.n_passages,):
        raise ValueError(
            f"allowed must be a bool mask of shape ({segment.n_passages},) over the segment's "
            f"passages, got dtype {allowed.dtype} and shape {allowed.shape}"
        )
    return allowed


def _check_pids(segment: Segment, pids: np.ndarray) -> np.ndarray:
    pids = np.asarray(pids)
    if pids.ndim != 1 or (len(pids) and not np.issubdtype(pids.dtype, np.integer)):
        raise ValueError(f"pids must be a 1-D integer array, got {pids.dtype} {pids.shape}")
    pids = pids.astype(np.int64, copy=False)
    if len(pids) and (pids.min() < 0 or pids.max() >= segment.n_passages):
        raise ValueError(f"pids must lie in [0, {segment.n_passages})")
    return pids

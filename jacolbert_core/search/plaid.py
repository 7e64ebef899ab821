"""PLAID search over ONE index segment, given encoded query vectors.

The index calls :func:`centroid_scores` once per query (the centroids are shared by every
segment), then :func:`search_segment` (or :func:`exhaustive_search`, see
:func:`choose_exhaustive`) per segment, and merges the per-segment top-k lists.

PLAID (Santhanam et al., 2022) in four stages, each exposed as a function of its own:

1. :func:`candidates` - the union of the ``ncells`` best centroids of every query vector
   (:func:`probe_cells`) gives, through the segment's inverted file, the candidate passages.
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

Everything is vectorised with numpy (torch on CPU measured no faster for the centroid product
and slower for the reductions at these shapes): the token rows of many passages are gathered
with one ``np.repeat``/``cumsum`` index, their centroid scores with
``np.take(scores_qc, codes, axis=1)`` into a ``[q, tokens]`` matrix, and per-passage maxima
come from ``np.maximum.reduceat`` along its contiguous axis.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from jacolbert_core.index.codec import ResidualCodec
from jacolbert_core.index.segment import Segment, ranges

__all__ = [
    "EXHAUSTIVE_MAX_TOKENS",
    "SearchParams",
    "approximate_scores",
    "candidates",
    "centroid_scores",
    "choose_exhaustive",
    "exact_scores",
    "exhaustive_search",
    "probe_cells",
    "search_segment",
]

# Token rows scored per block in exact scoring: bounds the temporary decompressed vectors
# ([block, D] float32, 32 MiB at D=128) and the [q, block] score matrix.
_EXACT_BLOCK_TOKENS = 1 << 16

# Allowed tokens up to which choose_exhaustive prefers exact scoring of every allowed passage.
# Measured with benchmarks/bench_search.py (D=128, 32 query vectors, nbits=2, CPU time on one
# core): exhaustive scoring costs 0.5-0.6 us per token (decompression ~45%, the [q, D] x [D, t]
# product ~45%, the rest gathering and reducing), and one default k=10 PLAID search of a
# 100k-passage / 6M-token segment costs ~13 ms including the centroid scores (~6 ms of it).
# 24k tokens (~400 passages of 60 tokens) is what exhaustive scoring does in that time.
EXHAUSTIVE_MAX_TOKENS = 24_000


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


def centroid_scores(codec: ResidualCodec, query: np.ndarray) -> np.ndarray:
    """``query @ codec.centroids.T``: float32 ``[q, C]``, C-contiguous. Compute it once per
    query and pass it to the search of every segment (they share the codec)."""
    query = _check_query(codec, query)
    return matmul_t(query, codec.centroids)


def search_segment(
    codec: ResidualCodec,
    segment: Segment,
    query: np.ndarray,
    scores_qc: np.ndarray,
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
        scores_qc: ``centroid_scores(codec, query)``.
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
    scores_qc = _check_scores(scores_qc, codec.num_centroids, len(query))
    k = _check_k(k)
    if not isinstance(params, SearchParams):
        raise TypeError(f"params must be a SearchParams, got {type(params).__name__}")
    allowed = _check_allowed(segment, allowed)

    pids = candidates(segment, scores_qc, params.ncells, allowed)
    offsets = segment.offsets
    keep = max(k, params.ndocs)
    if len(pids) > keep:  # otherwise stage 2 would keep every candidate
        approx = _approximate(segment, offsets, scores_qc, pids, params.centroid_score_threshold)
        pids = pids[np.sort(_top_indices(approx, keep))]
    keep = max(k, params.ndocs // 4)
    if len(pids) > keep:
        approx = _approximate(segment, offsets, scores_qc, pids, None)
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

    Exhaustive cost is proportional to the allowed tokens (~0.55 us per token on one core,
    D=128, q=32); the allowed token count is estimated as ``n_allowed`` times the segment's mean
    passage length. It is chosen when that count is at most
    ``max(EXHAUSTIVE_MAX_TOKENS, (ndocs // 4) * mean length)``:

    * up to ``ndocs // 4`` passages, PLAID's stage 4 would decompress and score as many tokens
      anyway, so exhaustive scoring does no more exact work, skips stages 1-3, and is exact;
    * up to ``EXHAUSTIVE_MAX_TOKENS`` (24k) tokens, exhaustive scoring costs at most what one
      default PLAID search of a 100k-passage segment costs (~13 ms on one core, measured in
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


def probe_cells(scores_qc: np.ndarray, ncells: int) -> np.ndarray:
    """Stage 1a: sorted unique ids (int64) of the ``ncells`` best centroids of each query
    vector (every centroid when ``ncells >= C``)."""
    scores_qc = _check_scores(scores_qc)
    ncells = int(ncells)
    if ncells < 1:
        raise ValueError(f"ncells must be >= 1, got {ncells}")
    n_centroids = scores_qc.shape[1]
    if ncells >= n_centroids:
        return np.arange(n_centroids, dtype=np.int64)
    if ncells == 1:
        cells = scores_qc.argmax(axis=1)
    else:
        cells = np.argpartition(scores_qc, n_centroids - ncells, axis=1)[:, n_centroids - ncells :]
    return np.unique(cells).astype(np.int64, copy=False)


def candidates(
    segment: Segment,
    scores_qc: np.ndarray,
    ncells: int,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Stage 1: sorted local passage numbers (int64) that the segment's IVF lists under the
    probed cells (:func:`probe_cells`), restricted to ``allowed`` when given."""
    scores_qc = _check_scores(scores_qc)
    allowed = _check_allowed(segment, allowed)
    if segment.n_centroids != scores_qc.shape[1]:
        raise ValueError(
            f"the segment's IVF has {segment.n_centroids} centroids but scores_qc has "
            f"{scores_qc.shape[1]}; was the segment built with this codec?"
        )
    cells = probe_cells(scores_qc, ncells)
    entries = segment.ivf_passages(cells)
    hit = np.zeros(segment.n_passages, dtype=bool)
    hit[entries] = True
    if allowed is not None:
        hit &= allowed
    return np.flatnonzero(hit)


def approximate_scores(
    segment: Segment,
    scores_qc: np.ndarray,
    pids: np.ndarray,
    centroid_score_threshold: float | None = None,
) -> np.ndarray:
    """Stages 2 and 3: MaxSim of passages ``pids`` with every token replaced by its centroid,
    ``sum_i max_t scores_qc[i, codes[t]]``, float32 ``[len(pids)]``.

    With a threshold (stage 2), tokens whose centroid scores below it against every query
    vector are ignored; ``None`` (stage 3) uses every token. A passage left without tokens
    scores ``-inf``.
    """
    scores_qc = _check_scores(scores_qc)
    pids = _check_pids(segment, pids)
    return _approximate(segment, segment.offsets, scores_qc, pids, centroid_score_threshold)


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


def _approximate(
    segment: Segment,
    offsets: np.ndarray,
    scores_qc: np.ndarray,
    pids: np.ndarray,
    threshold: float | None,
) -> np.ndarray:
    lengths = offsets[pids + 1] - offsets[pids]
    codes = segment.take_codes(ranges(offsets[pids], lengths))
    if threshold is not None and threshold > -np.inf:
        kept_centroids = np.flatnonzero(scores_qc.max(axis=0) >= threshold)
        # position of each kept centroid in kept_centroids, -1 for a pruned one
        remap = np.full(scores_qc.shape[1], -1, dtype=np.int32)
        remap[kept_centroids] = np.arange(len(kept_centroids), dtype=np.int32)
        codes = np.take(remap, codes)
        keep = codes >= 0
        codes = np.compress(keep, codes)  # several times faster than codes[keep]
        kept_before = np.zeros(len(keep) + 1, dtype=np.int64)
        np.cumsum(keep, out=kept_before[1:])
        ends = np.cumsum(lengths)
        lengths = kept_before[ends] - kept_before[ends - lengths]
        # gather from the kept centroids' columns only: a table small enough to stay in cache
        scores_qc = np.ascontiguousarray(scores_qc[:, kept_centroids])
    return _sum_of_max(np.take(scores_qc, codes, axis=1), lengths)


def _exact(
    codec: ResidualCodec,
    segment: Segment,
    offsets: np.ndarray,
    query: np.ndarray,
    pids: np.ndarray,
    exact_vectors: bool,
) -> np.ndarray:
    out = np.full(len(pids), -np.inf, dtype=np.float32)
    lengths = offsets[pids + 1] - offsets[pids]
    use_vectors = exact_vectors and segment.vectors is not None
    for lo, hi in _blocks(lengths, _EXACT_BLOCK_TOKENS):
        rows = ranges(offsets[pids[lo:hi]], lengths[lo:hi])
        if not len(rows):
            continue
        if use_vectors:
            vectors = segment.take_vectors(rows).astype(np.float32)
        else:
            vectors = codec.decompress(segment.take_codes(rows), segment.take_residuals(rows))
        out[lo:hi] = _sum_of_max(matmul_t(query, vectors), lengths[lo:hi])
    return out


def matmul_t(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b.T`` in float32 through torch's BLAS rather than numpy's.

    A search encodes its query with torch; numpy's OpenBLAS threads, which busy-wait a while
    after each product, then compete with torch's OpenMP threads for the cores (on 2 CPUs query
    encoding took ~27 ms inside ``Index.search`` against ~7 ms alone). With every product in
    torch one thread pool serves the whole search. Read-only inputs (the codec's frozen
    centroids, memory maps) are only read here, so torch's warning about them does not apply.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(a).matmul(torch.from_numpy(b).T).numpy()


def _sum_of_max(token_scores: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per passage, owning consecutive runs of ``lengths`` columns of the ``[q, t]`` token
    scores: the sum over query vectors (rows) of the maximum over its columns; ``-inf`` for a
    passage without columns."""
    out = np.full(len(lengths), -np.inf, dtype=np.float32)
    if token_scores.shape[1]:
        nonempty = lengths > 0
        starts = (np.cumsum(lengths) - lengths)[nonempty]
        maxima = np.maximum.reduceat(token_scores, starts, axis=1)
        out[nonempty] = maxima.sum(axis=0, dtype=np.float32)
    return out


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
    scores_qc: np.ndarray, n_centroids: int | None = None, n_query: int | None = None
) -> np.ndarray:
    """scores_qc as a C-contiguous float32 ``[q, C]`` array (a copy only when needed)."""
    scores_qc = np.asarray(scores_qc)
    ok = scores_qc.ndim == 2 and scores_qc.shape[0] >= 1
    if ok and n_centroids is not None:
        ok = scores_qc.shape == (n_query, n_centroids)
    if not ok:
        expected = "[q >= 1, C]" if n_centroids is None else f"[{n_query}, {n_centroids}]"
        raise ValueError(
            f"scores_qc must have shape {expected} (use centroid_scores(codec, query)), "
            f"got {scores_qc.shape}"
        )
    return np.ascontiguousarray(scores_qc, dtype=np.float32)


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

"""Immutable index segments: compressed token vectors of a batch of passages, memory-mapped.

A segment directory holds ``.npy`` arrays only (no pickles). Format 2 (written now):

* ``codes.npy``       uint16 [T]           nearest-centroid id of every token vector (int32 when
                                           the codec has more than 65536 centroids)
* ``residuals.npy``   uint8 [T, D*nbits/8] packed residual buckets (reference bit layout)
* ``doclens.npy``     int32 [P]            token vectors per passage, in passage order
* ``ivf.npy``         uint8 [B]            the inverted file, Elias-Fano coded (below)
* ``ivf_offsets.npy`` int32 [C+1, 2]       per centroid: its first IVF entry, and the bit where
                                           that entry's high part starts (int64 when large)
* ``vectors.npy``     float16 [T, D]       optional: original vectors for exact reranking

The IVF lists, for every centroid ``c``, the unique local passage numbers ``p`` that have a
token assigned to ``c``. Its entries, ordered by centroid then passage, are the strictly
increasing keys ``c * P + p`` (``E`` of them, below ``U = C * P``), stored Elias-Fano style with
``L = floor(log2(U / E))`` low bits: the low bits of every key bit-packed (``E * L`` bits), and
the high parts ``key >> L`` as a bit vector with a one at ``high_j + j`` for entry ``j``
(``E + (U >> L) + 1`` bits at most). ``ivf.npy`` is the high bit vector's bytes followed by the
low bits' bytes (bit order little-endian). That is about ``L + 2`` bits per entry (8-11 bits at
C = 8192-32768) against 32 for plain int32 passage numbers; only the few dozen lists a query
probes are ever decoded. ``ivf_offsets[C, 1]`` is the length of the high bit vector in bits.

Format 1 (older indexes, still read): ``codes.npy`` int32 [T], ``ivf.npy`` int32 [E] plain local
passage numbers grouped by centroid, ``ivf_offsets.npy`` int64 [C+1] (``ivf[o[c]:o[c+1]]``).
The two are told apart by ``ivf_offsets.ndim``; readers take codes of any integer dtype.

Passage ``i`` of a segment has the global passage number ``pid_base + i``.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from jacolbert_core.errors import JaColBERTError

ARRAYS = ("codes", "residuals", "doclens", "ivf", "ivf_offsets")
_PACK_CHUNK = 1 << 20  # IVF entries bit-packed per step (a multiple of 8)


class CorruptIndexError(JaColBERTError):
    """An index file is missing, truncated or does not match its checksum."""


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values of a 1-D integer array, ascending; ``values`` is sorted in place.

    A sort and a comparison of neighbours: ``np.unique``'s hash path was ~15x slower on IVF
    keys, and 11x on the ~1.7k passage numbers of a query's probed lists (18 against 207 us;
    a bool mask over 100k passages and its ``flatnonzero``: 70 us)."""
    values.sort()
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def ivf_keys(codes: np.ndarray, doclens: np.ndarray) -> np.ndarray:
    """Sorted unique ``centroid * P + local passage`` keys (int64) of a segment's tokens."""
    n_passages = max(len(doclens), 1)
    passage_of_token = np.repeat(np.arange(len(doclens), dtype=np.int64), doclens)
    keys = codes.astype(np.int64) * n_passages + passage_of_token
    del passage_of_token
    return sorted_unique(keys)


def _low_bits(n_centroids: int, n_passages: int, n_entries: int) -> int:
    universe = n_centroids * max(n_passages, 1)
    if n_entries <= 0 or universe <= n_entries:
        return 0
    return min(int(np.floor(np.log2(universe / n_entries))), 56)


def encode_ivf(
    codes: np.ndarray, doclens: np.ndarray, n_centroids: int
) -> tuple[np.ndarray, np.ndarray]:
    """Format-2 IVF: ``(ivf uint8 [B], ivf_offsets [C+1, 2])``, see the module docstring."""
    n_passages = max(len(doclens), 1)
    keys = ivf_keys(codes, doclens)
    n_entries = len(keys)
    low = _low_bits(n_centroids, n_passages, n_entries)
    starts = np.zeros(n_centroids + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // n_passages, minlength=n_centroids), out=starts[1:])
    positions = (keys >> low) + np.arange(n_entries, dtype=np.int64)  # ones of the high vector
    high_bits = int(positions[-1]) + 1 if n_entries else 0
    high = np.zeros(high_bits, dtype=np.uint8)
    high[positions] = 1
    high_bytes = np.packbits(high, bitorder="little")
    del high
    low_bytes = []
    if low:
        shifts = np.arange(low, dtype=np.int64)
        for lo in range(0, n_entries, _PACK_CHUNK):
            block = keys[lo : lo + _PACK_CHUNK]
            bits = ((block[:, None] >> shifts) & 1).astype(np.uint8)
            low_bytes.append(np.packbits(bits.reshape(-1), bitorder="little"))
    hpos = np.append(positions, high_bits)[starts]  # bit of each list's first entry
    big = max(n_entries, high_bits) >= 2**31 - 1
    offsets = np.stack([starts, hpos], axis=1).astype(np.int64 if big else np.int32)
    return np.concatenate([high_bytes, *low_bytes]).astype(np.uint8, copy=False), offsets


def decode_ivf(
    ivf: np.ndarray, ivf_offsets: np.ndarray, n_passages: int, cells: np.ndarray
) -> np.ndarray:
    """Local passage numbers (int64, list after list) that a format-2 IVF holds under the
    centroids ``cells`` (int64)."""
    n_centroids = len(ivf_offsets) - 1
    n_passages = max(n_passages, 1)
    table = np.asarray(ivf_offsets)
    starts, hpos = table[cells].astype(np.int64).T
    ends, hends = table[cells + 1].astype(np.int64).T
    n_entries = int(table[-1, 0])
    low = _low_bits(n_centroids, n_passages, n_entries)
    # the high parts: the ones of bit ranges [hpos, hends), entry j's one is at high_j + j
    bit_index = ranges(hpos, hends - hpos)
    if not len(bit_index):
        return np.zeros(0, dtype=np.int64)
    data = np.asarray(ivf)
    bits = (data[bit_index >> 3] >> (bit_index & 7).astype(np.uint8)) & 1
    ones = bit_index[np.flatnonzero(bits)]
    entries = ranges(starts, ends - starts)
    keys = (ones - entries) << low
    if low:
        # the low bits follow the high vector's bytes; entry j's start at bit base + j * low
        bit = (int(table[-1, 1]) + 7) // 8 * 8 + entries * low
        first = bit >> 3
        last = len(data) - 1
        word = np.zeros(len(entries), dtype=np.uint64)
        for k in range((low + 7 + 7) // 8):  # the bytes that hold bits [bit, bit + low)
            byte = data[np.minimum(first + k, last)].astype(np.uint64)
            word |= byte << np.uint64(8 * k)
        word >>= (bit & 7).astype(np.uint64)
        word &= np.uint64((1 << low) - 1)
        keys |= word.astype(np.int64)
    return keys % n_passages


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` over pairs ``(s, n)``, int64, without a loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.asarray(starts, dtype=np.int64) - (np.cumsum(lengths) - lengths)
    rows = np.repeat(shift, lengths)
    return np.add(rows, np.arange(total, dtype=np.int64), out=rows)  # two temporaries, not three


# _read_rows reads runs of consecutive rows with pread when there are at most this many runs
# or they average at least _PREAD_MIN_RUN rows; otherwise it gathers through the memory map.
_PREAD_MAX_RUNS = 1024
_PREAD_MIN_RUN = 32


def _read_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``np.take(array, rows, axis=0)`` for a memory-mapped ``.npy`` array, reading the runs of
    consecutive rows with ``os.preadv`` instead of touching the map.

    Touching a map makes every faulted page (and the kernel's fault-around neighbours, 64 KiB
    by default) resident in the process, so a query that reads the residuals of 64 scattered
    passages grew the RSS by ~4-5 MiB, and the map of a long-running searcher grew towards the
    whole file. ``pread`` copies from the page cache into a temporary that is freed after use.
    Falls back to the map for arrays that are not file-backed ``np.memmap`` s, for many short
    runs (where one syscall per run costs more than the gather) and where ``preadv`` is missing.
    """
    rows = np.asarray(rows, dtype=np.int64)
    path = getattr(array, "filename", None)
    if not len(rows) or path is None or not hasattr(os, "preadv") or array.ndim != 2:
        return np.take(np.asarray(array), rows, axis=0)
    cut = np.flatnonzero(np.diff(rows) != 1) + 1
    n_runs = len(cut) + 1
    if n_runs > _PREAD_MAX_RUNS and len(rows) < _PREAD_MIN_RUN * n_runs:
        return np.take(np.asarray(array), rows, axis=0)
    if rows.min() < 0 or rows.max() >= len(array):
        raise IndexError(f"rows out of range for an array of {len(array)} rows")
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    row_bytes = array.dtype.itemsize * math.prod(array.shape[1:])
    flat = out.reshape(-1).view(np.uint8)
    starts = np.concatenate([[0], cut]).tolist()
    ends = [*cut.tolist(), len(rows)]
    first_rows = rows[starts].tolist()
    fd = os.open(path, os.O_RDONLY)
    try:
        for lo, hi, row in zip(starts, ends, first_rows, strict=True):
            want = (hi - lo) * row_bytes
            position = array.offset + row * row_bytes
            got = os.preadv(fd, [flat[lo * row_bytes : hi * row_bytes]], position)
            if got != want:
                raise CorruptIndexError(f"{path} is shorter than its header says")
    finally:
        os.close(fd)
    return out


def code_dtype(n_centroids: int) -> np.dtype:
    """The smallest dtype that holds centroid ids below ``n_centroids``."""
    return np.dtype(np.uint16 if n_centroids <= 1 << 16 else np.int32)


@dataclass(frozen=True)
class Segment:
    """Read-only view of one segment (arrays are memory-mapped)."""

    name: str
    pid_base: int
    codes: np.ndarray
    residuals: np.ndarray
    doclens: np.ndarray
    ivf: np.ndarray
    ivf_offsets: np.ndarray
    vectors: np.ndarray | None = None

    @property
    def n_passages(self) -> int:
        return len(self.doclens)

    @property
    def n_tokens(self) -> int:
        return len(self.codes)

    @property
    def format(self) -> int:
        """2 for Elias-Fano IVF + small codes, 1 for the plain int32 layout of older indexes."""
        return 2 if np.ndim(self.ivf_offsets) == 2 else 1

    @property
    def n_centroids(self) -> int:
        return len(self.ivf_offsets) - 1

    @cached_property
    def offsets(self) -> np.ndarray:
        """int64 [P+1]: passage i owns token rows ``offsets[i]:offsets[i+1]`` (computed once,
        read-only)."""
        offsets = np.zeros(len(self.doclens) + 1, dtype=np.int64)
        np.cumsum(self.doclens, out=offsets[1:])
        offsets.setflags(write=False)
        return offsets

    def ivf_passages(self, cells: np.ndarray) -> np.ndarray:
        """Local passage numbers listed under the centroids ``cells`` (concatenated, list by
        list; a passage appears once per listing centroid)."""
        cells = np.asarray(cells, dtype=np.int64)
        if self.format == 2:
            return decode_ivf(self.ivf, self.ivf_offsets, self.n_passages, cells)
        ivf_offsets = np.asarray(self.ivf_offsets)
        starts = ivf_offsets[cells]
        rows = ranges(starts, ivf_offsets[cells + 1] - starts)
        return np.asarray(self.ivf)[rows].astype(np.int64, copy=False)

    def take_codes(self, rows: np.ndarray) -> np.ndarray:
        """Centroid ids of token rows ``rows`` (an integer array of the segment's row numbers,
        which search derives from the passage offsets), in the stored dtype, each checked to lie
        in ``[0, n_centroids)``: search multiplies with them through torch's sparse product,
        which does not check its column indices (a corrupted codes file made it read past the
        centroid scores). numpy's checked gather is ~25% faster here than its clipping one."""
        codes = np.take(np.asarray(self.codes), rows)
        signed = codes.dtype.kind == "i"
        if len(codes) and (codes.max() >= self.n_centroids or (signed and codes.min() < 0)):
            raise CorruptIndexError(
                f"segment {self.name} holds centroid codes outside its {self.n_centroids} "
                "centroids: its codes file is corrupted; restore the index from a backup or "
                "rebuild it"
            )
        return codes

    def take_residuals(self, rows: np.ndarray) -> np.ndarray:
        """Packed residuals of token rows ``rows``, uint8 ``[len(rows), D*nbits/8]``."""
        return _read_rows(self.residuals, rows)

    def take_vectors(self, rows: np.ndarray) -> np.ndarray:
        """Stored float16 vectors of token rows ``rows`` (the segment must have them)."""
        assert self.vectors is not None
        return _read_rows(self.vectors, rows)

    @staticmethod
    def write(
        directory: Path,
        codes: np.ndarray,
        residuals: np.ndarray,
        doclens: np.ndarray,
        n_centroids: int,
        vectors: np.ndarray | None = None,
    ) -> dict[str, str]:
        """Write a new (format 2) segment directory; returns {file name: sha256}."""
        directory.mkdir(parents=True, exist_ok=False)
        codes = np.asarray(codes)
        ivf, ivf_offsets = encode_ivf(codes, np.asarray(doclens), n_centroids)
        arrays = {
            "codes": codes.astype(code_dtype(n_centroids), copy=False),
            "residuals": residuals.astype(np.uint8, copy=False),
            "doclens": doclens.astype(np.int32, copy=False),
            "ivf": ivf,
            "ivf_offsets": ivf_offsets,
        }
        if vectors is not None:
            arrays["vectors"] = vectors.astype(np.float16, copy=False)
        checksums = {}
        for name, array in arrays.items():
            path = directory / f"{name}.npy"
            with open(path, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array))
                handle.flush()
                os.fsync(handle.fileno())
            checksums[path.name] = file_digest(path)
        fsync_directory(directory)
        return checksums

    @classmethod
    def load(cls, directory: Path, name: str, pid_base: int, files: dict[str, str]) -> Segment:
        """Open a segment listed in the manifest; sizes are checked, contents are mapped."""
        arrays = {}
        for file_name in files:
            path = directory / file_name
            try:
                arrays[file_name.removesuffix(".npy")] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as error:
                raise CorruptIndexError(
                    f"segment file {path} is missing or unreadable ({error}); restore it from a "
                    "backup or rebuild the index"
                ) from error
        segment = cls(name=name, pid_base=pid_base, **arrays)
        doclens = np.asarray(segment.doclens, dtype=np.int64)
        n_tokens = int(doclens.sum())
        if len(doclens) and doclens.min() < 0:
            raise CorruptIndexError(f"segment {directory} is corrupted: negative passage lengths")
        if len(segment.codes) != n_tokens or len(segment.residuals) != n_tokens:
            raise CorruptIndexError(f"segment {directory} is inconsistent: token counts differ")
        if segment.format == 2:
            table = segment.ivf_offsets
            low = _low_bits(segment.n_centroids, segment.n_passages, int(table[-1, 0]))
            expected = (int(table[-1, 1]) + 7) // 8 + (int(table[-1, 0]) * low + 7) // 8
            if table.shape[1] != 2 or len(segment.ivf) != expected:
                raise CorruptIndexError(f"segment {directory} is inconsistent: IVF sizes differ")
        return segment


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

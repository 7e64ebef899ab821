"""Immutable index segments: compressed token vectors of a batch of passages, memory-mapped.

A segment directory holds ``.npy`` arrays only (no pickles):

* ``codes.npy``       int32 [T]            nearest-centroid id of every token vector
* ``residuals.npy``   uint8 [T, D*nbits/8] packed residual buckets (reference bit layout)
* ``doclens.npy``     int32 [P]            token vectors per passage, in passage order
* ``ivf.npy``         int32 [E]            local passage numbers grouped by centroid
* ``ivf_offsets.npy`` int64 [C+1]          centroid c owns ``ivf[ivf_offsets[c]:ivf_offsets[c+1]]``
* ``vectors.npy``     float16 [T, D]       optional: original vectors for exact reranking

Passage ``i`` of a segment has the global passage number ``pid_base + i``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jacolbert_core.errors import JaColBERTError

ARRAYS = ("codes", "residuals", "doclens", "ivf", "ivf_offsets")


class CorruptIndexError(JaColBERTError):
    """An index file is missing, truncated or does not match its checksum."""


def build_ivf(
    codes: np.ndarray, doclens: np.ndarray, n_centroids: int
) -> tuple[np.ndarray, np.ndarray]:
    """Centroid -> unique local passage numbers that have a token assigned to it."""
    passage_of_token = np.repeat(np.arange(len(doclens), dtype=np.int64), doclens)
    pairs = np.unique(codes.astype(np.int64) * len(doclens) + passage_of_token)
    centroids, passages = np.divmod(pairs, max(len(doclens), 1))
    offsets = np.zeros(n_centroids + 1, dtype=np.int64)
    np.cumsum(np.bincount(centroids, minlength=n_centroids), out=offsets[1:])
    return passages.astype(np.int32), offsets


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
    def offsets(self) -> np.ndarray:
        """int64 [P+1]: passage i owns token rows ``offsets[i]:offsets[i+1]``."""
        offsets = np.zeros(len(self.doclens) + 1, dtype=np.int64)
        np.cumsum(self.doclens, out=offsets[1:])
        return offsets

    @staticmethod
    def write(
        directory: Path,
        codes: np.ndarray,
        residuals: np.ndarray,
        doclens: np.ndarray,
        n_centroids: int,
        vectors: np.ndarray | None = None,
    ) -> dict[str, str]:
        """Write a new segment directory; returns {file name: sha256} for the manifest."""
        directory.mkdir(parents=True, exist_ok=False)
        ivf, ivf_offsets = build_ivf(codes, doclens, n_centroids)
        arrays = {
            "codes": codes.astype(np.int32, copy=False),
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
        n_tokens = int(np.asarray(segment.doclens, dtype=np.int64).sum())
        if len(segment.codes) != n_tokens or len(segment.residuals) != n_tokens:
            raise CorruptIndexError(f"segment {directory} is inconsistent: token counts differ")
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

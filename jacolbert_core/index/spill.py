"""Reading large memory-mapped arrays (the float16 spill of ``Index.add``) without letting
their pages pile up in the process's resident memory."""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import numpy as np

__all__ = ["READ_WINDOW", "read_rows", "release_pages"]

READ_WINDOW = 1 << 16  # rows spanned per read in read_rows (16 MiB of float16 at dim 128)


def release_pages(array: np.ndarray) -> None:
    """Drop the resident pages of a read-only ``np.memmap`` (e.g. the spill file) from this
    process's RSS with ``madvise(MADV_DONTNEED)``; they stay in the page cache, and are read
    again on the next access. A no-op for in-memory arrays or where madvise is unavailable."""
    handle = getattr(array, "_mmap", None)
    if handle is not None and hasattr(handle, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)


def read_rows(array: np.ndarray, rows: np.ndarray) -> Iterator[np.ndarray]:
    """``array[rows]`` as float32 blocks, in order, for sorted ``rows``: one block per window of
    ``READ_WINDOW`` consecutive rows of ``array`` that holds any, with the array's pages
    released after each, so at most one window of a memory-mapped array is resident."""
    windows = np.arange(0, len(array) + READ_WINDOW, READ_WINDOW)
    bounds = np.searchsorted(rows, windows)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if hi > lo:
            block = np.asarray(array[rows[lo:hi]], dtype=np.float32)
            release_pages(array)
            yield block

"""The C heap under bulk tensor work: glibc's malloc thresholds and trimming (no-ops elsewhere).

Every encoder batch allocates and frees tens of MB of activations. By default glibc serves
blocks above its mmap threshold (adjusted as blocks are freed, at most 32 MiB) with fresh
mappings, and gives the free top of its heap back to the OS once it passes the trim threshold
(twice the mmap one), so each batch page-faults its activations in again. Encoding the bench's
5k passages (4-layer model) took 2.5-2.8 M minor faults (~11 GB of zeroed pages) and 26.5 s;
inside :func:`retained_heap` it takes 0.2 M and 24.7 s. ``MALLOC_*_`` environment settings or
``GLIBC_TUNABLES`` take precedence.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
# inside retained_heap: blocks below 1 GiB come from the heap and stay there once freed
BULK_THRESHOLD = 1 << 30
# after it: the values glibc's own adjustment reaches once a 32 MiB block has been freed
SETTLED_MMAP_THRESHOLD, SETTLED_TRIM_THRESHOLD = 32 << 20, 64 << 20
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_lock = threading.Lock()
_depth = 0  # retained_heap blocks running now (in any thread)


@contextmanager
def retained_heap() -> Iterator[None]:
    """Keep freed memory in glibc's heap while the block runs; give it back when it ends.

    Nested or concurrent blocks share one setting: the last one to end releases the heap (so
    ``Index.add`` starts codec training without the encoder's freed activations: they made the
    heap's share of the RSS vary from ~145 to ~305 MB at 5k passages) and leaves glibc with
    fixed thresholds (32 MiB mmap, 64 MiB trim)."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1 and _tunable():
            _set_thresholds(BULK_THRESHOLD, BULK_THRESHOLD)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                if _tunable():
                    _set_thresholds(SETTLED_MMAP_THRESHOLD, SETTLED_TRIM_THRESHOLD)
                release_heap()


def release_heap() -> None:
    """Return the C heap's free memory to the OS (glibc's ``malloc_trim``; elsewhere a no-op).

    glibc gives back only the free memory at the top of its heap on its own; freed activations
    often sit below live blocks, where only ``malloc_trim`` releases their pages."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc, else None."""
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter itself uses
    except (OSError, TypeError):
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def _tunable() -> bool:
    if glibc() is None or any(name in os.environ for name in _USER_SETTINGS):
        return False
    return "glibc.malloc." not in os.environ.get("GLIBC_TUNABLES", "")


def _set_thresholds(mmap_threshold: int, trim_threshold: int) -> None:
    libc = glibc()
    assert libc is not None
    if not libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold):  # older glibc refuses > 32 MiB
        libc.mallopt(M_MMAP_THRESHOLD, SETTLED_MMAP_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)

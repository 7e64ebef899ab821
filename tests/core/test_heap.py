"""glibc heap handling: freed blocks kept during bulk work, and given back after it."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from jacolbert_core import heap

BLOCK = 64 << 20  # above the settled mmap threshold (32 MiB), below the bulk one (1 GiB)

needs_glibc = pytest.mark.skipif(heap.glibc() is None, reason="needs glibc")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _mapped_bytes() -> int:
    """Bytes glibc currently serves with their own mmap (``mallinfo2().hblkhd``)."""
    mallinfo2 = getattr(heap.glibc(), "mallinfo2", None)
    if mallinfo2 is None:
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    mallinfo2.restype = _MallInfo2
    return mallinfo2().hblkhd


def _rss_anon_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def _block() -> np.ndarray:
    return np.ones(BLOCK // 8)  # float64, every page touched


def _mapped_while_alive() -> int:
    before = _mapped_bytes()
    block = _block()
    grown = _mapped_bytes() - before
    del block
    return grown


@pytest.fixture
def bulk_threshold_accepted(monkeypatch) -> None:
    for name in (*heap._USER_SETTINGS, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    libc = heap.glibc()
    if libc is None:
        pytest.skip("needs glibc")
    if not libc.mallopt(heap.M_MMAP_THRESHOLD, heap.BULK_THRESHOLD):
        pytest.skip("this glibc refuses mmap thresholds above 32 MiB")
    heap._set_thresholds(heap.SETTLED_MMAP_THRESHOLD, heap.SETTLED_TRIM_THRESHOLD)


@pytest.mark.usefixtures("bulk_threshold_accepted")
def test_blocks_come_from_the_heap_and_stay_there_until_the_end() -> None:
    assert _mapped_while_alive() >= BLOCK  # outside: a mapping of its own
    with heap.retained_heap():
        assert _mapped_while_alive() == 0  # inside: from the heap...
        kept = _rss_anon_mb()  # ...and still resident once freed
        assert _mapped_while_alive() == 0
    assert kept - _rss_anon_mb() > 48  # the end gives it back
    assert _mapped_while_alive() >= BLOCK  # and settles the thresholds


@pytest.mark.usefixtures("bulk_threshold_accepted")
def test_nested_blocks_keep_the_setting_until_the_outermost_ends() -> None:
    with heap.retained_heap():
        with heap.retained_heap():
            pass
        assert _mapped_while_alive() == 0
    assert _mapped_while_alive() >= BLOCK


def test_user_malloc_settings_are_left_alone(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(heap, "_set_thresholds", lambda *values: calls.append(values))
    monkeypatch.setattr(heap, "release_heap", lambda: calls.append("release"))
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    with heap.retained_heap():
        pass
    assert calls == ["release"]  # only the trim, which any setting allows
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")
    with heap.retained_heap():
        pass
    assert calls == ["release", "release"]


def test_the_heap_is_released_even_when_the_block_fails(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(heap, "release_heap", lambda: calls.append("release"))
    with pytest.raises(RuntimeError), heap.retained_heap():
        raise RuntimeError("boom")
    assert calls == ["release"]
    assert heap._depth == 0


@needs_glibc
def test_release_heap_returns_fragmented_free_memory() -> None:
    # 64 KiB blocks come from glibc's heap (below its mmap threshold); keeping every 16th
    # alive pins the heap's top, so free() alone gives nothing back
    blocks = [np.ones(1 << 13) for _ in range(3200)]  # 200 MiB
    kept = blocks[::16]
    del blocks
    before = _rss_anon_mb()
    heap.release_heap()
    assert before - _rss_anon_mb() > 100
    assert all(float(block[-1]) == 1.0 for block in kept)  # live blocks are untouched

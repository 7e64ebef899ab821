"""One writer at a time: an exclusive advisory lock on ``write.lock`` in the index directory."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jacolbert_core.errors import JaColBERTError


class IndexLockedError(JaColBERTError):
    """Another process (or Index object) is writing to this index."""


@contextmanager
def writer_lock(directory: Path, timeout: float = 0.0) -> Iterator[None]:
    """Hold the index's writer lock; wait up to ``timeout`` seconds, then raise."""
    fd = os.open(directory / "write.lock", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise IndexLockedError(
                        f"another writer holds {directory / 'write.lock'}; wait for it to finish "
                        "(or pass lock_timeout=...) — the index itself is unchanged"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock

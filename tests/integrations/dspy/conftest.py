"""DSPy test fixtures: no DSPy request cache (every call reaches the server), clean settings."""

from __future__ import annotations

import threading

import pytest

dspy = pytest.importorskip("dspy")


@pytest.fixture(autouse=True)
def no_dspy_cache():
    """DSPy caches ColBERTv2 HTTP calls in memory and on disk (~/.dspy_cache): turn that off."""
    missing = object()
    saved = vars(dspy).get("cache", missing)  # reading dspy.cache would build the disk cache
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    try:
        yield
    finally:
        if saved is missing:
            del dspy.cache
        else:
            dspy.cache = saved


@pytest.fixture(autouse=True)
def reset_dspy_settings():
    yield
    dspy.configure(lm=None, rm=None)


@pytest.fixture(scope="module")
def server(sample_index):
    from jacolbert_core.server import make_server

    srv = make_server(sample_index, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)

"""Bad input gets a clear error and leaves the index intact."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from jacolbert_core import JaColBERTError
from jacolbert_core.index.index import Index
from jacolbert_core.index.lock import IndexLockedError, writer_lock
from jacolbert_core.index.manifest import IndexNotFoundError
from jacolbert_core.index.segment import CorruptIndexError


def snapshot(index: Index):
    return len(index), [h.passage_id for h in index.search("京都の紅葉", k=5, exact=True)]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"texts": []}, ValueError, None),
        ({"texts": ["ok", "  "]}, ValueError, "empty"),
        ({"texts": ["ok", 3]}, TypeError, "string"),
        ({"texts": ["a", "b"], "ids": ["x", "x"]}, ValueError, "duplicate"),
        ({"texts": ["a"], "ids": [7]}, TypeError, "string"),
        ({"texts": ["a"], "ids": ["x", "y"]}, ValueError, "one id per text"),
        ({"texts": ["a"], "ids": "x"}, TypeError, "list"),
        ({"texts": ["a"], "metadatas": [{"when": object()}]}, TypeError, "JSON"),
        ({"texts": ["a"], "metadatas": [{"x": float("nan")}]}, TypeError, "JSON"),
        ({"texts": ["a"], "metadatas": ["lang=ja"]}, TypeError, "dict"),
    ],
)
def test_bad_add_input_leaves_index_intact(make_index, kwargs, error, message):
    index = make_index(n=6)
    before = snapshot(index)
    with pytest.raises(error, match=message):
        index.add(**kwargs)
    assert snapshot(index) == before


def test_empty_list_is_rejected_with_a_message(make_index):
    with pytest.raises(ValueError, match="at least one"):
        make_index(n=2).add([])


@pytest.mark.parametrize("k", [0, -3, 2.5, "5", None])
def test_bad_k(make_index, k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        make_index(n=2).search("京都", k=k)


def test_unknown_index_path(tmp_path):
    with pytest.raises(IndexNotFoundError, match="no index at"):
        Index.open(tmp_path / "missing")


def test_create_refuses_to_clobber(make_index, peaked_model, tmp_path):
    index = make_index(n=2)
    with pytest.raises(JaColBERTError, match="already exists"):
        Index.create(index.path, peaked_model)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(JaColBERTError, match="not an empty directory"):
        Index.create(tmp_path / "full", peaked_model)


@pytest.mark.parametrize("damage", ["truncate", "remove"])
def test_damaged_segment_file_is_reported(make_index, damage):
    index = make_index(n=4)
    codes = next((index.path / "segments").iterdir()) / "codes.npy"
    if damage == "truncate":
        codes.write_bytes(codes.read_bytes()[:-16])
    else:
        codes.unlink()
    with pytest.raises(CorruptIndexError, match="codes.npy|inconsistent|unreadable"):
        Index.open(index.path, model=index.model)


def test_corrupted_manifest_is_reported(make_index):
    index = make_index(n=2)
    (index.path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptIndexError, match="corrupted"):
        Index.open(index.path, model=index.model)


def test_second_concurrent_writer_gets_a_clear_error(make_index):
    index = make_index(n=4)
    before = snapshot(index)
    holding, release = threading.Event(), threading.Event()

    def other_writer():
        with writer_lock(index.path):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=other_writer)
    thread.start()
    holding.wait(30)
    try:
        with pytest.raises(IndexLockedError, match="another writer"):
            index.add(["並行した書き込み。"], ids=["concurrent"])
        with pytest.raises(IndexLockedError):
            index.delete(["doc-001"])
    finally:
        release.set()
        thread.join()
    assert snapshot(index) == before
    index.add(["並行した書き込み。"], ids=["concurrent"], lock_timeout=5)
    assert index.get("concurrent") is not None


def test_search_results_are_deterministic(make_index):
    index = make_index(n=20)
    runs = [[(h.passage_id, h.score) for h in index.search("旅行の予約", k=10)] for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
    assert np.all(np.diff([s for _, s in runs[0]]) <= 0)

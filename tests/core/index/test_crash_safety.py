"""A crash at any step of add/delete/compact leaves the old or the new state, never a mix."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jacolbert_core.index import manifest as manifests
from jacolbert_core.index.codec import ResidualCodec
from jacolbert_core.index.index import Index
from jacolbert_core.index.segment import Segment
from jacolbert_core.index.store import Store

QUERIES = ["京都の紅葉", "味噌汁の作り方", "パスワードを忘れた"]


class Crash(Exception):
    pass


def state(path: Path, model) -> tuple:
    index = Index.open(path, model=model)
    docs = {
        h.document_id: index.get(h.document_id)
        for hits in index.search(QUERIES, k=100, exact=True)
        for h in hits
    }
    results = [
        [(h.passage_id, round(h.score, 4), h.text) for h in hits]
        for hits in index.search(QUERIES, k=5, exact=True)
    ]
    stats = index.stats()
    return (
        len(index),
        stats["segments"],
        stats["deleted_passages"],
        sorted((d.id, d.text, str(d.metadata)) for d in docs.values()),
        results,
    )


def inject(monkeypatch, owner, name: str, when: str) -> None:
    original = getattr(owner, name)

    def crashing(*args, **kwargs):
        if when == "before":
            raise Crash(name)
        original(*args, **kwargs)
        raise Crash(name)

    monkeypatch.setattr(owner, name, crashing)


def _add(index):
    index.add(
        ["新しい文書です。", "味噌汁の作り方を変えました。"],
        ids=["new", "doc-008"],
        metadatas=[{"topic": "x"}, None],
    )


OPERATIONS = {
    "first-add": lambda index: index.add(["最初の文書。", "二番目の文書。"], ids=["a", "b"]),
    "add": _add,
    "delete": lambda index: index.delete(["doc-001", "doc-009"]),
    "compact": lambda index: index.compact(),
}
STEPS = {  # the steps each operation goes through, in order
    "first-add": [
        (ResidualCodec, "save"),
        (Segment, "write"),
        (Store, "write"),
        (manifests, "write"),
    ],
    "add": [
        (Index, "_collect_garbage"),
        (Segment, "write"),
        (Store, "write"),
        (manifests, "write"),
    ],
    "delete": [(Store, "write"), (manifests, "write")],
    "compact": [
        (Segment, "write"),
        (Store, "copy_rows"),
        (manifests, "write"),
        (Index, "_collect_garbage"),
    ],
}
CASES = [(op, owner, name) for op, steps in STEPS.items() for owner, name in steps]


@pytest.mark.parametrize(
    ("operation", "owner", "name"), CASES, ids=[f"{op}-{name}" for op, _, name in CASES]
)
@pytest.mark.parametrize("when", ["before", "after"])
def test_crash_leaves_old_or_new_state(
    tmp_path, make_index, peaked_model, operation, owner, name, when, monkeypatch
):
    if operation == "first-add":
        index = Index.create(tmp_path / "idx", peaked_model)
    else:
        index = make_index(n=12)
        index.delete(["doc-002"])  # so that compaction has something to drop
    run = OPERATIONS[operation]
    old = state(index.path, peaked_model)
    twin = tmp_path / "twin"
    shutil.copytree(index.path, twin)
    run(Index.open(twin, model=peaked_model))
    new = state(twin, peaked_model)
    assert new != old

    inject(monkeypatch, owner, name, when)
    with pytest.raises(Crash):
        run(index)
    monkeypatch.undo()

    after_crash = state(index.path, peaked_model)
    assert after_crash in (old, new)
    if after_crash == old:  # not committed: the write can be redone and nothing else was lost
        run(Index.open(index.path, model=peaked_model))
    assert state(index.path, peaked_model) == new


def test_hard_kill_during_add(tmp_path, make_index, peaked_model):
    """A process killed (os._exit) right before the manifest rename keeps the old state."""
    index = make_index(n=6)
    old = state(index.path, peaked_model)
    script = textwrap.dedent(f"""
        import os
        from jacolbert_core import ColBERT
        from jacolbert_core.index import manifest
        from jacolbert_core.index.index import Index
        model = ColBERT.from_pretrained({str(Path(peaked_model.name))!r}, device="cpu")
        index = Index.open({str(index.path)!r}, model=model)
        manifest.write = lambda *a, **k: os._exit(17)
        index.add(["強制終了される追加です。"], ids=["killed"])
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 17, result.stderr
    assert state(index.path, peaked_model) == old
    leftovers = [p.name for p in (index.path / "segments").iterdir()]
    assert len(leftovers) > 1  # the dead writer left an unlisted segment behind...
    index = Index.open(index.path, model=peaked_model)
    index.add(["次の書き込み。"], ids=["next"])  # ...which the next writer cleans up
    assert sorted(p.name for p in (index.path / "segments").iterdir()) == sorted(
        s.name for s in manifests.read(index.path).segments
    )
    assert index.get("killed") is None and index.get("next") is not None

"""``JaColBERTRM``: passages mirror Index.search; k/where honoured; works as dspy's settings.rm."""

from __future__ import annotations

import copy

import pytest

dspy = pytest.importorskip("dspy")
pytest.importorskip("dspy_jacolbert")

from dspy_jacolbert import JaColBERTRM  # noqa: E402

from jacolbert_core import Index  # noqa: E402


def test_passages_mirror_index_search(sample_index, queries):
    rm = JaColBERTRM(sample_index, k=3)
    query = queries[0]["query"]
    passages = rm(query)
    hits = sample_index.search(query, k=3)
    assert len(passages) == 3
    for passage, hit in zip(passages, hits, strict=True):
        assert passage.long_text == passage.text == hit.text
        assert passage.id == passage.pid == passage.passage_id == hit.passage_id
        assert passage.document_id == hit.document_id
        assert passage.score == pytest.approx(hit.score)
        assert passage.rank == hit.rank
        assert passage.metadata == hit.metadata
        assert (passage.start, passage.end) == (hit.start, hit.end)
        assert isinstance(passage, dict) and passage["long_text"] == hit.text


def test_k_and_where(sample_index, queries):
    rm = JaColBERTRM(sample_index, k=2, where={"topic": "travel"})
    query = queries[2]["query"]
    assert len(rm(query)) == 2
    five = rm(query, k=5)
    assert [p.pid for p in five] == [
        h.passage_id for h in sample_index.search(query, k=5, where={"topic": "travel"})
    ]
    assert all(p.metadata["topic"] == "travel" for p in five)
    other = rm(query, k=5, where={"topic": {"$ne": "travel"}})
    assert other and all(p.metadata["topic"] != "travel" for p in other)
    unfiltered = rm(query, k=5, where={})  # {} drops the default filter
    assert [p.pid for p in unfiltered] == [h.passage_id for h in sample_index.search(query, k=5)]
    with pytest.raises(ValueError, match="k must be"):
        rm(query, k=0)
    with pytest.raises(ValueError, match="k must be"):
        JaColBERTRM(sample_index, k=-1)


def test_list_of_queries_merges_by_best_score(sample_index, queries):
    rm = JaColBERTRM(sample_index, k=4)
    batch = [queries[0]["query"], queries[1]["query"]]
    merged = rm(batch)
    pool = {}
    for hits in sample_index.search(batch, k=4):
        for h in hits:
            pool[h.passage_id] = max(pool.get(h.passage_id, float("-inf")), h.score)
    best = sorted(pool, key=lambda pid: (-pool[pid], pid))[:4]
    assert [p.pid for p in merged] == best
    assert [p.rank for p in merged] == [1, 2, 3, 4]


def test_dspy_retrieve_uses_the_rm(sample_index, queries):
    query = queries[3]["query"]
    dspy.configure(rm=JaColBERTRM(sample_index, k=3))
    prediction = dspy.Retrieve(k=2)(query)
    assert prediction.passages == [h.text for h in sample_index.search(query, k=2)]
    assert len(dspy.Retrieve()(query).passages) == 3  # dspy.Retrieve's own default k=3
    assert dspy.Retrieve(k=4)(query, k=1).passages == [sample_index.search(query, k=1)[0].text]


def test_japanese_question_returns_japanese_passages(sample_index):
    dspy.configure(rm=JaColBERTRM(sample_index))
    passages = dspy.Retrieve(k=2)("新幹線の指定席はいつから予約できますか？").passages
    assert len(passages) == 2 and all(isinstance(p, str) and p for p in passages)
    assert all(any("\u3040" <= ch <= "\u30ff" for ch in p) for p in passages)  # kana


def test_open_from_path(sample_index, peaked_model, queries):
    query = queries[0]["query"]
    rm = JaColBERTRM(sample_index.path, k=2, model=peaked_model)
    assert [p.pid for p in rm(query)] == [h.passage_id for h in sample_index.search(query, k=2)]
    from_path = JaColBERTRM.from_path(str(sample_index.path), model=peaked_model, k=1)
    assert len(from_path(query)) == 1
    with pytest.raises(ValueError, match="model="):
        JaColBERTRM(sample_index, model=peaked_model)
    with pytest.raises(TypeError, match="Index"):
        JaColBERTRM(42)


def test_deepcopy_shares_the_index(sample_index):
    rm = JaColBERTRM(sample_index, k=2, where={"lang": "ja"})
    clone = copy.deepcopy(rm)
    assert clone is not rm and clone.index is rm.index and isinstance(clone.index, Index)
    assert clone.where == rm.where and clone.where is not rm.where
    assert "k=2" in repr(rm)

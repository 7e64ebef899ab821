"""Index behaviour: search correctness, filters, updates, reopening."""

from __future__ import annotations

import numpy as np
import pytest

from jacolbert_core import JaColBERTError
from jacolbert_core.index.index import Index
from jacolbert_core.model.scoring import maxsim, top_k
from jacolbert_core.text.chunking import ChunkingConfig


def brute_force(index: Index, query: str, k: int, allowed_docs: set[str] | None = None):
    """Exact MaxSim over every live passage's decompressed (or stored) vectors."""
    snap = index._snapshot()
    [q] = index.model.encode_queries([query])
    rows = index._store.passages(
        [
            s.pid_base + i
            for s, alive in zip(snap.segments, snap.alive, strict=True)
            for i in np.flatnonzero(alive)
        ]
    )
    pids, docs = [], []
    for segment, alive in zip(snap.segments, snap.alive, strict=True):
        offsets = segment.offsets
        for i in np.flatnonzero(alive):
            pid = segment.pid_base + int(i)
            if allowed_docs is not None and rows[pid].doc_id not in allowed_docs:
                continue
            span = slice(offsets[i], offsets[i + 1])
            if snap.manifest.keep_vectors:
                vectors = np.asarray(segment.vectors[span], dtype=np.float32)
            else:
                vectors = snap.codec.decompress(segment.codes[span], segment.residuals[span])
            pids.append(pid)
            docs.append(vectors)
    return [(pids[i], s) for i, s in top_k(maxsim(q, docs), k)], rows


def as_pairs(index: Index, hits) -> list[tuple[int, float]]:
    snap = index._snapshot()
    by_id = {}
    for segment in snap.segments:
        rows = index._store.passages(
            list(range(segment.pid_base, segment.pid_base + segment.n_passages))
        )
        by_id.update({f"{r.doc_id}#{r.chunk}": pid for pid, r in rows.items()})
    return [(by_id[h.passage_id], h.score) for h in hits]


def test_add_search_get(make_index, corpus):
    index = make_index()
    assert len(index) == 48 and "doc-001" in index and "nope" not in index
    doc = index.get("doc-019")
    assert doc.text == corpus[18]["text"] and doc.metadata == corpus[18]["metadata"]
    assert doc.n_passages >= 2  # a long passage is chunked
    hits = index.search(corpus[4]["text"][:40], k=5)
    assert hits[0].document_id == "doc-005"
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    for hit in hits:
        source = index.get(hit.document_id).text
        assert source[hit.start : hit.end] == hit.text
        assert hit.passage_id.startswith(hit.document_id + "#")


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_exact_mode_equals_brute_force(make_index, queries, nbits):
    index = make_index(nbits=nbits)
    for q in queries[:6]:
        expected, _ = brute_force(index, q["query"], 10)
        got = as_pairs(index, index.search(q["query"], k=10, exact=True))
        assert [p for p, _ in got] == [p for p, _ in expected]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-4)


def test_probe_only_when_plaid_runs(make_index, queries, corpus, monkeypatch):
    from jacolbert_core.index import index as index_module

    index = make_index(n=30)
    index.add([d["text"] for d in corpus[30:48]], ids=[d["id"] for d in corpus[30:48]])
    assert index.stats()["segments"] == 2
    calls = []
    original = index_module.probe

    def counting(codec, query, ncells):
        calls.append(original(codec, query, ncells))
        return calls[-1]

    monkeypatch.setattr(index_module, "probe", counting)
    assert index.search(queries[0]["query"], k=5, exact=True)
    assert calls == []  # exhaustive scoring needs no centroid scores
    assert index.search(queries[0]["query"], k=5, exact=False)
    assert [p.ncells for p in calls] == [1]  # once per query, whatever the number of segments
    assert "centroid_maxima" not in vars(calls[0])  # stage 2 not needed: few candidates
    assert index.search(queries[0]["query"], k=5, exact=False, ndocs=4)
    # stage 2 ran in both segments on the maxima computed once, on the query's probe
    assert len(calls) == 2 and "centroid_maxima" in vars(calls[1])


def test_plaid_without_pruning_equals_exact(make_index, queries):
    index = make_index()
    n_centroids = index._snapshot().codec.num_centroids
    for q in queries[::3]:
        exact = index.search(q["query"], k=10, exact=True)
        plaid = index.search(
            q["query"],
            k=10,
            exact=False,
            ncells=n_centroids,
            centroid_score_threshold=-1e9,
            ndocs=10_000,
        )
        assert [h.passage_id for h in plaid] == [h.passage_id for h in exact]
        np.testing.assert_allclose([h.score for h in plaid], [h.score for h in exact], atol=1e-5)


def test_batched_queries_equal_single_queries(make_index, queries):
    index = make_index()
    texts = [q["query"] for q in queries[:5]]
    batched = index.search(texts, k=3)
    assert [[h.passage_id for h in hits] for hits in batched] == [
        [h.passage_id for h in index.search(t, k=3)] for t in texts
    ]


@pytest.mark.parametrize(
    ("where", "keep"),
    [
        ({"topic": "food"}, lambda m: m["topic"] == "food"),
        ({"topic": {"$in": ["food", "travel"]}}, lambda m: m["topic"] in ("food", "travel")),
        ({"year": {"$gte": 2020, "$lt": 2023}}, lambda m: 2020 <= m["year"] < 2023),
        (
            {"$or": [{"topic": "history"}, {"year": 2015}]},
            lambda m: m["topic"] == "history" or m["year"] == 2015,
        ),
        ({"topic": {"$ne": "food"}, "lang": "ja"}, lambda m: m["topic"] != "food"),
    ],
)
def test_where_filters_are_applied_before_scoring(make_index, corpus, where, keep):
    index = make_index()
    allowed = {d["id"] for d in corpus if keep(d["metadata"])}
    for exact in (True, False):
        hits = index.search("京都の紅葉と味噌汁の作り方", k=8, where=where, exact=exact)
        assert hits and all(h.document_id in allowed for h in hits)
    expected, _ = brute_force(index, "京都の紅葉と味噌汁の作り方", 8, allowed)
    exact_hits = index.search("京都の紅葉と味噌汁の作り方", k=8, where=where, exact=True)
    assert [p for p, _ in as_pairs(index, exact_hits)] == [p for p, _ in expected]


@pytest.mark.parametrize(
    "where", [{}, {"$nor": []}, {"year": {"$gt": [1]}}, {"year": {"$regex": "x"}}, "lang=ja"]
)
def test_bad_filters(make_index, where):
    index = make_index(n=3)
    with pytest.raises(ValueError):
        index.search("質問", where=where)


def test_upsert_replaces_documents(make_index):
    index = make_index(n=10)
    index.add(["味噌汁の新しいレシピです。"], ids=["doc-001"], metadatas=[{"topic": "food"}])
    assert len(index) == 10
    assert index.get("doc-001").text == "味噌汁の新しいレシピです。"
    hits = index.search("味噌汁の新しいレシピです。", k=10, exact=True)
    mine = [h for h in hits if h.document_id == "doc-001"]
    assert len(mine) == 1 and mine[0].text == "味噌汁の新しいレシピです。"
    assert mine[0].metadata == {"topic": "food"}
    everything = index.search("京都の紅葉", k=100, exact=True)
    assert [h.text for h in everything if h.document_id == "doc-001"] == [
        "味噌汁の新しいレシピです。"
    ]


def test_delete_and_compact_keep_results(make_index, queries):
    index = make_index()
    assert index.delete(["doc-001", "doc-002", "missing"]) == 2
    assert index.delete("missing") == 0
    assert len(index) == 46 and index.get("doc-001") is None
    before = [index.search(q["query"], k=5, exact=True) for q in queries[::3]]
    assert all(h.document_id not in ("doc-001", "doc-002") for hits in before for h in hits)
    segment_dirs = set((index.path / "segments").iterdir())
    index.add(["追加の文書です。"], ids=["extra"])
    index.compact()
    stats = index.stats()
    assert stats["segments"] == 1 and stats["deleted_passages"] == 0 and len(index) == 47
    assert not (segment_dirs & set((index.path / "segments").iterdir()))  # old files removed
    index.delete(["extra"])
    after = [index.search(q["query"], k=5, exact=True) for q in queries[::3]]
    assert [[(h.passage_id, round(h.score, 4)) for h in hits] for hits in after] == [
        [(h.passage_id, round(h.score, 4)) for h in hits] for hits in before
    ]


def test_reopen_is_self_describing(make_index, peaked_model, queries):
    index = make_index()
    expected = [index.search(q["query"], k=5) for q in queries[:4]]
    reopened = Index.open(index.path)  # model located from the manifest
    assert reopened.model is not peaked_model
    assert [reopened.search(q["query"], k=5) for q in queries[:4]] == expected
    assert Index.open(index.path, model=peaked_model).stats()["documents"] == 48


def test_a_different_model_is_refused_unless_forced(make_index, tiny_model):
    index = make_index(n=3)
    with pytest.raises(JaColBERTError, match="does not match"):
        Index.open(index.path, model=tiny_model)
    Index.open(index.path, model=tiny_model, force=True)


def test_readers_see_other_writers_changes(make_index):
    index = make_index(n=5)
    reader = Index.open(index.path, model=index.model)
    index.add(["新しく追加された文書です。"], ids=["new"])
    assert len(reader) == 6 and reader.get("new") is not None


def test_keep_vectors_gives_exact_scores(make_index, queries, peaked_model):
    index = make_index(n=12, keep_vectors=True)
    texts = {d: index.get(d).text for d in [f"doc-{i:03d}" for i in range(1, 13)]}
    for q in queries[:3]:
        hits = index.search(q["query"], k=3)
        expected, _ = brute_force(index, q["query"], 3)
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-4)
        whole = dict(zip(texts, peaked_model.score(q["query"], list(texts.values())), strict=True))
        single = [h for h in hits if index.get(h.document_id).n_passages == 1]
        for h in single:  # fp16 storage: scores within fp16 error of the float32 model
            assert abs(h.score - whole[h.document_id]) < 0.02


def test_chunking_can_be_disabled(make_index):
    index = make_index(chunking=ChunkingConfig(enabled=False))
    assert index.stats()["passages"] == 48


def test_tiny_collections_and_empty_index(tmp_path, peaked_model):
    index = Index.create(tmp_path / "tiny", peaked_model)
    assert index.search("何か", k=3) == [] and len(index) == 0
    index.add(["一つ目。", "二つ目。", "三つ目。"], ids=["a", "b", "c"])
    hits = index.search("二つ目", k=10)
    assert len(hits) == 3 and hits[0].document_id == "b"


def test_codec_fitted_on_a_tiny_first_add_is_refitted_as_the_index_grows(
    tmp_path, peaked_model, corpus
):
    whole = ChunkingConfig(enabled=False)
    texts, ids = [d["text"] for d in corpus], [d["id"] for d in corpus]
    grown = Index.create(tmp_path / "grown", peaked_model, chunking=whole)
    grown.add(texts[:2], ids=ids[:2])
    tiny_codec = grown.stats()["centroids"]
    grown.add(texts[2:], ids=ids[2:])
    control = Index.create(tmp_path / "control", peaked_model, chunking=whole)
    control.add(texts, ids=ids)
    stats = grown.stats()
    assert stats["centroids"] == control.stats()["centroids"] > tiny_codec
    assert stats["segments"] == 1 and len(grown) == 48 and grown.get(ids[0]).text == texts[0]

    float_vectors = peaked_model.encode_documents(texts)

    def agreement(index: Index) -> float:
        found = 0
        for query in [t[:30] for t in texts[:12]]:
            ours = {h.document_id for h in index.search(query, k=5, exact=True)}
            truth = peaked_model.search_encoded(query, float_vectors, k=5)[0]
            found += len(ours & {ids[i] for i, _ in truth})
        return found / 60

    assert agreement(grown) >= agreement(control) - 0.1

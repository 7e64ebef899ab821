"""JaColBERTRetriever: Documents mirror Index.search; k/where per call; sync, async, batch."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_jacolbert")

from langchain_core.documents import Document  # noqa: E402
from langchain_jacolbert import JaColBERTRetriever  # noqa: E402
from langchain_jacolbert.retrievers import HIT_KEYS  # noqa: E402

from jacolbert_core import Index  # noqa: E402


def expected(index: Index, query: str, k: int, where: dict | None = None) -> list[Document]:
    return [
        Document(
            id=h.passage_id,
            page_content=h.text,
            metadata={
                **h.metadata,
                "document_id": h.document_id,
                "score": h.score,
                "rank": h.rank,
                "start": h.start,
                "end": h.end,
            },
        )
        for h in index.search(query, k=k, where=where)
    ]


@pytest.fixture
def retriever(sample_index) -> JaColBERTRetriever:
    return JaColBERTRetriever(index=sample_index)


def test_documents_equal_index_search(retriever, sample_index, queries):
    for q in queries[:3]:
        docs = retriever.invoke(q["query"])
        assert docs == expected(sample_index, q["query"], k=4)
        assert [d.metadata["rank"] for d in docs] == [1, 2, 3, 4]
        scores = [d.metadata["score"] for d in docs]
        assert scores == sorted(scores, reverse=True)
        for doc in docs:
            assert doc.id.startswith(doc.metadata["document_id"] + "#")
            source = sample_index.get(doc.metadata["document_id"])
            assert source.text[doc.metadata["start"] : doc.metadata["end"]] == doc.page_content
            assert set(HIT_KEYS) | {"topic", "lang", "year"} == set(doc.metadata)


def test_k_default_constructor_and_per_call(sample_index, queries):
    query = queries[0]["query"]
    assert len(JaColBERTRetriever(index=sample_index).invoke(query)) == 4
    retriever = JaColBERTRetriever(index=sample_index, k=6)
    assert len(retriever.invoke(query)) == 6
    assert retriever.invoke(query, k=2) == expected(sample_index, query, k=2)
    assert len(retriever.invoke(query)) == 6  # a per-call k does not stick
    with pytest.raises(ValueError):
        JaColBERTRetriever(index=sample_index, k=0)


def test_where_default_and_per_call(sample_index, queries):
    query = queries[0]["query"]
    food = {"topic": "food"}
    retriever = JaColBERTRetriever(index=sample_index, k=5, where=food)
    docs = retriever.invoke(query)
    assert docs == expected(sample_index, query, k=5, where=food)
    assert {d.metadata["topic"] for d in docs} == {"food"}

    recent = {"year": {"$gte": 2023}}
    docs = retriever.invoke(query, where=recent)  # replaces the default filter for this call
    assert docs == expected(sample_index, query, k=5, where=recent)
    assert all(d.metadata["year"] >= 2023 for d in docs)
    assert retriever.invoke(query, where={}) == expected(sample_index, query, k=5)
    assert retriever.invoke(query, where={"topic": "no-such-topic"}) == []
    assert {d.metadata["topic"] for d in retriever.invoke(query)} == {"food"}


def test_search_kwargs_reach_the_index(sample_index, queries):
    query = queries[1]["query"]
    exact = sample_index.search(query, k=3, exact=True)
    retriever = JaColBERTRetriever(index=sample_index, k=3, search_kwargs={"exact": True})
    assert [d.id for d in retriever.invoke(query)] == [h.passage_id for h in exact]
    assert [d.id for d in retriever.invoke(query, exact=False, ndocs=512)] == [
        h.passage_id for h in sample_index.search(query, k=3, exact=False, ndocs=512)
    ]
    with pytest.raises(TypeError):
        retriever.invoke(query, no_such_setting=1)


def test_open_from_path(sample_index, peaked_model, queries):
    query = queries[2]["query"]
    by_path = JaColBERTRetriever.from_path(sample_index.path, model=peaked_model, k=3)
    by_field = JaColBERTRetriever(index=str(sample_index.path), model=peaked_model, k=3)
    assert by_path.invoke(query) == by_field.invoke(query) == expected(sample_index, query, k=3)
    with pytest.raises(ValueError, match="only used to open an index path"):
        JaColBERTRetriever(index=sample_index, model=peaked_model)


def test_returned_documents_are_independent(retriever, queries):
    query = queries[0]["query"]
    first = retriever.invoke(query)
    first[0].metadata["topic"] = "changed"
    first[0].metadata["score"] = -1.0
    assert retriever.invoke(query)[0].metadata["topic"] != "changed"
    assert retriever.invoke(query)[0].metadata["score"] > 0


def test_ainvoke_matches_invoke_and_runs_off_the_event_loop(
    retriever, sample_index, queries, monkeypatch
):
    loop_threads: list[int] = []
    search_threads: list[int] = []
    search = Index.search

    def recording_search(self, *args, **kwargs):
        search_threads.append(threading.get_ident())
        return search(self, *args, **kwargs)

    async def run_all(texts: list[str]) -> list[list[Document]]:
        loop_threads.append(threading.get_ident())
        return await asyncio.gather(*(retriever.ainvoke(t, k=3) for t in texts))

    monkeypatch.setattr(Index, "search", recording_search)
    texts = [q["query"] for q in queries[:4]]
    results = asyncio.run(run_all(texts))
    assert len(search_threads) == 4 and loop_threads[0] not in search_threads
    monkeypatch.undo()
    assert results == [expected(sample_index, t, k=3) for t in texts]
    food = {"topic": "food"}
    assert asyncio.run(retriever.ainvoke(texts[0], where=food)) == expected(
        sample_index, texts[0], k=4, where=food
    )


def test_batch_and_abatch_match_invoke(retriever, sample_index, queries):
    texts = [q["query"] for q in queries[:8]]
    assert retriever.batch(texts) == [expected(sample_index, t, k=4) for t in texts]
    assert asyncio.run(retriever.abatch(texts, k=2)) == [
        expected(sample_index, t, k=2) for t in texts
    ]


def test_invoke_on_a_modified_index_sees_updates(tmp_path, peaked_model, corpus):
    index = Index.create(tmp_path / "index", peaked_model)
    index.add([d["text"] for d in corpus[:10]], ids=[d["id"] for d in corpus[:10]])
    retriever = JaColBERTRetriever(index=index, k=10)
    query = corpus[3]["text"][:20]
    assert corpus[3]["id"] in {d.metadata["document_id"] for d in retriever.invoke(query)}
    index.delete([corpus[3]["id"]])
    assert corpus[3]["id"] not in {d.metadata["document_id"] for d in retriever.invoke(query)}

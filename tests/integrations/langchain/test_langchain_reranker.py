"""JaColBERTReranker: real MaxSim reranking as a LangChain document compressor."""

from __future__ import annotations

import asyncio
import copy
import threading

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_jacolbert")

from langchain_core.documents import Document  # noqa: E402
from langchain_jacolbert import JaColBERTReranker, JaColBERTRetriever  # noqa: E402

from jacolbert_core import ColBERT  # noqa: E402


@pytest.fixture
def documents(corpus) -> list[Document]:
    return [
        Document(id=d["id"], page_content=d["text"], metadata=dict(d["metadata"]))
        for d in corpus[:12]
    ]


def test_order_and_scores_equal_model_rerank(peaked_model, documents, queries):
    reranker = JaColBERTReranker(model=peaked_model)
    texts = [d.page_content for d in documents]
    for q in queries[:2]:
        out = reranker.compress_documents(documents, q["query"])
        ranked = peaked_model.rerank(q["query"], texts, k=3)
        assert [d.id for d in out] == [documents[i].id for i, _ in ranked]
        assert [d.metadata["relevance_score"] for d in out] == [s for _, s in ranked]
        for doc, (i, _) in zip(out, ranked, strict=True):
            assert doc.page_content == documents[i].page_content
            assert doc.metadata == {
                **documents[i].metadata,
                "relevance_score": doc.metadata["relevance_score"],
            }


def test_scores_are_colbert_maxsim(peaked_model, documents, queries):
    query = queries[5]["query"]
    out = JaColBERTReranker(model=peaked_model, top_n=len(documents)).compress_documents(
        documents, query
    )
    scores = peaked_model.score(query, [d.page_content for d in documents])
    by_id = {d.id: float(s) for d, s in zip(documents, scores, strict=True)}
    assert {d.id: d.metadata["relevance_score"] for d in out} == pytest.approx(by_id)
    assert [d.metadata["relevance_score"] for d in out] == sorted(by_id.values(), reverse=True)


def test_top_n(peaked_model, documents, queries):
    query = queries[0]["query"]
    assert len(JaColBERTReranker(model=peaked_model).compress_documents(documents, query)) == 3
    one = JaColBERTReranker(model=peaked_model, top_n=1).compress_documents(documents, query)
    assert len(one) == 1
    many = JaColBERTReranker(model=peaked_model, top_n=100).compress_documents(documents, query)
    assert sorted(d.id for d in many) == sorted(d.id for d in documents)
    with pytest.raises(ValueError):
        JaColBERTReranker(model=peaked_model, top_n=0)


def test_inputs_are_not_mutated(peaked_model, documents, queries):
    before = copy.deepcopy(documents)
    out = JaColBERTReranker(model=peaked_model).compress_documents(documents, queries[1]["query"])
    assert documents == before
    assert all("relevance_score" not in d.metadata for d in documents)
    assert not any(o is d or o.metadata is d.metadata for o in out for d in documents)


def test_empty_input(peaked_model):
    reranker = JaColBERTReranker(model=peaked_model)
    assert list(reranker.compress_documents([], "何でも")) == []
    assert asyncio.run(reranker.acompress_documents([], "何でも")) == []


def test_model_from_path(peaked_model, documents, queries):
    by_path = JaColBERTReranker(model=peaked_model.name)
    assert isinstance(by_path.model, ColBERT)
    query = queries[2]["query"]
    a = by_path.compress_documents(documents, query)
    b = JaColBERTReranker(model=peaked_model).compress_documents(documents, query)
    assert [d.id for d in a] == [d.id for d in b]
    assert [d.metadata["relevance_score"] for d in a] == pytest.approx(
        [d.metadata["relevance_score"] for d in b], rel=1e-5
    )


def test_async_matches_sync_off_the_event_loop(peaked_model, documents, queries, monkeypatch):
    reranker = JaColBERTReranker(model=peaked_model, top_n=4)
    loop_threads: list[int] = []
    rerank_threads: list[int] = []
    rerank = ColBERT.rerank

    def recording_rerank(self, *args, **kwargs):
        rerank_threads.append(threading.get_ident())
        return rerank(self, *args, **kwargs)

    async def run_all(texts: list[str]) -> list[list[Document]]:
        loop_threads.append(threading.get_ident())
        return await asyncio.gather(*(reranker.acompress_documents(documents, t) for t in texts))

    monkeypatch.setattr(ColBERT, "rerank", recording_rerank)
    texts = [q["query"] for q in queries[:3]]
    results = asyncio.run(run_all(texts))
    assert len(rerank_threads) == 3 and loop_threads[0] not in rerank_threads
    assert results == [reranker.compress_documents(documents, t) for t in texts]


def test_inside_contextual_compression_retriever(sample_index, peaked_model, queries):
    retrievers = pytest.importorskip("langchain_classic.retrievers")
    base = JaColBERTRetriever(index=sample_index, k=8)
    reranker = JaColBERTReranker(model=peaked_model, top_n=3)
    pipeline = retrievers.ContextualCompressionRetriever(
        base_compressor=reranker, base_retriever=base
    )
    query = queries[3]["query"]
    out = pipeline.invoke(query)
    assert out == reranker.compress_documents(base.invoke(query), query)
    assert len(out) == 3
    # the retriever's own metadata survives next to the reranker's score
    assert all({"score", "rank", "document_id", "relevance_score"} <= set(d.metadata) for d in out)

    food = {"topic": "food"}
    filtered = pipeline.invoke(query, where=food)  # kwargs reach the base retriever
    assert filtered == reranker.compress_documents(base.invoke(query, where=food), query)
    assert {d.metadata["topic"] for d in filtered} == {"food"}
    assert asyncio.run(pipeline.ainvoke(query)) == out

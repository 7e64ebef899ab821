"""JaColBERTRerank: real MaxSim ordering, top_n, instrumentation and callback events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler  # noqa: E402
from llama_index.core.instrumentation import get_dispatcher  # noqa: E402
from llama_index.core.instrumentation.event_handlers import BaseEventHandler  # noqa: E402
from llama_index.core.instrumentation.events.rerank import (  # noqa: E402
    ReRankEndEvent,
    ReRankStartEvent,
)
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle  # noqa: E402
from llama_index.postprocessor.jacolbert_rerank import JaColBERTRerank  # noqa: E402
from llama_index.retrievers.jacolbert import JaColBERTRetriever  # noqa: E402


@pytest.fixture(scope="module")
def query(queries) -> str:
    return queries[0]["query"]


@pytest.fixture
def candidates(sample_index, query) -> list[NodeWithScore]:
    return JaColBERTRetriever(sample_index, similarity_top_k=8).retrieve(query)


class Recorder(BaseEventHandler):
    events: list[Any] = []

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def recorded():
    dispatcher = get_dispatcher()  # root: events of every module propagate here
    handler = Recorder(events=[])
    dispatcher.add_event_handler(handler)
    yield handler.events
    dispatcher.event_handlers.remove(handler)


def test_order_equals_model_rerank(peaked_model, candidates, query):
    reranker = JaColBERTRerank(model=peaked_model)
    assert reranker.top_n == 3
    out = reranker.postprocess_nodes(candidates, query_str=query)
    expected = peaked_model.rerank(query, [n.node.get_content() for n in candidates], k=3)
    assert [n.node.node_id for n in out] == [candidates[i].node.node_id for i, _ in expected]
    assert [n.score for n in out] == pytest.approx([s for _, s in expected])
    assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)


def test_returns_new_objects_and_keeps_inputs(peaked_model, candidates, query):
    before = [(n.node.node_id, n.score) for n in candidates]
    out = JaColBERTRerank(model=peaked_model, top_n=8).postprocess_nodes(
        candidates, QueryBundle(query)
    )
    assert [(n.node.node_id, n.score) for n in candidates] == before
    assert not any(o is c for o in out for c in candidates)
    assert {n.node.node_id for n in out} == {n.node.node_id for n in candidates}
    assert all(
        o.node is next(c.node for c in candidates if c.node.node_id == o.node.node_id) for o in out
    )


@pytest.mark.parametrize("top_n", [1, 5, 50])
def test_top_n(peaked_model, candidates, query, top_n):
    out = JaColBERTRerank(model=peaked_model, top_n=top_n).postprocess_nodes(
        candidates, query_str=query
    )
    assert len(out) == min(top_n, len(candidates))


def test_invalid_top_n(peaked_model):
    with pytest.raises(ValueError):
        JaColBERTRerank(model=peaked_model, top_n=0)


def test_metadata_mode_embed(peaked_model, candidates, query):
    reranker = JaColBERTRerank(model=peaked_model, top_n=4, metadata_mode=MetadataMode.EMBED)
    out = reranker.postprocess_nodes(candidates, query_str=query)
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in candidates]
    assert "topic: " in texts[0] and "document_id" not in texts[0]
    expected = peaked_model.rerank(query, texts, k=4)
    assert [n.node.node_id for n in out] == [candidates[i].node.node_id for i, _ in expected]
    assert [n.score for n in out] == pytest.approx([s for _, s in expected])


def test_missing_query_is_a_clear_error(peaked_model, candidates):
    with pytest.raises(ValueError, match="query"):
        JaColBERTRerank(model=peaked_model).postprocess_nodes(candidates)


def test_empty_nodes(peaked_model, query):
    assert JaColBERTRerank(model=peaked_model).postprocess_nodes([], query_str=query) == []


def test_instrumentation_events(peaked_model, candidates, query, recorded):
    reranker = JaColBERTRerank(model=peaked_model, top_n=2)
    out = reranker.postprocess_nodes(candidates, query_str=query)
    starts = [e for e in recorded if isinstance(e, ReRankStartEvent)]
    ends = [e for e in recorded if isinstance(e, ReRankEndEvent)]
    assert len(starts) == 1 and len(ends) == 1
    assert recorded.index(starts[0]) < recorded.index(ends[0])
    assert starts[0].query.query_str == query
    assert starts[0].top_n == 2
    assert starts[0].model_name == peaked_model.name
    assert [n.node.node_id for n in starts[0].nodes] == [n.node.node_id for n in candidates]
    assert [n.node.node_id for n in ends[0].nodes] == [n.node.node_id for n in out]


def test_callback_reranking_event(peaked_model, candidates, query):
    debug = LlamaDebugHandler()
    reranker = JaColBERTRerank(
        model=peaked_model, top_n=2, callback_manager=CallbackManager([debug])
    )
    out = reranker.postprocess_nodes(candidates, query_str=query)
    [(start, end)] = debug.get_event_pairs(CBEventType.RERANKING)
    assert start.payload["query_str"] == query
    assert start.payload["top_k"] == 2
    assert [n.node.node_id for n in end.payload["nodes"]] == [n.node.node_id for n in out]


def test_async_postprocess(peaked_model, candidates, query):
    reranker = JaColBERTRerank(model=peaked_model, top_n=3)
    out = asyncio.run(reranker.apostprocess_nodes(candidates, query_str=query))
    sync = reranker.postprocess_nodes(candidates, query_str=query)
    assert [(n.node.node_id, n.score) for n in out] == [(n.node.node_id, n.score) for n in sync]


def test_load_from_path(peaked_model, candidates, query):
    reranker = JaColBERTRerank(model=peaked_model.name, top_n=3, device="cpu")
    assert reranker.model == peaked_model.name
    out = reranker.postprocess_nodes(candidates, query_str=query)
    expected = JaColBERTRerank(model=peaked_model, top_n=3).postprocess_nodes(
        candidates, query_str=query
    )
    assert [n.node.node_id for n in out] == [n.node.node_id for n in expected]
    assert [n.score for n in out] == pytest.approx([n.score for n in expected], abs=1e-4)


def test_in_query_engine(sample_index, peaked_model, query, recorded):
    retriever = JaColBERTRetriever(sample_index, similarity_top_k=8)
    reranker = JaColBERTRerank(model=peaked_model, top_n=2)
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=MockLLM(), node_postprocessors=[reranker]
    )
    response = engine.query(query)
    expected = reranker.postprocess_nodes(retriever.retrieve(query), query_str=query)
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in expected]
    assert expected[0].node.get_content() in str(response)
    assert any(isinstance(e, ReRankEndEvent) for e in recorded)

"""JaColBERTRetriever through LlamaIndex's own machinery (query/chat engines, fusion)."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.chat_engine import ContextChatEngine  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.core.retrievers import QueryFusionRetriever  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeRelationship  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.retrievers.jacolbert import (  # noqa: E402
    INTERNAL_KEYS,
    JaColBERTRetriever,
    filters_to_where,
    hit_to_node,
)

from jacolbert_core import Index  # noqa: E402


@pytest.fixture(scope="module")
def query(queries) -> str:
    return queries[2]["query"]  # 旅館で浴衣を着るとき… (doc-006, several passages)


def test_nodes_match_index_search(sample_index, query):
    retriever = JaColBERTRetriever(sample_index, similarity_top_k=5)
    nodes = retriever.retrieve(query)
    hits = sample_index.search(query, k=5)

    assert [n.node.node_id for n in nodes] == [h.passage_id for h in hits]
    assert [n.score for n in nodes] == pytest.approx([h.score for h in hits])
    assert [h.rank for h in hits] == list(range(1, len(nodes) + 1))  # rank == list position
    for n, h in zip(nodes, hits, strict=True):
        node = n.node
        assert node.text == h.text
        assert node.source_node is not None
        assert node.relationships[NodeRelationship.SOURCE].node_id == h.document_id
        assert node.metadata == {
            **h.metadata,
            "document_id": h.document_id,
            "start": h.start,
            "end": h.end,
        }
        assert (node.start_char_idx, node.end_char_idx) == (h.start, h.end)
        document = sample_index.get(h.document_id)
        assert document.text[node.start_char_idx : node.end_char_idx] == node.text


def test_default_top_k_and_validation(sample_index, query):
    retriever = JaColBERTRetriever(sample_index)
    assert retriever.similarity_top_k == 4
    assert len(retriever.retrieve(query)) == 4
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="similarity_top_k"):
            JaColBERTRetriever(sample_index, similarity_top_k=bad)


def test_open_from_path(sample_index, peaked_model, query):
    retriever = JaColBERTRetriever(str(sample_index.path), similarity_top_k=3, model=peaked_model)
    assert isinstance(retriever.index, Index)
    assert [n.node.node_id for n in retriever.retrieve(query)] == [
        h.passage_id for h in sample_index.search(query, k=3)
    ]


def test_internal_keys_stay_out_of_llm_and_embed_content(sample_index, query):
    [nws] = JaColBERTRetriever(sample_index, similarity_top_k=1).retrieve(query)
    node = nws.node
    assert set(INTERNAL_KEYS) <= set(node.excluded_llm_metadata_keys)
    assert set(INTERNAL_KEYS) <= set(node.excluded_embed_metadata_keys)
    for mode in (MetadataMode.LLM, MetadataMode.EMBED):
        content = node.get_content(metadata_mode=mode)
        assert node.text in content
        assert f"topic: {node.metadata['topic']}" in content  # user metadata is kept
        for key in INTERNAL_KEYS:
            assert f"{key}:" not in content
    assert "document_id:" in node.get_content(metadata_mode=MetadataMode.ALL)


def test_aretrieve_runs_off_the_event_loop(sample_index, query):
    retriever = JaColBERTRetriever(sample_index, similarity_top_k=3)
    threads: list[int] = []

    class RecordingIndex:
        def search(self, *args, **kwargs):
            threads.append(threading.get_ident())
            return sample_index.search(*args, **kwargs)

    retriever.index = RecordingIndex()

    async def main():
        loop_thread = threading.get_ident()
        nodes = await retriever.aretrieve(query)
        return loop_thread, nodes

    loop_thread, nodes = asyncio.run(main())
    assert threads and threads[0] != loop_thread
    assert [n.node.node_id for n in nodes] == [h.passage_id for h in sample_index.search(query, 3)]


def test_where_dict_filter(sample_index, query):
    where = {"topic": "travel", "year": {"$gte": 2020}}
    nodes = JaColBERTRetriever(sample_index, similarity_top_k=10, filters=where).retrieve(query)
    assert nodes
    assert all(n.node.metadata["topic"] == "travel" for n in nodes)
    assert all(n.node.metadata["year"] >= 2020 for n in nodes)
    assert [n.node.node_id for n in nodes] == [
        h.passage_id for h in sample_index.search(query, k=10, where=where)
    ]


def test_metadata_filters_translate_to_where():
    filters = MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value="travel"),
            MetadataFilters(
                filters=[
                    MetadataFilter(key="year", value=2020, operator=FilterOperator.LT),
                    MetadataFilter(key="year", value=[2023, 2024], operator=FilterOperator.IN),
                ],
                condition=FilterCondition.OR,
            ),
            MetadataFilter(key="lang", value="en", operator=FilterOperator.NE),
        ]
    )
    assert filters_to_where(filters) == {
        "$and": [
            {"topic": {"$eq": "travel"}},
            {"$or": [{"year": {"$lt": 2020}}, {"year": {"$in": [2023, 2024]}}]},
            {"lang": {"$ne": "en"}},
        ]
    }
    single = MetadataFilters(filters=[MetadataFilter(key="year", value=3, operator=">=")])
    assert filters_to_where(single) == {"year": {"$gte": 3}}
    assert filters_to_where(None) is None
    assert filters_to_where({"lang": "ja"}) == {"lang": "ja"}
    with pytest.raises(ValueError, match="text_match"):
        filters_to_where(
            MetadataFilters(
                filters=[MetadataFilter(key="t", value="x", operator=FilterOperator.TEXT_MATCH)]
            )
        )
    with pytest.raises(ValueError, match="not"):
        filters_to_where(
            MetadataFilters(
                filters=[MetadataFilter(key="t", value="x")] * 2, condition=FilterCondition.NOT
            )
        )


def test_metadata_filters_applied(sample_index, query):
    filters = MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value=["food", "health"], operator=FilterOperator.IN),
            MetadataFilter(key="year", value=2018, operator=FilterOperator.GT),
        ]
    )
    nodes = JaColBERTRetriever(sample_index, similarity_top_k=10, filters=filters).retrieve(query)
    assert nodes
    assert all(n.node.metadata["topic"] in ("food", "health") for n in nodes)
    assert all(n.node.metadata["year"] > 2018 for n in nodes)
    where = {"topic": {"$in": ["food", "health"]}, "year": {"$gt": 2018}}
    assert [n.node.node_id for n in nodes] == [
        h.passage_id for h in sample_index.search(query, k=10, where=where)
    ]


def test_filters_see_index_updates(tmp_path, peaked_model, corpus):
    index = Index.create(tmp_path / "index", peaked_model)
    docs = corpus[:6]
    index.add([d["text"] for d in docs], ids=[d["id"] for d in docs])
    retriever = JaColBERTRetriever(index, similarity_top_k=3, filters={"lang": "ja"})
    assert retriever.retrieve(docs[0]["text"]) == []  # no document has metadata yet
    index.add([docs[0]["text"]], ids=[docs[0]["id"]], metadatas=[{"lang": "ja"}])  # upsert
    [nws] = retriever.retrieve(docs[0]["text"])
    assert nws.node.metadata["document_id"] == docs[0]["id"]


def test_query_engine_puts_passages_in_the_prompt(sample_index, query):
    retriever = JaColBERTRetriever(sample_index, similarity_top_k=3)
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())  # echoes its prompt
    response = engine.query(query)
    hits = sample_index.search(query, k=3)

    assert [n.node.node_id for n in response.source_nodes] == [h.passage_id for h in hits]
    prompt = str(response)
    assert query in prompt
    for h in hits:
        assert h.text in prompt
    for key in INTERNAL_KEYS:
        assert f"{key}:" not in prompt
    assert f"topic: {hits[0].metadata['topic']}" in prompt


def test_async_query_engine(sample_index, query):
    engine = RetrieverQueryEngine.from_args(
        JaColBERTRetriever(sample_index, similarity_top_k=2), llm=MockLLM()
    )
    response = asyncio.run(engine.aquery(query))
    hits = sample_index.search(query, k=2)
    assert [n.node.node_id for n in response.source_nodes] == [h.passage_id for h in hits]
    assert hits[0].text in str(response)


def test_context_chat_engine(sample_index, query):
    retriever = JaColBERTRetriever(sample_index, similarity_top_k=2)
    engine = ContextChatEngine.from_defaults(retriever=retriever, llm=MockLLM())
    response = engine.chat(query)
    hits = sample_index.search(query, k=2)
    assert [n.node.node_id for n in response.source_nodes] == [h.passage_id for h in hits]
    assert hits[0].text in response.response  # the context reached the (echoing) LLM
    assert "document_id:" not in response.response


def test_query_fusion_with_bm25(sample_index, query):
    bm25 = pytest.importorskip("llama_index.retrievers.bm25")
    every_passage = [hit_to_node(h).node for h in sample_index.search(query, k=1000)]
    # Character unigrams: bm25s' default token pattern does not split Japanese.
    keyword = bm25.BM25Retriever.from_defaults(
        nodes=every_passage, similarity_top_k=5, skip_stemming=True, token_pattern=r"(?u)\w"
    )
    ours = JaColBERTRetriever(sample_index, similarity_top_k=5)
    fusion = QueryFusionRetriever(
        [ours, keyword],
        llm=MockLLM(),
        num_queries=1,
        mode="reciprocal_rerank",
        similarity_top_k=10,
    )
    fused = fusion.retrieve(query)

    ranked = [
        [n.node.node_id for n in r.retrieve(query)] for r in (ours, keyword)
    ]  # both lists sorted by score
    expected: dict[str, float] = {}
    for ids in ranked:
        for rank, node_id in enumerate(ids):
            expected[node_id] = expected.get(node_id, 0.0) + 1.0 / (rank + 60.0)
    assert set(ranked[0]) & set(ranked[1])  # some passage is found by both retrievers
    ids = [n.node.node_id for n in fused]
    assert len(ids) == len(set(ids))  # a passage found by both is merged (same node hash)
    assert set(ids) == set(expected)
    assert {n.node.node_id: n.score for n in fused} == pytest.approx(expected)
    assert [n.score for n in fused] == sorted((n.score for n in fused), reverse=True)


def test_query_fusion_merges_our_own_results(sample_index, query):
    # The same passage found at different ranks by two retrievers must fuse into one node: the
    # node hash covers text + metadata, so the rank is deliberately not stored in metadata.
    top_topic = sample_index.search(query, k=1)[0].metadata["topic"]
    wide = JaColBERTRetriever(sample_index, similarity_top_k=8)
    narrow = JaColBERTRetriever(
        sample_index, similarity_top_k=4, filters={"topic": {"$ne": top_topic}}
    )
    rank_in = [{n.node.node_id: r for r, n in enumerate(x.retrieve(query))} for x in (wide, narrow)]
    shared = set(rank_in[0]) & set(rank_in[1])
    assert any(rank_in[0][i] != rank_in[1][i] for i in shared)  # the case under test

    fusion = QueryFusionRetriever(
        [wide, narrow],
        llm=MockLLM(),
        num_queries=1,
        mode="reciprocal_rerank",
        similarity_top_k=20,
        use_async=False,
    )
    fused = {n.node.node_id: n.score for n in fusion.retrieve(query)}
    expected = {
        i: sum(1.0 / (ranks[i] + 60.0) for ranks in rank_in if i in ranks)
        for i in set(rank_in[0]) | set(rank_in[1])
    }
    assert fused == pytest.approx(expected)

"""The retriever inside LangChain machinery: an LCEL RAG chain with fake chat models, and a tool."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_jacolbert")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.language_models.fake_chat_models import (  # noqa: E402
    FakeListChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import ToolMessage  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate  # noqa: E402
from langchain_core.runnables import ConfigurableField, RunnablePassthrough  # noqa: E402
from langchain_core.tools import create_retriever_tool  # noqa: E402
from langchain_jacolbert import JaColBERTRetriever  # noqa: E402

PROMPT = ChatPromptTemplate.from_template(
    "次の資料だけを使って質問に答えてください。\n\n資料:\n{context}\n\n質問: {question}"
)


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(doc.page_content for doc in docs)


def rag_chain(retriever, llm):
    return (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | PROMPT
        | llm
        | StrOutputParser()
    )


def by_id(queries: list[dict], qid: str) -> dict:
    return next(q for q in queries if q["id"] == qid)


def test_rag_chain_puts_the_retrieved_passages_in_the_prompt(sample_index, queries):
    q = by_id(queries, "q-15")
    hits = sample_index.search(q["query"], k=3)
    assert q["relevant"][0] in {h.document_id for h in hits}

    chain = rag_chain(JaColBERTRetriever(index=sample_index, k=3), ParrotFakeChatModel())
    answer = chain.invoke(q["query"])  # the parrot echoes the prompt it received

    expected_context = "\n\n".join(h.text for h in hits)
    assert (
        answer == PROMPT.format_messages(context=expected_context, question=q["query"])[0].content
    )
    assert answer.index(hits[0].text) < answer.index(hits[1].text) < answer.index(hits[2].text)
    assert answer.endswith("質問: " + q["query"])
    retrieved = {h.passage_id for h in hits}
    others = [h for h in sample_index.search(q["query"], k=20) if h.passage_id not in retrieved]
    assert others and not any(h.text in answer for h in others)
    # internal metadata (scores, ids) stays out of the prompt unless a formatter puts it there
    assert f"{hits[0].score}" not in answer and hits[0].passage_id not in answer


def test_rag_chain_async_and_batch(sample_index, queries):
    texts = [by_id(queries, i)["query"] for i in ("q-03", "q-12", "q-22")]
    chain = rag_chain(JaColBERTRetriever(index=sample_index, k=2), ParrotFakeChatModel())
    answers = asyncio.run(chain.abatch(texts))
    assert answers == chain.batch(texts)
    for text, answer in zip(texts, answers, strict=True):
        assert all(h.text in answer for h in sample_index.search(text, k=2))
    assert asyncio.run(chain.ainvoke(texts[0])) == answers[0]


def test_chain_with_scripted_llm_and_per_call_settings(sample_index, queries):
    query = by_id(queries, "q-12")["query"]
    retriever = JaColBERTRetriever(index=sample_index)
    llm = FakeListChatModel(responses=["パスポートの申請には戸籍謄本などが必要です。"])
    chain = rag_chain(retriever.bind(k=1, where={"topic": "customer-support"}), llm)
    assert chain.invoke(query) == "パスポートの申請には戸籍謄本などが必要です。"

    seen: list[list[Document]] = []
    spy = retriever.bind(k=1, where={"topic": "finance"}) | (lambda d: seen.append(d) or d)
    spy.invoke(query)
    assert [d.id for d in seen[0]] == [
        h.passage_id for h in sample_index.search(query, k=1, where={"topic": "finance"})
    ]


def test_configurable_k(sample_index, queries):
    query = queries[0]["query"]
    retriever = JaColBERTRetriever(index=sample_index).configurable_fields(
        k=ConfigurableField(id="top_k", name="Number of passages")
    )
    assert len(retriever.invoke(query)) == 4
    assert len(retriever.invoke(query, config={"configurable": {"top_k": 2}})) == 2


def test_create_retriever_tool_returns_passage_text(sample_index, queries):
    query = by_id(queries, "q-03")["query"]
    hits = sample_index.search(query, k=3)
    tool = create_retriever_tool(
        JaColBERTRetriever(index=sample_index, k=3),
        "search_japanese_notes",
        "日本語の生活情報を検索します。",
    )
    assert tool.invoke({"query": query}) == "\n\n".join(h.text for h in hits)

    cited = create_retriever_tool(
        JaColBERTRetriever(index=sample_index, k=3),
        "search_with_sources",
        "出典付きで検索します。",
        document_prompt=PromptTemplate.from_template("[{document_id}] {page_content}"),
        response_format="content_and_artifact",
    )
    message = cited.invoke(
        {"type": "tool_call", "id": "call-1", "name": cited.name, "args": {"query": query}}
    )
    assert isinstance(message, ToolMessage)
    assert message.content == "\n\n".join(f"[{h.document_id}] {h.text}" for h in hits)
    assert [d.id for d in message.artifact] == [h.passage_id for h in hits]


def test_retriever_tool_async(sample_index, queries):
    query = by_id(queries, "q-22")["query"]
    tool = create_retriever_tool(JaColBERTRetriever(index=sample_index, k=2), "search", "検索")
    assert asyncio.run(tool.ainvoke({"query": query})) == "\n\n".join(
        h.text for h in sample_index.search(query, k=2)
    )

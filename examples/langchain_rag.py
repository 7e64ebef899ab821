"""RAG with LangChain (LCEL): JaColBERTRetriever -> format -> prompt -> chat model -> str.

Indexes the bundled Japanese sample corpus and answers a question with the chain
``{context: retriever, question} | ChatPromptTemplate | chat model | StrOutputParser``.

Offline (tiny random checkpoint, random scores; the fake chat model echoes the prompt it
received, so the answer shows the retrieved passages the real model would read)::

    pip install -e integrations/langchain-jacolbert
    jacolbert tiny-model models/tiny
    python examples/langchain_rag.py --model models/tiny

With JaColBERTv2.5 (downloaded on first use) and a real LLM through ``init_chat_model``::

    pip install langchain langchain-openai && export OPENAI_API_KEY=...
    python examples/langchain_rag.py --llm openai:gpt-4o-mini --index indexes/example-langchain \\
        --question "京都の紅葉の見頃はいつですか？"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from _common import FAKE_LLM, Passage, RAGResult, llm_spec, missing, run
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableParallel, RunnablePassthrough
from langchain_jacolbert import JaColBERTRetriever

from jacolbert_core import Index

PROMPT = ChatPromptTemplate.from_template(
    "次の資料だけを使って、日本語で簡潔に質問に答えてください。"
    "資料に答えがなければ「分かりません」と答えてください。\n\n"
    "資料:\n{context}\n\n質問: {question}"
)


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(f"[{n}] {doc.page_content}" for n, doc in enumerate(docs, start=1))


def chat_model(spec: str) -> BaseChatModel:
    """The offline parrot (answers with its prompt) or ``init_chat_model("provider:model")``."""
    if spec == FAKE_LLM:
        return ParrotFakeChatModel()
    provider, model = llm_spec(spec)
    try:
        from langchain.chat_models import init_chat_model

        return init_chat_model(model, model_provider=provider)
    except ImportError as error:
        raise missing(f"langchain langchain-{provider.replace('_', '-')}", error) from error


def rag_chain(retriever: JaColBERTRetriever, llm: BaseChatModel) -> Runnable:
    """question -> {"context": [Document], "question": str, "answer": str}."""
    answer = (
        RunnablePassthrough.assign(context=lambda x: format_docs(x["context"]))
        | PROMPT
        | llm
        | StrOutputParser()
    )
    return RunnableParallel(context=retriever, question=RunnablePassthrough()).assign(answer=answer)


def rag(index: Index, llm: BaseChatModel, args: argparse.Namespace) -> RAGResult:
    chain = rag_chain(JaColBERTRetriever(index=index, k=args.k), llm)
    result = chain.invoke(args.question)
    passages = [Passage(d.id, d.metadata["score"], d.page_content) for d in result["context"]]
    return RAGResult(passages, result["answer"])


def main(argv: Sequence[str] | None = None) -> int:
    return run("langchain", argv, chat_model, rag)


if __name__ == "__main__":
    sys.exit(main())

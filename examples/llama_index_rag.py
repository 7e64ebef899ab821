"""RAG with LlamaIndex: a ``RetrieverQueryEngine`` over ``JaColBERTRetriever``, optionally
reranked by the ``JaColBERTRerank`` node postprocessor.

Indexes the bundled Japanese sample corpus and answers a question with a Japanese QA prompt.

Offline (tiny random checkpoint, random scores; ``MockLLM`` echoes the prompt it received,
so the answer shows the retrieved passages the real model would read)::

    pip install -e integrations/llama-index-jacolbert
    jacolbert tiny-model models/tiny
    python examples/llama_index_rag.py --model models/tiny --rerank 10

With JaColBERTv2.5 (downloaded on first use) and OpenAI::

    pip install llama-index-llms-openai && export OPENAI_API_KEY=...
    python examples/llama_index_rag.py --llm openai:gpt-4o-mini \\
        --index indexes/example-llama-index --question "京都の紅葉の見頃はいつですか？"

``--rerank N`` retrieves N candidates with PLAID and keeps the best ``-k`` by exact ColBERT
scores (useful when the index was built with 1 or 2 bits).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from _common import FAKE_LLM, Passage, RAGResult, SetupError, llm_spec, missing, run
from llama_index.core.llms import LLM, MockLLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts import PromptTemplate
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.postprocessor.jacolbert_rerank import JaColBERTRerank
from llama_index.retrievers.jacolbert import JaColBERTRetriever

from jacolbert_core import Index

QA_PROMPT = PromptTemplate(
    "次の資料だけを使って、日本語で簡潔に質問に答えてください。"
    "資料に答えがなければ「分かりません」と答えてください。\n\n"
    "資料:\n{context_str}\n\n質問: {query_str}\n回答: "
)


def make_llm(spec: str) -> LLM:
    """The offline ``MockLLM`` (answers with its prompt) or ``llama_index.llms.openai``."""
    if spec == FAKE_LLM:
        return MockLLM()
    provider, model = llm_spec(spec)
    if provider != "openai":
        raise SetupError(f"only openai:MODEL is wired here; build a LlamaIndex LLM for {spec}")
    try:
        from llama_index.llms.openai import OpenAI
    except ImportError as error:
        raise missing("llama-index-llms-openai", error) from error
    return OpenAI(model=model)


def query_engine(index: Index, llm: LLM, k: int, rerank: int | None) -> RetrieverQueryEngine:
    postprocessors: list[BaseNodePostprocessor] = []
    if rerank:
        postprocessors.append(JaColBERTRerank(model=index.model, top_n=k))
    retriever = JaColBERTRetriever(index, similarity_top_k=max(k, rerank or 0))
    return RetrieverQueryEngine.from_args(
        retriever, llm=llm, node_postprocessors=postprocessors, text_qa_template=QA_PROMPT
    )


def rag(index: Index, llm: LLM, args: argparse.Namespace) -> RAGResult:
    engine = query_engine(index, llm, args.k, args.rerank)
    response = engine.query(args.question)
    passages = [Passage(n.node.node_id, n.score or 0.0, n.node.text) for n in response.source_nodes]
    return RAGResult(passages, str(response))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rerank", type=int, metavar="N", help="rerank N PLAID candidates with JaColBERTRerank"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run("llama_index", argv, make_llm, rag, add_arguments)


if __name__ == "__main__":
    sys.exit(main())

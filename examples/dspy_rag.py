"""RAG with DSPy: a ``dspy.Module`` of ``dspy.Retrieve`` (served by ``JaColBERTRM`` through
``dspy.configure(rm=...)``) and ``dspy.ChainOfThought``.

Indexes the bundled Japanese sample corpus and answers a question.

Offline (tiny random checkpoint, random scores; ``DummyLM`` gives a fixed answer, and the
prompt it received is printed, with the retrieved passages the real LM would read)::

    pip install -e integrations/dspy-jacolbert
    jacolbert tiny-model models/tiny
    python examples/dspy_rag.py --model models/tiny

With JaColBERTv2.5 (downloaded on first use) and a real LM (``dspy.LM("openai/gpt-4o-mini")``)::

    export OPENAI_API_KEY=...
    python examples/dspy_rag.py --llm openai:gpt-4o-mini --index indexes/example-dspy \\
        --question "京都の紅葉の見頃はいつですか？"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import dspy
from _common import FAKE_LLM, Passage, RAGResult, llm_spec, run
from dspy.utils import DummyLM
from dspy_jacolbert import JaColBERTRM

from jacolbert_core import Index

FAKE_ANSWER = "（ダミーLMの固定回答です。--llm openai:gpt-4o-mini で実際の回答を生成します）"


class AnswerFromContext(dspy.Signature):
    """資料だけを使って、日本語で簡潔に質問に答える。資料に答えがなければ「分かりません」と答える。"""

    # a list given to a str field reaches the LM as a numbered list: [1] «...» [2] «...»
    context: str = dspy.InputField(desc="検索された資料")
    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


class RAG(dspy.Module):
    def __init__(self, k: int = 3):
        super().__init__()
        self.retrieve = dspy.Retrieve(k=k)
        self.generate = dspy.ChainOfThought(AnswerFromContext)

    def forward(self, question: str) -> dspy.Prediction:
        context = self.retrieve(question).passages
        prediction = self.generate(context=context, question=question)
        return dspy.Prediction(context=context, answer=prediction.answer)


def make_lm(spec: str) -> dspy.BaseLM:
    """The offline ``DummyLM`` or ``dspy.LM("provider/model")``."""
    if spec == FAKE_LLM:
        return DummyLM([{"reasoning": "資料を読んで答える。", "answer": FAKE_ANSWER}])
    provider, model = llm_spec(spec)
    return dspy.LM(f"{provider}/{model}")


def rag(index: Index, lm: dspy.BaseLM, args: argparse.Namespace) -> RAGResult:
    rm = JaColBERTRM(index, k=args.k)
    dspy.configure(lm=lm, rm=rm)
    prediction = RAG(k=args.k)(question=args.question)
    # dspy.Retrieve passes on only the texts; the RM's passages also carry ids and scores.
    hits = rm(args.question, k=args.k)
    prompt = lm.history[-1]["messages"][-1]["content"] if args.llm == FAKE_LLM else None
    return RAGResult([Passage(h.id, h.score, h.long_text) for h in hits], prediction.answer, prompt)


def main(argv: Sequence[str] | None = None) -> int:
    return run("dspy", argv, make_lm, rag)


if __name__ == "__main__":
    sys.exit(main())

"""What the three RAG examples share: the command line, the sample index, the LLM switch and
the printed result. Each example only makes its LLM and runs its framework's pipeline
(``make_llm(spec)``, ``rag(index, llm, args)``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from jacolbert_core import DEFAULT_MODEL, ColBERT, Index, IndexNotFoundError, JaColBERTError
from jacolbert_core.testing import sample_corpus

#: Answered by doc-002 of the sample corpus (東海道新幹線の指定席は…1か月前の午前10時から発売).
DEFAULT_QUESTION = "新幹線の指定席はいつから予約できますか？"
FAKE_LLM = "fake"
LLMT = TypeVar("LLMT")
#: Environment variable each provider's client reads its key from (others are not checked).
API_KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


class SetupError(Exception):
    """Something the user must install or set before the example can run."""


@dataclass
class Passage:
    id: str
    score: float
    text: str


@dataclass
class RAGResult:
    passages: list[Passage]
    answer: str
    prompt: str | None = None  # what the fake LLM received, when its answer does not show it


def llm_spec(spec: str) -> tuple[str, str]:
    """``"openai:gpt-4o-mini"`` -> ``("openai", "gpt-4o-mini")``, after checking the API key."""
    provider, _, model = spec.partition(":")
    if not provider or not model:
        raise SetupError(f"--llm must be {FAKE_LLM!r} or PROVIDER:MODEL, got {spec!r}")
    key = API_KEYS.get(provider)
    if key and not os.environ.get(key):
        raise SetupError(f"--llm {spec} needs the {key} environment variable (your API key)")
    return provider, model


def missing(package: str, error: ImportError) -> SetupError:
    """The error for an optional package that is not installed."""
    return SetupError(f"{error}; install it with: pip install {package}")


def parse_args(
    framework: str,
    argv: Sequence[str] | None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"{framework}_rag.py",
        description=f"RAG over the jacolbert Japanese sample corpus with {framework}.",
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"hub id or local checkpoint ({DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--index", help="index directory, built on first use (default: a temporary one)"
    )
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("-k", type=int, default=3, help="passages given to the LLM")
    parser.add_argument(
        "--llm",
        default=FAKE_LLM,
        help=f"{FAKE_LLM!r} (offline, shows what the LLM receives) or PROVIDER:MODEL, "
        "e.g. openai:gpt-4o-mini",
    )
    if add_arguments:
        add_arguments(parser)
    return parser.parse_args(argv)


def sample_index(model_name: str, directory: str | None, stack: ExitStack) -> Index:
    """The index at ``directory`` (built from the sample corpus if there is none yet), or a
    temporary one removed when ``stack`` closes."""
    model = ColBERT.from_pretrained(model_name)  # hub failures explain how to go offline
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix="jacolbert-example-", ignore_cleanup_errors=True)
        directory = str(Path(stack.enter_context(tmp)) / "index")
    try:
        return Index.open(directory, model=model)
    except IndexNotFoundError:
        corpus = sample_corpus()
        index = Index.create(directory, model)
        index.add(
            [doc["text"] for doc in corpus],
            ids=[doc["id"] for doc in corpus],
            metadatas=[doc["metadata"] for doc in corpus],
        )
        return index


def print_result(question: str, result: RAGResult, llm: str) -> None:
    print(f"質問: {question}\n\n検索された資料 (JaColBERT):")
    for rank, passage in enumerate(result.passages, start=1):
        text = passage.text.replace("\n", " ")
        print(f"  {rank}. {passage.id:<12} {passage.score:7.2f}  {text[:40]}…")
    if result.prompt is not None:
        print(f"\nLLMへの入力 ({llm}):\n{result.prompt}")
    print(f"\n回答 ({llm}):\n{result.answer}")


def run(
    framework: str,
    argv: Sequence[str] | None,
    make_llm: Callable[[str], LLMT],
    rag: Callable[[Index, LLMT, argparse.Namespace], RAGResult],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse ``argv``, make the LLM, open or build the sample index, answer the question with
    ``rag`` and print it; 2 (and a one-line error) when a model, package or API key is missing."""
    args = parse_args(framework, argv, add_arguments)
    try:
        llm = make_llm(args.llm)  # before the slow part: a missing key or package fails fast
        with ExitStack() as stack:
            index = sample_index(args.model, args.index, stack)
            print_result(args.question, rag(index, llm, args), args.llm)
    except (JaColBERTError, SetupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0

"""The RAG programs in examples/ run end to end offline: tiny checkpoint, fake LLMs."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: example module -> the adapter it needs
FRAMEWORKS = {
    "langchain_rag": "langchain_jacolbert",
    "llama_index_rag": "llama_index.retrievers.jacolbert",
    "dspy_rag": "dspy_jacolbert",
}
PASSAGE_LINE = re.compile(r"^ +\d+\. (doc-\d{3}#\d+) +(-?\d+\.\d+)  (.*)…$", re.MULTILINE)


def load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    pytest.importorskip(FRAMEWORKS[name])
    monkeypatch.syspath_prepend(str(EXAMPLES))  # as `python examples/x.py` does
    return importlib.import_module(name)


@pytest.fixture(autouse=True)
def reset_dspy():
    yield
    if "dspy" in sys.modules:  # the DSPy example configures global settings
        sys.modules["dspy"].configure(lm=None, rm=None)


@pytest.fixture(params=list(FRAMEWORKS))
def example(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load(request.param, monkeypatch)


def sections(out: str) -> tuple[str, str]:
    """(everything before the answer, the answer)."""
    head, _, answer = out.partition("\n回答 (fake):\n")
    assert answer, out
    return head, answer


def test_example_answers_from_the_sample_index(
    example, tiny_checkpoint, tiny_model, corpus, tmp_path, capsys
):
    from _common import DEFAULT_QUESTION

    from jacolbert_core import Index

    argv = ["--model", str(tiny_checkpoint), "--index", str(tmp_path / "index"), "-k", "2"]
    assert example.main(argv) == 0
    head, answer = sections(capsys.readouterr().out)
    assert head.startswith(f"質問: {DEFAULT_QUESTION}\n")

    # the printed passages are the index's top 2, and the index holds the sample corpus
    index = Index.open(tmp_path / "index", model=tiny_model)
    hits = index.search(DEFAULT_QUESTION, k=2)
    printed = PASSAGE_LINE.findall(head)
    assert [pid for pid, _, _ in printed] == [h.passage_id for h in hits]
    assert [float(score) for _, score, _ in printed] == pytest.approx(
        [h.score for h in hits], abs=0.01
    )
    assert len(index) == len(corpus) and index.get(corpus[-1]["id"]).text == corpus[-1]["text"]

    # what the LLM received holds the retrieved Japanese passages and the question
    if example.__name__ == "dspy_rag":
        assert answer.strip() == example.FAKE_ANSWER
        received = head.partition("\nLLMへの入力 (fake):\n")[2]
    else:
        received = answer  # the fake LLM answers with its prompt
    for hit in hits:
        assert hit.text.splitlines()[0] in received
    assert DEFAULT_QUESTION in received


def test_an_existing_index_is_opened_not_rebuilt(monkeypatch, tiny_checkpoint, tmp_path, capsys):
    example = load("langchain_rag", monkeypatch)  # the index handling is shared
    argv = ["--model", str(tiny_checkpoint), "--index", str(tmp_path / "index")]
    assert example.main(argv) == 0
    manifest = (tmp_path / "index" / "manifest.json").read_bytes()
    assert example.main([*argv, "--question", "京都の紅葉の見頃は？"]) == 0
    assert (tmp_path / "index" / "manifest.json").read_bytes() == manifest
    assert "質問: 京都の紅葉の見頃は？" in capsys.readouterr().out


def test_llama_index_rerank(monkeypatch, tiny_checkpoint, tmp_path, capsys):
    example = load("llama_index_rag", monkeypatch)
    argv = ["--model", str(tiny_checkpoint), "--index", str(tmp_path / "i"), "--rerank", "6"]
    assert example.main(argv) == 0
    head, answer = sections(capsys.readouterr().out)
    printed = PASSAGE_LINE.findall(head)
    assert len(printed) == 3
    scores = [float(score) for _, score, _ in printed]
    assert scores == sorted(scores, reverse=True)


def test_missing_api_key_fails_fast_and_clearly(example, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    argv = ["--model", str(tmp_path / "never-loaded"), "--llm", "openai:gpt-4o-mini"]
    assert example.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and "OPENAI_API_KEY" in captured.err


def test_missing_model_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    example = load("dspy_rag", monkeypatch)  # model loading is shared
    assert example.main(["--model", str(tmp_path / "no-such-model")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint directory") and "Traceback" not in err

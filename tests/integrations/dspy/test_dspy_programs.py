"""DSPy programs with DummyLM: RAG (Retrieve + ChainOfThought), ReAct with the search tool,
and save/load of a program that contains a Retrieve."""

from __future__ import annotations

import json
import typing

import pytest

dspy = pytest.importorskip("dspy")
pytest.importorskip("dspy_jacolbert")

from dspy.utils import DummyLM  # noqa: E402
from dspy_jacolbert import JaColBERTRM, Retrieve, make_search_tool  # noqa: E402

QUESTION = "新幹線の指定席はいつから予約できますか？"


class RAG(dspy.Module):
    def __init__(self, retrieve: type = Retrieve, k: int = 2):
        super().__init__()
        self.retrieve = retrieve(k=k)
        self.generate = dspy.ChainOfThought("context, question -> answer")

    def forward(self, question: str):
        context = self.retrieve(question).passages
        return self.generate(context=context, question=question)


def prompt_text(lm: DummyLM, call: int = -1) -> str:
    return "\n".join(str(m.get("content", "")) for m in lm.history[call]["messages"])


def in_prompt(text: str, prompt: str) -> bool:
    """Whether every line of ``text`` is in ``prompt`` (adapters indent multi-line values)."""
    return all(line.strip() in prompt for line in text.splitlines() if line.strip())


def test_rag_puts_the_retrieved_japanese_passages_into_the_prompt(sample_index):
    lm = DummyLM([{"reasoning": "指定席の発売日について述べている。", "answer": "1か月前"}])
    dspy.configure(lm=lm, rm=JaColBERTRM(sample_index, k=3))
    prediction = RAG()(question=QUESTION)
    assert prediction.answer == "1か月前"
    prompt = prompt_text(lm)
    hits = sample_index.search(QUESTION, k=2)
    assert QUESTION in prompt
    for hit in hits:
        assert in_prompt(hit.text, prompt)  # the Japanese passage itself reached the LM
    third = sample_index.search(QUESTION, k=3)[2]
    assert not in_prompt(third.text, prompt)  # Retrieve(k=2) was honoured


def test_react_calls_the_search_tool(sample_index):
    search = make_search_tool(sample_index, k=2)
    lm = DummyLM(
        [
            {
                "next_thought": "資料を検索する。",
                "next_tool_name": "search",
                "next_tool_args": {"query": QUESTION},
            },
            {"next_thought": "答えが分かった。", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "検索結果による。", "answer": "乗車日の1か月前"},
        ]
    )
    dspy.configure(lm=lm)
    agent = dspy.ReAct("question -> answer", tools=[search], max_iters=3)
    prediction = agent(question=QUESTION)
    assert prediction.answer == "乗車日の1か月前"
    texts = [h.text for h in sample_index.search(QUESTION, k=2)]
    assert prediction.trajectory["tool_name_0"] == "search"
    assert prediction.trajectory["tool_args_0"] == {"query": QUESTION}
    assert prediction.trajectory["observation_0"] == texts
    assert prediction.trajectory["tool_name_1"] == "finish"
    assert "search" in prompt_text(lm, 0)  # the tool was described to the LM
    for text in texts:
        assert in_prompt(text, prompt_text(lm, 1))  # the observation went back to the LM
        assert in_prompt(text, prompt_text(lm, 2))


def test_search_tool_is_typed_and_documented(sample_index):
    search = make_search_tool(sample_index, k=2)
    hints = typing.get_type_hints(search)
    assert hints == {"query": str, "return": list[str]}
    tool = dspy.Tool(search)
    assert tool.name == "search"
    assert tool.args == {"query": {"type": "string"}}
    assert "2 most relevant passages" in tool.desc and "query:" in tool.desc
    assert search("札幌の雪まつり") == [h.text for h in sample_index.search("札幌の雪まつり", k=2)]

    travel = make_search_tool(
        JaColBERTRM(sample_index), k=3, name="search_travel", description="旅行の記事を検索する。"
    )
    assert travel.__name__ == "search_travel" and travel.__doc__.startswith(
        "旅行の記事を検索する。"
    )
    assert dspy.Tool(travel).name == "search_travel"
    filtered = make_search_tool(sample_index, k=5, where={"topic": "travel"})
    expected = sample_index.search("旅行", k=5, where={"topic": "travel"})
    assert filtered("旅行") == [h.text for h in expected]
    with pytest.raises(ValueError, match="identifier"):
        make_search_tool(sample_index, name="search travel")


def test_upstream_retrieve_cannot_be_saved(tmp_path):
    """DSPy 3.4.1: Module.dump_state passes json_mode, dspy.Retrieve.dump_state takes none."""
    try:
        RAG(retrieve=dspy.Retrieve).save(str(tmp_path / "program.json"))
    except TypeError as error:
        assert "json_mode" in str(error)
    else:
        pytest.skip("this DSPy version saves dspy.Retrieve: dspy_jacolbert.Retrieve not needed")


@pytest.mark.parametrize("suffix", [".json", ".pkl"])
def test_program_with_retrieve_saves_and_loads(sample_index, tmp_path, suffix):
    program = RAG(k=1)
    program.generate.predict.demos = [
        dspy.Example(context=["例文"], question="例の質問", reasoning="例", answer="例の答え")
    ]
    path = tmp_path / f"program{suffix}"
    program.save(str(path))
    if suffix == ".json":
        state = json.loads(path.read_text(encoding="utf-8"))
        assert state["retrieve"] == {"k": 1}

    loaded = RAG(k=3)
    if suffix == ".pkl":
        loaded.load(str(path), allow_pickle=True)
    else:
        loaded.load(str(path))
    assert loaded.retrieve.k == 1
    assert loaded.generate.predict.demos[0]["answer"] == "例の答え"

    lm = DummyLM([{"reasoning": "r", "answer": "a"}])
    dspy.configure(lm=lm, rm=JaColBERTRM(sample_index))
    assert loaded(question=QUESTION).answer == "a"
    hits = sample_index.search(QUESTION, k=2)
    prompt = prompt_text(lm)
    assert in_prompt(hits[0].text, prompt)
    assert not in_prompt(hits[1].text, prompt)  # k=1 came from the file


def test_retrieve_bound_to_its_own_rm(sample_index):
    retrieve = Retrieve(k=2, rm=JaColBERTRM(sample_index, where={"topic": "travel"}))
    passages = retrieve("旅行").passages  # no dspy.settings.rm configured
    assert passages == [h.text for h in sample_index.search("旅行", k=2, where={"topic": "travel"})]
    assert retrieve.dump_state() == {"k": 2} == retrieve.dump_state(json_mode=False)
    with pytest.raises(ValueError, match="invalid k"):
        retrieve.load_state({"k": 0})
    assert retrieve.load_state({"k": 4}).k == 4

"""Loaders: BEIR folders and per-query reranking JSONL (JQaRA / JaCWIR shape)."""

from __future__ import annotations

import json

import pytest

from jacolbert_core.errors import JaColBERTError
from jacolbert_core.evaluation.datasets import (
    RerankDataset,
    RetrievalDataset,
    load_beir,
    load_dataset,
    load_rerank,
    read_qrels,
)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


@pytest.fixture
def beir(tmp_path):
    folder = tmp_path / "mini"
    (folder / "qrels").mkdir(parents=True)
    _jsonl(
        folder / "corpus.jsonl",
        [
            {"_id": "d1", "title": "紅葉", "text": "京都の紅葉は十一月。"},
            {"_id": "d2", "title": "", "text": "返品は八日以内。"},
        ],
    )
    _jsonl(
        folder / "queries.jsonl",
        [{"_id": "q1", "text": "紅葉はいつ？"}, {"_id": "q2", "text": "返品は？"}],
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n", encoding="utf-8"
    )
    (folder / "qrels" / "dev.tsv").write_text("q2\td2\t1\n", encoding="utf-8")
    return folder


def test_beir_folder(beir):
    data = load_beir(beir)
    assert isinstance(data, RetrievalDataset) and data.name == "mini"
    assert data.corpus == {"d1": "紅葉 京都の紅葉は十一月。", "d2": "返品は八日以内。"}
    assert data.queries == {"q1": "紅葉はいつ？"}  # only queries judged in the split
    assert data.qrels == {"q1": {"d1": 2, "d2": 0}}
    dev = load_dataset(beir, "dev", include_title=False)
    assert dev.queries == {"q2": "返品は？"} and dev.corpus["d1"] == "京都の紅葉は十一月。"
    with pytest.raises(JaColBERTError, match="splits found: dev, test"):
        load_beir(beir, "train")


def test_qrels_formats(tmp_path):
    trec = tmp_path / "trec.txt"
    trec.write_text("q1 0 d1 1\nq1 0 d2 0\n", encoding="utf-8")
    assert read_qrels(trec) == {"q1": {"d1": 1, "d2": 0}}
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1\td1\t1\nq2\td2\tx\n", encoding="utf-8")
    with pytest.raises(JaColBERTError, match="not a number"):
        read_qrels(bad)


def test_rerank_jsonl_with_jqara_field_names(tmp_path):
    path = tmp_path / "jqara.jsonl"
    _jsonl(
        path,
        [
            {
                "q_id": "1",
                "question": "紅葉は？",
                "passage_row_id": "p1",
                "text": "紅葉",
                "label": 1,
            },
            {"q_id": "1", "question": "紅葉は？", "passage_row_id": "p2", "text": "桜", "label": 0},
            {"qid": "2", "query": "返品", "pid": "p1", "text": "返品", "title": "FAQ"},
        ],
    )
    data = load_dataset(path)
    assert isinstance(data, RerankDataset) and data.name == "jqara"
    assert data.queries == {"1": "紅葉は？", "2": "返品"}
    assert data.candidates == {"1": [("p1", "紅葉"), ("p2", "桜")], "2": [("p1", "FAQ 返品")]}
    assert data.qrels == {"1": {"p1": 1, "p2": 0}, "2": {"p1": 0}}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"qid": "1", "query": "a", "text": "x"}], "missing field 'pid'"),
        (
            [
                {"qid": "1", "query": "a", "pid": "p", "text": "x"},
                {"qid": "1", "query": "a", "pid": "p", "text": "y"},
            ],
            "appears twice",
        ),
        (
            [
                {"qid": "1", "query": "a", "pid": "p", "text": "x"},
                {"qid": "1", "query": "b", "pid": "q", "text": "y"},
            ],
            "two different texts",
        ),
        ([{"qid": "1", "query": "a", "pid": "p", "text": "x", "label": "yes"}], "not a number"),
    ],
)
def test_rerank_errors(tmp_path, rows, message):
    path = tmp_path / "bad.jsonl"
    _jsonl(path, rows)
    with pytest.raises(JaColBERTError, match=message):
        load_rerank(path)


def test_missing_path(tmp_path):
    with pytest.raises(JaColBERTError, match="does not exist"):
        load_dataset(tmp_path / "nothing")

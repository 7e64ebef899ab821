"""Data files: JSON Lines, text maps and relevance judgements in their common layouts."""

import pytest

from jacolbert_core.datafiles import (
    iter_jsonl,
    read_positives,
    read_qrels,
    read_texts,
    write_jsonl,
)
from jacolbert_core.errors import JaColBERTError


def test_read_texts_jsonl_and_tsv(tmp_path):
    (tmp_path / "c.jsonl").write_text(
        '{"_id": "d1", "title": "題", "text": "本文"}\n\n{"id": 2, "text": "二"}\n',
        encoding="utf-8",
    )
    assert read_texts(tmp_path / "c.jsonl") == {"d1": "本文", "2": "二"}
    assert read_texts(tmp_path / "c.jsonl", title=True)["d1"] == "題 本文"
    (tmp_path / "q.jsonl").write_text('{"id": "q1", "query": "問い", "relevant": ["d1"]}\n')
    assert read_texts(tmp_path / "q.jsonl") == {"q1": "問い"}
    assert read_positives(tmp_path / "q.jsonl") == {"q1": ["d1"]}
    (tmp_path / "c.tsv").write_text("id\ttext\n7\t七 の 文\n8\t八\n", encoding="utf-8")
    assert read_texts(tmp_path / "c.tsv") == {"7": "七 の 文", "8": "八"}
    (tmp_path / "d.tsv").write_text("7\t七\n7\t重複\n", encoding="utf-8")
    with pytest.raises(JaColBERTError, match="duplicate id"):
        read_texts(tmp_path / "d.tsv")
    with pytest.raises(JaColBERTError, match="does not exist"):
        read_texts(tmp_path / "missing.tsv")


def test_read_qrels_layouts(tmp_path):
    (tmp_path / "two.tsv").write_text("q1\td1\nq1\td2\nq2\td3\n")
    assert read_positives(tmp_path / "two.tsv") == {"q1": ["d1", "d2"], "q2": ["d3"]}
    (tmp_path / "beir.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t2\n"
    )
    assert read_positives(tmp_path / "beir.tsv") == {"q1": ["d1"], "q2": ["d3"]}
    (tmp_path / "trec.txt").write_text("q1 0 d1 1\nq1 0 d9 0\nq2 Q0 d3 1\n")
    assert read_positives(tmp_path / "trec.txt") == {"q1": ["d1"], "q2": ["d3"]}
    (tmp_path / "bad.tsv").write_text("q1\td1\tx\n")
    with pytest.raises(JaColBERTError, match="not a number"):
        read_positives(tmp_path / "bad.tsv")


def test_read_texts_beir_folder_picks_corpus_or_queries(tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "title": "題", "text": "本文"}])
    write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "問い"}])
    assert read_texts(tmp_path, title=True) == {"d1": "題 本文"}
    assert read_texts(tmp_path, kind="queries") == {"q1": "問い"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(JaColBERTError, match="folder without corpus.jsonl"):
        read_texts(tmp_path / "empty")


def test_read_qrels_keeps_grades_and_skips_headers(tmp_path):
    (tmp_path / "beir.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n")
    assert read_qrels(tmp_path / "beir.tsv") == {"q1": {"d1": 2, "d2": 0}}
    (tmp_path / "two.tsv").write_text("qid\tpid\nq1\td1\n")
    assert read_qrels(tmp_path / "two.tsv") == {"q1": {"d1": 1}}
    (tmp_path / "empty.tsv").write_text("\n")
    with pytest.raises(JaColBERTError, match="no judgements"):
        read_qrels(tmp_path / "empty.tsv")


def test_jsonl_round_trip_and_errors(tmp_path):
    rows = [{"q": "日本語"}, ["a", 1]]
    assert write_jsonl(tmp_path / "r.jsonl", rows) == 2
    assert "日本語" in (tmp_path / "r.jsonl").read_text(encoding="utf-8")
    assert [row for _, row in iter_jsonl(tmp_path / "r.jsonl", objects=False)] == rows
    with pytest.raises(JaColBERTError, match=r"r.jsonl:2: each line must be a JSON object"):
        list(iter_jsonl(tmp_path / "r.jsonl"))
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(JaColBERTError, match=r"bad.jsonl:2: not valid JSON"):
        list(iter_jsonl(tmp_path / "bad.jsonl"))
    with pytest.raises(JaColBERTError, match="does not exist"):
        list(iter_jsonl(tmp_path / "missing.jsonl"))

"""Teacher scoring: cross-encoder and ColBERT teachers give the model's own scores, in the
scored n-way shape; group readers; the ``jacolbert score`` command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jacolbert_core.errors import JaColBERTError
from jacolbert_core.testing import make_japanese_tokenizer, sample_corpus
from jacolbert_core.training import teacher as teachers
from jacolbert_core.training.mining import MinedQuery, Negative, write_mined
from jacolbert_core.training.teacher import (
    ColBERTTeacher,
    CrossEncoderTeacher,
    NWayGroup,
    ScoredGroup,
    groups_from_mined,
    load_teacher,
    read_groups,
    read_scored,
    score_groups,
    write_scored,
)


def make_cross_encoder(directory: Path, num_labels: int, seed: int = 0) -> Path:
    """A tiny random BertForSequenceClassification with a Japanese tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = make_japanese_tokenizer(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer.vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory) -> Path:
    return make_cross_encoder(tmp_path_factory.mktemp("ce") / "model", num_labels=1)


@pytest.fixture(scope="module")
def passages() -> dict[str, str]:
    return {d["id"]: d["text"] for d in sample_corpus()}


@pytest.fixture(scope="module")
def records(passages) -> list[MinedQuery]:
    ids = list(passages)
    out = []
    for n in range(6):
        pos = [ids[n]] + ([ids[n + 10]] if n == 0 else [])
        negatives = [Negative(ids[(n + j) % len(ids)], "bm25", j + 1) for j in range(20, 27)]
        out.append(MinedQuery(f"q{n}", passages[ids[n]].split("。")[0], pos, negatives))
    return out


def direct_scores(model, tokenizer, query: str, texts: list[str]) -> np.ndarray:
    """One unpadded forward pass per pair."""
    out = []
    with torch.no_grad():
        for text in texts:
            logits = model(**tokenizer(query, text, return_tensors="pt")).logits[0]
            out.append(float(logits[0]) if len(logits) == 1 else float(logits[1] - logits[0]))
    return np.asarray(out)


# --------------------------------------------------------------------------- cross-encoder


def test_cross_encoder_scores_equal_the_model(cross_encoder_dir, passages):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    teacher = CrossEncoderTeacher.from_pretrained(cross_encoder_dir, device="cpu", batch_size=3)
    # GELU on torch's native kernel, not oneDNN's (whose primitive cache fragments the heap)
    assert any(type(m).__name__ == "NativeGELU" for m in teacher.model.modules())
    texts = list(passages.values())[:5]
    query = "京都の紅葉はいつ見頃ですか"
    got = teacher.score(query, texts)
    model = AutoModelForSequenceClassification.from_pretrained(cross_encoder_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(cross_encoder_dir)
    expected = direct_scores(model, tokenizer, query, texts)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert got.dtype == np.float32 and len(set(np.round(got, 6))) > 1
    # pairs with different queries, in input order despite length-sorted batches
    pairs = teacher.score_pairs(["猫", query], [texts[0], texts[1]])
    np.testing.assert_allclose(
        pairs,
        [direct_scores(model, tokenizer, "猫", texts[:1])[0], expected[1]],
        rtol=1e-5,
        atol=1e-5,
    )


def test_two_label_cross_encoder_scores_are_log_odds(tmp_path, passages):
    path = make_cross_encoder(tmp_path / "two", num_labels=2, seed=1)
    teacher = CrossEncoderTeacher.from_pretrained(path, device="cpu")
    texts = list(passages.values())[:3]
    expected = direct_scores(teacher.model, teacher.tokenizer, "問い", texts)
    np.testing.assert_allclose(teacher.score("問い", texts), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(JaColBERTError, match="1 or 2 labels"):
        make = make_cross_encoder(tmp_path / "three", num_labels=3)
        CrossEncoderTeacher.from_pretrained(make, device="cpu")


def test_long_pairs_are_truncated(cross_encoder_dir):
    teacher = CrossEncoderTeacher.from_pretrained(cross_encoder_dir, device="cpu", max_length=32)
    assert teacher.max_length == 32
    scores = teacher.score("問い", ["長い文章です。" * 200, "短い"])
    assert scores.shape == (2,) and np.isfinite(scores).all()


# --------------------------------------------------------------------------- groups


def test_scored_groups_have_the_released_shape(cross_encoder_dir, records, passages, tmp_path):
    teacher = CrossEncoderTeacher.from_pretrained(cross_encoder_dir, device="cpu", batch_size=8)
    groups = groups_from_mined(records, max_negatives=3)
    assert len(groups) == 7  # one per (query, positive)
    assert all(len(g.negs) == 3 for g in groups)
    scored = list(score_groups(groups, teacher, passages, groups_per_step=3))
    assert [(s.qid, s.pos, s.negs) for s in scored] == [(g.qid, g.pos, g.negs) for g in groups]
    for group, result in zip(groups, scored, strict=True):
        assert len(result.scores) == 1 + len(group.negs)
        texts = [passages[p] for p in [group.pos, *group.negs]]
        np.testing.assert_allclose(
            result.scores, teacher.score(group.query, texts), rtol=1e-5, atol=1e-5
        )
    assert write_scored(tmp_path / "s.jsonl", scored) == 7
    row = json.loads((tmp_path / "s.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert set(row) == {"qid", "pos", "negs", "scores", "query"}
    assert row["scores"][0] == pytest.approx(scored[0].scores[0])
    assert read_scored(tmp_path / "s.jsonl") == scored


def test_colbert_teacher_scores_equal_colbert_score(peaked_model, records, passages):
    teacher = ColBERTTeacher(peaked_model)
    groups = groups_from_mined(records[:3], max_negatives=3)
    scored = list(score_groups(groups, teacher, passages))
    for group, result in zip(groups, scored, strict=True):
        texts = [passages[p] for p in [group.pos, *group.negs]]
        expected = peaked_model.score(group.query, texts)
        np.testing.assert_allclose(result.scores, expected, rtol=1e-5, atol=1e-6)
    # the lexical-ish tiny model puts each query's own passage first (q0's second positive
    # is another passage)
    own = [r for r in scored if r.pos == records[int(r.qid[1:])].positives[0]]
    assert len(own) == 3 and all(r.scores[0] > max(r.scores[1:]) for r in own)


def test_read_groups_formats(tmp_path, records):
    write_mined(tmp_path / "mined.jsonl", records)
    groups = read_groups(tmp_path / "mined.jsonl", max_negatives=3)
    assert groups == groups_from_mined(records, max_negatives=3)
    (tmp_path / "nway.jsonl").write_text("[1, 7, 3, 9]\n[2, [5, 0.9], [6, 0.1]]\n")
    assert read_groups(tmp_path / "nway.jsonl") == [
        NWayGroup("1", "7", ["3", "9"]),
        NWayGroup("2", "5", ["6"]),
    ]
    scored = ScoredGroup("q", "p", ["n1", "n2"], [1.0, 0.5, 0.1])
    write_scored(tmp_path / "scored.jsonl", [scored])
    assert read_groups(tmp_path / "scored.jsonl") == [NWayGroup("q", "p", ["n1", "n2"])]
    (tmp_path / "bad.jsonl").write_text('{"qid": "q"}\n')
    with pytest.raises(JaColBERTError, match="not an n-way group"):
        read_groups(tmp_path / "bad.jsonl")
    (tmp_path / "bad_scores.jsonl").write_text(
        '{"qid": "q", "pos": "p", "negs": ["n"], "scores": [1.0]}\n'
    )
    with pytest.raises(JaColBERTError, match="1 scores for 2 passages"):
        read_scored(tmp_path / "bad_scores.jsonl")


def test_missing_texts_are_reported(cross_encoder_dir, passages):
    teacher = CrossEncoderTeacher.from_pretrained(cross_encoder_dir, device="cpu")
    with pytest.raises(JaColBERTError, match="no text for query"):
        list(score_groups([NWayGroup("q", "doc-001", ["doc-002"])], teacher, passages))
    with pytest.raises(JaColBERTError, match="missing from the corpus"):
        list(score_groups([NWayGroup("q", "doc-001", ["nope"], "問い")], teacher, passages))
    scored = list(
        score_groups([NWayGroup("q", "doc-001", ["doc-002"])], teacher, passages, {"q": "問い"})
    )
    assert len(scored[0].scores) == 2


def test_load_teacher_detects_the_kind(cross_encoder_dir, peaked_model, tmp_path):
    assert isinstance(load_teacher(cross_encoder_dir, device="cpu"), CrossEncoderTeacher)
    assert isinstance(load_teacher(peaked_model.name, device="cpu"), ColBERTTeacher)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"architectures": ["BertModel"]}')
    with pytest.raises(JaColBERTError, match="kind="):
        load_teacher(tmp_path / "odd")
    with pytest.raises(ValueError, match="kind must be"):
        load_teacher(cross_encoder_dir, kind="llm")


# --------------------------------------------------------------------------- CLI


def cli(argv: list[str]) -> int:
    from jacolbert_core.training.cli_commands import register

    parser = argparse.ArgumentParser(prog="jacolbert")
    register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_score_command(tmp_path, cross_encoder_dir, peaked_model, records, passages, capsys):
    write_mined(tmp_path / "mined.jsonl", records[:3])
    with open(tmp_path / "corpus.jsonl", "w", encoding="utf-8") as f:
        for pid, text in passages.items():
            f.write(json.dumps({"id": pid, "text": text}, ensure_ascii=False) + "\n")
    for model, out in ((cross_encoder_dir, "ce.jsonl"), (peaked_model.name, "colbert.jsonl")):
        argv = [
            "score", str(tmp_path / "mined.jsonl"),
            "--teacher", str(model),
            "--corpus", str(tmp_path / "corpus.jsonl"),
            "--out", str(tmp_path / out),
            "--max-negatives", "3",
            "--device", "cpu",
        ]  # fmt: skip
        assert cli(argv) == 0
        printed = capsys.readouterr().out
        assert "scored 4 groups (16 pairs)" in printed and "positive first" in printed
        scored = read_scored(tmp_path / out)
        assert [len(s.scores) for s in scored] == [4] * 4
    teacher = ColBERTTeacher(peaked_model)
    first = scored[0]
    texts = [passages[p] for p in [first.pos, *first.negs]]
    np.testing.assert_allclose(
        first.scores, teacher.score(records[0].query, texts), rtol=1e-5, atol=1e-6
    )

    # colbert-ai n-way lines need the queries file
    (tmp_path / "nway.jsonl").write_text('["q0", "doc-001", "doc-030", "doc-031"]\n')
    (tmp_path / "queries.tsv").write_text("q0\t京都の紅葉\n", encoding="utf-8")
    argv = [
        "score", str(tmp_path / "nway.jsonl"),
        "--teacher", str(cross_encoder_dir),
        "--corpus", str(tmp_path / "corpus.jsonl"),
        "--queries", str(tmp_path / "queries.tsv"),
        "--out", str(tmp_path / "nway_scored.jsonl"),
    ]  # fmt: skip
    with pytest.raises(JaColBERTError, match="pass the queries file"):
        cli([a for a in argv if a not in ("--queries", str(tmp_path / "queries.tsv"))])
    assert not (tmp_path / "nway_scored.jsonl").exists()
    assert cli(argv) == 0
    [row] = read_scored(tmp_path / "nway_scored.jsonl")
    assert (row.qid, row.pos, row.negs, row.query) == (
        "q0",
        "doc-001",
        ["doc-030", "doc-031"],
        "京都の紅葉",
    )


def test_module_docstring_documents_the_format():
    for key in ('"qid"', '"pos"', '"negs"', '"scores"', "MMARCO-japanese-32-scored-triplets"):
        assert key in teachers.__doc__

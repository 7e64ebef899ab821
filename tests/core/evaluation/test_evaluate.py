"""Evaluation end to end on the sample corpus: retrieval and rerank modes, BM25, CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from jacolbert_core.evaluation.cli_commands import register
from jacolbert_core.evaluation.datasets import load_beir, load_rerank
from jacolbert_core.evaluation.evaluate import (
    EvalReport,
    evaluate_models,
    load_bm25,
    rerank_run,
    search_depth,
)
from jacolbert_core.evaluation.metrics import evaluate
from jacolbert_core.testing import sample_corpus, sample_queries

METRICS = ["ndcg@10", "recall@10", "mrr@10", "map@10", "hit@1"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core box are ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval") / "sample"
    (folder / "qrels").mkdir(parents=True)
    _jsonl(folder / "corpus.jsonl", [{"_id": d["id"], "text": d["text"]} for d in sample_corpus()])
    _jsonl(
        folder / "queries.jsonl", [{"_id": q["id"], "text": q["query"]} for q in sample_queries()]
    )
    lines = [f"{q['id']}\t{d}\t1" for q in sample_queries() for d in q["relevant"]]
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n", encoding="utf-8"
    )
    return folder


@pytest.fixture(scope="module")
def rerank_file(tmp_path_factory):
    """JQaRA-shaped: each query with its relevant passages and 7 others."""
    corpus = {d["id"]: d["text"] for d in sample_corpus()}
    ids = sorted(corpus)
    rows = []
    for n, q in enumerate(sample_queries()):
        others = [i for i in ids if i not in q["relevant"]]
        candidates = q["relevant"] + [others[(n * 5 + j * 7) % len(others)] for j in range(7)]
        for pid in dict.fromkeys(candidates):
            rows.append(
                {
                    "q_id": q["id"],
                    "question": q["query"],
                    "passage_row_id": pid,
                    "text": corpus[pid],
                    "label": int(pid in q["relevant"]),
                }
            )
    path = tmp_path_factory.mktemp("rerank") / "jqara_like.jsonl"
    _jsonl(path, rows)
    return path


def test_retrieval_mode_with_bm25_baseline(beir_folder, peaked_model, tmp_path):
    data = load_beir(beir_folder)
    report = evaluate_models(data, {"peaked": peaked_model}, METRICS, exact=True)
    assert report.mode == "retrieval" and report.queries == len(sample_queries())
    assert "peaked" in report.results
    for values in report.results.values():
        assert set(values) == set(METRICS) and all(0 <= v <= 1 for v in values.values())
    # with every relevant passage in a 48-passage corpus, the lexical-like model finds most
    assert report.results["peaked"]["recall@10"] > 0.5
    bm25_available = load_bm25()[0] is not None
    assert ("BM25" in report.results) == bm25_available
    if bm25_available:
        assert report.results["BM25"]["recall@10"] > 0.5
        assert list(report.results) == ["BM25", "peaked"]
    table = report.table()
    lines = table.splitlines()
    assert lines[0] == f"sample (retrieval, {len(sample_queries())} queries)"
    assert lines[1].split() == ["system", "nDCG@10", "Recall@10", "MRR@10", "MAP@10", "Hit@1"]
    assert any(line.startswith("peaked ") for line in lines)
    saved = json.loads(report.write_json(tmp_path / "r.json").read_text(encoding="utf-8"))
    assert saved["results"] == report.results and saved["metrics"] == METRICS


def test_retrieval_mode_equals_exhaustive_maxsim_ranking(beir_folder, peaked_model, tmp_path):
    """An index searched exactly gives the same metrics as in-memory MaxSim."""
    from jacolbert_core.index.index import Index
    from jacolbert_core.text.chunking import ChunkingConfig

    data = load_beir(beir_folder)
    ids = list(data.corpus)
    whole = ChunkingConfig(enabled=False)
    index = Index.create(tmp_path / "idx", peaked_model, keep_vectors=True, chunking=whole)
    index.add([data.corpus[i] for i in ids], ids=ids)
    via_index = evaluate_models(
        data, {"m": peaked_model}, METRICS, bm25=False, index_path=tmp_path / "idx", exact=True
    )
    vectors = peaked_model.encode_documents([data.corpus[i] for i in ids])
    results = peaked_model.search_encoded(list(data.queries.values()), vectors, k=10)
    run = {q: {ids[i]: s for i, s in r} for q, r in zip(data.queries, results, strict=True)}
    expected = evaluate(run, data.qrels, METRICS)
    for metric in METRICS:
        assert via_index.results["m"][metric] == pytest.approx(expected[metric], abs=1e-6)


def test_rerank_mode(rerank_file, peaked_model):
    data = load_rerank(rerank_file)
    run = rerank_run(peaked_model, data)
    qid = next(iter(data.queries))
    texts = [t for _, t in data.candidates[qid]]
    scores = peaked_model.score(data.queries[qid], texts)
    assert [run[qid][p] for p, _ in data.candidates[qid]] == pytest.approx(list(scores))
    report = evaluate_models(data, [peaked_model], ["ndcg@10", "mrr@10"])
    assert report.mode == "rerank"
    [name] = [n for n in report.results if n != "BM25"]
    assert report.results[name]["mrr@10"] > 0.5  # 1 relevant among 8 candidates
    if load_bm25()[0] is not None:
        assert report.results["BM25"]["ndcg@10"] > 0.3


def test_bad_arguments(beir_folder, rerank_file, peaked_model):
    data = load_beir(beir_folder)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_models(data, [peaked_model], ["precision@10"])
    with pytest.raises(ValueError, match="--index"):
        evaluate_models(load_rerank(rerank_file), [peaked_model], index_path="x")
    assert search_depth(["ndcg@10", "recall@100"]) == 100 and search_depth(["map"]) == 100


def test_eval_command_prints_a_table_and_writes_json(
    beir_folder, rerank_file, tiny_checkpoint, tmp_path, capsys
):
    parser = argparse.ArgumentParser(prog="jacolbert")
    register(parser.add_subparsers(required=True))
    out = tmp_path / "report.json"
    args = parser.parse_args(
        ["eval", str(beir_folder), "--model", str(tiny_checkpoint), "--name", "tiny"]
        + ["--metrics", "ndcg@10", "recall@5", "--json", str(out), "--exact"]
    )
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "nDCG@10" in printed and "Recall@5" in printed and "tiny" in printed
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["mode"] == "retrieval" and "tiny" in report["results"]
    args = parser.parse_args(
        ["eval", str(rerank_file), "--model", str(tiny_checkpoint), "--no-bm25"]
        + ["--metrics", "mrr@10"]
    )
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "rerank" in printed and "BM25" not in printed


def test_report_table_alignment():
    report = EvalReport("set", "rerank", ["ndcg@10", "mrr@10"], 3)
    report.results = {
        "BM25": {"ndcg@10": 0.5, "mrr@10": 0.25},
        "JaColBERT": {"ndcg@10": 1.0, "mrr@10": 0.75},
    }
    report.notes.append("n")
    lines = report.table().splitlines()
    assert lines[1] == "system     nDCG@10  MRR@10"
    assert lines[3] == "BM25        0.5000  0.2500"
    assert lines[4] == "JaColBERT   1.0000  0.7500"
    assert lines[-1] == "note: n"
    assert np.isclose(report.to_json()["results"]["JaColBERT"]["mrr@10"], 0.75)

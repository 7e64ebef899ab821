"""Metrics: hand-computed cases, and agreement with pytrec_eval (trec_eval) and ranx."""

from __future__ import annotations

import math
import random

import pytest

from jacolbert_core.evaluation.metrics import evaluate, parse_metric, per_query, rank

QRELS = {
    "q1": {"a": 2, "b": 1, "c": 0},
    "q2": {"d": 1},  # not in the run: scores 0
    "q3": {"e": 0},  # no relevant document: left out of the averages
}
RUN = {"q1": {"a": 0.1, "x": 0.9, "b": 0.5, "c": 0.7}, "q3": {"e": 1.0}}


def test_hand_computed_single_query():
    # ranking of q1: x (0.9), c (0.7, judged 0), b (0.5, rel 1), a (0.1, rel 2); R = 2
    scores = per_query(
        RUN,
        {"q1": QRELS["q1"]},
        ["recall@2", "recall@3", "recall", "hit@2", "hit@3", "mrr@2", "mrr@10"]
        + ["map@3", "map@4", "ndcg@3", "ndcg@4"],
    )["q1"]
    assert scores["recall@2"] == 0 and scores["recall@3"] == 0.5 and scores["recall"] == 1
    assert scores["hit@2"] == 0 and scores["hit@3"] == 1
    assert scores["mrr@2"] == 0 and scores["mrr@10"] == pytest.approx(1 / 3)
    assert scores["map@3"] == pytest.approx((1 / 3) / 2)
    assert scores["map@4"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert scores["ndcg@3"] == pytest.approx((1 / math.log2(4)) / idcg)
    assert scores["ndcg@4"] == pytest.approx((1 / math.log2(4) + 2 / math.log2(5)) / idcg)


def test_averages_count_missing_queries_as_zero_and_skip_unjudgeable_ones():
    means = evaluate(RUN, QRELS, ["mrr@10", "recall@10"])
    assert means == {"mrr@10": pytest.approx(1 / 6), "recall@10": pytest.approx(0.5)}
    assert set(per_query(RUN, QRELS, ["mrr@10"])) == {"q1", "q2"}
    with pytest.raises(ValueError, match="no query"):
        evaluate(RUN, {"q3": {"e": 0}})


def test_ties_break_by_docid_descending_like_trec_eval():
    assert rank({"u": 1.0, "v": 1.0, "w": 1.0, "z": 0.5}) == ["w", "v", "u", "z"]
    assert per_query({"q": {"u": 1.0, "v": 1.0, "w": 1.0}}, {"q": {"u": 1}}, ["mrr"])["q"] == {
        "mrr": pytest.approx(1 / 3)
    }


def test_relevance_level_and_parsing():
    qrels = {"q": {"a": 1, "b": 2}}
    run = {"q": {"a": 2.0, "b": 1.0}}
    assert evaluate(run, qrels, ["mrr@1"], relevance_level=2) == {"mrr@1": 0.0}
    assert parse_metric("NDCG@10") == ("ndcg", 10) and parse_metric("map") == ("map", None)
    for bad in ("precision@10", "ndcg@x", "ndcg@0"):
        with pytest.raises(ValueError):
            parse_metric(bad)


def random_case(seed: int, ties: bool, queries: int = 40, docs: int = 60):
    rng = random.Random(seed)
    run, qrels = {}, {}
    for q in range(queries):
        qid = f"q{q}"
        pool = [f"d{rng.randrange(500)}" for _ in range(docs)]
        run[qid] = {
            d: (round(rng.random(), 1) if ties else rng.random() + i * 1e-9)
            for i, d in enumerate(pool)
        }
        judged = rng.sample(sorted(set(pool)), 8) + [f"unretrieved{q}-{i}" for i in range(2)]
        qrels[qid] = {d: rng.choice([0, 0, 1, 2, 3]) for d in judged}
        qrels[qid][judged[0]] = max(1, qrels[qid][judged[0]])  # at least one relevant
    return run, qrels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_pytrec_eval_on_random_runs_with_ties(seed):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    run, qrels = random_case(seed, ties=True)
    cuts = (1, 5, 10, 20)
    joined = ",".join(map(str, cuts))
    measures = {f"ndcg_cut.{joined}", f"map_cut.{joined}", f"recall.{joined}"}
    measures |= {f"success.{joined}", "recip_rank", "map", "ndcg"}
    reference = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    names = [f"{m}@{k}" for m in ("ndcg", "map", "recall", "hit", "mrr") for k in cuts]
    ours = per_query(run, qrels, names + ["mrr", "map", "ndcg"])
    trec_names = {"ndcg": "ndcg_cut", "map": "map_cut", "recall": "recall", "hit": "success"}
    for qid, values in ours.items():
        for k in cuts:
            for name, trec in trec_names.items():
                assert values[f"{name}@{k}"] == pytest.approx(
                    reference[qid][f"{trec}_{k}"], abs=1e-12
                ), (qid, name, k)
            # MRR@k is trec_eval's recip_rank on the run cut at k
            top = rank(run[qid])[:k]
            cut = pytrec_eval.RelevanceEvaluator({qid: qrels[qid]}, {"recip_rank"}).evaluate(
                {qid: {d: run[qid][d] for d in top}}
            )
            assert values[f"mrr@{k}"] == pytest.approx(cut[qid]["recip_rank"], abs=1e-12)
        assert values["mrr"] == pytest.approx(reference[qid]["recip_rank"], abs=1e-12)
        assert values["map"] == pytest.approx(reference[qid]["map"], abs=1e-12)
        assert values["ndcg"] == pytest.approx(reference[qid]["ndcg"], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_equal_to_ranx_on_random_runs(seed):
    ranx = pytest.importorskip("ranx")
    run, qrels = random_case(seed, ties=False)
    names = [f"{m}@{k}" for m in ("ndcg", "map", "recall", "mrr", "hit") for k in (1, 5, 10)]
    ranx_names = [n.replace("hit@", "hit_rate@") for n in names]
    reference = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), ranx_names)
    ours = evaluate(run, qrels, names)
    for name, ranx_name in zip(names, ranx_names, strict=True):
        assert ours[name] == pytest.approx(reference[ranx_name], abs=1e-9), name

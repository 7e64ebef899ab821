"""Ranking metrics with trec_eval / ranx definitions.

Inputs are dicts: a run ``{qid: {docid: score}}`` and qrels ``{qid: {docid: relevance}}``.

Ranking: documents by score descending, ties by docid *descending* (string order): trec_eval's
rule (``form_res_rels``: ``sim`` decreasing, then ``strcmp(docno)`` decreasing), which
pytrec_eval follows. ranx sorts ties with an unstable ``argsort`` and so defines no order;
with distinct scores all three agree.

A document is relevant when its relevance is ``>= relevance_level`` (default 1, as both
tools). For a query with ``R`` relevant documents and ``rel_i`` the relevance of the document
at rank ``i`` (0 if unjudged):

* ``recall@k`` = |relevant in top k| / R                        (trec_eval ``recall_k``)
* ``hit@k``    = 1 if any relevant in top k else 0             (``success_k``; ranx ``hit_rate``)
* ``mrr@k``    = 1 / rank of the first relevant within k, else 0
                 (ranx ``mrr@k``; trec_eval ``recip_rank`` on the run cut at k)
* ``map@k``    = (sum over relevant ranks r <= k of precision@r) / R   (``map_cut_k``: the
                 divisor is all R relevant documents, not min(k, R))
* ``ndcg@k``   = DCG@k / IDCG@k with linear gain: DCG@k = sum_{i<=k} g_i / log2(i + 1),
                 g_i = rel_i if rel_i >= relevance_level else 0; IDCG@k is the DCG@k of the
                 judged documents sorted by gain (``ndcg_cut_k``; ranx ``ndcg``, Järvelin)

Without ``@k`` the whole ranking counts. Averages are over the queries of ``qrels`` that have
at least one relevant document; such a query missing from the run scores 0 (ranx's
``make_comparable``; trec_eval ``-c``). Queries without relevant documents are left out (they
score 0 under every metric and would only dilute the mean).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, float]]

METRIC_NAMES = ("ndcg", "recall", "mrr", "map", "hit")
DEFAULT_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100", "hit@10")


def parse_metric(metric: str) -> tuple[str, int | None]:
    """``"ndcg@10"`` -> ("ndcg", 10); ``"map"`` -> ("map", None)."""
    name, _, cut = metric.strip().lower().partition("@")
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRIC_NAMES)}[@k]")
    if not cut:
        return name, None
    try:
        k = int(cut)
    except ValueError:
        raise ValueError(f"metric {metric!r}: the cut-off after '@' must be an integer") from None
    if k <= 0:
        raise ValueError(f"metric {metric!r}: the cut-off must be positive")
    return name, k


def rank(scores: Mapping[str, float]) -> list[str]:
    """Docids best first: score descending, ties by docid descending (trec_eval)."""
    by_id = sorted(scores, reverse=True)
    return sorted(by_id, key=lambda d: -float(scores[d]))  # stable: keeps docid order in ties


def _query_metric(
    name: str, k: int | None, ranking: Sequence[str], judged: Mapping[str, float], level: float
) -> float:
    relevant = {d for d, r in judged.items() if r >= level}
    if not relevant:
        return 0.0
    top = ranking if k is None else ranking[:k]
    if name == "recall":
        return sum(1 for d in top if d in relevant) / len(relevant)
    if name == "hit":
        return 1.0 if any(d in relevant for d in top) else 0.0
    if name == "mrr":
        return next((1.0 / i for i, d in enumerate(top, start=1) if d in relevant), 0.0)
    if name == "map":
        found, total = 0, 0.0
        for i, d in enumerate(top, start=1):
            if d in relevant:
                found += 1
                total += found / i
        return total / len(relevant)
    if name == "ndcg":
        gains = [float(judged[d]) if d in relevant else 0.0 for d in top]
        dcg = sum(g / math.log2(i + 1) for i, g in enumerate(gains, start=1))
        ideal = sorted((float(r) for r in judged.values() if r >= level), reverse=True)
        if k is not None:
            ideal = ideal[:k]
        idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal, start=1))
        return dcg / idcg if idcg > 0 else 0.0
    raise ValueError(f"unknown metric {name!r}")


def per_query(
    run: Run,
    qrels: Qrels,
    metrics: Iterable[str] = DEFAULT_METRICS,
    relevance_level: float = 1,
) -> dict[str, dict[str, float]]:
    """``{qid: {metric: value}}`` for each qrels query with a relevant document."""
    parsed = [(m, *parse_metric(m)) for m in metrics]
    out: dict[str, dict[str, float]] = {}
    for qid, judged in qrels.items():
        if not any(r >= relevance_level for r in judged.values()):
            continue
        ranking = rank(run.get(qid, {}))
        out[qid] = {
            label: _query_metric(name, k, ranking, judged, relevance_level)
            for label, name, k in parsed
        }
    return out


def evaluate(
    run: Run,
    qrels: Qrels,
    metrics: Iterable[str] = DEFAULT_METRICS,
    relevance_level: float = 1,
) -> dict[str, float]:
    """Mean of each metric over the qrels queries with a relevant document."""
    metrics = list(metrics)
    scores = per_query(run, qrels, metrics, relevance_level)
    if not scores:
        raise ValueError("no query in qrels has a relevant document; nothing to evaluate")
    return {m: sum(q[m] for q in scores.values()) / len(scores) for m in metrics}

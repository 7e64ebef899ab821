"""``dspy.ColBERTv2`` (DSPy's own client) against a live jacolbert server on 127.0.0.1."""

from __future__ import annotations

import pytest

dspy = pytest.importorskip("dspy")
requests = pytest.importorskip("requests")


def client(server, post: bool = False):
    return dspy.ColBERTv2(url=f"{server.url}/api/search", post_requests=post)


@pytest.mark.parametrize("post", [False, True], ids=["GET", "POST"])
def test_colbertv2_topk_equals_index_search(server, sample_index, queries, post):
    colbert = client(server, post)
    for q in queries[:4]:
        hits = sample_index.search(q["query"], k=3)
        passages = colbert(q["query"], k=3)
        assert [p.pid for p in passages] == [h.passage_id for h in hits]
        assert [p.long_text for p in passages] == [h.text for h in hits]
        assert [p["text"] for p in passages] == [h.text for h in hits]
        assert [p.rank for p in passages] == [1, 2, 3]
        assert [p.score for p in passages] == pytest.approx([h.score for h in hits], abs=1e-5)
        assert sum(p.prob for p in passages) == pytest.approx(1.0)
        assert colbert(q["query"], k=3, simplify=True) == [h.text for h in hits]


@pytest.mark.parametrize("post", [False, True], ids=["GET", "POST"])
def test_colbertv2_as_the_rm_of_dspy_retrieve(server, sample_index, queries, post):
    query = queries[5]["query"]
    dspy.configure(rm=client(server, post))
    passages = dspy.Retrieve(k=2)(query).passages
    assert passages == [h.text for h in sample_index.search(query, k=2)]


def test_server_errors_reach_the_dspy_caller(server):
    colbert = client(server, post=True)
    with pytest.raises(requests.HTTPError) as info:
        colbert("京都", k=server.max_k + 1)
    assert info.value.response.status_code == 400
    assert info.value.response.json()["error"] is True

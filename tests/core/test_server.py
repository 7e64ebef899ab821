"""The HTTP server against the sample index, on 127.0.0.1 only (stdlib HTTP client)."""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from jacolbert_core.server import (
    _encoder_is_thread_safe,
    colbert_topk,
    default_workers,
    make_server,
    serve,
)

MAX_K = 20
MAX_CHARS = 200


@pytest.fixture(scope="module")
def server(sample_index):
    # workers=4: searches really run concurrently (the default may be 1 on a small machine)
    srv = make_server(
        sample_index, port=0, max_k=MAX_K, max_query_chars=MAX_CHARS, max_batch=4, workers=4
    )
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def call(server, method: str, path: str, body=None, raw: bytes | None = None, headers=None):
    """(status, parsed JSON) of one request on a fresh connection."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.url + path, data=data, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode("utf-8"))


def get_search(server, query: str, k=None):
    params = {"query": query} if k is None else {"query": query, "k": k}
    return call(server, "GET", "/api/search?" + urllib.parse.urlencode(params))


def assert_colbert_payload(payload, query: str, hits) -> None:
    assert payload["query"] == query
    topk = payload["topk"]
    assert [p["pid"] for p in topk] == [h.passage_id for h in hits]
    assert [p["passage_id"] for p in topk] == [h.passage_id for h in hits]
    assert [p["document_id"] for p in topk] == [h.document_id for h in hits]
    assert [p["rank"] for p in topk] == list(range(1, len(hits) + 1))
    assert [p["text"] for p in topk] == [h.text for h in hits]
    assert [p["long_text"] for p in topk] == [h.text for h in hits]
    assert [p["metadata"] for p in topk] == [h.metadata for h in hits]
    assert [p["score"] for p in topk] == pytest.approx([h.score for h in hits], abs=1e-5)
    probs = [p["prob"] for p in topk]
    assert sum(probs) == pytest.approx(1.0)
    assert probs == sorted(probs, reverse=True)
    expected = [math.exp(h.score - hits[0].score) for h in hits]
    assert probs == pytest.approx([e / sum(expected) for e in expected])


# -- the ColBERTv2 protocol -------------------------------------------------------------------


def test_colbert_get_equals_index_search(server, sample_index, queries):
    for q in queries[:4]:
        status, payload = get_search(server, q["query"], 5)
        assert status == 200
        assert_colbert_payload(payload, q["query"], sample_index.search(q["query"], k=5))


def test_colbert_post_equals_index_search(server, sample_index, queries):
    for q in queries[4:8]:
        status, payload = call(server, "POST", "/api/search", {"query": q["query"], "k": 3})
        assert status == 200
        assert_colbert_payload(payload, q["query"], sample_index.search(q["query"], k=3))


def test_colbert_k_defaults_to_10_and_accepts_numeric_strings(server, sample_index, queries):
    query = queries[0]["query"]
    status, payload = get_search(server, query)
    assert status == 200 and len(payload["topk"]) == 10
    status, posted = call(server, "POST", "/api/search", {"query": query, "k": "4"})
    assert status == 200
    assert [p["pid"] for p in posted["topk"]] == [p["pid"] for p in payload["topk"][:4]]


def test_colbert_topk_softmax_is_stable_for_large_scores():
    from jacolbert_core import Hit

    hits = [Hit(f"d{i}#0", f"d{i}", "t", 1000.0 - i, i + 1, {}, 0, 1) for i in range(3)]
    probs = [p["prob"] for p in colbert_topk(hits)]
    assert sum(probs) == pytest.approx(1.0) and probs[0] > probs[1] > probs[2] > 0
    assert colbert_topk([]) == []


# -- the JSON API -----------------------------------------------------------------------------


def test_v1_single_query_with_where(server, sample_index, queries):
    query, where = queries[1]["query"], {"year": {"$gte": 2022}}
    status, payload = call(server, "POST", "/v1/search", {"query": query, "k": 5, "where": where})
    assert status == 200
    expected = [asdict(h) for h in sample_index.search(query, k=5, where=where)]
    assert payload["query"] == query and payload["k"] == 5
    assert [h["passage_id"] for h in payload["hits"]] == [h["passage_id"] for h in expected]
    for got, want in zip(payload["hits"], expected, strict=True):
        assert set(got) == {
            "passage_id",
            "document_id",
            "text",
            "score",
            "rank",
            "metadata",
            "start",
            "end",
        }
        assert got["score"] == pytest.approx(want.pop("score"), abs=1e-5)
        got.pop("score")
        assert got == want
        assert got["metadata"]["year"] >= 2022


def test_v1_batch_queries(server, sample_index, queries):
    batch = [q["query"] for q in queries[:3]]
    status, payload = call(
        server, "POST", "/v1/search", {"queries": batch, "k": 2, "where": {"lang": "ja"}}
    )
    assert status == 200 and payload["k"] == 2
    expected = sample_index.search(batch, k=2, where={"lang": "ja"})
    assert [r["query"] for r in payload["results"]] == batch
    for result, hits in zip(payload["results"], expected, strict=True):
        assert [h["passage_id"] for h in result["hits"]] == [h.passage_id for h in hits]
        assert [h["rank"] for h in result["hits"]] == [1, 2]


def test_v1_filter_that_matches_nothing(server):
    status, payload = call(
        server, "POST", "/v1/search", {"query": "京都", "where": {"topic": "no-such-topic"}}
    )
    assert status == 200 and payload["hits"] == []


def test_health(server, sample_index):
    status, payload = call(server, "GET", "/health")
    stats = sample_index.stats()
    assert status == 200
    assert payload == {
        "status": "ok",
        "documents": stats["documents"],
        "passages": stats["passages"],
        "generation": stats["generation"],
        "model": stats["model"],
    }
    assert payload["documents"] == len(sample_index) > 0


# -- errors -----------------------------------------------------------------------------------

LONG = "あ" * (MAX_CHARS + 1)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/api/search?k=3", None, 400, 'missing "query"'),
        ("GET", "/api/search?query=&k=3", None, 400, "empty"),
        ("GET", "/api/search?query=%E4%BA%AC&k=0", None, 400, "at least 1"),
        ("GET", "/api/search?query=%E4%BA%AC&k=-2", None, 400, "at least 1"),
        ("GET", "/api/search?query=%E4%BA%AC&k=ten", None, 400, "integer"),
        ("GET", f"/api/search?query=%E4%BA%AC&k={MAX_K + 1}", None, 400, f"at most {MAX_K}"),
        ("GET", "/api/search?query=%FF%FE", None, 400, "UTF-8"),
        ("GET", "/api/search?" + urllib.parse.urlencode({"query": LONG}), None, 400, "limit"),
        ("GET", "/api/search?query=a%00b", None, 400, "NUL"),
        ("POST", "/api/search", {"k": 3}, 400, 'missing "query"'),
        ("POST", "/api/search", {"query": 5}, 400, "must be a string"),
        ("POST", "/api/search", {"query": "京都", "k": 0}, 400, "at least 1"),
        ("POST", "/api/search", {"query": "京都", "k": 2.5}, 400, "integer"),
        ("POST", "/api/search", {"query": "京都", "k": True}, 400, "integer"),
        ("POST", "/api/search", {"query": "京都", "k": 1000}, 400, f"at most {MAX_K}"),
        ("POST", "/api/search", {"query": LONG}, 400, f"limit is {MAX_CHARS}"),
        ("POST", "/api/search", ["京都"], 400, "must be an object"),
        ("POST", "/api/search", None, 400, "missing JSON body"),
        ("POST", "/v1/search", {"k": 3}, 400, "exactly one of"),
        ("POST", "/v1/search", {"query": "a", "queries": ["b"]}, 400, "exactly one of"),
        ("POST", "/v1/search", {"queries": []}, 400, "non-empty list"),
        ("POST", "/v1/search", {"queries": ["a"] * 5}, 400, "limit is 4"),
        ("POST", "/v1/search", {"queries": ["a", ""]}, 400, "queries[1]"),
        ("POST", "/v1/search", {"query": "a", "where": ["x"]}, 400, '"where" must be'),
        ("POST", "/v1/search", {"query": "a", "where": {"$xor": []}}, 400, "$xor"),
        ("POST", "/v1/search", {"query": "a", "top_k": 3}, 400, "unknown field"),
        ("GET", "/nope", None, 404, "no such endpoint"),
        ("GET", "/", None, 404, "no such endpoint"),
        ("GET", "/v1/search", None, 405, "use POST"),
        ("POST", "/health", {}, 405, "use GET"),
        ("DELETE", "/api/search", None, 405, "use GET, POST"),
    ],
)
def test_errors(server, method, path, body, status, message):
    got, payload = call(server, method, path, body)
    assert got == status
    assert payload["error"] is True
    assert message in payload["message"]


def test_bad_json_and_oversized_body(server):
    status, payload = call(server, "POST", "/api/search", raw='{"query": "京都", '.encode())
    assert status == 400 and "not valid JSON" in payload["message"]
    status, payload = call(server, "POST", "/api/search", raw=b'{"query": "\xff"}')
    assert status == 400 and "not valid JSON" in payload["message"]
    status, payload = call(server, "POST", "/v1/search", raw=b" " * ((1 << 20) + 1))
    assert status == 413 and payload["error"] is True


def test_protocol_errors_are_json(server):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("PUT", "/api/search")
    response = conn.getresponse()
    assert response.status == 405 and response.getheader("Allow") == "GET, POST"
    assert json.loads(response.read())["error"] is True
    conn.request("HEAD", "/health")
    response = conn.getresponse()
    assert response.status == 405 and response.read() == b""
    conn.close()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("BREW", "/api/search")
    response = conn.getresponse()
    assert response.status == 501 and json.loads(response.read())["error"] is True
    conn.close()


def test_keep_alive_survives_errors(server, sample_index):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    headers = {"Content-Type": "application/json"}
    try:
        conn.request("POST", "/api/search", body=b"{oops", headers=headers)
        response = conn.getresponse()
        assert response.status == 400
        response.read()
        assert response.getheader("Connection") != "close"  # the body was consumed: keep going
        body = json.dumps({"query": "札幌の雪まつり", "k": 2}).encode()
        conn.request("POST", "/api/search", body=body, headers=headers)
        response = conn.getresponse()
        payload = json.loads(response.read())
        assert response.status == 200
        hits = sample_index.search("札幌の雪まつり", k=2)
        assert [p["pid"] for p in payload["topk"]] == [h.passage_id for h in hits]
        # a refused request's body is consumed too, so the connection stays usable
        for path, status in (("/elsewhere", 404), ("/health", 405), ("/api/search", 200)):
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            assert response.status == status and response.getheader("Connection") != "close"
            response.read()
    finally:
        conn.close()


# -- concurrency and lifecycle ----------------------------------------------------------------


def test_concurrent_requests_match_serial_results(server, sample_index, queries):
    texts = [q["query"] for q in queries[:8]]
    expected = {q: [h.passage_id for h in sample_index.search(q, k=4)] for q in texts}

    def one(i: int) -> tuple[str, list[str]]:
        query = texts[i % len(texts)]
        if i % 3 == 0:
            status, payload = get_search(server, query, 4)
            pids = [p["pid"] for p in payload["topk"]]
        elif i % 3 == 1:
            status, payload = call(server, "POST", "/api/search", {"query": query, "k": 4})
            pids = [p["pid"] for p in payload["topk"]]
        else:
            status, payload = call(server, "POST", "/v1/search", {"queries": [query], "k": 4})
            pids = [h["passage_id"] for h in payload["results"][0]["hits"]]
        assert status == 200
        return query, pids

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(one, range(48)))
    for query, pids in results:
        assert pids == expected[query]


def test_default_host_and_shutdown(sample_index):
    srv = make_server(sample_index, port=0)
    assert srv.server_address[0] == "127.0.0.1"
    assert srv.url == f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    status, _ = call(srv, "GET", "/health")
    assert status == 200
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        urllib.request.urlopen(srv.url + "/health", timeout=5)


def test_serve_calls_ready_and_returns_after_shutdown(sample_index):
    started: list = []

    def ready(srv):
        started.append(srv)
        threading.Thread(target=srv.shutdown, daemon=True).start()

    thread = threading.Thread(
        target=serve, args=(sample_index,), kwargs={"port": 0, "ready": ready}, daemon=True
    )
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive() and len(started) == 1
    assert started[0].socket.fileno() == -1  # closed


def test_make_server_validates_arguments(sample_index):
    with pytest.raises(TypeError, match="Index"):
        make_server("not an index", port=0)
    for name in ("max_k", "max_query_chars", "max_batch", "workers"):
        with pytest.raises(ValueError, match=name):
            make_server(sample_index, port=0, **{name: 0})


def test_workers_follow_tokenizer_thread_safety(sample_index, monkeypatch):
    import torch

    srv = make_server(sample_index, port=0, workers=3)
    srv.server_close()
    assert srv.workers == 3
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert default_workers(sample_index) == 1  # each search already uses every core
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert default_workers(sample_index) == 4
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert default_workers(sample_index) == 4  # capped
    fast = SimpleNamespace(
        model=SimpleNamespace(
            tokenizer=SimpleNamespace(fast=object(), hf=SimpleNamespace(do_lower_case=False))
        )
    )
    slow = SimpleNamespace(
        model=SimpleNamespace(
            tokenizer=SimpleNamespace(fast=None, hf=SimpleNamespace(do_lower_case=False))
        )
    )
    assert _encoder_is_thread_safe(fast) and not _encoder_is_thread_safe(slow)
    assert _encoder_is_thread_safe(sample_index)  # the tiny model has the fast tokenizer


def test_cli_serve_prints_url_and_answers(sample_index):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jacolbert_core.cli",
            "serve",
            str(sample_index.path),
            "--port",
            "0",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = match.group(0)
        with urllib.request.urlopen(url + "/health", timeout=60) as response:
            assert json.loads(response.read())["documents"] == len(sample_index)
        query = urllib.parse.urlencode({"query": "新幹線の予約", "k": 2})
        with urllib.request.urlopen(f"{url}/api/search?{query}", timeout=60) as response:
            payload = json.loads(response.read())
        hits = sample_index.search("新幹線の予約", k=2)
        assert [p["pid"] for p in payload["topk"]] == [h.passage_id for h in hits]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.stderr.close()


def test_connections_send_without_nagle_delay_and_accept_bursts(server, monkeypatch):
    # headers and body are two writes: with Nagle's algorithm on, each keep-alive response
    # waited ~40 ms for the client's delayed ACK. Record the option on the server's sockets.
    import socket

    from jacolbert_core import server as server_module

    seen = []
    original = server_module._Handler.setup

    def setup(handler):
        original(handler)
        seen.append(handler.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    monkeypatch.setattr(server_module._Handler, "setup", setup)
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    for _ in range(3):  # one keep-alive connection, several requests
        connection.request(
            "GET", "/api/search?" + urllib.parse.urlencode({"query": "京都", "k": 2})
        )
        response = connection.getresponse()
        assert response.status == 200 and len(json.loads(response.read())["topk"]) == 2
    connection.close()
    assert seen and all(seen)
    assert server.request_queue_size >= 64  # a burst of clients is not dropped at listen()

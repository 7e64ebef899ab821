"""HTTP search service for an :class:`~jacolbert_core.index.index.Index` (standard library only).

Endpoints (all JSON, UTF-8):

``GET /api/search?query=...&k=...`` and ``POST /api/search`` with ``{"query": ..., "k": ...}``
    The ColBERTv2 server protocol, so ``dspy.ColBERTv2(url="http://HOST:PORT/api/search")``
    works unchanged: ``{"query": q, "topk": [{"text", "long_text", "pid", "rank", "score",
    "prob", "passage_id", "document_id", "metadata"}, ...]}``. ``prob`` is the softmax of the
    top-k scores; ``pid`` is our passage id (a string such as ``"doc-7#0"``, stable across
    updates; the reference server sends its internal integer, which DSPy never reads).
    ``k`` defaults to 10 as in the reference server.
``POST /v1/search`` with ``{"query": "..."}`` or ``{"queries": [...]}``, optional ``"k"`` and
    ``"where"`` (a metadata filter, see :mod:`jacolbert_core.index.filters`)
    One query: ``{"query", "k", "hits": [Hit fields...]}``; a batch: ``{"k", "results":
    [{"query", "hits"}, ...]}``. Hit fields: passage_id, document_id, text, score, rank,
    metadata, start, end.
``GET /health``
    ``{"status": "ok", "documents", "passages", "generation", "model"}``.

Errors are ``{"error": true, "message": "..."}`` with a 4xx status (5xx for a server fault).

Requests run on one thread per connection (``ThreadingHTTPServer``); at most ``workers``
searches run at once (see :func:`default_workers`). Query encoding (the fast MeCab + WordPiece
tokenizer, torch inference) and the index's reads (a snapshot per search, one SQLite connection
shared in serialized mode) are safe to run concurrently; when the model's tokenizer has no fast
path (fugashi's node lists are not thread-safe), searches are serialised. Queries containing
NUL are refused for the same reason (the fast tokenizer hands them to fugashi).
There is no authentication: the server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jacolbert_core.errors import JaColBERTError
from jacolbert_core.index.index import Hit, Index

__all__ = ["SearchServer", "colbert_topk", "default_workers", "make_server", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8893
DEFAULT_K = 10
MAX_BODY_BYTES = 1 << 20


class RequestError(Exception):
    """A client error: answered with ``status`` and ``{"error": true, "message": ...}``."""

    def __init__(
        self,
        message: str,
        status: int = HTTPStatus.BAD_REQUEST,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = int(status)
        self.headers = headers or {}


class SearchServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` bound to one index; build it with :func:`make_server`."""

    daemon_threads = True
    allow_reuse_address = True
    # listen backlog (socketserver's default is 5): a burst of new connections beyond it has
    # its SYNs dropped and retried after a second
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        index: Index,
        *,
        max_k: int,
        max_query_chars: int,
        max_batch: int,
        workers: int,
        log_requests: bool,
    ):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.index = index
        self.max_k = max_k
        self.max_query_chars = max_query_chars
        self.max_batch = max_batch
        self.workers = workers
        self.log_requests = log_requests
        self._slots = threading.BoundedSemaphore(workers)
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8893`` (the real port when bound to port 0)."""
        host, port = self.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def search(self, queries: list[str], k: int, where: dict[str, Any] | None) -> list[list[Hit]]:
        with self._slots:
            return self.index.search(queries, k=k, where=where)


def make_server(
    index: Index,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    max_k: int = 100,
    max_query_chars: int = 2000,
    *,
    max_batch: int = 32,
    workers: int | None = None,
    log_requests: bool = False,
) -> SearchServer:
    """A ready-to-run server (call ``serve_forever()``; ``shutdown()`` + ``server_close()``).

    ``port=0`` picks a free port (read it from ``server.server_address`` or ``server.url``).
    Requests asking for more than ``max_k`` results, queries longer than ``max_query_chars``
    characters or batches of more than ``max_batch`` queries get a 400. ``workers`` bounds how
    many searches run at once (default: :func:`default_workers`).
    """
    if not isinstance(index, Index):
        raise TypeError(f"index must be an Index (Index.open(path)), got {type(index).__name__}")
    for name, value in (
        ("max_k", max_k),
        ("max_query_chars", max_query_chars),
        ("max_batch", max_batch),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if workers is None:
        workers = default_workers(index)
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers <= 0:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return SearchServer(
        (host, port),
        index,
        max_k=max_k,
        max_query_chars=max_query_chars,
        max_batch=max_batch,
        workers=workers,
        log_requests=log_requests,
    )


def serve(
    index: Index,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    max_k: int = 100,
    max_query_chars: int = 2000,
    *,
    log_requests: bool = True,
    ready: Callable[[SearchServer], None] | None = None,
    **kwargs: Any,
) -> None:
    """Run a server until interrupted (Ctrl-C). ``ready(server)`` is called once it listens;
    by default the URLs are printed."""
    server = make_server(
        index, host, port, max_k, max_query_chars, log_requests=log_requests, **kwargs
    )
    try:
        if ready is None:
            print(
                f"Serving {index.path} at {server.url}\n"
                f"  ColBERTv2 / dspy.ColBERTv2: {server.url}/api/search\n"
                f"  JSON API: POST {server.url}/v1/search   health: {server.url}/health\n"
                "Press Ctrl-C to stop.",
                flush=True,
            )
            if host not in ("127.0.0.1", "localhost", "::1"):
                print(
                    f"warning: listening on {host}; this server has no authentication",
                    file=sys.stderr,
                )
        else:
            ready(server)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def default_workers(index: Index) -> int:
    """Concurrent searches that keep the cores busy without oversubscribing them: about
    ``cpus // torch threads`` (at most 4), or 1 when the tokenizer is not thread-safe. With
    torch's default (one thread per core) that is 1: each search already uses every core, and
    several OpenMP teams at once are slower than one. Lower ``torch.set_num_threads`` (the
    CLI's ``--threads``) to trade per-request latency for throughput under load."""
    if not _encoder_is_thread_safe(index):
        return 1
    import torch

    return max(1, min(4, (os.cpu_count() or 1) // max(1, torch.get_num_threads())))


def _encoder_is_thread_safe(index: Index) -> bool:
    """Whether queries can be encoded on several threads at once (see the module docstring)."""
    tokenizer = getattr(getattr(index, "model", None), "tokenizer", None)
    if getattr(tokenizer, "fast", None) is None:
        return False
    # The fast tokenizer falls back to fugashi node lists for cased never-split words.
    return not getattr(getattr(tokenizer, "hf", None), "do_lower_case", True)


# -- request handling -------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: SearchServer
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    server_version = "jacolbert"
    timeout = 60  # seconds an idle keep-alive connection may hold its thread
    # TCP_NODELAY: headers and body go out as two writes; with Nagle's algorithm the body
    # waited for the client's delayed ACK (~40 ms on Linux loopback) on every request
    disable_nagle_algorithm = True

    _ROUTES = {
        "/api/search": {"GET": "_colbert_get", "POST": "_colbert_post"},
        "/v1/search": {"POST": "_v1_search"},
        "/health": {"GET": "_health"},
    }

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        self._body_read = False
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        try:
            methods = self._ROUTES.get(path)
            if methods is None:
                raise RequestError(
                    f"no such endpoint: {path}; try /api/search, /v1/search or /health",
                    HTTPStatus.NOT_FOUND,
                )
            name = methods.get(self.command)
            if name is None:
                allowed = ", ".join(methods)
                raise RequestError(
                    f"{self.command} is not allowed on {path}; use {allowed}",
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    {"Allow": allowed},
                )
            self._send_json(HTTPStatus.OK, getattr(self, name)(url.query))
        except RequestError as error:
            self._fail(error.status, str(error), error.headers)
        except (ValueError, TypeError, JaColBERTError) as error:  # e.g. a malformed filter
            self._fail(HTTPStatus.BAD_REQUEST, str(error))
        except Exception as error:  # keep the server up; the traceback goes to the log
            logger.exception("error while handling %s %s", self.command, self.path)
            self._fail(
                HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(error).__name__}: {error}"
            )

    def _fail(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        if not self._body_read:
            with contextlib.suppress(RequestError, OSError):
                self._read_body()  # e.g. a POST to an unknown path: keep the connection usable
        if not self._body_read:
            self.close_connection = True  # an unread body must not be parsed as a request
        self._send_json(status, {"error": True, "message": message}, headers)

    # -- endpoints ------------------------------------------------------------------------

    def _colbert_get(self, query_string: str) -> dict[str, Any]:
        self._drain_body()
        try:
            params = parse_qs(
                query_string, keep_blank_values=True, strict_parsing=False, errors="strict"
            )
        except UnicodeDecodeError as error:
            raise RequestError(f"the query string is not valid UTF-8: {error}") from None
        query = params["query"][0] if "query" in params else None
        k = params["k"][0] if "k" in params else None
        return self._colbert(query, k)

    def _colbert_post(self, query_string: str) -> dict[str, Any]:
        body = self._json_body()
        return self._colbert(body.get("query"), body.get("k"))

    def _colbert(self, query: Any, k: Any) -> dict[str, Any]:
        query = self._check_query(query, "query")
        k = self._check_k(k)
        hits = self.server.search([query], k, None)[0]
        return {"query": query, "topk": colbert_topk(hits)}

    def _v1_search(self, query_string: str) -> dict[str, Any]:
        body = self._json_body()
        unknown = sorted(set(body) - {"query", "queries", "k", "where"})
        if unknown:
            raise RequestError(
                f"unknown field(s) {unknown}; /v1/search takes query or queries, k, where"
            )
        if ("query" in body) == ("queries" in body):
            raise RequestError('pass exactly one of "query" (a string) or "queries" (a list)')
        k = self._check_k(body.get("k"))
        where = body.get("where")
        if where is not None and not isinstance(where, dict):
            raise RequestError(
                f'"where" must be an object like {{"lang": "ja"}}, got {type(where).__name__}'
            )
        if "query" in body:
            query = self._check_query(body["query"], "query")
            hits = self.server.search([query], k, where)[0]
            return {"query": query, "k": k, "hits": [asdict(h) for h in hits]}
        queries = body["queries"]
        if not isinstance(queries, list) or not queries:
            raise RequestError('"queries" must be a non-empty list of strings')
        if len(queries) > self.server.max_batch:
            raise RequestError(
                f"{len(queries)} queries in one request; the limit is {self.server.max_batch}"
            )
        queries = [self._check_query(q, f"queries[{i}]") for i, q in enumerate(queries)]
        results = self.server.search(queries, k, where)
        return {
            "k": k,
            "results": [
                {"query": q, "hits": [asdict(h) for h in hits]}
                for q, hits in zip(queries, results, strict=True)
            ],
        }

    def _health(self, query_string: str) -> dict[str, Any]:
        self._drain_body()
        stats = self.server.index.stats()
        return {
            "status": "ok",
            "documents": stats["documents"],
            "passages": stats["passages"],
            "generation": stats["generation"],
            "model": stats["model"],
        }

    # -- validation -----------------------------------------------------------------------

    def _check_query(self, query: Any, name: str) -> str:
        if query is None:
            raise RequestError(f'missing "{name}": pass the search text')
        if not isinstance(query, str):
            raise RequestError(f'"{name}" must be a string, got {type(query).__name__}')
        if not query.strip():
            raise RequestError(f'"{name}" is empty; pass the search text')
        limit = self.server.max_query_chars
        if len(query) > limit:
            raise RequestError(f'"{name}" has {len(query)} characters; the limit is {limit}')
        if "\x00" in query:
            raise RequestError(f'"{name}" contains a NUL character')
        return query

    def _check_k(self, k: Any) -> int:
        if k is None:
            return DEFAULT_K
        if isinstance(k, str):
            try:
                k = int(k.strip())
            except ValueError:
                raise RequestError(f'"k" must be an integer, got {k!r}') from None
        elif isinstance(k, float) and k.is_integer():
            k = int(k)
        if isinstance(k, bool) or not isinstance(k, int):
            raise RequestError(f'"k" must be an integer, got {k!r}')
        if k <= 0:
            raise RequestError(f'"k" must be at least 1, got {k}')
        if k > self.server.max_k:
            raise RequestError(f'"k" is {k}; this server returns at most {self.server.max_k}')
        return k

    # -- I/O --------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(
                "chunked request bodies are not supported; send Content-Length",
                HTTPStatus.LENGTH_REQUIRED,
            )
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self._body_read = True
            return b""
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            raise RequestError(f"bad Content-Length {length_header!r}") from None
        if length > MAX_BODY_BYTES:
            self._discard(length)
            raise RequestError(
                f"request body of {length} bytes; the limit is {MAX_BODY_BYTES}",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise RequestError(f"the body ended after {len(body)} of {length} bytes")
        self._body_read = True
        return body

    def _discard(self, length: int) -> None:
        """Read and drop a refused body (so the client gets our answer, not a reset), unless
        it is absurdly large: then the connection is closed after the answer."""
        if length > 16 * MAX_BODY_BYTES:
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                return
            length -= len(chunk)
        self._body_read = True

    def _drain_body(self) -> None:
        self._read_body()

    def _json_body(self) -> dict[str, Any]:
        raw = self._read_body()
        if not raw.strip():
            raise RequestError('missing JSON body, e.g. {"query": "...", "k": 10}')
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RequestError(f"the request body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise RequestError(f"the JSON body must be an object, got {type(body).__name__}")
        return body

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """Protocol-level errors (bad request line, oversized URL, unknown method) as JSON."""
        try:
            short, _ = self.responses[code]
        except KeyError:
            short = "error"
        self.log_error("code %d, message %s", code, message or short)
        self.close_connection = True
        if code < 200 or code in (204, 205, 304):
            self.send_response(code, message)
            self.send_header("Connection", "close")
            self.end_headers()
            return
        self._send_json(code, {"error": True, "message": message or short})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature)
        if self.server.log_requests:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")
        else:
            logger.debug(format, *args)


def colbert_topk(hits: list[Hit]) -> list[dict[str, Any]]:
    """Hits in the ColBERTv2 server's ``topk`` shape (``prob``: softmax of the scores)."""
    if not hits:
        return []
    top = max(h.score for h in hits)
    weights = [math.exp(h.score - top) for h in hits]
    total = sum(weights)
    return [
        {
            "text": h.text,
            "long_text": h.text,
            "pid": h.passage_id,
            "rank": h.rank,
            "score": h.score,
            "prob": w / total,
            "passage_id": h.passage_id,
            "document_id": h.document_id,
            "metadata": h.metadata,
        }
        for h, w in zip(hits, weights, strict=True)
    ]

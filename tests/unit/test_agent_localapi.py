"""The agent's local API server (agent/localapi.py), on a unix socket in a temp dir."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podwire.agent.localapi import LocalApi, Request, Response
from podwire.common.agentapi import UnixHTTPConnection


def call(path: Path, method: str, url: str, body: Any = None) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(path, timeout=10)
    try:
        conn.request(method, url, body=None if body is None else json.dumps(body))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LocalApi]:
    server = LocalApi(tmp_path / "run" / "agent.sock")
    release = threading.Event()

    def echo(req: Request) -> Response:
        return Response(200, {"path": req.path, "query": req.query, "body": req.json()})

    def slow(req: Request) -> Response:
        release.wait(10)
        return Response(200, {"slow": True})

    def stream(req: Request) -> Response:
        return Response(200, stream=(f'{{"n": {i}}}\n'.encode() for i in range(3)),
                        content_type="application/x-ndjson")

    def broken(req: Request) -> Response:
        raise RuntimeError("boom")

    server.route("POST", "/echo", echo)
    server.route("GET", "/slow", slow)
    server.route("GET", "/flows", stream)
    server.route("GET", "/broken", broken)
    server.release = release  # type: ignore[attr-defined]
    server.start()
    try:
        yield server
    finally:
        release.set()
        server.close()


def test_routes_json_and_errors(api: LocalApi) -> None:
    status, body = call(api.socket_path, "POST", "/echo?x=1", {"a": [1]})
    assert status == 200
    assert json.loads(body) == {"path": "/echo", "query": {"x": ["1"]}, "body": {"a": [1]}}
    assert call(api.socket_path, "GET", "/nothing")[0] == 404
    assert call(api.socket_path, "GET", "/echo")[0] == 405
    status, body = call(api.socket_path, "GET", "/broken")
    assert status == 500 and "boom" in json.loads(body)["error"]


def test_streamed_response_is_chunked_lines(api: LocalApi) -> None:
    status, body = call(api.socket_path, "GET", "/flows")
    assert status == 200
    assert [json.loads(line)["n"] for line in body.splitlines()] == [0, 1, 2]


def test_slow_handler_does_not_block_others(api: LocalApi) -> None:
    results: list[int] = []
    waiter = threading.Thread(target=lambda: results.append(
        call(api.socket_path, "GET", "/slow")[0]))
    waiter.start()
    assert call(api.socket_path, "POST", "/echo", {})[0] == 200
    assert results == []  # the slow request is still in flight
    api.release.set()  # type: ignore[attr-defined]
    waiter.join()
    assert results == [200]


def test_close_removes_socket(tmp_path: Path) -> None:
    server = LocalApi(tmp_path / "a.sock")
    (tmp_path / "a.sock").write_text("stale")
    server.start()
    server.close()
    assert not (tmp_path / "a.sock").exists()

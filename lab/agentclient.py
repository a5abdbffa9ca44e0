"""A small client of the agent's node-local API (HTTP/1.1, JSON, unix socket)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from podwire.agent.localclient import AgentUnavailable, fetch

__all__ = ["AgentUnavailable", "get", "ready", "recent_flows", "revision"]


def _fetch(socket_path: Path, url: str, timeout: float) -> tuple[int, bytes]:
    return fetch(socket_path, url, timeout)


def get(socket_path: Path, url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET `url` from the agent behind `socket_path`: (HTTP status, decoded JSON body)."""
    status, body = _fetch(socket_path, url, timeout)
    try:
        return status, json.loads(body or b"null")
    except ValueError as exc:
        raise AgentUnavailable(f"{socket_path}: {url} answered non-JSON") from exc


def ready(socket_path: Path) -> bool:
    """Whether the agent answers /healthz with ready."""
    try:
        status, body = get(socket_path, "/healthz", timeout=2.0)
    except AgentUnavailable:
        return False
    return status == 200 and bool(isinstance(body, dict) and body.get("ready"))


def revision(socket_path: Path) -> int | None:
    """The resourceVersion the agent has consumed and applied, None when unreachable."""
    try:
        status, body = get(socket_path, "/status", timeout=2.0)
    except AgentUnavailable:
        return None
    if status != 200 or not isinstance(body, dict):
        return None
    try:
        return int(body.get("revision") or 0)
    except (TypeError, ValueError):
        return None


def recent_flows(socket_path: Path, last: int = 20) -> list[dict[str, Any]]:
    """The agent's last `last` flow records (its /flows answers one JSON object a line)."""
    status, body = _fetch(socket_path, f"/flows?last={last}", timeout=5.0)
    if status != 200:
        raise AgentUnavailable(f"{socket_path}: /flows answered HTTP {status}")
    try:
        return [json.loads(line) for line in body.splitlines() if line.strip()]
    except ValueError as exc:
        raise AgentUnavailable(f"{socket_path}: /flows answered non-JSON") from exc

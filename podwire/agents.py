"""Reaching agents from the CLI: which sockets to ask, and asking them.

`podwire observe` and `podwire status` talk to the node-local API of one agent (its
unix socket) or, with a lab up, of every lab node at once. Requests are plain HTTP/1.1
over the socket; `/flows?follow=1` is read line by line as the agent streams it.
"""

from __future__ import annotations

import argparse
import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podwire.agent.localclient import UnixHTTPConnection
from podwire.lab.layout import DEFAULT_PREFIX, LabLayout

DEFAULT_SOCKET = Path("/run/podwire/agent.sock")


class AgentError(Exception):
    """An agent could not be reached or answered something unusable; says which."""


@dataclass(frozen=True)
class AgentTarget:
    """One agent: its node name (when known before asking) and its socket."""

    node: str
    socket_path: Path


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", type=Path, metavar="PATH",
                        help=f"the node agent's socket (default: {DEFAULT_SOCKET})")
    parser.add_argument("--lab", nargs="?", const=DEFAULT_PREFIX, metavar="PREFIX",
                        help=f"every node of the lab (default prefix {DEFAULT_PREFIX}); "
                             "used anyway when no agent socket exists and a lab is up")


def targets(socket_path: Path | None, lab_prefix: str | None) -> list[AgentTarget]:
    """The agents to ask: `--socket`, else `--lab`, else the default socket, else the
    default lab when one is up."""
    if socket_path is not None and lab_prefix is not None:
        raise AgentError("give either --socket or --lab, not both")
    if socket_path is not None:
        return [AgentTarget(socket_path.name, socket_path)]
    if lab_prefix is not None:
        return _lab_targets(lab_prefix)
    if DEFAULT_SOCKET.exists():
        return [AgentTarget("local", DEFAULT_SOCKET)]
    if LabLayout().state_file.exists():
        return _lab_targets(LabLayout().prefix)
    raise AgentError(f"no agent socket at {DEFAULT_SOCKET} and no lab is up "
                     "(give --socket PATH or --lab PREFIX)")


def _lab_targets(prefix: str) -> list[AgentTarget]:
    from podwire.lab import cluster

    try:
        state = cluster.load(LabLayout(prefix))
    except (ValueError, cluster.LabError) as err:
        raise AgentError(str(err)) from None
    if state.network != "podwire":
        raise AgentError(f"lab {prefix} runs the {state.network} network: it has no agents")
    return [AgentTarget(node.name, node.socket_path) for node in state.node_layouts()]


def get_json(target: AgentTarget, url: str, timeout: float = 5.0) -> Any:
    """GET `url` and decode its JSON body; AgentError names the socket when it fails."""
    conn = UnixHTTPConnection(target.socket_path, timeout)
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException) as err:
        raise AgentError(f"agent at {target.socket_path} did not answer: {err}") from None
    finally:
        conn.close()
    try:
        return json.loads(body or b"null")
    except ValueError:
        raise AgentError(f"agent at {target.socket_path}: {url} answered non-JSON") from None


class RecordStream:
    """An ndjson answer of the agent, read one JSON object a line as the agent sends it.

    The request is made when the stream is opened: once the constructor returns, the
    agent has answered, so for `/flows?follow=1` the point the stream resumes from is
    fixed. timeout None waits for ever between lines (a follower of a quiet node).
    """

    def __init__(self, target: AgentTarget, url: str, timeout: float | None = 10.0) -> None:
        self.target, self.url = target, url
        self._conn = UnixHTTPConnection(target.socket_path, timeout)
        try:
            self._conn.request("GET", url)
            self._resp = self._conn.getresponse()
        except (OSError, http.client.HTTPException) as err:
            self._conn.close()
            raise AgentError(f"agent at {target.socket_path} did not answer: {err}") from None
        if self._resp.status != 200:
            detail = self._resp.read()[:200]
            self._conn.close()
            raise AgentError(f"agent at {target.socket_path}: {url} answered HTTP "
                             f"{self._resp.status} {detail!r}")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        where = f"agent at {self.target.socket_path}"
        try:
            for line in self._resp:
                if line.strip():
                    yield json.loads(line)
        except (OSError, http.client.HTTPException) as err:
            raise AgentError(f"{where} stopped answering: {err}") from None
        except ValueError:
            raise AgentError(f"{where}: {self.url} sent a line that is not JSON") from None
        finally:
            self._conn.close()


def read_records(target: AgentTarget, url: str) -> list[dict[str, Any]]:
    """A whole ndjson answer (e.g. `/flows`, the agent's history) as a list."""
    return list(RecordStream(target, url))

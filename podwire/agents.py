"""Which agents the CLI asks: one agent's socket, or every node of a lab.

`podwire observe` and `podwire status` talk to the node-local API of one agent (its
unix socket) or, with a lab up, of every lab node at once; the requests themselves
are podwire.common.agentapi's.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from podwire.common.agentapi import DEFAULT_SOCKET, AgentError
from podwire.lab.layout import DEFAULT_PREFIX, LabLayout


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

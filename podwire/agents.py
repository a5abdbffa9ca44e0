"""Which agents the CLI asks: one agent's socket, or every node of a cluster or lab.

`podwire observe`, `status` and `trace` talk to the node-local API of one agent (its
unix socket, on the node itself) or of every node at once: through the API server of
the cluster a kubeconfig names (podwire/clusterview.py), or of the lab, which is reached
the same way. The requests themselves are podwire.common.agentapi's.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from podwire import clusterview
from podwire.common.agentapi import DEFAULT_SOCKET, AgentError, Where
from podwire.lab.layout import DEFAULT_PREFIX, LabLayout

DEFAULT_KUBECONFIG = Path.home() / ".kube" / "config"


@dataclass(frozen=True)
class AgentTarget:
    """One agent: its node name (when known before asking) and how to reach it."""

    node: str
    endpoint: Where


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """`--socket`, `--lab` and the cluster view's flags."""
    where = parser.add_argument_group("which agents")
    where.add_argument("--socket", type=Path, metavar="PATH",
                       help=f"the node agent's socket (default: {DEFAULT_SOCKET})")
    where.add_argument("--lab", nargs="?", const=DEFAULT_PREFIX, metavar="PREFIX",
                       help=f"every node of the lab (default prefix {DEFAULT_PREFIX}), through "
                            "its API server; used anyway when no agent socket exists and a "
                            "lab is up")
    where.add_argument("--kubeconfig", metavar="PATH",
                       help="every node of this cluster, through its API server "
                            "(pods/portforward with your credentials); used anyway when "
                            "no socket or lab is there and $KUBECONFIG or ~/.kube/config is")
    where.add_argument("--context", metavar="NAME", help="the kubeconfig context to use")
    where.add_argument("--agent-namespace", metavar="NS",
                       help=f"where the agent pods run (default {clusterview.DEFAULT_NAMESPACE}"
                            "; the lab's: kube-system)")


def targets(socket_path: Path | None, lab_prefix: str | None, kubeconfig: str | None = None,
            context: str | None = None,
            agent_namespace: str | None = None) -> list[AgentTarget]:
    """The agents to ask: `--socket`, `--lab` or `--kubeconfig`, else the default socket,
    else the default lab when one is up, else the default kubeconfig."""
    given = [f for f, v in (("--socket", socket_path), ("--lab", lab_prefix),
                            ("--kubeconfig", kubeconfig)) if v is not None]
    if len(given) > 1:
        raise AgentError(f"give one of --socket, --lab, --kubeconfig, not {' and '.join(given)}")
    if socket_path is not None:
        return [AgentTarget(socket_path.name, socket_path)]
    if lab_prefix is not None:
        return _lab_targets(lab_prefix, agent_namespace)
    if kubeconfig is not None or context is not None:
        return _cluster_targets(kubeconfig, context, agent_namespace)
    if DEFAULT_SOCKET.exists():
        return [AgentTarget("local", DEFAULT_SOCKET)]
    if LabLayout().state_file.exists():
        return _lab_targets(LabLayout().prefix, agent_namespace)
    if os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG.exists():
        return _cluster_targets(None, None, agent_namespace)
    raise AgentError(f"no agent socket at {DEFAULT_SOCKET}, no lab is up and no kubeconfig "
                     "(give --socket PATH, --lab PREFIX or --kubeconfig PATH)")


def _cluster_targets(kubeconfig: str | None, context: str | None,
                     namespace: str | None) -> list[AgentTarget]:
    core = clusterview.api_client(kubeconfig, context)
    pods = clusterview.agent_pods(core, namespace or clusterview.DEFAULT_NAMESPACE)
    return [AgentTarget(pod.node, pod) for pod in pods]


def _lab_targets(prefix: str, namespace: str | None) -> list[AgentTarget]:
    from podwire.lab import addons, cluster

    try:
        state = cluster.load(LabLayout(prefix))
    except (ValueError, cluster.LabError) as err:
        raise AgentError(str(err)) from None
    if state.network != "podwire":
        raise AgentError(f"lab {prefix} runs the {state.network} network: it has no agents")
    return _cluster_targets(state.kubeconfig, None, namespace or addons.AGENT_NAMESPACE)

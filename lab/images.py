"""The lab runtime's images: what a pod's container runs.

Lab pods are network namespaces; most containers are the echo servers the kubelet hosts
itself (any image not named here). A container whose image is one of `PROGRAMS` runs
that podwire module as a process inside the pod's namespace instead, with the node's
kubeconfig standing in for its ServiceAccount, and is Ready once its first TCP port
accepts a connection (a tcpSocket readiness probe). Only these images run anything, so
a manifest cannot make the kubelet start an arbitrary program.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CLUSTER_DNS = "podwire-lab/cluster-dns"
PROGRAMS = {CLUSTER_DNS: "podwire.lab.dnsserver"}


@dataclass(frozen=True)
class Program:
    """The process a pod runs: the module, its arguments, the port that says Ready."""

    module: str
    args: tuple[str, ...]
    ready_port: int | None


def program(pod: dict[str, Any]) -> Program | None:
    """The program of the pod's first container with a lab image, or None (echo servers)."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        module = PROGRAMS.get(container.get("image", ""))
        if module is None:
            continue
        args = container.get("args") or []
        if not all(isinstance(a, str) for a in args):
            raise ValueError(f"container {container.get('name')}: args must be strings")
        tcp = [int(p["containerPort"]) for p in container.get("ports") or []
               if p.get("protocol", "TCP") == "TCP"]
        return Program(module, tuple(args), tcp[0] if tcp else None)
    return None

"""hostNetwork pods and the node ports they take, pure.

A `hostNetwork: true` pod shares its node's network namespace, so its container ports
are ports of the node (the API server defaults their hostPort to the containerPort).
Two such pods on one node cannot both take a port: the scheduler's NodePorts filter
keeps a pod off a node where a port it needs is taken, and the kubelet rejects one bound
there anyway (phase Failed, reason NodePorts). The lab does the same, and `lab apply`
refuses such a pod before writing anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# The kubelet's reason for a pod it rejects because a host port is taken.
REJECT_REASON = "NodePorts"


def host_network(pod: dict[str, Any]) -> bool:
    return bool((pod.get("spec") or {}).get("hostNetwork"))


def node_ports(pod: dict[str, Any]) -> set[tuple[int, str]]:
    """(port, protocol) pairs a hostNetwork pod takes on its node; none for other pods."""
    if not host_network(pod):
        return set()
    return {(int(p.get("hostPort") or p["containerPort"]), p.get("protocol") or "TCP")
            for c in pod["spec"].get("containers") or []
            for p in c.get("ports") or []}


def _ref(pod: dict[str, Any]) -> str:
    return f"{pod['metadata'].get('namespace', 'default')}/{pod['metadata']['name']}"


def conflict(pod: dict[str, Any], others: Iterable[dict[str, Any]]) -> str | None:
    """Why `pod` cannot take its ports beside `others` (pods already on its node), or
    None when it can. A pod never conflicts with itself."""
    wanted = node_ports(pod)
    if not wanted:
        return None
    for other in others:
        if _ref(other) == _ref(pod):
            continue
        taken = sorted(wanted & node_ports(other))
        if taken:
            ports = ", ".join(f"{port}/{proto}" for port, proto in taken)
            return f"node port {ports} is taken by hostNetwork pod {_ref(other)}"
    return None

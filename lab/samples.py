"""Sample workloads for the demo and the end-to-end tests: the classic x/y/z grid.

Namespaces x, y, z each hold pods a, b, c; every pod serves the same ports on TCP, UDP
and SCTP, with named ports `serve-<port>-tcp` / `-udp` / `-sctp` for policies to use.
`host_pod` is a hostNetwork pod: it serves on its node's address.
"""

from __future__ import annotations

from typing import Any

import yaml


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"ns": name, **(labels or {})}}}


PROTOCOLS = ("TCP", "UDP", "SCTP")


def pod(ns: str, name: str, ports: tuple[int, ...], labels: dict[str, str] | None = None,
        node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{
        "name": "serve", "image": "podwire-lab/echo",
        "ports": [{"name": f"serve-{p}-{proto.lower()}", "containerPort": p, "protocol": proto}
                  for p in ports for proto in PROTOCOLS],
    }]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"pod": name, **(labels or {})}},
            "spec": spec}


def host_pod(ns: str, name: str, ports: tuple[int, ...], node: str,
             labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A `hostNetwork: true` pod on `node`, serving `ports` on every protocol there."""
    body = pod(ns, name, ports, labels, node)
    body["spec"]["hostNetwork"] = True
    return body


def grid(namespaces: tuple[str, ...] = ("x", "y", "z"), pods: tuple[str, ...] = ("a", "b", "c"),
         ports: tuple[int, ...] = (80, 81), nodes: tuple[str, ...] = ("node1", "node2"),
         ) -> list[dict[str, Any]]:
    """Namespaces and pods, pods placed round-robin over `nodes` so both same-node and
    cross-node pairs exist in every namespace."""
    objects = [namespace(ns) for ns in namespaces]
    index = 0
    for ns in namespaces:
        for name in pods:
            objects.append(pod(ns, name, ports, node=nodes[index % len(nodes)]))
            index += 1
    return objects


def to_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)

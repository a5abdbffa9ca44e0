"""Probes between lab pods, by name: resolving NS/POD to a namespace and an address.

A hostNetwork pod probes from its node's namespace and is reached at its podIP, which
is its node's address, like any other pod.
"""

from __future__ import annotations

from typing import Any

from podwire.lab.kube import Kube
from podwire.lab.layout import LabLayout
from podwire.lab.probe import ProbeResult, ProbeTarget, matrix, probe

SYSTEM_NAMESPACE = "kube-system"


def _split(ref: str) -> tuple[str, str]:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise ValueError(f"{ref!r}: expected NAMESPACE/POD")
    return namespace, name


def running_pod(kube: Kube, ref: str) -> dict[str, Any]:
    """The pod `ns/name`, which must be running with an IP (ValueError otherwise)."""
    namespace, name = _split(ref)
    pod = kube.read("Pod", name, namespace)
    if pod is None:
        raise ValueError(f"pod {ref} does not exist")
    status = pod.get("status", {})
    if status.get("phase") != "Running" or not status.get("podIP"):
        raise ValueError(f"pod {ref} is not running ({status.get('phase', 'Pending')})")
    return pod


def netns_of(layout: LabLayout, pod: dict[str, Any]) -> str:
    """The namespace a pod's processes run in: its own, or its node's (hostNetwork)."""
    if pod["spec"].get("hostNetwork"):
        return layout.node_netns(pod["spec"]["nodeName"])
    return layout.pod_netns(pod["metadata"]["uid"])


def one(kube: Kube, layout: LabLayout, source: str, target: str | None, to_ip: str | None,
        port: int, protocol: str, timeout: float) -> tuple[ProbeResult, str]:
    """Probe from pod `source` to pod `target` or to address `to_ip`."""
    src = running_pod(kube, source)
    if target is not None:
        dst = running_pod(kube, target)
        goal = ProbeTarget(dst["status"]["podIP"], port, protocol, expect_name=target)
        label = target
    else:
        goal = ProbeTarget(str(to_ip), port, protocol)
        label = str(to_ip)
    return probe(netns_of(layout, src), goal, timeout), label


def pod_matrix(kube: Kube, layout: LabLayout, port: int, protocol: str, timeout: float,
               ) -> dict[str, dict[str, bool]]:
    """`{"ns/src": {"ns/dst": connected}}` over every running pod outside kube-system (the
    cluster's own, whose servers do not answer probes), self included."""
    pods = [p for p in kube.list_pods()["items"]
            if p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP")
            and p["metadata"]["namespace"] != SYSTEM_NAMESPACE]
    refs = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pods}
    sources = {ref: netns_of(layout, p) for ref, p in refs.items()}
    targets = {ref: ProbeTarget(p["status"]["podIP"], port, protocol, expect_name=ref)
               for ref, p in refs.items()}
    return matrix(sources, targets, timeout)

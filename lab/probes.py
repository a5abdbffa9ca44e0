"""Probes between lab pods, by name: resolving NS/POD to a namespace and an address.

A hostNetwork pod probes from its node's namespace and is reached at its podIP, which
is its node's address, like any other pod.

`family` (4 or 6) picks which of a pod's addresses (`status.podIPs`) a probe connects
to; None takes its primary one (`status.podIP`: IPv4 wherever pods have IPv4). A matrix
over a family leaves out the pods without an address of it, as the reference evaluator's
truth table of that family does.
"""

from __future__ import annotations

import ipaddress
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


def addresses(pod: dict[str, Any]) -> list[str]:
    """Every address of a pod, its primary first."""
    status = pod.get("status", {})
    found = [e["ip"] for e in status.get("podIPs") or [] if e.get("ip")]
    primary = status.get("podIP")
    return found if not primary or primary in found else [primary, *found]


def address_of(pod: dict[str, Any], family: int | None) -> str | None:
    """The pod's address of `family` (None: its primary one), None when it has none."""
    found = addresses(pod)
    if family is None:
        return found[0] if found else None
    return next((ip for ip in found if ipaddress.ip_address(ip).version == family), None)


def pod_address(pod: dict[str, Any], family: int | None) -> str:
    """As `address_of`, or ValueError naming the pod and the addresses it has."""
    ip = address_of(pod, family)
    if ip is None:
        ref = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        raise ValueError(f"pod {ref} has no IPv{family} address (its addresses: "
                         f"{', '.join(addresses(pod)) or 'none'})")
    return ip


def netns_of(layout: LabLayout, pod: dict[str, Any]) -> str:
    """The namespace a pod's processes run in: its own, or its node's (hostNetwork)."""
    if pod["spec"].get("hostNetwork"):
        return layout.node_netns(pod["spec"]["nodeName"])
    return layout.pod_netns(pod["metadata"]["uid"])


def one(kube: Kube, layout: LabLayout, source: str, target: str | None, to_ip: str | None,
        port: int, protocol: str, timeout: float, family: int | None = None,
        ) -> tuple[ProbeResult, str]:
    """Probe from pod `source` to pod `target` (its address of `family`) or to address
    `to_ip`. A source without an address of `family` cannot connect over it (ValueError)."""
    src = running_pod(kube, source)
    if family is not None:
        pod_address(src, family)
    if target is not None:
        dst = running_pod(kube, target)
        goal = ProbeTarget(pod_address(dst, family), port, protocol, expect_name=target)
        label = target
    else:
        goal = ProbeTarget(str(to_ip), port, protocol)
        label = str(to_ip)
    return probe(netns_of(layout, src), goal, timeout), label


def pod_matrix(kube: Kube, layout: LabLayout, port: int, protocol: str, timeout: float,
               family: int | None = None) -> dict[str, dict[str, bool]]:
    """`{"ns/src": {"ns/dst": connected}}` over every running pod outside kube-system (the
    cluster's own, whose servers do not answer probes) with an address of `family`, self
    included."""
    pods = [p for p in kube.list_pods()["items"]
            if p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP")
            and p["metadata"]["namespace"] != SYSTEM_NAMESPACE
            and address_of(p, family) is not None]
    refs = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pods}
    sources = {ref: netns_of(layout, p) for ref, p in refs.items()}
    targets = {ref: ProbeTarget(pod_address(p, family), port, protocol, expect_name=ref)
               for ref, p in refs.items()}
    return matrix(sources, targets, timeout)

"""`podwire lab demo`: the README's walk-through, end to end on this machine.

Two nodes, pods a/b/c in namespaces x/y/z spread over them, the probe matrix with no
policy (everything connects), one policy (x admits only namespace y on port 80), the
matrix again, then the flows the agents recorded, and the lab goes down again.
"""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console

from podwire.lab import agentclient, cluster, manifests, probes, samples, views, workload
from podwire.lab.kube import Kube
from podwire.lab.layout import LabLayout

log = logging.getLogger("podwire.lab.demo")

POLICY: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "x-from-y-on-80", "namespace": "x"},
    "spec": {
        "podSelector": {},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                     "ports": [{"protocol": "TCP", "port": 80}]}],
    },
}


def run(layout: LabLayout, keep: bool = False) -> int:
    console = Console()
    console.rule("podwire lab demo")
    state = cluster.up(layout, 2)
    try:
        kube = Kube(layout.host_kubeconfig)
        console.print(f"lab up: 2 nodes, kubeconfig {state.kubeconfig}")
        grid = manifests.parse(samples.to_yaml(samples.grid()), "demo workload")
        for line in workload.apply(kube, state, grid):
            console.print(f"  {line}")
        views.print_listing("pods", kube.list_pods())
        views.print_matrix(probes.pod_matrix(kube, layout, 80, "TCP", 1.5),
                           "TCP/80 without policy")

        console.print(f"applying NetworkPolicy x/{POLICY['metadata']['name']}: "
                      "pods in x admit only namespace y, on TCP 80")
        for line in workload.apply(kube, state, [manifests.check(POLICY, "demo policy")]):
            console.print(f"  {line}")
        views.print_matrix(probes.pod_matrix(kube, layout, 80, "TCP", 1.5),
                           "TCP/80 with x-from-y-on-80")
        show_flows(console, state)
    finally:
        if not keep:
            cluster.down(layout)
            console.print("lab down")
    if keep:
        console.print(f"lab left up; `podwire lab --prefix {layout.prefix} down` removes it")
    return 0


def show_flows(console: Console, state: cluster.LabState) -> None:
    """The flows behind the second matrix.

    This is the place for `podwire observe` once that command exists; until then the
    demo reads each agent's /flows endpoint (the same stream observe will render).
    """
    console.rule("policy verdicts (last 8 per node)")
    for node in state.node_layouts():
        try:
            flows = [f for f in agentclient.recent_flows(node.socket_path, last=200)
                     if f.get("type") == "policy-verdict"][-8:]
        except agentclient.AgentUnavailable as exc:
            console.print(f"{node.name}: flows unavailable ({exc})")
            continue
        for flow in flows:
            console.print(f"{node.name}: {flow_line(flow)}", highlight=False)


def _endpoint(side: dict[str, Any]) -> str:
    name = f"{side['namespace']}/{side['pod']}" if side.get("pod") else side.get("ip", "?")
    return f"{name}:{side.get('port', 0)}"


def flow_line(flow: dict[str, Any]) -> str:
    """One flow record as a line in the spirit of `hubble observe`."""
    src, dst = flow.get("source", {}), flow.get("destination", {})
    policies = ",".join(flow.get("isolated_by") or []) if flow.get("drop_reason") else (
        ",".join(f"{k}={v}" for k, v in (flow.get("allowed_by") or {}).items()))
    return " ".join(str(x) for x in (
        flow.get("time", "")[11:23], flow.get("hook", ""), _endpoint(src), "->", _endpoint(dst),
        flow.get("protocol", ""), flow.get("verdict", ""), flow.get("drop_reason") or "",
        policies) if x)

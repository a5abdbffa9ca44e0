"""`podwire lab demo`: the README's walk-through, end to end on this machine.

Two nodes, pods a/b/c in namespaces x/y/z spread over them, the probe matrix with no
policy (everything connects), one policy (x admits only namespace y on port 80), the
matrix again, then the flows the agents recorded, and the lab goes down again. With
`--ip-family ipv6` the lab and its matrices are IPv6 only; a dual lab probes IPv4.
"""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console

from podwire.common import agentapi, flowfilter, flowtext
from podwire.common.flow import from_json
from podwire.lab import cluster, manifests, probes, samples, views, workload
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


def run(layout: LabLayout, keep: bool = False, ip_family: str = "ipv4") -> int:
    console = Console()
    console.rule("podwire lab demo")
    state = cluster.up(layout, 2, ip_family=ip_family)
    family = 6 if ip_family == "ipv6" else 4
    try:
        kube = Kube(layout.host_kubeconfig)
        console.print(f"lab up: 2 nodes ({ip_family}), kubeconfig {state.kubeconfig}")
        grid = manifests.parse(samples.to_yaml(samples.grid()), "demo workload")
        for line in workload.apply(kube, state, grid):
            console.print(f"  {line}")
        views.print_listing("pods", kube.list_pods())
        views.print_matrix(probes.pod_matrix(kube, layout, 80, "TCP", 1.5, family),
                           f"TCP/80 IPv{family} without policy")

        console.print(f"applying NetworkPolicy x/{POLICY['metadata']['name']}: "
                      "pods in x admit only namespace y, on TCP 80")
        for line in workload.apply(kube, state, [manifests.check(POLICY, "demo policy")]):
            console.print(f"  {line}")
        views.print_matrix(probes.pod_matrix(kube, layout, 80, "TCP", 1.5, family),
                           f"TCP/80 IPv{family} with x-from-y-on-80")
        show_flows(console, state)
    finally:
        if not keep:
            cluster.down(layout)
            console.print("lab down")
    if keep:
        console.print(f"lab left up; `podwire lab --prefix {layout.prefix} down` removes it")
    return 0


def show_flows(console: Console, state: cluster.LabState) -> None:
    """The flows behind the second matrix into namespace x, allowed and denied, as
    `podwire observe` prints them."""
    console.rule(f"podwire observe --lab {state.prefix} --to-namespace x --type policy-verdict "
                 "--print-node-name")
    batches = []
    for node in state.node_layouts():
        try:
            batches.append([from_json(r) for r in agentapi.recent_flows(node.socket_path,
                                                                        last=500)])
        except agentapi.AgentError as exc:
            console.print(f"{node.name}: flows unavailable ({exc})")
    selection = flowfilter.build([("to-pod", "x/"), ("type", "policy-verdict")])
    into_x = [r for r in flowfilter.merge_by_time(batches) if selection.matches(r)]
    allowed = [r for r in into_x if r["allowed_by"].get("ingress")][-6:]
    denied = [r for r in into_x if r["verdict"] == "DROPPED"][-6:]
    for record in flowfilter.merge_by_time([allowed, denied]):
        console.print(flowtext.compact(record, node_name=True))

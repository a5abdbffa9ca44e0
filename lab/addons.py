"""The cluster add-ons `podwire lab up` installs: cluster DNS, as kubeadm installs CoreDNS,
and one Pod object per node for its podwire agent, as the DaemonSet makes them.

Service `kube-system/kube-dns` at the fixed address .10 of the service range (the
kubelet's clusterDNS), ports 53/UDP `dns` and 53/TCP `dns-tcp`, in front of one pod
labelled `k8s-app: kube-dns` that runs the lab's DNS server (`images.CLUSTER_DNS`).
"""

from __future__ import annotations

from typing import Any

from podwire.lab.images import CLUSTER_DNS
from podwire.lab.layout import DNS_SERVICE_IP, LabLayout

DNS_NAMESPACE = "kube-system"
DNS_SERVICE = "kube-dns"
DNS_POD = "coredns"
DNS_LABELS = {"k8s-app": "kube-dns"}
# The agents' pods: the lab runs each agent itself, in its node's namespace; the Pod object
# is what the cluster view finds and port-forwards to through the API server, the path a
# real cluster's DaemonSet pods are reached by. In kube-system with the lab's other own
# pods (the probe matrices leave them out); deploy/ puts them in podwire-system.
AGENT_NAMESPACE = "kube-system"
AGENT_LABELS = {"app.kubernetes.io/name": "podwire", "app.kubernetes.io/component": "agent"}


def dns_service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": DNS_SERVICE, "namespace": DNS_NAMESPACE,
                         "labels": {**DNS_LABELS, "kubernetes.io/name": "CoreDNS"}},
            "spec": {"clusterIP": DNS_SERVICE_IP, "selector": dict(DNS_LABELS), "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}}


def dns_pod(layout: LabLayout) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": DNS_POD, "namespace": DNS_NAMESPACE, "labels": dict(DNS_LABELS)},
            "spec": {"containers": [{
                "name": "coredns", "image": CLUSTER_DNS,
                "args": ["--revision-file", str(layout.revision_file("dns"))],
                "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                          {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]}]}}


def agent_pod(node: str) -> dict[str, Any]:
    """The agent's pod on `node`: hostNetwork, bound to the node, no ports of its own to
    serve (the agent, not the lab kubelet, listens)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"podwire-agent-{node}", "namespace": AGENT_NAMESPACE,
                         "labels": dict(AGENT_LABELS)},
            "spec": {"nodeName": node, "hostNetwork": True,
                     "containers": [{"name": "agent", "image": "podwire-agent"}]}}

"""The cluster add-ons `podwire lab up` installs: cluster DNS, as kubeadm installs CoreDNS.

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

"""What the real API server makes of itself at start: the system namespaces and Service
`default/kubernetes` (the range's first address, port 443 to the server's own address)
with its EndpointSlice, as kube-apiserver's bootstrap controllers do. Idempotent: a
restart over a saved state changes only what is missing or stale."""

from __future__ import annotations

import ipaddress
from typing import Any

from podwire.lab.api.errors import ApiError
from podwire.lab.api.kinds import ENDPOINT_SLICES, NAMESPACES, SERVICES
from podwire.lab.api.store import ApiStore

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
KUBERNETES_SERVICE = "kubernetes"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def kubernetes_service(cluster_ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": KUBERNETES_SERVICE, "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": cluster_ip, "type": "ClusterIP",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": 6443}]}}


def kubernetes_slice(host: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": KUBERNETES_SERVICE, "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: KUBERNETES_SERVICE}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [host], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


def _ensure(store: ApiStore, res: Any, namespace: str, body: dict[str, Any]) -> None:
    name = body["metadata"]["name"]
    try:
        store.get(res, namespace, name)
    except ApiError as err:
        if err.code != 404:
            raise
        store.create(res, namespace, body)


def bootstrap(store: ApiStore, advertise: tuple[str, int]) -> None:
    """Make the system namespaces and Service default/kubernetes pointing at `advertise`."""
    for name in SYSTEM_NAMESPACES:
        _ensure(store, NAMESPACES, "", {"metadata": {"name": name}})
    cluster_ip = str(store.ranges.cidrs[0].network_address + 1)  # of the primary family
    _ensure(store, SERVICES, "default", kubernetes_service(cluster_ip))
    host, port = advertise
    ipaddress.IPv4Address(host)
    wanted = kubernetes_slice(host, port)
    try:
        current = store.get(ENDPOINT_SLICES, "default", KUBERNETES_SERVICE)
    except ApiError as err:
        if err.code != 404:
            raise
        store.create(ENDPOINT_SLICES, "default", wanted)
        return
    if (current.get("endpoints"), current.get("ports")) != (wanted["endpoints"],
                                                            wanted["ports"]):
        current.update(endpoints=wanted["endpoints"], ports=wanted["ports"])
        store.update(ENDPOINT_SLICES, "default", KUBERNETES_SERVICE, current)

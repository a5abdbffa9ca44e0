"""The lab API server's Services as the real server treats them: defaults it fills,
ClusterIPs and node ports it allocates and frees, and the 422s it answers with field paths."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from apiserver_fixtures import api, core, kubeconfig, namespace, server  # noqa: F401
from kubernetes import client

from podwire.lab.layout import NODE_PORT_RANGE, SERVICE_CIDR


def service(name: str, ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name},
                     "ports": ports if ports is not None else [{"port": 80}], **spec}}


@pytest.fixture
def ns(core: client.CoreV1Api) -> str:  # noqa: F811
    core.create_namespace(namespace("a"))
    return "a"


def create(core: client.CoreV1Api, body: dict) -> dict:  # noqa: F811
    return core.api_client.sanitize_for_serialization(
        core.create_namespaced_service("a", body))


def invalid(core: client.CoreV1Api, body: dict) -> str:  # noqa: F811
    """The message of the 422 the server answers `body` with."""
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_service("a", body)
    status = json.loads(err.value.body)
    assert (err.value.status, status["reason"]) == (422, "Invalid"), status
    return str(status["message"])


def test_defaults_and_a_cluster_ip_from_the_range(core: client.CoreV1Api, ns: str) -> None:  # noqa: F811
    made = create(core, service("web"))
    spec = made["spec"]
    assert ipaddress.ip_address(spec["clusterIP"]) in SERVICE_CIDR
    assert spec["clusterIPs"] == [spec["clusterIP"]]
    assert (spec["type"], spec["sessionAffinity"], spec["internalTrafficPolicy"]) == (
        "ClusterIP", "None", "Cluster")
    assert (spec["ipFamilies"], spec["ipFamilyPolicy"]) == (["IPv4"], "SingleStack")
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]


def test_node_ports_are_allocated_and_freed(core: client.CoreV1Api, ns: str) -> None:  # noqa: F811
    made = create(core, service("np", type="NodePort"))
    port = made["spec"]["ports"][0]["nodePort"]
    assert port in NODE_PORT_RANGE
    assert made["spec"]["externalTrafficPolicy"] == "Cluster"
    taken = service("again", [{"port": 80, "nodePort": port}], type="NodePort")
    assert "spec.ports[0].nodePort" in invalid(core, taken)
    core.delete_namespaced_service("np", "a")
    assert create(core, taken)["spec"]["ports"][0]["nodePort"] == port


def test_a_cluster_ip_asked_for_is_honoured_once(core: client.CoreV1Api, ns: str) -> None:  # noqa: F811
    ip = str(SERVICE_CIDR[200])
    assert create(core, service("one", clusterIP=ip))["spec"]["clusterIP"] == ip
    assert "already allocated" in invalid(core, service("two", clusterIP=ip))
    headless = create(core, service("headless", clusterIP="None"))
    assert headless["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize(("body", "path"), [
    (service("s", [{"port": 0}]), "spec.ports[0].port"),
    (service("s", [{"port": 70000}]), "spec.ports[0].port"),
    (service("s", [{"port": 80, "protocol": "ICMP"}]), "spec.ports[0].protocol"),
    (service("s", [{"name": "a", "port": 80}, {"name": "a", "port": 81}]), "spec.ports[1].name"),
    (service("s", [{"port": 80}, {"port": 81}]), "spec.ports[0].name"),
    (service("s", clusterIP="10.200.0.5"), "spec.clusterIP"),
    (service("s", [{"port": 80, "nodePort": 80}], type="NodePort"), "spec.ports[0].nodePort"),
    (service("s", []), "spec.ports"),
])
def test_bad_services_are_invalid_with_the_field_path(core: client.CoreV1Api, ns: str,  # noqa: F811
                                                      body: dict, path: str) -> None:
    assert path in invalid(core, body)
    # A refused write takes nothing: the namespace still holds no Service.
    assert core.list_namespaced_service("a").items == []


def test_cluster_ip_is_immutable(core: client.CoreV1Api, ns: str) -> None:  # noqa: F811
    made = create(core, service("web"))
    made["spec"]["clusterIP"] = str(SERVICE_CIDR[300])
    made["spec"]["clusterIPs"] = [made["spec"]["clusterIP"]]
    with pytest.raises(client.ApiException) as err:
        core.replace_namespaced_service("web", "a", made)
    status = json.loads(err.value.body)
    assert (err.value.status, status["reason"]) == (422, "Invalid")
    assert "spec.clusterIP" in status["message"]

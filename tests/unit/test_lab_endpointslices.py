# ruff: noqa: F811 - pytest fixtures imported from apiserver_fixtures are parameters here
"""The EndpointSlice controller: its rules as pure functions, then the controller process's
class against the lab API server over the real wire protocol (pods created, relabelled,
made unready and deleted move their endpoints)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apiserver_fixtures import api, core, kubeconfig, namespace, server  # noqa: F401
from kubernetes import client
from waiting import wait_for

from podwire.lab import endpointslices as eps
from podwire.lab.revisionfile import read_revision
from podwire.lab.slicecontroller import SliceController


def svc(name: str, selector: dict[str, str] | None, ports: list[dict[str, Any]],
        ns: str = "x", uid: str = "svc-uid", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": ports, "clusterIP": "10.96.1.1", **spec}
    if selector is not None:
        body["selector"] = selector
    return {"metadata": {"name": name, "namespace": ns, "uid": uid, "labels": {"team": "t"}},
            "spec": body}


def running(name: str, ip: str, labels: dict[str, str], ports: list[dict[str, Any]] | None = None,
            ns: str = "x", ready: bool = True, node: str = "node1", **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": labels,
                         **meta},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}


def created_endpoints(plan: eps.SlicePlan) -> list[list[str]]:
    return [[e["addresses"][0] for e in s["endpoints"]] for s in plan.create]


# ---- the rules ---------------------------------------------------------------------------


def test_selected_pods_with_an_ip_become_endpoints() -> None:
    service = svc("web", {"app": "web"}, [{"port": 80, "targetPort": 8080, "protocol": "TCP"}])
    pods = [running("a", "10.244.1.5", {"app": "web"}),
            running("b", "10.244.2.5", {"app": "db"}),
            running("c", "10.244.1.6", {"app": "web"}, ns="y"),
            {**running("d", "", {"app": "web"}), "status": {"phase": "Pending"}},
            {**running("e", "10.244.1.9", {"app": "web"}),
             "status": {"phase": "Succeeded", "podIP": "10.244.1.9"}}]
    plan = eps.plan_service(service, pods, [])
    assert created_endpoints(plan) == [["10.244.1.5"]]
    made = plan.create[0]
    assert made["metadata"]["labels"] == {
        "team": "t", eps.SERVICE_NAME_LABEL: "web", eps.MANAGED_BY_LABEL: eps.CONTROLLER_NAME}
    assert made["metadata"]["ownerReferences"] == [{
        "apiVersion": "v1", "kind": "Service", "name": "web", "uid": "svc-uid",
        "controller": True, "blockOwnerDeletion": True}]
    assert made["metadata"]["generateName"] == "web-"
    assert made["addressType"] == "IPv4"
    assert made["ports"] == [{"name": "", "port": 8080, "protocol": "TCP"}]
    endpoint = made["endpoints"][0]
    assert endpoint["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert endpoint["nodeName"] == "node1"
    assert endpoint["targetRef"] == {"kind": "Pod", "namespace": "x", "name": "a",
                                     "uid": "uid-a"}


def test_conditions_follow_readiness_and_deletion() -> None:
    service = svc("web", {"app": "web"}, [{"port": 80}])
    unready = running("a", "10.244.1.5", {"app": "web"}, ready=False)
    going = running("b", "10.244.1.6", {"app": "web"}, deletionTimestamp="2026-01-01T00:00:00Z")
    plan = eps.plan_service(service, [unready, going], [])
    conds = {e["targetRef"]["name"]: e["conditions"] for e in plan.create[0]["endpoints"]}
    assert conds == {"a": {"ready": False, "serving": False, "terminating": False},
                     "b": {"ready": False, "serving": True, "terminating": True}}


def test_named_target_ports_resolve_per_pod_into_separate_slices() -> None:
    service = svc("web", {"app": "web"}, [{"name": "http", "port": 80, "targetPort": "web",
                                           "protocol": "TCP"}])
    on_8080 = [{"name": "web", "containerPort": 8080, "protocol": "TCP"}]
    on_9090 = [{"name": "web", "containerPort": 9090, "protocol": "TCP"}]
    udp_only = [{"name": "web", "containerPort": 7070, "protocol": "UDP"}]
    pods = [running("a", "10.244.1.5", {"app": "web"}, on_8080),
            running("b", "10.244.1.6", {"app": "web"}, on_9090),
            running("c", "10.244.1.7", {"app": "web"}, on_8080),
            running("d", "10.244.1.8", {"app": "web"}, udp_only)]
    plan = eps.plan_service(service, pods, [])
    by_ports = {s["ports"][0]["port"] if s["ports"] else None:
                sorted(e["addresses"][0] for e in s["endpoints"]) for s in plan.create}
    # d cannot resolve "web" on TCP: its endpoint has no port, as with the real controller.
    assert by_ports == {8080: ["10.244.1.5", "10.244.1.7"], 9090: ["10.244.1.6"],
                        None: ["10.244.1.8"]}


def test_at_most_100_endpoints_a_slice() -> None:
    service = svc("web", {"app": "web"}, [{"port": 80}])
    pods = [running(f"p{i}", f"10.244.{i // 200}.{i % 200 + 2}", {"app": "web"})
            for i in range(250)]
    plan = eps.plan_service(service, pods, [])
    assert sorted(len(s["endpoints"]) for s in plan.create) == [50, 100, 100]


def as_stored(plan: eps.SlicePlan) -> list[dict[str, Any]]:
    """The plan's new slices as the server would store them (named)."""
    out = []
    for i, body in enumerate(plan.create):
        stored = {**body, "metadata": {**body["metadata"], "name": f"web-{i}",
                                       "namespace": "x"}}
        out.append(stored)
    return out


def test_changes_touch_only_the_slices_that_hold_them() -> None:
    service = svc("web", {"app": "web"}, [{"port": 80}])
    pods = [running(f"p{i}", f"10.244.1.{i + 2}", {"app": "web"}) for i in range(150)]
    stored = as_stored(eps.plan_service(service, pods, []))
    assert eps.plan_service(service, pods, stored).empty
    # One pod leaves: only its slice is rewritten; one arrives: it fills the free room.
    gone = stored[1]["endpoints"][0]["targetRef"]["name"]
    fewer = [p for p in pods if p["metadata"]["name"] != gone]
    plan = eps.plan_service(service, fewer, stored)
    assert (plan.create, plan.delete) == ([], [])
    assert [s["metadata"]["name"] for s in plan.update] == ["web-1"]
    more = [*pods, running("new", "10.244.3.3", {"app": "web"})]
    plan = eps.plan_service(service, more, stored)
    assert [s["metadata"]["name"] for s in plan.update] == ["web-1"] and not plan.create


def test_no_endpoints_keeps_one_empty_slice_and_no_selector_is_left_alone() -> None:
    service = svc("web", {"app": "web"}, [{"port": 80}])
    plan = eps.plan_service(service, [], [])
    assert [(s["endpoints"], s["ports"]) for s in plan.create] == [([], [])]
    pods = [running("a", "10.244.1.5", {"app": "web"})]
    stored = as_stored(eps.plan_service(service, pods, []))
    plan = eps.plan_service(service, [], stored)
    assert [s["endpoints"] for s in plan.update] == [[]] and not plan.delete
    assert eps.plan_service(svc("ext", None, [{"port": 80}]), pods, []).empty
    assert eps.orphaned(stored, {}) == stored
    assert eps.orphaned(stored, {("x", "web"): service}) == []


def test_headless_slices_are_labelled() -> None:
    service = svc("db", {"app": "db"}, [{"port": 5432}], clusterIP="None")
    plan = eps.plan_service(service, [running("a", "10.244.1.5", {"app": "db"})], [])
    assert plan.create[0]["metadata"]["labels"][eps.HEADLESS_LABEL] == ""


# ---- the controller against the API server -------------------------------------------------


@pytest.fixture
def controller(api: client.ApiClient, tmp_path: Path) -> Iterator[SliceController]:
    ctl = SliceController(api, tmp_path / "slices.revision")
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()


def make_running(core_api: client.CoreV1Api, name: str, labels: dict[str, str], ip: str,
                 ready: bool = True) -> None:
    core_api.create_namespaced_pod("x", {
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "i", "ports": [
            {"name": "web", "containerPort": 8080}]}]}})
    core_api.patch_namespaced_pod_status(name, "x", {"status": {
        "phase": "Running", "podIP": ip,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}})


def endpoints_of(disc: client.DiscoveryV1Api, service: str) -> dict[str, bool]:
    slices = disc.list_namespaced_endpoint_slice(
        "x", label_selector=f"{eps.SERVICE_NAME_LABEL}={service}").items
    return {e.addresses[0]: e.conditions.ready for s in slices for e in s.endpoints or []}


def test_controller_follows_pods_and_labels(controller: SliceController,
                                            core: client.CoreV1Api,
                                            api: client.ApiClient,
                                            tmp_path: Path) -> None:
    disc = client.DiscoveryV1Api(api)
    core.create_namespace(namespace("x"))
    make_running(core, "a", {"app": "web"}, "10.244.1.5")
    core.create_namespaced_service("x", {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "web"}]}})
    wait_for(lambda: endpoints_of(disc, "web") == {"10.244.1.5": True}, "first slice", 10)
    slices = disc.list_namespaced_endpoint_slice("x").items
    assert [s.ports[0].port for s in slices] == [8080]
    make_running(core, "b", {"app": "web"}, "10.244.1.6", ready=False)
    wait_for(lambda: endpoints_of(disc, "web") == {"10.244.1.5": True, "10.244.1.6": False}, "unready pod listed as not ready", 10)
    core.patch_namespaced_pod_status("b", "x", {"status": {"conditions": [
        {"type": "Ready", "status": "True"}]}})
    wait_for(lambda: endpoints_of(disc, "web") == {"10.244.1.5": True, "10.244.1.6": True}, "pod turned ready", 10)
    core.patch_namespaced_pod("a", "x", {"metadata": {"labels": {"app": "other"}}})
    wait_for(lambda: endpoints_of(disc, "web") == {"10.244.1.6": True}, "relabelled away", 10)
    core.delete_namespaced_pod("b", "x")
    wait_for(lambda: endpoints_of(disc, "web") == {}, "pod deleted", 10)
    assert len(disc.list_namespaced_endpoint_slice("x").items) == 1  # the empty one stays
    written = int(core.list_namespace().metadata.resource_version)
    wait_for(lambda: (read_revision(tmp_path / "slices.revision") or 0) >= written, "controller reports its revision", 10)
    core.delete_namespaced_service("web", "x")
    wait_for(lambda: disc.list_namespaced_endpoint_slice("x").items == [], "slices of a deleted Service removed", 10)

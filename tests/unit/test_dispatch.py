"""Watch events reach the node's model through one handler pair per kind: objects that
are there are set, deleted ones removed, bookmarks change nothing, and an object the
model cannot take is left out without stopping the stream."""

from __future__ import annotations

from typing import Any

from podwire.agent.desired import NodeState
from podwire.agent.dispatch import HANDLERS, apply_event, node_info
from podwire.agent.nodes import NodeInfo
from podwire.agent.watch import KINDS, EventType, WatchEvent

RV = 7


def event(kind: str, type: EventType, obj: dict[str, Any]) -> WatchEvent:
    return WatchEvent(kind, type, obj, RV, RV)


def meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "resourceVersion": str(RV), **extra}
    if namespace is not None:
        body["namespace"] = namespace
    return body


NAMESPACE = {"metadata": meta("x", labels={"team": "a"})}
POD = {"metadata": meta("a", "x", labels={"app": "a"}), "spec": {"nodeName": "n1"},
       "status": {"podIP": "10.244.1.2"}}
POLICY = {"metadata": meta("deny", "x"), "spec": {"podSelector": {}}}
NODE = {"metadata": meta("n2"), "spec": {"podCIDR": "10.244.2.0/24"},
        "status": {"addresses": [{"type": "Hostname", "address": "n2"},
                                 {"type": "InternalIP", "address": "10.0.0.2"}]}}


def test_every_watched_kind_has_handlers() -> None:
    assert set(HANDLERS) == set(KINDS)


def test_added_objects_enter_the_model_and_deleted_ones_leave() -> None:
    state = NodeState("n1")
    for kind, obj in (("Namespace", NAMESPACE), ("Pod", POD), ("NetworkPolicy", POLICY),
                      ("Node", NODE)):
        apply_event(state, event(kind, EventType.ADDED, obj))
    pod = state.cluster.pod("x", "a")
    assert pod is not None and pod.labels == {"app": "a"} and pod.ip == "10.244.1.2"
    assert [p.key for p in state.cluster.policies_in("x")] == ["x/deny"]
    assert state.nodes.get("n2") == NodeInfo("n2", "10.0.0.2", "10.244.2.0/24", ("10.0.0.2",))
    apply_event(state, event("Pod", EventType.DELETED, POD))
    apply_event(state, event("NetworkPolicy", EventType.DELETED, POLICY))
    apply_event(state, event("Node", EventType.DELETED, NODE))
    assert state.cluster.pod("x", "a") is None
    assert list(state.cluster.policies_in("x")) == []
    assert state.nodes.get("n2") is None


def test_modified_replaces_and_bookmarks_change_nothing() -> None:
    state = NodeState("n1")
    apply_event(state, event("Namespace", EventType.ADDED, NAMESPACE))
    apply_event(state, event("Pod", EventType.ADDED, POD))
    relabelled = {**POD, "metadata": meta("a", "x", labels={"app": "b"})}
    apply_event(state, event("Pod", EventType.MODIFIED, relabelled))
    apply_event(state, event("Pod", EventType.BOOKMARK, {"metadata": meta("")}))
    pod = state.cluster.pod("x", "a")
    assert pod is not None and pod.labels == {"app": "b"}


def test_a_policy_the_model_rejects_is_reported_and_a_bad_pod_left_out() -> None:
    state = NodeState("n1")
    bad_policy = {"metadata": meta("broken", "x"), "spec": {"podSelector": {},
                                                            "policyTypes": ["Sideways"]}}
    apply_event(state, event("NetworkPolicy", EventType.ADDED, bad_policy))
    assert list(state.policy_problems) == ["x/broken"]
    assert state.policy_problems["x/broken"].resource_version == str(RV)
    bad_pod = {"metadata": meta("p", "x"), "status": {"podIP": "10.0.0.300"}}
    apply_event(state, event("Pod", EventType.ADDED, bad_pod))
    assert state.cluster.pod("x", "p") is None


def test_node_info_takes_the_internal_address() -> None:
    assert node_info(NODE) == NodeInfo("n2", "10.0.0.2", "10.244.2.0/24", ("10.0.0.2",))
    external = {**NODE, "status": {"addresses": [
        {"type": "ExternalIP", "address": "203.0.113.7"}, *NODE["status"]["addresses"]]}}
    assert node_info(external) == NodeInfo("n2", "10.0.0.2", "10.244.2.0/24",
                                           ("203.0.113.7", "10.0.0.2"))
    assert node_info({"metadata": {"name": "n3"}}) == NodeInfo("n3", None, None)


def test_node_info_keeps_pod_cidrs_per_family() -> None:
    dual = {**NODE, "spec": {"podCIDR": "10.244.2.0/24",
                             "podCIDRs": ["10.244.2.0/24", "fd00:10:244:2::/64"]}}
    info = node_info(dual)
    assert (info.pod_cidr, info.pod_cidrs) == ("10.244.2.0/24",
                                               ("10.244.2.0/24", "fd00:10:244:2::/64"))
    # Both families' pod CIDRs go to the ipcache (IPv6 ones to ipcache6).
    assert [str(p) for p in info.prefixes()] == ["10.0.0.2/32", "10.244.2.0/24",
                                                 "fd00:10:244:2::/64"]
    only6 = node_info({**NODE, "spec": {"podCIDRs": ["fd00:10:244:2::/64"]}})
    assert (only6.pod_cidr, only6.pod_cidrs) == ("fd00:10:244:2::/64", ("fd00:10:244:2::/64",))
    assert [str(p) for p in only6.prefixes()] == ["10.0.0.2/32", "fd00:10:244:2::/64"]

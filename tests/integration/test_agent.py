"""The agent end to end on one node: watches, model, maps, datapath, CNI, flows.

One node is shared by the module (the agent compiles the datapath once); each test
leaves the cluster as it found it except for what it documents.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agent_node import AgentNode, network_policy, wait_for
from echostream import EchoStream

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def node() -> Iterator[AgentNode]:
    node = AgentNode()
    try:
        node.start()
        node.namespace("x", {"team": "x"})
        node.namespace("y", {"team": "y"})
        for ns in ("x", "y"):
            for name in ("a", "b"):
                node.pod(ns, name, {"app": name})
        yield node
    finally:
        node.close()


def test_pods_reach_each_other_before_any_policy(node: AgentNode) -> None:
    for src in node.pods:
        for dst in node.pods:
            if src != dst:
                assert node.can_reach(src, dst), f"{src} -> {dst}"


def test_policy_lifecycle_reaches_the_datapath(node: AgentNode) -> None:
    rv = node.policy(network_policy("x", "b-from-x", {
        "podSelector": {"matchLabels": {"app": "b"}},
        "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": "http"}]}],
    }))
    node.wait_enforced(rv)
    assert node.can_reach("x/a", "x/b")
    assert not node.can_reach("y/a", "x/b")
    assert node.can_reach("y/a", "x/a"), "x/a is not selected: still open"

    drops = wait_for(lambda: [f for f in node.flows() if f["verdict"] == "DROPPED"
                              and f["source"]["pod"] == "a" and f["source"]["namespace"] == "y"
                              and f["destination"]["pod"] == "b"], "a drop flow record")
    assert drops[-1]["drop_reason"] == "POLICY_DENIED"
    assert drops[-1]["isolated_by"] == ["x/b-from-x"]
    assert drops[-1]["direction"] == "ingress"
    allowed = [f for f in node.flows() if f["verdict"] == "FORWARDED"
               and f["allowed_by"].get("ingress") == "x/b-from-x"]
    assert allowed, "the allowed connection names the policy that allowed it"

    # Update: admit namespace y instead of x.
    assert node.net is not None
    patched = node.net.patch_namespaced_network_policy("b-from-x", "x", {"spec": {"ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}]}]}})
    node.wait_enforced(patched.metadata.resource_version)
    assert node.can_reach("y/a", "x/b")
    assert not node.can_reach("x/a", "x/b")

    # Labels move a pod out of the selection: x/b is no longer isolated.
    assert node.core is not None
    relabelled = node.core.patch_namespaced_pod("b", "x", {"metadata": {"labels": {"app": "c"}}})
    node.wait_enforced(relabelled.metadata.resource_version)
    assert node.can_reach("x/a", "x/b")
    relabelled = node.core.patch_namespaced_pod("b", "x", {"metadata": {"labels": {"app": "b"}}})
    node.wait_enforced(relabelled.metadata.resource_version)
    assert not node.can_reach("x/a", "x/b")

    node.net.delete_namespaced_network_policy("b-from-x", "x")
    node.wait_enforced(node.api.store.resource_version)
    assert node.can_reach("x/a", "x/b")


def test_malformed_policy_is_reported_and_the_rest_stays_enforced(node: AgentNode) -> None:
    rv = node.policy(network_policy("y", "deny-b", {"podSelector": {"matchLabels": {"app": "b"}}}))
    node.wait_enforced(rv)
    assert not node.can_reach("x/a", "y/b")
    # Structurally fine for the API server, semantically wrong: except outside cidr.
    bad = node.policy(network_policy("y", "broken", {
        "podSelector": {}, "ingress": [{"from": [{"ipBlock": {
            "cidr": "10.0.0.0/16", "except": ["192.168.0.0/24"]}}]}]}))
    node.wait_enforced(bad)
    problems = node.status()["policy_errors"]
    assert [p["key"] for p in problems] == ["y/broken"]
    assert "except" in problems[0]["message"]
    assert not node.can_reach("x/a", "y/b"), "the valid policy is still enforced"
    assert node.can_reach("x/a", "y/a"), "the broken policy was skipped, not applied"
    assert node.net is not None
    node.net.delete_namespaced_network_policy("broken", "y")
    node.net.delete_namespaced_network_policy("deny-b", "y")
    node.wait_enforced(node.api.store.resource_version)
    assert node.status()["policy_errors"] == []
    assert node.can_reach("x/a", "y/b")


def test_api_faults_keep_enforcement_and_the_agent_reconverges(node: AgentNode) -> None:
    rv = node.policy(network_policy("x", "deny-a", {"podSelector": {"matchLabels": {"app": "a"}}}))
    node.wait_enforced(rv)
    assert not node.can_reach("y/b", "x/a")

    # The API server goes away: the datapath keeps enforcing the last state.
    node.api.stop()
    assert not node.can_reach("y/b", "x/a")
    assert node.can_reach("y/b", "x/b")
    node.api.start()
    assert node.net is not None
    rv = node.policy(network_policy("x", "deny-b", {"podSelector": {"matchLabels": {"app": "b"}}}))
    node.wait_enforced(rv)
    assert not node.can_reach("y/b", "x/b"), "a change made after the restart arrives"

    # History compacted while the agent's watches are cut: they get 410 and relist.
    node.api.compact()
    node.net.delete_namespaced_network_policy("deny-a", "x")
    node.api.drop_watches()
    node.api.compact()
    node.wait_enforced(node.api.store.resource_version)
    assert node.can_reach("y/b", "x/a"), "a deletion missed during the outage is seen"
    assert not node.can_reach("y/b", "x/b")
    node.net.delete_namespaced_network_policy("deny-b", "x")
    node.wait_enforced(node.api.store.resource_version)
    assert node.can_reach("y/b", "x/b")


def test_established_stream_survives_agent_restart(node: AgentNode) -> None:
    """A TCP stream keeps flowing while the agent restarts: maps and programs are pinned."""
    dst = node.pods["y/b"]
    with EchoStream(dst["netns"], node.pods["x/a"]["netns"], 7000, (dst["ip"], 7000)) as stream:
        stream.wait_flowing("the stream to flow")
        node.stop_agent()
        stream.wait_flowing("the stream to flow with no agent")
        node.start_agent()
        stream.wait_flowing("the stream to flow after the restart")
    assert not stream.errors, stream.errors
    assert max(stream.gaps) < 1.0, f"the stream stalled for {max(stream.gaps):.2f}s"
    # The restarted agent adopted the maps: its view equals a fresh computation.
    assert node.status()["endpoints"] and len(node.status()["endpoints"]) == 4
    assert node.can_reach("x/a", "y/b")

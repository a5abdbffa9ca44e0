"""Cluster policy tiers end to end on one node: the real agent, datapath and API stand-in.

The agent starts before the network-policy-api CRDs exist (it must work without them),
then picks the kinds up when they are installed. Then, through real packets: an Admin
Deny wins over a NetworkPolicy's allow, a Pass hands the decision to NetworkPolicy, the
Baseline tier applies only where no NetworkPolicy isolates, and audit mode forwards
what it would deny, reports it as AUDIT naming the rule, counts it, and switching back
to enforce is an ordinary update. Each test removes the policies it made.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agent_node import AgentNode, network_policy, wait_for
from kubernetes import client, config

pytestmark = pytest.mark.timeout(600)

GROUP = "policy.networking.k8s.io"
CRDS = Path(__file__).resolve().parents[2] / "deploy/05-network-policy-api.yaml"
PLURALS = {"ClusterNetworkPolicy": ("v1alpha2", "clusternetworkpolicies"),
           "AdminNetworkPolicy": ("v1alpha1", "adminnetworkpolicies"),
           "BaselineAdminNetworkPolicy": ("v1alpha1", "baselineadminnetworkpolicies")}


class Cluster:
    """The node, and clients for the CRDs and the cluster policies."""

    def __init__(self, node: AgentNode) -> None:
        api = config.new_client_from_config(str(node.workdir / "kubeconfig"))
        self.node = node
        self.crds = client.ApiextensionsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def install_crds(self) -> None:
        for doc in yaml.safe_load_all(CRDS.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                self.crds.create_custom_resource_definition(doc)

    def create(self, obj: dict[str, Any]) -> str:
        version, plural = PLURALS[obj["kind"]]
        made = self.custom.create_cluster_custom_object(GROUP, version, plural, obj)
        return str(made["metadata"]["resourceVersion"])

    def replace(self, obj: dict[str, Any]) -> str:
        version, plural = PLURALS[obj["kind"]]
        current = self.custom.get_cluster_custom_object(GROUP, version, plural,
                                                        obj["metadata"]["name"])
        obj = {**obj, "metadata": {**obj["metadata"],
                                   "resourceVersion": current["metadata"]["resourceVersion"]}}
        made = self.custom.replace_cluster_custom_object(GROUP, version, plural,
                                                         obj["metadata"]["name"], obj)
        return str(made["metadata"]["resourceVersion"])

    def delete(self, kind: str, name: str) -> None:
        version, plural = PLURALS[kind]
        self.custom.delete_cluster_custom_object(GROUP, version, plural, name)
        wait_for(lambda: f"{kind}/{name}" not in self.node.status().get("cluster_policies", []),
                 f"the agent to forget {kind}/{name}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    node = AgentNode()
    try:
        node.start()
        node.namespace("x", {"team": "x"})
        node.namespace("y", {"team": "y"})
        for pod in ("x/a", "x/b", "y/a"):
            ns, name = pod.split("/")
            node.pod(ns, name, {"app": name})
        yield Cluster(node)
    finally:
        node.close()


def cnp(name: str, tier: str, priority: int, subject: dict[str, Any],
        ingress: list[dict[str, Any]], annotations: dict[str, str] | None = None
        ) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"tier": tier, "priority": priority, "subject": subject,
                     "ingress": ingress}}


X_B = {"pods": {"namespaceSelector": {"matchLabels": {"team": "x"}},
                "podSelector": {"matchLabels": {"app": "b"}}}}
FROM_X_A = [{"pods": {"namespaceSelector": {"matchLabels": {"team": "x"}},
                      "podSelector": {"matchLabels": {"app": "a"}}}}]


def last_flow(node: AgentNode, src: str, dst: str, verdict: str) -> dict[str, Any]:
    def find() -> list[dict[str, Any]]:
        return [f for f in node.flows() if f["verdict"] == verdict
                and f"{f['source']['namespace']}/{f['source']['pod']}" == src
                and f"{f['destination']['namespace']}/{f['destination']['pod']}" == dst]
    found: list[dict[str, Any]] = wait_for(find, f"a {verdict} record {src} -> {dst}")
    return found[-1]


def test_the_agent_works_without_the_crds_and_takes_them_up_when_installed(
        cluster: Cluster) -> None:
    node = cluster.node
    assert set(node.status()["absent_kinds"]) == set(PLURALS)
    assert node.can_reach("x/a", "x/b"), "without cluster policies pods reach each other"
    cluster.install_crds()
    wait_for(lambda: node.status().get("absent_kinds") == [], "the agent to see the CRDs")


def test_admin_deny_wins_over_a_networkpolicy_allow_and_pass_hands_over(
        cluster: Cluster) -> None:
    node = cluster.node
    assert node.net is not None
    node.wait_enforced(node.policy(network_policy("x", "b-from-x", {
        "podSelector": {"matchLabels": {"app": "b"}},
        "ingress": [{"from": [{"podSelector": {}}]}]})))
    try:
        assert node.can_reach("x/a", "x/b")
        node.wait_enforced(cluster.create(cnp("deny-a", "Admin", 20, X_B, [
            {"name": "no-a", "action": "Deny", "from": FROM_X_A}])))
        assert not node.can_reach("x/a", "x/b"), "Admin Deny over the NetworkPolicy allow"
        drop = last_flow(node, "x/a", "x/b", "DROPPED")
        assert drop["isolated_by"] == ["ClusterNetworkPolicy/deny-a"]
        assert drop["decided_by"]["ingress"] == {
            "tier": "Admin", "policy": "ClusterNetworkPolicy/deny-a", "rule": "no-a",
            "action": "Deny"}

        node.wait_enforced(cluster.create(cnp("pass-a", "Admin", 10, X_B, [
            {"name": "to-np", "action": "Pass", "from": FROM_X_A}])))
        assert node.can_reach("x/a", "x/b"), "a Pass before the Deny: NetworkPolicy decides"
        allowed = last_flow(node, "x/a", "x/b", "FORWARDED")
        assert allowed["allowed_by"]["ingress"] == "x/b-from-x"
        assert allowed["decided_by"]["ingress"]["tier"] == "NetworkPolicy"
        cluster.delete("ClusterNetworkPolicy", "pass-a")
        assert not node.can_reach("x/a", "x/b")
        cluster.delete("ClusterNetworkPolicy", "deny-a")
        assert node.can_reach("x/a", "x/b")
    finally:
        node.net.delete_namespaced_network_policy("b-from-x", "x")


def test_baseline_applies_only_where_no_networkpolicy_isolates_and_audit_reports(
        cluster: Cluster) -> None:
    node = cluster.node
    assert node.net is not None
    baseline = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
                "metadata": {"name": "default"},
                "spec": {"subject": {"namespaces": {}}, "ingress": [
                    {"name": "closed", "action": "Deny", "from": [{"namespaces": {}}]}]}}
    node.wait_enforced(node.policy(network_policy("x", "b-from-x", {
        "podSelector": {"matchLabels": {"app": "b"}},
        "ingress": [{"from": [{"podSelector": {}}]}]})))
    try:
        node.wait_enforced(cluster.create(baseline))
        assert not node.can_reach("x/a", "y/a"), "no NetworkPolicy isolates y/a: Baseline denies"
        assert node.can_reach("x/a", "x/b"), "x/b is isolated by NetworkPolicy, which allows"
        assert not node.can_reach("x/b", "x/a"), "x/a: no NetworkPolicy, Baseline denies"

        audited = {**baseline, "metadata": {"name": "default", "annotations": {
            "podwire.io/enforcement": "audit"}}}
        node.wait_enforced(cluster.replace(audited))
        assert node.can_reach("x/a", "y/a"), "audit mode forwards what it would deny"
        record = last_flow(node, "x/a", "y/a", "AUDIT")
        assert record["isolated_by"] == ["BaselineAdminNetworkPolicy/default"]
        assert record["drop_reason"] is None and record["direction"] == "ingress"
        assert record["decided_by"]["ingress"] == {
            "tier": "Baseline", "policy": "BaselineAdminNetworkPolicy/default",
            "rule": "closed", "action": "Audit"}
        counters = node.status()["counters"]
        assert any(c["reason"] == "AUDIT" and c["direction"] == "ingress" and c["packets"]
                   for c in counters), counters

        node.wait_enforced(cluster.replace(baseline))
        assert not node.can_reach("x/a", "y/a"), "back to enforce: an ordinary update"
        cluster.delete("BaselineAdminNetworkPolicy", "default")
        assert node.can_reach("x/a", "y/a")
    finally:
        node.net.delete_namespaced_network_policy("b-from-x", "x")


def test_an_audited_networkpolicy_forwards_and_reports(cluster: Cluster) -> None:
    node = cluster.node
    assert node.net is not None
    policy = network_policy("y", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]})
    policy["metadata"]["annotations"] = {"podwire.io/enforcement": "audit"}
    node.wait_enforced(node.policy(policy))
    try:
        assert node.can_reach("x/b", "y/a")
        record = last_flow(node, "x/b", "y/a", "AUDIT")
        assert record["isolated_by"] == ["y/deny-in"]
    finally:
        node.net.delete_namespaced_network_policy("deny-in", "y")

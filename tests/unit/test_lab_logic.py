"""The lab's pure parts: names and addresses, manifest checks, scheduling, CNI env."""

from __future__ import annotations

import ipaddress

import pytest

from podwire.lab import cluster, cniexec, hostports, kubelet, manifests, samples, workload
from podwire.lab.echo import Port, answer, parse_answer
from podwire.lab.layout import LabLayout


def test_layout_names_and_addresses_follow_the_contract() -> None:
    layout = LabLayout()
    node = layout.node(2)
    assert (node.name, node.netns, node.underlay_ip, node.pod_cidr) == (
        "node2", "pwlab-node2", "10.98.0.12", "10.244.2.0/24")
    assert str(node.pin_dir) == "/sys/fs/bpf/podwire/pwlab-node2"
    assert str(node.socket_path).startswith("/run/podwire-lab/node2/")
    assert (layout.underlay_netns, layout.external_netns) == ("pwlab-ul", "pwlab-ext")
    assert layout.pod_netns("uid-1").startswith("pwlab-p-")
    assert layout.pod_netns("uid-1") != layout.pod_netns("uid-2")
    assert len(node.bridge_port) <= 15


def test_test_labs_keep_apart_from_the_default_one() -> None:
    other = LabLayout("pwtq")
    assert other.run_dir != LabLayout().run_dir
    assert other.node(1).pin_dir != LabLayout().node(1).pin_dir
    assert not other.pod_netns("u").startswith("pwlab-")


@pytest.mark.parametrize("prefix", ["", "a", "pw-lab", "PWLAB", "toolongprefix1", "pw lab"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        LabLayout(prefix)


def test_samples_spread_every_namespace_over_both_nodes() -> None:
    objects = manifests.parse(samples.to_yaml(samples.grid()))
    pods = [m for m in objects if m.kind == "Pod"]
    assert len(pods) == 9
    for ns in "xyz":
        nodes = {m.body["spec"]["nodeName"] for m in pods if m.namespace == ns}
        assert nodes == {"node1", "node2"}


def test_manifests_default_the_namespace_and_order_namespaces_first() -> None:
    text = samples.to_yaml([samples.pod("x", "a", (80,)), samples.namespace("x")])
    parsed = manifests.ordered(manifests.parse(text))
    assert [m.kind for m in parsed] == ["Namespace", "Pod"]
    bare = manifests.parse("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
                           "spec: {containers: [{name: c}]}\n")
    assert bare[0].namespace == "default"


@pytest.mark.parametrize(("text", "message"), [
    ("a: [\n", "not valid YAML"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: s}\n", "unknown kind 'Deployment'"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 0}]}\n",
     "Service default/s: .*spec.ports\\[0\\].port: Invalid value: 0"),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {}\n", "Namespace without metadata.name"),
    ("apiVersion: v2\nkind: Namespace\nmetadata: {name: n}\n", "apiVersion 'v2'"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n", "Pod default/p"),
    (("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: "
     "[{containerPort: 70000}]}]}\n"), "bad containerPort 70000"),
    (("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: "
     "[{containerPort: 80, protocol: QUIC}]}]}\n"), "protocol 'QUIC'"),
    (("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {hostNetwork: 'yes', "
      "containers: [{name: c}]}\n"), "spec.hostNetwork must be true or false"),
    (("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\n"
     "spec: {podSelector: {}, ingress: [{ports: [{port: 0}]}]}\n"), "NetworkPolicy default/np"),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: n, labels: {a: [1]}}\n", "labels"),
])
def test_bad_manifests_name_the_object_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(manifests.ManifestError, match=message.replace("(", r"\(")):
        manifests.parse(text, "f.yaml")


def test_kind_aliases() -> None:
    assert manifests.kind_from_cli("netpol") == "NetworkPolicy"
    assert manifests.kind_from_cli("po") == "Pod"
    assert manifests.kind_from_cli("svc") == "Service"
    with pytest.raises(manifests.ManifestError, match="unknown kind 'deploy'"):
        manifests.kind_from_cli("deploy")
    assert manifests.kind_from_cli("cnp") == "ClusterNetworkPolicy"
    assert manifests.kind_from_cli("adminnetworkpolicies") == "AdminNetworkPolicy"
    assert manifests.kind_from_cli("BANP") == "BaselineAdminNetworkPolicy"


CLUSTER_POLICIES = """\
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: x}
spec: {containers: [{name: c}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny-x}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  ingress: [{action: Deny, from: [{namespaces: {matchLabels: {team: x}}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress: [{action: Deny, from: [{namespaces: {}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: dns}
spec:
  priority: 1
  subject: {namespaces: {}}
  egress: [{action: Allow, to: [{namespaces: {}}], ports: [{portNumber: {port: 53, protocol: UDP}}]}]
"""


def test_cluster_policies_are_cluster_scoped_and_applied_before_pods() -> None:
    parsed = manifests.ordered(manifests.parse(CLUSTER_POLICIES))
    assert [m.kind for m in parsed] == ["AdminNetworkPolicy", "BaselineAdminNetworkPolicy",
                                        "ClusterNetworkPolicy", "Pod"]
    assert [m.namespace for m in parsed[:3]] == [None, None, None]
    assert parsed[2].ref == "ClusterNetworkPolicy/deny-x"
    assert manifests.ordered(parsed, reverse=True)[0].kind == "Pod"


@pytest.mark.parametrize(("change", "message"), [
    (("priority: 5", "priority: 5000"),
     "ClusterNetworkPolicy 'deny-x': spec.priority: .*5000"),
    (("name: default", "name: other"), "BaselineAdminNetworkPolicy 'other': metadata.name"),
    (("action: Allow", "action: Accept"),
     "AdminNetworkPolicy 'dns': spec.egress\\[0\\].action"),
    (("v1alpha2", "v1alpha1"), "ClusterNetworkPolicy 'deny-x' has apiVersion"),
])
def test_bad_cluster_policies_name_the_policy_and_the_field(change: tuple[str, str],
                                                           message: str) -> None:
    with pytest.raises(manifests.ManifestError, match=message):
        manifests.parse(CLUSTER_POLICIES.replace(*change), "f.yaml")


def test_scheduler_stand_in_picks_the_least_loaded_node() -> None:
    pods = [{"spec": {"nodeName": "node1"}}, {"spec": {"nodeName": "node1"}},
            {"spec": {"nodeName": "node2"}}, {"spec": {}}]
    assert kubelet.pick_node(pods, ["node1", "node2", "node3"]) == "node3"
    assert kubelet.pick_node(pods, ["node1", "node2"]) == "node2"
    assert kubelet.pick_node([], ["node1", "node2"]) == "node1"
    dns = {"metadata": {"namespace": "kube-system"}, "spec": {"nodeName": "node1"}}
    assert kubelet.pick_node([dns], ["node1", "node2"]) == "node1"


def test_only_live_pods_bound_to_the_node_get_a_sandbox() -> None:
    live = {"metadata": {}, "spec": {"nodeName": "node1"}, "status": {"phase": "Pending"}}
    assert kubelet.wants_sandbox(live, "node1")
    assert not kubelet.wants_sandbox(live, "node2")
    going = {"metadata": {"deletionTimestamp": "now"}, "spec": {"nodeName": "node1"}}
    assert not kubelet.wants_sandbox(going, "node1")
    done = {"metadata": {}, "spec": {"nodeName": "node1"}, "status": {"phase": "Succeeded"}}
    assert not kubelet.wants_sandbox(done, "node1")


def test_pod_ports_cover_every_container_and_protocol() -> None:
    pod = samples.pod("x", "a", (80, 81))
    assert kubelet.pod_ports(pod) == [Port(80, "TCP"), Port(80, "UDP"), Port(80, "SCTP"),
                                      Port(81, "TCP"), Port(81, "UDP"), Port(81, "SCTP")]


def test_cni_environment_is_what_a_runtime_sends(tmp_path: object) -> None:
    sb = cniexec.Sandbox("x", "a", "uid-1", "c" * 64, "pwlab-p-0123456789")
    env = cniexec.environment("ADD", sb, tmp_path)  # type: ignore[arg-type]
    assert env["CNI_NETNS"] == "/run/netns/pwlab-p-0123456789"
    assert env["CNI_IFNAME"] == "eth0"
    assert env["CNI_CONTAINERID"] == "c" * 64
    args = dict(kv.split("=", 1) for kv in env["CNI_ARGS"].split(";"))
    assert args == {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "x", "K8S_POD_NAME": "a",
                    "K8S_POD_INFRA_CONTAINER_ID": "c" * 64, "K8S_POD_UID": "uid-1"}


def test_plugin_configs_carry_the_list_name_and_version() -> None:
    conflist = {"cniVersion": "1.1.0", "name": "n", "plugins": [{"type": "a"}, {"type": "b"}]}
    assert cniexec.plugin_configs(conflist) == [
        {"type": "a", "cniVersion": "1.1.0", "name": "n"},
        {"type": "b", "cniVersion": "1.1.0", "name": "n"}]


def test_first_ipv4_skips_ipv6_and_refuses_none() -> None:
    result = {"ips": [{"address": "fd00::2/64"}, {"address": "10.244.1.7/24"}]}
    assert cniexec.first_ipv4(result) == "10.244.1.7"
    assert ipaddress.ip_address(cniexec.first_ipv4(result))
    with pytest.raises(cniexec.CniError, match="no IPv4"):
        cniexec.first_ipv4({"ips": []})


def test_answers_name_the_server_and_the_peer() -> None:
    line = answer("x/a", "UDP", 81, ("10.98.0.11", 4000)).decode()
    assert parse_answer(line) == {"name": "x/a", "proto": "UDP", "port": "81",
                                  "peer": "10.98.0.11:4000"}
    assert parse_answer("HTTP/1.1 400 Bad Request\n") == {}


@pytest.mark.parametrize("text", ["80/QUIC", "x/TCP", "0", "70000/udp"])
def test_bad_ports_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad port"):
        Port.parse(text)


def test_label_patch_sets_changes_and_removes() -> None:
    old = {"metadata": {"labels": {"a": "1", "b": "2", "kubernetes.io/metadata.name": "x"}}}
    new = {"metadata": {"labels": {"a": "1", "b": "3", "c": "4"}}}
    assert workload._labels_patch(old, new) == {"b": "3", "c": "4"}
    assert workload._labels_patch(new, {"metadata": {}}) == {"a": None, "b": None, "c": None}


def test_host_pods_take_their_ports_per_protocol_on_their_node() -> None:
    first = samples.host_pod("h", "one", (80,), "node1")
    assert hostports.node_ports(first) == {(80, "TCP"), (80, "UDP"), (80, "SCTP")}
    assert hostports.node_ports(samples.pod("x", "a", (80,))) == set()
    udp_only = samples.host_pod("h", "udp", (80,), "node1")
    udp_only["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "protocol": "UDP"}]
    assert hostports.conflict(udp_only, [first]) == (
        "node port 80/UDP is taken by hostNetwork pod h/one")
    other_port = samples.host_pod("h", "two", (81,), "node1")
    assert hostports.conflict(other_port, [first]) is None
    assert hostports.conflict(first, [first]) is None  # a pod never conflicts with itself
    assert hostports.conflict(samples.pod("x", "a", (80,)), [first]) is None


def test_the_scheduler_places_a_host_pod_where_its_ports_are_free() -> None:
    taken = samples.host_pod("h", "one", (80,), "node1")
    busy = [samples.pod("x", n, (80,), node="node2") for n in "abc"]
    unbound = samples.host_pod("h", "two", (80,), "node1")
    del unbound["spec"]["nodeName"]
    assert kubelet.pick_node([taken, *busy], ["node1", "node2"], unbound) == "node2"
    both = [taken, samples.host_pod("h", "three", (80,), "node2")]
    assert kubelet.pick_node(both, ["node1", "node2"], unbound) is None
    # A pod that finished holds no port.
    both[1]["status"] = {"phase": "Failed"}
    assert kubelet.pick_node(both, ["node1", "node2"], unbound) == "node2"


def test_nodes_carry_the_kubelets_labels() -> None:
    labels = cluster.node_labels(LabLayout("pwlab").node(2))
    assert labels["kubernetes.io/hostname"] == "node2"
    assert labels["kubernetes.io/os"] == "linux"
    assert cluster.node_arch("x86_64") == "amd64" and cluster.node_arch("aarch64") == "arm64"

"""The cluster model: decoding Namespaces and Pods, mixed files, and the indexes."""

from __future__ import annotations

from pathlib import Path

import pytest

from podwire.policy import (
    NAMESPACE_NAME_LABEL,
    Cluster,
    ContainerPort,
    Namespace,
    Pod,
    PolicyError,
    PolicyErrors,
    Protocol,
    load_cluster,
    parse_cluster,
)

MODEL = Path(__file__).parent / "data" / "policy_cluster.yaml"


def test_namespace_always_carries_its_name_label() -> None:
    namespace = Namespace.from_api(
        {"kind": "Namespace", "metadata": {"name": "team", "labels": {"env": "dev"}}}
    )
    assert dict(namespace.labels) == {"env": "dev", NAMESPACE_NAME_LABEL: "team"}
    # The API server overwrites a wrong value; so does the model.
    assert Namespace("a", {NAMESPACE_NAME_LABEL: "b"}).labels[NAMESPACE_NAME_LABEL] == "a"
    assert Namespace("a") == Namespace("a", {})


def test_pod_from_api_reads_what_policy_needs() -> None:
    pod = Pod.from_api(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}, "uid": "u"},
            "spec": {
                "nodeName": "node-1",
                "initContainers": [
                    {"name": "init", "ports": [{"containerPort": 9000, "name": "metrics"}]}
                ],
                "containers": [
                    {
                        "name": "c",
                        "image": "i",
                        "ports": [
                            {"containerPort": 8080, "name": "http"},
                            {"containerPort": 53, "protocol": "UDP", "name": "dns"},
                        ],
                    },
                    {"name": "d", "image": "i"},
                ],
                "restartPolicy": "Always",
            },
            "status": {"podIP": "10.244.1.5", "phase": "Running"},
        }
    )
    assert pod.key == "shop/web"
    assert pod.ip == "10.244.1.5" and pod.node == "node-1"
    assert pod.ports == (
        ContainerPort("metrics", 9000, Protocol.TCP),
        ContainerPort("http", 8080, Protocol.TCP),
        ContainerPort("dns", 53, Protocol.UDP),
    )
    assert pod.named_ports("dns", Protocol.UDP) == [53]
    assert pod.named_ports("dns", Protocol.TCP) == []


def test_pending_pod_has_no_ip() -> None:
    pod = Pod.from_api(
        {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}, "status": {}}
    )
    assert pod.ip is None and pod.address is None and pod.namespace == "default"


def test_bad_pod_fields_are_named() -> None:
    with pytest.raises(PolicyErrors) as caught:
        Pod.from_api(
            {
                "kind": "Pod",
                "metadata": {"name": "p", "labels": {"a": 1}},
                "spec": {
                    "containers": [
                        {"ports": [{"containerPort": 0, "name": "Bad Name", "protocol": "ICMP"}]}
                    ]
                },
                "status": {"podIP": "10.0.0.300"},
            }
        )
    assert [e.path for e in caught.value.errors] == [
        "metadata.labels.a",
        "spec.containers[0].ports[0].containerPort",
        "spec.containers[0].ports[0].name",
        "spec.containers[0].ports[0].protocol",
        "status.podIP",
    ]


def test_pods_are_immutable_and_hashable() -> None:
    one = Pod("n", "p", {"a": "b"}, "10.0.0.1", None, [ContainerPort("http", 80)])  # type: ignore[arg-type]
    two = Pod("n", "p", {"a": "b"}, "10.0.0.1", None, (ContainerPort("http", 80, Protocol("TCP")),))
    assert one == two and hash(one) == hash(two)
    with pytest.raises(AttributeError):
        one.name = "q"  # type: ignore[misc]
    assert Pod("n", "p", ip="fd00:0::1").ip == "fd00::1"  # canonical form for lookups


def test_mixed_file_builds_the_cluster() -> None:
    cluster = load_cluster(MODEL)
    assert sorted(cluster.namespaces) == ["x", "y", "z"]
    assert sorted(pod.key for pod in cluster.pods()) == [f"{n}/{p}" for n in "xyz" for p in "abc"]
    assert cluster.pods_with_ip("10.0.2.11") == [cluster.pod("y", "b")]
    b = cluster.pod("y", "b")
    assert b is not None and b.named_ports("serve-81-sctp", Protocol.SCTP) == [81]


def test_mixed_file_errors_name_document_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: Namespace\nmetadata: {name: ok}\n---\nkind: Service\nmetadata: {name: s}\n"
    )
    with pytest.raises(PolicyError) as caught:
        load_cluster(bad)
    assert caught.value.document == 1 and caught.value.path == "kind"
    assert str(bad) in str(caught.value)
    with pytest.raises(PolicyError, match="cannot read"):
        load_cluster(tmp_path / "missing.yaml")


def test_indexes_follow_updates_and_removals() -> None:
    cluster = parse_cluster(MODEL.read_text())
    a = cluster.pod("x", "a")
    assert a is not None
    cluster.set_pod(Pod("x", "a", a.labels, "10.0.9.9", a.node, a.ports))
    assert cluster.pods_with_ip("10.0.1.10") == []
    assert [p.key for p in cluster.pods_with_ip("10.0.9.9")] == ["x/a"]
    cluster.remove_pod("x", "a")
    assert cluster.pod("x", "a") is None and cluster.pods_with_ip("10.0.9.9") == []
    cluster.remove_pod("x", "a")  # removing twice is harmless
    orphan = Pod("w", "lonely", {}, "10.0.8.1")
    cluster.set_pod(orphan)
    assert "w" in cluster.namespace_names()
    assert dict(cluster.namespace("w").labels) == {NAMESPACE_NAME_LABEL: "w"}
    cluster.remove_namespace("x")
    assert "x" not in cluster.namespaces


def test_empty_cluster() -> None:
    cluster = Cluster()
    assert (
        list(cluster.pods()) == []
        and list(cluster.policies()) == []
        and cluster.namespace_names() == []
    )

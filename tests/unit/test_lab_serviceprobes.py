"""The contract of `podwire lab probe` through Services and names: the JSON a single probe
prints (`--to-service`, `--to-host`, `--from external --to-ip`), its exit codes, the bad
input refused before any lab is touched, and the pure pieces that pick a Service's
ClusterIP, its backends and the matrix's columns. No lab: nothing here needs root."""

from __future__ import annotations

import json
from typing import Any

import pytest

from podwire import cli
from podwire.lab import cli as lab_cli
from podwire.lab.probe import ProbeResult, ProbeTarget
from podwire.lab.serviceprobes import (
    ServiceTarget,
    backends,
    check_backend,
    matrix_targets,
    parse_resolv_conf,
    service_target,
)

# The fields a single probe's JSON carries (tests and users read them).
PROBE_FIELDS = {"from", "to", "port", "protocol", "ok", "detail", "answer"}


def svc(namespace: str, name: str, cluster_ip: str = "10.96.0.20",
        ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name},
            "spec": {"clusterIP": cluster_ip,
                     "ports": ports if ports is not None else [{"port": 80}]}}


def endpoint_slice(namespace: str, service: str, *pods: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": f"{service}-abc",
                         "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": ["10.244.1.5"],
                           "targetRef": {"kind": "Pod", "namespace": namespace, "name": p}}
                          for p in pods]}


def printed(capsys: pytest.CaptureFixture[str], argv: list[str], result: ProbeResult,
            label: str) -> tuple[int, dict[str, Any]]:
    """What `_print_probe` prints for a probe the parser read from argv."""
    args = cli.parser().parse_args(["lab", "probe", *argv])
    code = lab_cli._print_probe(args, result, label)
    return code, json.loads(capsys.readouterr().out)


def test_a_service_probe_prints_every_field_and_exits_by_its_verdict(
        capsys: pytest.CaptureFixture[str]) -> None:
    answer = {"name": "y/b", "proto": "SCTP", "port": "80", "peer": "10.244.1.2:40000"}
    code, body = printed(capsys, ["--from", "x/a", "--to-service", "y/b", "--port", "1080",
                                  "--protocol", "sctp", "-o", "json"],
                         ProbeResult(True, "answered by y/b", answer), "y/b (10.96.0.20)")
    assert code == lab_cli.EXIT_OK
    assert set(body) == PROBE_FIELDS
    assert body == {"from": "x/a", "to": "y/b (10.96.0.20)", "port": 1080,
                    "protocol": "SCTP", "ok": True, "detail": "answered by y/b",
                    "answer": answer}


def test_a_blocked_name_probe_still_names_what_the_name_resolved_to(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, body = printed(capsys, ["--from", "x/a", "--to-host", "c.y", "--port", "80",
                                  "-o", "json"],
                         ProbeResult(False, "timeout", {}),
                         "c.y.svc.cluster.local (10.96.0.30)")
    assert code == lab_cli.EXIT_FAILED
    assert (body["ok"], body["to"], body["answer"]) == (
        False, "c.y.svc.cluster.local (10.96.0.30)", {})


def test_an_external_probe_keeps_the_address_as_its_target(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, body = printed(capsys, ["--from", "external", "--to-ip", "10.98.0.11", "--port",
                                  "30080", "-o", "json"],
                         ProbeResult(True, "answered by x/a", {"name": "x/a"}), "10.98.0.11")
    assert (code, body["from"], body["to"], body["protocol"]) == (
        lab_cli.EXIT_OK, "external", "10.98.0.11", "TCP")


@pytest.mark.parametrize(("argv", "message"), [
    (["--to-service", "y/b"], "probe needs --from NS/POD"),
    (["--from", "x/a", "--to-service", "y/b", "--to-host", "b"], "and one of"),
    (["--from", "x/a", "--services"], "--services goes with --matrix"),
    (["--matrix", "--services", "--from", "x/a"], "no --from/--to"),
    (["--from", "external", "--to-service", "y/b"], "--from external probes an address"),
    (["--from", "external", "--to-host", "b.y"], "--from external probes an address"),
])
def test_bad_service_probe_arguments_exit_2_before_touching_a_lab(
        capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    # A prefix no lab has: reaching for its state would fail differently (exit 1).
    code = cli.main(["lab", "--prefix", "nolabhere", "probe", "--port", "80", *argv])
    assert code == lab_cli.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_the_cli_refuses_an_unknown_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.parser().parse_args(["lab", "probe", "--from", "x/a", "--to-service", "y/b",
                                 "--port", "80", "--protocol", "ICMP"])
    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_a_service_target_is_its_cluster_ip_on_the_port_and_protocol() -> None:
    service = svc("y", "b", ports=[{"port": 1080, "protocol": "SCTP"}, {"port": 1081}])
    goal = service_target(service, [endpoint_slice("y", "b", "b"),
                                    endpoint_slice("x", "b", "other")], 1080, "SCTP")
    assert goal == ServiceTarget("y/b", ProbeTarget("10.96.0.20", 1080, "SCTP"),
                                 frozenset({"y/b"}))
    with pytest.raises(ValueError, match=r"no port 1080/TCP \(its ports: 1080/SCTP, 1081/TCP\)"):
        service_target(service, [], 1080, "TCP")
    with pytest.raises(ValueError, match="has no ClusterIP"):
        service_target(svc("y", "h", cluster_ip="None"), [], 80, "TCP")


def test_backends_are_the_pods_the_service_s_own_slices_list() -> None:
    slices = [endpoint_slice("y", "b", "b1", "b2"), endpoint_slice("y", "c", "c1"),
              {"metadata": {"namespace": "y", "name": "x", "labels": {}},
               "endpoints": [{"addresses": ["10.0.0.1"]}]}]
    assert backends(slices, "y/b") == {"y/b1", "y/b2"}
    assert backends(slices, "y/none") == frozenset()


def test_an_answer_from_a_pod_outside_the_service_is_no_success() -> None:
    goal = ServiceTarget("y/b", ProbeTarget("10.96.0.20", 80), frozenset({"y/b"}))
    assert check_backend(ProbeResult(True, "answered by y/b", {"name": "y/b"}), goal).ok
    wrong = check_backend(ProbeResult(True, "answered by z/q", {"name": "z/q"}), goal)
    assert not wrong.ok and "not an endpoint of y/b" in wrong.detail
    assert not check_backend(ProbeResult(False, "timeout", {}), goal).ok


def test_the_matrix_columns_leave_out_the_cluster_s_own_services() -> None:
    services = [svc("x", "a"), svc("default", "kubernetes"),
                svc("kube-system", "kube-dns", ports=[{"port": 80}]),
                svc("y", "headless", cluster_ip="None"),
                svc("y", "other-port", ports=[{"port": 81}]), svc("y", "b")]
    assert sorted(matrix_targets(services, [], 80, "TCP")) == ["x/a", "y/b"]


def test_resolv_conf_gives_nameserver_search_and_ndots() -> None:
    conf = parse_resolv_conf("search x.svc.cluster.local svc.cluster.local cluster.local\n"
                             "nameserver 10.96.0.10\nnameserver 10.96.0.11\n"
                             "options ndots:5 edns0\n")
    assert (conf.nameserver, conf.search, conf.ndots) == (
        "10.96.0.10", ["x.svc.cluster.local", "svc.cluster.local", "cluster.local"], 5)
    with pytest.raises(ValueError, match="names no nameserver"):
        parse_resolv_conf("search a\n")

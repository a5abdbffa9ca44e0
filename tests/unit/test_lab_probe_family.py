"""`podwire lab probe --family 4|6`: the flag as the parser reads it, the combinations
refused before any lab is touched, which address of a pod or a Service a family picks
(and the error naming what is missing), and the echo servers answering on both families.
No lab: the servers here listen on loopback in this process's own namespace."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from podwire import cli
from podwire.lab import cli as lab_cli
from podwire.lab.echo import EchoServer, Port, answer, parse_answer, peer_ip
from podwire.lab.probe import family_of
from podwire.lab.probes import address_of, pod_address
from podwire.lab.serviceprobes import cluster_ip, matrix_targets, service_target

V4, V6 = "10.244.1.5", "fd00:10:244:1::5"


def parse(*argv: str) -> Any:
    return cli.parser().parse_args(["lab", "probe", "--port", "80", *argv])


def test_family_is_4_or_6_and_defaults_to_the_primary_address() -> None:
    assert parse("--from", "x/a", "--to", "y/b").family is None
    assert parse("--matrix", "--family", "6").family == 6
    assert parse("--matrix", "--services", "--family", "4").family == 4


@pytest.mark.parametrize("value", ["5", "ipv6", "v4", ""])
def test_other_families_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str],
                                                  value: str) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("--matrix", "--family", value)
    assert exited.value.code == 2
    assert "--family" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--from", "x/a", "--to-ip", "10.98.0.250", "--family", "6"],
     "--to-ip 10.98.0.250 is an IPv4 address and --family 6 asks for IPv6"),
    (["--from", "x/a", "--to-ip", "fd00::1", "--family", "4"],
     "--to-ip fd00::1 is an IPv6 address and --family 4 asks for IPv4"),
    (["--from", "external", "--to-ip", "10.98.0.11", "--family", "6"],
     "is an IPv4 address and --family 6"),
    (["--from", "x/a", "--to-ip", "10.98.0.300"], "'10.98.0.300' is not an IPv4 or IPv6"),
    (["--matrix", "--family", "6", "--from", "x/a"], "--matrix probes every pod to every pod"),
    (["--matrix", "--services", "--family", "6", "--to", "y/b"],
     "--matrix --services probes every pod to every Service"),
])
def test_bad_family_combinations_exit_2_before_touching_a_lab(
        capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    # A prefix no lab has: reaching for its state would fail differently (exit 1).
    code = cli.main(["lab", "--prefix", "nolabhere", "probe", "--port", "80", *argv])
    assert code == lab_cli.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_an_address_given_with_its_own_family_is_accepted(
        capsys: pytest.CaptureFixture[str]) -> None:
    # Past the family check it needs the lab, which is not there: exit 1, not 2.
    code = cli.main(["lab", "--prefix", "nolabhere", "probe", "--port", "80", "--from",
                     "x/a", "--to-ip", "fd00:10:244:2::7", "--family", "6"])
    assert code == lab_cli.EXIT_FAILED
    # A name is resolved by AAAA for --family 6: no family of its own to clash with.
    code = cli.main(["lab", "--prefix", "nolabhere", "probe", "--port", "80", "--from",
                     "x/a", "--to-host", "b.y", "--family", "6"])
    assert code == lab_cli.EXIT_FAILED
    assert "family" not in capsys.readouterr().err


def pod(ips: list[str], host_network: bool = False) -> dict[str, Any]:
    return {"metadata": {"namespace": "x", "name": "a", "uid": "u"},
            "spec": {"hostNetwork": host_network, "nodeName": "node1"},
            "status": {"phase": "Running", "podIP": ips[0],
                       "podIPs": [{"ip": ip} for ip in ips]}}


def test_a_family_picks_the_pod_s_address_of_it() -> None:
    dual = pod([V4, V6])
    assert (address_of(dual, None), address_of(dual, 4), address_of(dual, 6)) == (V4, V4, V6)
    only6 = pod([V6])
    assert (address_of(only6, None), address_of(only6, 4), address_of(only6, 6)) == (
        V6, None, V6)
    # A status written before podIPs existed still has its podIP.
    old = {"metadata": {"namespace": "x", "name": "a"}, "status": {"podIP": V4}}
    assert (address_of(old, None), address_of(old, 6)) == (V4, None)


def test_a_pod_without_the_family_is_named_with_the_addresses_it_has() -> None:
    with pytest.raises(ValueError, match=r"pod x/a has no IPv6 address \(its addresses: "
                                         r"10\.98\.0\.11\)"):
        pod_address(pod(["10.98.0.11"], host_network=True), 6)
    with pytest.raises(ValueError, match=r"pod x/a has no IPv4 address \(its addresses: "
                                         r"fd00:10:244:1::5\)"):
        pod_address(pod([V6]), 4)


def service(cluster_ips: list[str] | None, families: list[str] | None = None,
            name: str = "web") -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"port": 80}]}
    if cluster_ips:
        spec["clusterIP"], spec["clusterIPs"] = cluster_ips[0], cluster_ips
    if families:
        spec["ipFamilies"] = families
    return {"metadata": {"namespace": "y", "name": name}, "spec": spec}


def test_a_family_picks_the_service_s_cluster_ip_of_it() -> None:
    dual = service(["10.96.0.20", "fd00:10:96::20"], ["IPv4", "IPv6"])
    assert [cluster_ip(dual, f) for f in (None, 4, 6)] == [
        "10.96.0.20", "10.96.0.20", "fd00:10:96::20"]
    six_first = service(["fd00:10:96::20", "10.96.0.20"], ["IPv6", "IPv4"])
    assert [cluster_ip(six_first, f) for f in (None, 4, 6)] == [
        "fd00:10:96::20", "10.96.0.20", "fd00:10:96::20"]
    # A Service from before clusterIPs: its clusterIP alone.
    legacy = {"metadata": {"namespace": "y", "name": "old"},
              "spec": {"clusterIP": "10.96.0.30", "ports": [{"port": 80}]}}
    assert cluster_ip(legacy, 4) == "10.96.0.30"
    target = service_target(dual, [], 80, "TCP", 6)
    assert (target.target.ip, target.target.port) == ("fd00:10:96::20", 80)


def test_a_service_without_the_family_is_named() -> None:
    with pytest.raises(ValueError, match=r"service y/web has no IPv6 ClusterIP \(its "
                                         r"clusterIPs: 10\.96\.0\.20; ipFamilies: IPv4\)"):
        cluster_ip(service(["10.96.0.20"]), 6)
    # The matrix over IPv6 says which Service stands in its way.
    services = [service(["10.96.0.21", "fd00:10:96::21"], ["IPv4", "IPv6"], "dual"),
                service(["10.96.0.22"], ["IPv4"], "four")]
    with pytest.raises(ValueError, match="service y/four has no IPv6 ClusterIP"):
        matrix_targets(services, [], 80, "TCP", 6)
    assert set(matrix_targets(services, [], 80, "TCP", 4)) == {"y/dual", "y/four"}
    with pytest.raises(ValueError, match="has no ClusterIP"):
        cluster_ip(service(None), 6)


def test_an_address_says_its_socket_family() -> None:
    assert family_of(V4) == socket.AF_INET
    assert family_of(V6) == socket.AF_INET6
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
        family_of("x/a")


def test_an_ipv6_peer_is_written_in_brackets_and_read_back() -> None:
    line = answer("x/a", "TCP", 80, (V6, 40000)).decode()
    fields = parse_answer(line)
    assert fields["peer"] == f"[{V6}]:40000"
    assert peer_ip(fields) == V6
    assert peer_ip(parse_answer(answer("x/a", "TCP", 80, (V4, 40000)).decode())) == V4
    assert peer_ip({}) == ""


@pytest.fixture
def server() -> Iterator[tuple[int, int]]:
    """An echo server on free TCP and UDP ports of this namespace, both families."""
    probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    probe.bind(("::", 0))
    tcp_port = probe.getsockname()[1]
    probe.close()
    echo = EchoServer()
    echo.add("t", None, "x/a", [Port(tcp_port, "TCP"), Port(tcp_port, "UDP")])
    thread = threading.Thread(target=echo.serve_forever, daemon=True)
    thread.start()
    try:
        yield tcp_port, tcp_port
    finally:
        echo.stop()
        thread.join(5)


@pytest.mark.parametrize(("family", "loopback"), [(socket.AF_INET, "127.0.0.1"),
                                                  (socket.AF_INET6, "::1")])
def test_echo_servers_answer_on_both_families(server: tuple[int, int], family: int,
                                              loopback: str) -> None:
    tcp_port, udp_port = server
    with socket.create_connection((loopback, tcp_port), timeout=5) as conn:
        fields = parse_answer(conn.makefile().readline())
        assert (fields["name"], fields["proto"]) == ("x/a", "TCP")
        # The peer is the client's own address, not an IPv4-mapped one.
        assert (peer_ip(fields), int(fields["peer"].rpartition(":")[2])) == (
            loopback, conn.getsockname()[1])
    with socket.socket(family, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        udp.sendto(b"probe\n", (loopback, udp_port))
        fields = parse_answer(udp.recv(512).decode())
        assert (fields["proto"], peer_ip(fields)) == ("UDP", loopback)

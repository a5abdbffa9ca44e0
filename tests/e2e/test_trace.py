"""`podwire trace` on a running two-node lab, as a user runs it.

A dual-stack lab: each scenario is traced over IPv4 and over IPv6 (`--family`), with the
same hops expected. x/a and x/c on node1, x/b on node2; x/b admits only app a on TCP 80 (x/b-http); the
Service x/web (port 8080) fronts x/b's port 80. Each trace is one packet injected at the
source pod through the real agents' BPF programs; the CLI is the installed `podwire`.
`--lab` reaches the agents as a cluster is reached: through the API server's
pods/portforward to each agent's observe endpoint, never their unix sockets.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_helpers import PODWIRE, cli_ok, lab_up
from waiting import wait_for

from podwire.common.netns import in_netns
from podwire.lab import samples
from podwire.lab.kube import Kube
from podwire.lab.layout import LabLayout
from podwire.lab.probe import ProbeTarget, probe

pytestmark = pytest.mark.timeout(600)

PREFIX = "pwttr"
FAMILIES = pytest.mark.parametrize("family", [4, 6])
HOP_FIELDS = {"node", "hook", "time", "trace_id", "protocol", "tcp_flags", "source",
              "destination", "conntrack", "service", "egress", "ingress", "outcome",
              "drop_reason", "tunnel"}
SERVICE = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "web", "namespace": "x"},
           "spec": {"selector": {"pod": "b"}, "ipFamilyPolicy": "RequireDualStack",
                    "ipFamilies": ["IPv4", "IPv6"],
                    "ports": [{"name": "http", "port": 8080, "targetPort": 80,
                               "protocol": "TCP"}]}}
POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "b-http", "namespace": "x"},
          "spec": {"podSelector": {"matchLabels": {"pod": "b"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}],
                                "ports": [{"port": 80}]}]}}


class Lab:
    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.pods = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p
                     for p in Kube(Path(kubeconfig)).list_pods()["items"]}

    def ip(self, pod: str, family: int = 4) -> str:
        return next(str(e["ip"]) for e in self.pods[pod]["status"]["podIPs"]
                    if ipaddress.ip_address(e["ip"]).version == family)

    def netns(self, pod: str) -> str:
        return LabLayout(PREFIX).pod_netns(self.pods[pod]["metadata"]["uid"])


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_up(PREFIX, 2, "podwire", "dual") as state:
        objects = [samples.namespace("x"), samples.pod("x", "a", (80,), node="node1"),
                   samples.pod("x", "b", (80,), node="node2"),
                   samples.pod("x", "c", (80,), node="node1"), SERVICE, POLICY]
        cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(objects))
        yield Lab(state.kubeconfig)


def trace(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODWIRE, "trace", "--lab", PREFIX, *args], capture_output=True,
                          text=True, timeout=120, check=False)


def trace_json(*args: str) -> dict[str, Any]:
    proc = trace(*args, "-o", "json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    report: dict[str, Any] = json.loads(proc.stdout)
    for hop in report["hops"]:
        assert set(hop) == HOP_FIELDS, hop
        assert hop["trace_id"] == report["trace_id"]
    return report


def path(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(h["node"], h["hook"], h["outcome"]) for h in report["hops"]]


@FAMILIES
def test_same_node_allowed_is_one_hop_and_never_reaches_the_application(lab: Lab,
                                                                        family: int) -> None:
    # A UDP socket of our own in x/c: the traced datagram must not reach it, an ordinary
    # datagram to the same port must (so the socket would have seen the traced one).
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    with in_netns(lab.netns("x/c")):
        sink = socket.socket(af, socket.SOCK_DGRAM)
    with sink:
        sink.bind(("::" if family == 6 else "0.0.0.0", 9999))
        sink.setblocking(False)
        report = trace_json("--from", "x/a", "--to", "x/c", "--port", "9999", "--protocol",
                            "UDP", "--family", str(family))
        with pytest.raises(BlockingIOError):
            sink.recv(100)
        with in_netns(lab.netns("x/a")):
            sender = socket.socket(af, socket.SOCK_DGRAM)
        with sender:
            sender.sendto(b"ordinary", (lab.ip("x/c", family), 9999))
        sink.setblocking(True)
        sink.settimeout(5)
        assert sink.recv(100) == b"ordinary"
    assert report["result"] == "delivered" and report["drop_reason"] is None
    assert path(report) == [("node1", "from-pod", "to-pod")]
    hop = report["hops"][0]
    assert hop["conntrack"] == "new" and hop["protocol"] == "UDP"
    assert hop["egress"] == {"verdict": "allowed", "policy": None, "isolated_by": []}
    assert hop["ingress"] == {"verdict": "allowed", "policy": None, "isolated_by": []}
    assert (hop["source"]["pod"], hop["destination"]["pod"]) == ("a", "c")
    assert hop["destination"] == {"ip": lab.ip("x/c", family), "port": 9999, "identity":
                                  hop["destination"]["identity"], "namespace": "x", "pod": "c"}
    assert report["packet"]["destination"] == {"ip": lab.ip("x/c", family), "port": 9999}
    assert hop["source"]["ip"] == lab.ip("x/a", family)


@FAMILIES
def test_cross_node_allowed_crosses_the_tunnel(lab: Lab, family: int) -> None:
    report = trace_json("--from", "x/a", "--to", "x/b", "--port", "80", "--family",
                        str(family))
    assert report["result"] == "delivered"
    assert path(report) == [("node1", "from-pod", "to-tunnel"),
                            ("node2", "from-overlay", "to-pod")]
    sent, received = report["hops"]
    assert sent["tunnel"]["node"] == "node2" and sent["tcp_flags"] == ["SYN"]
    assert sent["egress"] == {"verdict": "allowed", "policy": None, "isolated_by": []}
    assert sent["ingress"] is None  # judged where x/b lives
    assert received["ingress"] == {"verdict": "allowed", "policy": "x/b-http",
                                   "isolated_by": []}
    assert received["egress"] is None and received["conntrack"] == "new"
    assert received["source"]["ip"] == lab.ip("x/a", family)
    assert received["destination"]["ip"] == lab.ip("x/b", family)


@FAMILIES
def test_cross_node_denied_by_ingress_names_the_policy(lab: Lab, family: int) -> None:
    report = trace_json("--from", "x/c", "--to", "x/b", "--port", "80", "--family",
                        str(family))
    assert report["result"] == "dropped" and report["drop_reason"] == "POLICY_DENIED"
    assert path(report) == [("node1", "from-pod", "to-tunnel"),
                            ("node2", "from-overlay", "dropped")]
    denied = report["hops"][1]
    assert denied["ingress"] == {"verdict": "denied", "policy": None,
                                 "isolated_by": ["x/b-http"]}
    text = trace("--from", "x/c", "--to", "x/b", "--port", "80", "--family", str(family))
    assert text.returncode == 0, text.stderr
    assert "result: dropped (POLICY_DENIED)" in text.stdout
    assert "isolated by x/b-http" in text.stdout


@FAMILIES
def test_through_a_service_shows_the_translation(lab: Lab, family: int) -> None:
    report = trace_json("--from", "x/a", "--to-service", "x/web", "--port", "8080",
                        "--family", str(family))
    assert report["result"] == "delivered"
    assert path(report) == [("node1", "from-pod", "to-tunnel"),
                            ("node2", "from-overlay", "to-pod")]
    sent = report["hops"][0]
    assert sent["service"]["name"] == "x/web"
    assert sent["service"]["frontend"]["port"] == 8080
    assert ipaddress.ip_address(sent["service"]["frontend"]["ip"]).version == family
    assert sent["destination"]["ip"] == lab.ip("x/b", family)
    assert sent["destination"]["port"] == 80
    assert report["hops"][1]["ingress"]["policy"] == "x/b-http"


@FAMILIES
def test_live_traces_the_pods_own_next_packet_and_delivers_it(lab: Lab, family: int) -> None:
    live = subprocess.Popen([*PODWIRE, "trace", "--lab", PREFIX, "--from", "x/a", "--to",
                             "x/b", "--port", "80", "--live", "--timeout", "20", "-o",
                             "json", "--family", str(family)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        # Until the mark is armed the probes go untraced; the trace ends on the first one
        # marked. Each probe is a real connection, which must succeed while traced.
        def traced() -> bool:
            assert probe(lab.netns("x/a"), ProbeTarget(lab.ip("x/b", family), 80, "TCP",
                                                       expect_name="x/b"), timeout=2.0).ok
            return live.poll() is not None
        wait_for(traced, "the live trace to see a probe", 30)
        out, err = live.communicate(timeout=30)
    finally:
        if live.poll() is None:
            live.kill()
            live.communicate()
    assert live.returncode == 0, err + out
    report = json.loads(out)
    assert report["live"] and report["result"] == "delivered"
    assert path(report) == [("node1", "from-pod", "to-tunnel"),
                            ("node2", "from-overlay", "to-pod")]
    assert report["hops"][0]["tcp_flags"] == ["SYN"]
    assert report["hops"][0]["destination"]["ip"] == lab.ip("x/b", family)


def test_hops_are_flow_records_of_type_trace(lab: Lab) -> None:
    report = trace_json("--from", "x/c", "--to", "x/b", "--port", "80")
    proc = subprocess.run([*PODWIRE, "observe", "--lab", PREFIX, "--type", "trace", "--last",
                           "1000", "-o", "json"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    mine = sorted((r for r in records if r["trace"]["id"] == report["trace_id"]),
                  key=lambda r: r["time"])
    assert [(r["node"], r["hook"], r["trace"]["outcome"]) for r in mine] == path(report)
    assert all(r["type"] == "trace" for r in records)
    sent, denied = mine
    assert sent["verdict"] == "FORWARDED" and sent["evaluated"] == ["egress"]
    assert sent["trace"]["tunnel"]["node"] == "node2"
    assert denied["verdict"] == "DROPPED" and denied["drop_reason"] == "POLICY_DENIED"
    assert (denied["direction"], denied["isolated_by"]) == ("ingress", ["x/b-http"])


def forwarded() -> dict[str, int]:
    """Port-forwards the lab API stand-in opened so far, per agent pod."""
    lines = LabLayout(PREFIX).logfile("apiserver").read_text().splitlines()
    pods = [line.split("pod=")[1].split()[0] for line in lines if "event=portforward" in line]
    return {pod: pods.count(pod) for pod in set(pods)}


def test_lab_and_kubeconfig_trace_through_the_api_server_not_the_sockets(lab: Lab) -> None:
    layout = LabLayout(PREFIX)
    sockets = [layout.node(i).socket_path for i in (1, 2)]
    before = forwarded()
    # The agents keep serving on the renamed sockets (a bound socket is its inode), but
    # nothing can find them at their paths: a trace that took them would fail.
    for sock in sockets:
        sock.rename(sock.with_name(sock.name + ".hidden"))
    try:
        through_lab = trace_json("--from", "x/a", "--to", "x/b", "--port", "80")
        proc = subprocess.run([*PODWIRE, "trace", "--kubeconfig", lab.kubeconfig,
                               "--agent-namespace", "kube-system", "--from", "x/c", "--to",
                               "x/b", "--port", "80", "-o", "json"], capture_output=True,
                              text=True, timeout=120, check=False)
    finally:
        for sock in sockets:
            sock.with_name(sock.name + ".hidden").rename(sock)
    assert path(through_lab) == [("node1", "from-pod", "to-tunnel"),
                                 ("node2", "from-overlay", "to-pod")]
    assert proc.returncode == 0, proc.stderr
    denied = json.loads(proc.stdout)
    assert denied["result"] == "dropped" and denied["drop_reason"] == "POLICY_DENIED"
    after = forwarded()
    # Each trace arms, reads hops from and disarms both nodes through pods/portforward.
    for pod in ("kube-system/podwire-agent-node1", "kube-system/podwire-agent-node2"):
        assert after.get(pod, 0) - before.get(pod, 0) >= 2 * 3, (before, after)


def test_socket_traces_one_agent_directly(lab: Lab) -> None:
    before = forwarded()
    proc = subprocess.run([*PODWIRE, "trace", "--socket", str(LabLayout(PREFIX).node(1)
                                                              .socket_path),
                           "--from", "x/a", "--to", "x/c", "--port", "80", "-o", "json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert path(json.loads(proc.stdout)) == [("node1", "from-pod", "to-pod")]
    assert forwarded() == before


def test_bad_input_is_named(lab: Lab) -> None:
    bad_ip = trace("--from", "x/a", "--to-ip", "10.0.0", "--port", "80")
    assert bad_ip.returncode == 2
    assert "--to-ip '10.0.0' is not an IPv4 or IPv6 address" in bad_ip.stderr
    bad_ref = trace("--from", "a", "--to", "x/b", "--port", "80")
    assert bad_ref.returncode == 2 and "--from 'a' is not NAMESPACE/NAME" in bad_ref.stderr
    missing = trace("--from", "x/nope", "--to", "x/b", "--port", "80")
    assert missing.returncode == 1 and "pod x/nope was found on no node" in missing.stderr
    no_service = trace("--from", "x/a", "--to-service", "x/web", "--port", "9")
    assert no_service.returncode == 1
    assert "service x/web has no IPv4 ClusterIP port 9/TCP" in no_service.stderr
    other_family = trace("--from", "x/a", "--to-ip", "fd00::1", "--family", "4", "--port", "80")
    assert other_family.returncode == 2
    assert "--to-ip fd00::1 is an IPv6 address and --family 4" in other_family.stderr

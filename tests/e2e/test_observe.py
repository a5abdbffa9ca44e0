"""`podwire observe` and `podwire status` on a running lab, as a user runs them.

One module-scoped two-node lab with three pods and one policy:
x/a (node1) and x/c (node1) reach x/b (node2) only on TCP 80 from app=a (x/b-http);
x/c may not send at all (x/c-no-egress). Flows come from real packets through the
agents' BPF programs; the CLI is the installed `podwire` executable.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_helpers import PODWIRE, in_process
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import IP, UDP
from waiting import wait_for

from podwire.agent.datapath import Datapath
from podwire.bpf.constants import Aggregation
from podwire.common.netns import in_netns
from podwire.lab import cluster, netns, samples
from podwire.lab.kube import Kube
from podwire.lab.layout import LabLayout
from podwire.lab.probe import ProbeTarget, probe

pytestmark = pytest.mark.timeout(600)

PREFIX = "pwtob"
Record = dict[str, Any]
FIELDS = {"seq", "time", "node", "type", "verdict", "drop_reason", "direction", "hook", "protocol",
          "source", "destination", "frontend", "tcp_flags", "length", "evaluated",
          "allowed_by", "isolated_by", "decided_by", "count", "bytes", "last_time", "trace"}
END_FIELDS = {"ip", "port", "identity", "namespace", "pod", "labels", "service"}
POLICIES = [
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
     "metadata": {"name": "b-http", "namespace": "x"},
     "spec": {"podSelector": {"matchLabels": {"pod": "b"}},
              "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}],
                           "ports": [{"port": 80}]}]}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
     "metadata": {"name": "c-no-egress", "namespace": "x"},
     "spec": {"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Egress"]}},
]




class Lab:
    def __init__(self, state: cluster.LabState) -> None:
        self.state = state
        self.pods = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p
                     for p in Kube(Path(state.kubeconfig)).list_pods()["items"]}

    def ip(self, pod: str) -> str:
        return str(self.pods[pod]["status"]["podIP"])

    def probe(self, src: str, dst: str, port: int, protocol: str = "TCP") -> bool:
        pod_ns = LabLayout(PREFIX).pod_netns(self.pods[src]["metadata"]["uid"])
        return probe(pod_ns, ProbeTarget(self.ip(dst), port, protocol, expect_name=dst),
                     timeout=1.0).ok


    def send_forged(self, src: str, dst: str) -> None:
        """One UDP packet from `src` with a source address that is not its own."""
        pod_ns = LabLayout(PREFIX).pod_netns(self.pods[src]["metadata"]["uid"])
        packet = bytes(IP(src="10.200.0.99", dst=self.ip(dst)) / UDP(sport=4000, dport=80))
        with in_netns(pod_ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        with sock:
            sock.sendto(packet, (self.ip(dst), 0))


def podwire(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The executable, as a user runs it."""
    return subprocess.run([*PODWIRE, *args], input=stdin, capture_output=True, text=True,
                          timeout=180, check=False)


def observe(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`podwire observe --lab PREFIX ARGS...` in this process: the tests below run it a
    hundred times (the executable's own start, pipes and exit codes are tested on their
    own)."""
    proc = in_process("observe", "--lab", PREFIX, *args)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    layout = LabLayout(PREFIX)
    cluster.down(layout)  # a killed earlier run may have left one
    try:
        up = podwire("lab", "--prefix", PREFIX, "up", "--nodes", "2")
        assert up.returncode == 0, up.stderr
        objects = [samples.namespace("x"),
                   samples.pod("x", "a", (80, 81), node="node1"),
                   samples.pod("x", "b", (80, 81), node="node2"),
                   samples.pod("x", "c", (80, 81), node="node1"), *POLICIES]
        applied = podwire("lab", "--prefix", PREFIX, "apply", "-f", "-",
                          stdin=samples.to_yaml(objects))
        assert applied.returncode == 0, applied.stderr
        lab = Lab(cluster.load(layout))
        assert lab.probe("x/a", "x/b", 80)
        assert not lab.probe("x/a", "x/b", 81)
        assert lab.probe("x/a", "x/c", 81, "UDP")
        assert not lab.probe("x/c", "x/a", 80)
        # A drop that is not a policy verdict: a pod forging its source address.
        lab.send_forged("x/a", "x/b")
        wait_for(lambda: any(f["drop_reason"] == "INVALID_SOURCE" for f in records()),
                 "the forged packet's drop record")
        yield lab
    finally:
        cluster.down(layout)


def records(*args: str) -> list[Record]:
    out = observe("-o", "json", "--last", "100000", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def key(record: Record) -> str:
    return json.dumps(record, sort_keys=True)


def pod_of(end: Record) -> str | None:
    return f"{end['namespace']}/{end['pod']}" if end["pod"] else None


def test_expected_flows_carry_their_reasons(lab: Lab) -> None:
    flows = records("--protocol", "TCP", "--protocol", "UDP")
    a_to_b = [f for f in flows if pod_of(f["source"]) == "x/a" and pod_of(f["destination"])
              == "x/b"]
    sent = [f for f in a_to_b if f["destination"]["port"] == 80 and f["node"] == "node1"]
    received = [f for f in a_to_b if f["destination"]["port"] == 80 and f["node"] == "node2"]
    denied = [f for f in a_to_b if f["destination"]["port"] == 81]
    assert sent and sent[0]["verdict"] == "FORWARDED" and sent[0]["hook"] == "from-pod"
    assert sent[0]["evaluated"] == ["egress"] and sent[0]["allowed_by"] == {}
    assert received and received[0]["type"] == "policy-verdict"
    assert received[0]["hook"] == "from-overlay"
    assert received[0]["allowed_by"] == {"ingress": "x/b-http"}
    assert received[0]["source"]["ip"] == lab.ip("x/a")
    assert received[0]["destination"]["labels"] == {"pod": "b"}
    assert received[0]["tcp_flags"] == ["SYN"]
    drop = next(f for f in denied if f["verdict"] == "DROPPED")
    assert drop["node"] == "node2" and drop["drop_reason"] == "POLICY_DENIED"
    assert drop["direction"] == "ingress" and drop["isolated_by"] == ["x/b-http"]
    same_node = [f for f in flows if pod_of(f["source"]) == "x/a"
                 and pod_of(f["destination"]) == "x/c"]
    assert same_node[0]["evaluated"] == ["egress", "ingress"]
    assert same_node[0]["protocol"] == "UDP" and same_node[0]["allowed_by"] == {}
    egress_drop = next(f for f in flows if pod_of(f["source"]) == "x/c")
    assert egress_drop["node"] == "node1" and egress_drop["direction"] == "egress"
    assert egress_drop["isolated_by"] == ["x/c-no-egress"]


def test_json_output_carries_the_documented_fields(lab: Lab) -> None:
    flows = records()
    assert flows
    for flow in flows:
        assert set(flow) == FIELDS
        assert set(flow["source"]) == END_FIELDS and set(flow["destination"]) == END_FIELDS
    assert [f["time"] for f in flows] == sorted(f["time"] for f in flows)
    assert {f["node"] for f in flows} == {"node1", "node2"}
    assert len({(f["node"], f["seq"]) for f in flows}) == len(flows)


def test_compact_output_says_why_and_is_plain_when_piped(lab: Lab) -> None:
    piped = podwire("observe", "--lab", PREFIX, "--last", "100000", "--from-pod", "x/a",
                    "--to-pod", "x/b", "--print-node-name")
    assert piped.returncode == 0, piped.stderr
    out = piped.stdout
    assert "\x1b[" not in out
    lines = out.splitlines()
    assert any(" [node2] x/a:" in line and "-> x/b:80 policy-verdict FORWARDED TCP "
               "(SYN; ingress allowed by x/b-http)" in line for line in lines), out
    assert any(" [node1] x/a:" in line and "(SYN; egress: no policy isolates x/a)" in line
               for line in lines), out
    assert any("-> x/b:81 policy-verdict DROPPED TCP (SYN; POLICY_DENIED ingress, isolated "
               "by x/b-http)" in line for line in lines), out
    table = observe("--last", "3", "-o", "table", "--print-node-name").stdout.splitlines()
    assert table[0].split() == ["TIME", "NODE", "SOURCE", "DESTINATION", "TYPE", "VERDICT",
                                "SUMMARY"] and len(table) == 4


FILTERS: list[tuple[list[str], Callable[[Record], bool]]] = [
    (["--from-pod", "x/a"], lambda f: pod_of(f["source"]) == "x/a"),
    (["--to-pod", "x/b"], lambda f: pod_of(f["destination"]) == "x/b"),
    (["--pod", "x/c"], lambda f: "x/c" in (pod_of(f["source"]), pod_of(f["destination"]))),
    (["--pod", "x/a", "--pod", "x/c"], lambda f: bool(
        {"x/a", "x/c"} & {pod_of(f["source"]), pod_of(f["destination"])})),
    (["-n", "x"], lambda f: "x" in (f["source"]["namespace"], f["destination"]["namespace"])),
    (["--from-ip", "10.244.1.0/24"], lambda f: f["source"]["ip"].startswith("10.244.1.")),
    (["--to-ip", "10.244.2.0/24"], lambda f: f["destination"]["ip"].startswith("10.244.2.")),
    (["--ip", "10.244.2.0/24"], lambda f: "10.244.2." in f["source"]["ip"] + " "
                                            + f["destination"]["ip"]),
    (["--port", "81"], lambda f: 81 in (f["source"]["port"], f["destination"]["port"])),
    (["--protocol", "udp"], lambda f: f["protocol"] == "UDP"),
    (["--verdict", "DROPPED"], lambda f: f["verdict"] == "DROPPED"),
    (["--verdict", "FORWARDED", "--to-pod", "x/b"],
     lambda f: f["verdict"] == "FORWARDED" and pod_of(f["destination"]) == "x/b"),
    (["--type", "drop"], lambda f: f["type"] == "drop"),
    (["--type", "policy-verdict", "--protocol", "TCP"],
     lambda f: f["type"] == "policy-verdict" and f["protocol"] == "TCP"),
    (["-l", "pod=c"], lambda f: "c" in (f["source"]["labels"].get("pod"),
                                        f["destination"]["labels"].get("pod"))),
    # hubble's flags.
    (["--from-namespace", "x"], lambda f: f["source"]["namespace"] == "x"
     and f["source"]["pod"] is not None),
    (["--to-namespace", "x", "--to-port", "81"],
     lambda f: f["destination"]["namespace"] == "x" and f["destination"]["port"] == 81),
    (["--from-label", "pod=a"], lambda f: f["source"]["labels"].get("pod") == "a"),
    (["--to-label", "pod in (b,c)"],
     lambda f: f["destination"]["labels"].get("pod") in ("b", "c")),
    (["--from-port", "4000"], lambda f: f["source"]["port"] == 4000),  # the forged packet
    (["--node-name", "node2"], lambda f: f["node"] == "node2"),
    (["--tcp-flags", "SYN"], lambda f: f["protocol"] == "TCP" and "SYN" in f["tcp_flags"]),
    (["--traffic-direction", "ingress"], lambda f: f["direction"] == "ingress"),
    (["--drop-reason", "POLICY_DENIED"], lambda f: f["drop_reason"] == "POLICY_DENIED"),
    (["--not", "--verdict", "FORWARDED"], lambda f: f["verdict"] != "FORWARDED"),
    (["--pod", "x/b", "--port", "81"],
     lambda f: (pod_of(f["source"]) == "x/b" and f["source"]["port"] == 81)
     or (pod_of(f["destination"]) == "x/b" and f["destination"]["port"] == 81)),
]


def test_each_filter_selects_what_it_should_and_nothing_else(lab: Lab) -> None:
    # History only grows while the test runs: a flow that matched before must be shown,
    # and a flow shown must match and still be there at the end.
    before = records()
    shown = {" ".join(flags): records(*flags) for flags, _ in FILTERS}
    after = records()
    wrong = []
    for flags, wanted in FILTERS:
        name = " ".join(flags)
        must = {key(f) for f in before if wanted(f)}
        may = {key(f) for f in after if wanted(f)}
        got = {key(f) for f in shown[name]}
        if not must:
            wrong.append(f"{name}: the scenario has no flow for it")
        if not must <= got:
            wrong.append(f"{name}: missed {sorted(must - got)[:2]}")
        if not got <= may:
            wrong.append(f"{name}: showed {sorted(got - may)[:2]}")
    assert not wrong, "\n".join(wrong)


def test_replay_of_a_saved_file_equals_the_live_view(lab: Lab, tmp_path: Path) -> None:
    saved = tmp_path / "flows.json"
    saved.write_text(observe("-o", "json", "--all").stdout)
    everything = [json.loads(line) for line in saved.read_text().splitlines()]
    at = everything[len(everything) // 2]["time"]
    # The history only grows: the live view is cut to the saved records' time range.
    bound = ["--until", everything[-1]["time"]]
    for flags in [[], *(f for f, _ in FILTERS), ["--since", at], ["--first", "3"],
                  ["--last", "2", "--to-pod", "x/b"], ["--verdict", "DROPPED", "--all"]]:
        # Every selection as JSON; the text formats for a few (they share the records).
        text_too = flags in ([], ["--since", at], ["--verdict", "DROPPED", "--all"])
        for output in ("json", "compact", "dict") if text_too else ("json",):
            args = ["-o", output, "--print-node-name", *flags,
                    *([] if "--first" in flags else bound)]
            live = observe(*args).stdout
            replayed = in_process("observe", "--input-file", str(saved), *args)
            assert replayed.returncode == 0, replayed.stderr
            assert replayed.stdout == live, f"{' '.join(args)}: replay differs"
    from_stdin = podwire("observe", "--input-file", "-", "-o", "json", "--all",
                         stdin=saved.read_text())
    assert from_stdin.stdout == saved.read_text()


def test_last_and_since_bound_the_history(lab: Lab) -> None:
    everything = records()
    assert len(everything) >= 4
    last_two = records("--last", "2", "--to-pod", "x/b")
    assert [pod_of(f["destination"]) for f in last_two] == ["x/b", "x/b"]
    assert last_two == [f for f in records("--to-pod", "x/b")][-2:]
    middle = everything[len(everything) // 2]["time"]
    since = records("--since", middle)
    assert all(f["time"] >= middle for f in since)
    assert {key(f) for f in everything if f["time"] >= middle} <= {key(f) for f in since}
    assert records("--since", "2999-01-01T00:00:00") == []


def test_follow_streams_new_flows_as_they_happen(lab: Lab) -> None:
    proc = subprocess.Popen([*PODWIRE, "observe", "--lab", PREFIX, "-f", "-o", "json",
                             "--last", "1", "--to-pod", "x/b", "--port", "80",
                             "--verdict", "FORWARDED"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []],
                     daemon=True).start()
    try:
        first = json.loads(lines.get(timeout=30))  # the history: streams are open now
        assert pod_of(first["destination"]) == "x/b"
        assert lab.probe("x/a", "x/b", 80)
        fresh = [json.loads(lines.get(timeout=30)) for _ in range(2)]
        assert {f["node"] for f in fresh} == {"node1", "node2"}
        assert all(f["time"] > first["time"] and f["tcp_flags"] == ["SYN"] for f in fresh)
        assert fresh[0]["source"]["port"] == fresh[1]["source"]["port"] != (
            first["source"]["port"])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def hping_one_flow(lab: Lab, sport: int, count: int) -> None:
    """`count` UDP packets x/c -> x/a:80 from one source port (x/c may not send)."""
    c_ns = LabLayout(PREFIX).pod_netns(lab.pods["x/c"]["metadata"]["uid"])
    assert shutil.which("hping3"), "hping3 is missing: scripts/setup.sh installs it"
    sent = subprocess.run(["nsenter", f"--net={netns.path(c_ns)}", "hping3", "--udp",
                           "-p", "80", "-s", str(sport), "-k", "-i", "u100", "-c", str(count),
                           lab.ip("x/a")], capture_output=True, text=True, check=False)
    assert f"{count} packets transmitted" in sent.stdout + sent.stderr, sent.stderr


def from_port(sport: int) -> list[Record]:
    return [r for r in records("--from-pod", "x/c") if r["source"]["port"] == sport]


def test_a_flood_of_one_denied_flow_is_one_record_with_its_count(lab: Lab) -> None:
    """Aggregation `connection` (the agents' default): the datapath counts the flow's
    drops, the agent reports them as one record once the flow is quiet."""
    hping_one_flow(lab, 6100, 2000)
    (record,) = wait_for(lambda: from_port(6100), "the flood's record", 20)
    assert record["count"] == 2000 and record["drop_reason"] == "POLICY_DENIED"
    assert record["isolated_by"] == ["x/c-no-egress"]
    shown = observe("--from-pod", "x/c", "--last", "100000").stdout
    assert len([line for line in shown.splitlines() if ":6100 " in line]) == 1


def test_without_aggregation_a_flood_is_a_record_a_packet(lab: Lab) -> None:
    node1 = Datapath(LabLayout(PREFIX).node(1).pin_dir)
    node1.set_node_config(aggregation=Aggregation.NONE)
    try:
        hping_one_flow(lab, 6200, 300)
    finally:
        node1.set_node_config(aggregation=Aggregation.CONNECTION)
        node1.close()
    wait_for(lambda: len(from_port(6200)) >= 300, "a record for each packet", 20)
    got = from_port(6200)
    assert len(got) == 300 and {r["count"] for r in got} == {1}


def test_the_cluster_view_goes_through_the_api_server(lab: Lab) -> None:
    """`--kubeconfig` (a workstation's path) and `--lab` are one path: the agent pods
    listed from the API server, each agent's loopback API reached by pods/portforward.
    The agents' endpoint itself is not on the network."""
    kubeconfig = ["--kubeconfig", lab.state.kubeconfig, "--agent-namespace", "kube-system"]
    bound = ["--until", records()[-1]["time"]]
    through_kubeconfig = podwire("observe", *kubeconfig, "-o", "json", "--all", *bound)
    assert through_kubeconfig.returncode == 0, through_kubeconfig.stderr
    assert through_kubeconfig.stdout == observe("-o", "json", "--all", *bound).stdout
    assert {json.loads(line)["node"] for line in through_kubeconfig.stdout.splitlines()} == {
        "node1", "node2"}
    status = podwire("status", *kubeconfig, "-o", "json")
    assert status.returncode == 0, status.stderr
    assert {n["node"] for n in json.loads(status.stdout)["nodes"]} == {"node1", "node2"}
    pods = Kube(Path(lab.state.kubeconfig)).list_pods()["items"]
    agents = {p["metadata"]["name"]: p for p in pods if p["metadata"]["name"].startswith(
        "podwire-agent-")}
    assert set(agents) == {"podwire-agent-node1", "podwire-agent-node2"}
    assert all(p["status"]["phase"] == "Running" and p["metadata"]["namespace"] == "kube-system"
               for p in agents.values())
    # From another node, the agent's observe port at its node address refuses.
    layout = LabLayout(PREFIX)
    with in_netns(layout.node(1).netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(3)
        assert sock.connect_ex((layout.node(2).underlay_ip, 9963)) != 0
    nowhere = podwire("observe", "--kubeconfig", lab.state.kubeconfig)
    assert nowhere.returncode == 2 and "no running podwire agent pod in podwire-system" in (
        nowhere.stderr)


def test_status_shows_every_node(lab: Lab) -> None:
    proc = subprocess.run([*PODWIRE, "status", "--lab", PREFIX, "-o", "json"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    nodes = {n["node"]: n for n in json.loads(proc.stdout)["nodes"]}
    assert set(nodes) == {"node1", "node2"}
    assert all(n["ready"] and n["reachable"] for n in nodes.values())
    # The lab's cluster DNS is a pod too (kube-system/coredns, on one of the nodes).
    assert {e["pod"] for e in nodes["node1"]["endpoints"]} - {"coredns"} == {"a", "c"}
    assert {e["pod"] for e in nodes["node2"]["endpoints"]} - {"coredns"} == {"b"}
    assert nodes["node2"]["maps"]["policy"]["entries"] >= 1
    dns_here = any(e["pod"] == "coredns" for e in nodes["node1"]["endpoints"])
    assert nodes["node1"]["maps"]["endpoints"] == {"entries": 2 + dns_here, "max": 1024}
    rich = subprocess.run([*PODWIRE, "status", "--lab", PREFIX], capture_output=True,
                          text=True, timeout=60, check=False)
    assert rich.returncode == 0 and "node1" in rich.stdout and "node2" in rich.stdout
    assert "x/a" in rich.stdout and "lost events" in rich.stdout


def test_metrics_scrape_parses_and_moves_with_traffic(lab: Lab) -> None:
    node2 = LabLayout(PREFIX).node(2)

    def forwarded_ingress() -> float:
        url = f"http://{node2.underlay_ip}:9962/metrics"
        with in_netns(node2.netns), urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["podwire_endpoints"].samples[0].value == 1
        return sum(s.value for s in families["podwire_forwarded_packets"].samples
                   if s.name == "podwire_forwarded_packets_total"
                   and s.labels["direction"] == "ingress")

    before = forwarded_ingress()
    assert lab.probe("x/a", "x/b", 80)
    assert forwarded_ingress() > before


def test_bad_input_is_named_without_a_traceback(lab: Lab) -> None:
    for flags, message in ((["--port", "http"], "port 'http' is not a number"),
                           (["--since", "soon"], "--since 'soon'"),
                           (["--last=-1"], "--last -1"),
                           (["--first", "1", "--last", "1"], "cannot set both --first and"),
                           (["--not"], "trailing --not")):
        proc = observe(*flags, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    missing = podwire("observe", "--input-file", "/run/pwtob-none.json")
    assert missing.returncode == 2, missing.stderr
    assert "--input-file /run/pwtob-none.json: No such file" in missing.stderr
    gone = subprocess.run([*PODWIRE, "observe", "--socket", "/run/pwtob-none.sock"],
                          capture_output=True, text=True, check=False)
    assert gone.returncode == 1 and "/run/pwtob-none.sock" in gone.stderr
    assert "Traceback" not in gone.stderr


# Last: the flood's records keep arriving (and evicting older ones from the bounded
# history) after it stops, so a test after it could not compare two reads of the history.
def test_lost_events_are_reported(lab: Lab) -> None:
    """A flood of denied packets (one event each) outruns the agent's reader; the lost
    count shows in status and observe says so."""
    c_ns = LabLayout(PREFIX).pod_netns(lab.pods["x/c"]["metadata"]["uid"])

    def lost() -> int:
        out = in_process("status", "--lab", PREFIX, "-o", "json").stdout
        return sum(n["lost_events"] for n in json.loads(out)["nodes"])

    already = lost()
    # Without it nothing floods and the wait below runs out: say so at once.
    assert shutil.which("hping3"), "hping3 is missing: scripts/setup.sh installs it"
    # hping3 changes the source port every packet: every packet is a new denied flow.
    flood = subprocess.Popen(["nsenter", f"--net={netns.path(c_ns)}", "hping3", "--udp",
                              "--flood", "-p", "80", lab.ip("x/a")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: lost() > already, "events lost under a flood", 20)
    finally:
        flood.kill()
        flood.wait()
    proc = observe("--last", "0")
    assert "events lost on node1" in proc.stderr, proc.stderr
    assert proc.stdout == ""

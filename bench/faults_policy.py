"""Fault scenario policy-churn: policy updates at the API's pace while denied pairs are
probed without pause.

Namespace fltpol holds servers srv1 (node1) and srv2 (node2), clients deny1/deny2 that
every policy state denies, and ally1/ally2 that some states allow. A base policy keeps
the servers isolated throughout; the updates create, replace and delete allow policies
(pod selectors, match expressions, port ranges, UDP, ipBlocks whose `except` names the
denied clients, egress rules of the denied clients), so the pairs deny* -> srv* are
denied in every state the updates pass through, same node and cross node. The denied
clients open new TCP connections and send UDP datagrams (each from a new port, so each
is a new flow the datapath must judge) to a listener of the bench's own in each server.

Counted: connections accepted and datagrams received from the denied clients at the
listeners, and flows from them the datapath forwarded (the agents' flow records).
Expected 0 of each. The allowed clients' connections are counted too, to show the
probes and listeners work.
"""

from __future__ import annotations

import json
import random
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from podwire.bench.faults_lab import Lab, drops_by_reason, log, stop_loops
from podwire.bench.figures import Expectation, Figures
from podwire.common import agentapi
from podwire.lab import manifests, netns, samples, workload

NAMESPACE = "fltpol"
PORT = 7070  # the bench's own listener in each server, apart from the pods' echo ports
SERVERS = {"srv1": "node1", "srv2": "node2"}
DENIED = {"deny1": "node1", "deny2": "node2"}
ALLOWED = {"ally1": "node1", "ally2": "node2"}
BATCH = 32  # connection attempts a prober has in flight at once
ATTEMPT_S = 0.25
LINGER_RST = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def workload_objects() -> list[dict[str, Any]]:
    objects = [samples.namespace(NAMESPACE), samples.namespace("fltpeer"),
               policy("srv-isolated", {"podSelector": {"matchLabels": {"app": "srv"}},
                                       "policyTypes": ["Ingress"]})]
    for names, labels in ((SERVERS, {"app": "srv"}), (DENIED, {"role": "never"}),
                          (ALLOWED, {"role": "sometimes"})):
        objects += [samples.pod(NAMESPACE, name, (80,), labels, node)
                    for name, node in names.items()]
    return objects


def _ports(rng: random.Random) -> list[dict[str, Any]]:
    return rng.choice([[{"port": PORT}], [{"port": PORT, "protocol": "UDP"}],
                       [{"port": 7000, "endPort": 7100}], [{"port": 80}, {"port": PORT}],
                       []])


def _peers(rng: random.Random, denied_ips: list[str]) -> list[dict[str, Any]]:
    """Peers of an allow rule: never the denied clients (label role=never)."""
    return rng.choice([
        [{"podSelector": {"matchLabels": {"role": "sometimes"}}}],
        [{"podSelector": {"matchExpressions": [
            {"key": "role", "operator": "In", "values": ["sometimes", "other"]}]}}],
        [{"podSelector": {"matchExpressions": [
            {"key": "role", "operator": "NotIn", "values": ["never"]}]}}],
        [{"namespaceSelector": {"matchLabels": {"ns": "fltpeer"}}}],
        [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"{ip}/32" for ip in denied_ips]}}],
    ])


def update(rng: random.Random, denied_ips: list[str]) -> tuple[str, dict[str, Any] | None]:
    """One random change: (policy name, its new body) or (name, None) to delete it."""
    slot = rng.randrange(4)
    if rng.random() < 0.25:
        return f"allow-{slot}", None
    if slot == 3:  # egress of the denied clients: changes their side, never the servers'
        return "never-egress", policy("never-egress", {
            "podSelector": {"matchLabels": {"role": "never"}}, "policyTypes": ["Egress"],
            "egress": rng.choice([[], [{"to": [{"podSelector": {}}]}],
                                  [{"ports": [{"port": PORT}]}]])})
    selector = rng.choice([{"matchLabels": {"app": "srv"}}, {}])
    return f"allow-{slot}", policy(f"allow-{slot}", {
        "podSelector": selector, "policyTypes": ["Ingress"],
        "ingress": [{"from": _peers(rng, denied_ips), "ports": _ports(rng)}]})


class Listener:
    """TCP and UDP sockets on PORT in each server's namespace, counting by peer."""

    def __init__(self, namespaces: list[str]) -> None:
        self.accepted: Counter[str] = Counter()
        self.datagrams: Counter[str] = Counter()
        self.sockets: list[socket.socket] = []
        for ns in namespaces:
            tcp = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind(("0.0.0.0", PORT))
            tcp.listen(1024)
            udp = netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("0.0.0.0", PORT))
            self.sockets += [tcp, udp]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="listener", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select(self.sockets, [], [], 0.1)
            for sock in ready:
                try:
                    self._take(sock)
                except OSError:  # a connection its client reset before the accept
                    continue

    def _take(self, sock: socket.socket) -> None:
        if sock.type == socket.SOCK_STREAM:
            conn, (peer, _) = sock.accept()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            conn.close()
            self.accepted[peer] += 1
        else:
            _, (peer, _) = sock.recvfrom(2048)
            self.datagrams[peer] += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


class Prober:
    """New TCP connections and UDP datagrams from one client to every server, BATCH at
    a time, until stopped."""

    def __init__(self, client_ns: str, server_ips: list[str]) -> None:
        self.client_ns, self.server_ips = client_ns, server_ips
        self.tcp_attempts = self.udp_sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"probe-{client_ns}", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            pending = []
            for ip in self.server_ips:
                for _ in range(BATCH // len(self.server_ips)):
                    tcp = netns.socket_in(self.client_ns, socket.AF_INET, socket.SOCK_STREAM)
                    tcp.setblocking(False)
                    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
                    tcp.connect_ex((ip, PORT))
                    pending.append(tcp)
                    with netns.socket_in(self.client_ns, socket.AF_INET,
                                         socket.SOCK_DGRAM) as udp:
                        udp.sendto(b"faults\n", (ip, PORT))
                    self.udp_sent += 1
            self.tcp_attempts += len(pending)
            select.select([], pending, [], ATTEMPT_S)  # connected ones are counted server-side
            for tcp in pending:
                tcp.close()


class FlowWatch:
    """Polls every agent's recent flow records, keeping those a predicate picks."""

    def __init__(self, lab: Lab, keep: Callable[[dict[str, Any]], bool]) -> None:
        self.lab, self.keep = lab, keep
        self.kept: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="flows", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.3):
            self.poll()

    def poll(self) -> None:
        for node in self.lab.state.node_layouts():
            try:
                records = agentapi.recent_flows(node.socket_path, last=4096)
            except agentapi.AgentError:
                continue
            self.kept |= {json.dumps(r, sort_keys=True) for r in records if self.keep(r)}


def lost_events(lab: Lab) -> float:
    return sum(float(lab.status(n).get("lost_events", 0)) for n in lab.state.node_layouts())


def denied_drops(lab: Lab) -> float:
    return sum(drops_by_reason(lab.metrics(n)).get("POLICY_DENIED", 0.0)
               for n in lab.state.node_layouts())


def run(lab: Lab, updates: int, seconds: float, seed: int) -> Figures:
    workload.apply(lab.kube, lab.state, manifests.parse(samples.to_yaml(workload_objects())))
    pods = lab.pods()
    ns_of = {ref.split("/", 1)[1]: ns for ref, (ns, _) in pods.items()}
    ip_of = {ref.split("/", 1)[1]: ip for ref, (_, ip) in pods.items()}
    server_ips = [ip_of[s] for s in SERVERS]
    denied_ips = [ip_of[d] for d in DENIED]
    rng = random.Random(seed)
    # The receiver's ingress verdict: a cross-node flow is also forwarded by the sender's
    # egress check (no egress policy denies it), which is no delivery.
    watch = FlowWatch(lab, lambda r: r["verdict"] == "FORWARDED" and "ingress" in r["evaluated"]
                      and r["source"]["ip"] in denied_ips
                      and r["destination"]["ip"] in server_ips)
    listener = Listener([ns_of[s] for s in SERVERS])
    probers = [Prober(ns_of[c], server_ips) for c in (*DENIED, *ALLOWED)]
    drops_before, lost_before = denied_drops(lab), lost_events(lab)
    started = time.monotonic()
    try:
        watch.thread.start()
        for prober in probers:
            prober.thread.start()
        applied = apply_updates(lab, rng, denied_ips, updates, seconds)
        writing = time.monotonic() - started
        workload.wait_agents(lab.kube, lab.state, 120.0)
        caught_up = time.monotonic() - started - writing
        time.sleep(1.0)  # probes of the final state too
    finally:
        stop_loops([(p.stop, p.thread) for p in probers] + [(watch.stop, watch.thread)])
        listener.close()
    watch.poll()
    for record in sorted(watch.kept)[:3]:
        log(f"policy-churn: a denied flow forwarded: {record}")
    denied = [p for p in probers if p.client_ns in {ns_of[d] for d in DENIED}]
    scalars = {
        "policy updates": applied, "seconds writing": writing,
        "updates/s": applied / writing if writing else 0.0,
        "agents caught up s after the last write": caught_up,
        "denied TCP attempts": sum(p.tcp_attempts for p in denied),
        "denied UDP datagrams sent": sum(p.udp_sent for p in denied),
        "POLICY_DENIED drops counted": denied_drops(lab) - drops_before,
        "flow events lost": lost_events(lab) - lost_before,
        "allowed-client connections accepted (listeners work)":
            sum(listener.accepted[ip_of[a]] for a in ALLOWED)}
    found = {"denied-pair TCP connections accepted":
             sum(listener.accepted[ip] for ip in denied_ips),
             "denied-pair UDP datagrams received":
             sum(listener.datagrams[ip] for ip in denied_ips),
             "denied-pair flows the datapath forwarded": len(watch.kept)}
    return Figures(scalars={f"policy-churn: {k}": float(v) for k, v in scalars.items()},
                   expectations=[Expectation("policy-churn", k, v, "==", 0)
                                 for k, v in found.items()])


def apply_updates(lab: Lab, rng: random.Random, denied_ips: list[str], count: int,
                  seconds: float) -> int:
    """`count` writes (creates, replaces by PUT, deletes) spread over `seconds` or as fast
    as the API takes them, so the probes meet every state for a while."""
    existing: set[str] = set()
    applied = 0
    started = time.monotonic()
    while applied < count:
        time.sleep(max(0.0, started + seconds * applied / count - time.monotonic()))
        name, body = update(rng, denied_ips)
        if body is None and name not in existing:
            continue
        if body is None:
            lab.kube.delete("NetworkPolicy", name, NAMESPACE)
            existing.discard(name)
        elif name in existing:
            current = lab.kube.read("NetworkPolicy", name, NAMESPACE)
            assert current is not None
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            lab.kube.replace_policy(name, NAMESPACE, body)
        else:
            lab.kube.create("NetworkPolicy", body, NAMESPACE)
            existing.add(name)
        applied += 1
        if applied % 100 == 0:
            log(f"policy-churn: {applied}/{count} updates")
    return applied

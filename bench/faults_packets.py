"""Fault scenario crafted-packets: malformed and spoofed packets from a pod against a deny.

Pod atk (node1) writes scapy-built frames straight onto its eth0 (an AF_PACKET socket:
no kernel stack of its own to tidy them up) towards tgt1 (node1) and tgt2 (node2), whose
ingress a policy denies: L3 and L4 headers cut short or lying about their lengths, IP
options, fragments (tiny, orphaned, overlapping), forged sources, TCP without a
connection, ICMP errors quoting no connection, other ethertypes.

Counted: frames that reached the targets (an AF_PACKET socket on each target's eth0) and
that reached their application (TCP and UDP sockets on the probed ports); agent crashes
(an agent process that changed or is not ready, a traceback in its log); and drops
without a named reason: every frame sent meets the sender's from-pod program, which
counts it forwarded or dropped under a reason of bpf/lib/drop.h, and every frame it
forwards into the tunnel meets the receiver's from-overlay program, so what the
counters do not account for (or count under an unknown reason) was dropped unnamed.
Expected: 0, 0, 0.
"""

from __future__ import annotations

import json
import random
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scapy.layers.inet import (
    ICMP,
    IP,
    TCP,
    UDP,
    IPOption_LSRR,
    IPOption_RR,
    IPOption_Timestamp,
    fragment,
)
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from podwire.bench.faults_lab import Lab, drops_by_reason, log
from podwire.bench.figures import Expectation, Figures
from podwire.lab import manifests, netns, samples, workload

NAMESPACE = "fltpkt"
PORT = 7070
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
DENY_TARGETS = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "targets-deny-all", "namespace": NAMESPACE},
                "spec": {"podSelector": {"matchLabels": {"role": "target"}},
                         "policyTypes": ["Ingress"]}}


@dataclass(frozen=True)
class Addresses:
    attacker_ip: str
    attacker_mac: str
    gateway_mac: str  # the attacker's host-side veth, its next hop
    bystander_ip: str
    node_ip: str


Craft = Callable[[random.Random, Addresses, str], list[bytes]]


def _eth(a: Addresses) -> Ether:
    return Ether(src=a.attacker_mac, dst=a.gateway_mac)


def _syn(rng: random.Random) -> TCP:
    return TCP(sport=rng.randrange(1024, 65535), dport=PORT, flags="S")


def _raw_ip(a: Addresses, header: bytes, rest: bytes = b"") -> bytes:
    return bytes(_eth(a)) + header + rest


def truncated_ip_header(rng: random.Random, a: Addresses, dst: str) -> list[bytes]:
    return [_raw_ip(a, bytes(IP(src=a.attacker_ip, dst=dst) / _syn(rng))[:rng.randrange(1, 20)])]


def length_beyond_frame(rng: random.Random, a: Addresses, dst: str) -> list[bytes]:
    return [bytes(_eth(a) / IP(src=a.attacker_ip, dst=dst, len=rng.randrange(60, 1400))
                  / _syn(rng))]


def length_below_header(rng: random.Random, a: Addresses, dst: str) -> list[bytes]:
    return [bytes(_eth(a) / IP(src=a.attacker_ip, dst=dst, len=rng.randrange(0, 20))
                  / _syn(rng))]


def bad_ihl_or_version(rng: random.Random, a: Addresses, dst: str) -> list[bytes]:
    header = rng.choice([{"ihl": rng.randrange(0, 5)}, {"ihl": 15}, {"version": 6},
                         {"version": rng.randrange(0, 4)}])
    return [bytes(_eth(a) / IP(src=a.attacker_ip, dst=dst, **header) / _syn(rng))]


def truncated_l4(rng: random.Random, a: Addresses, dst: str) -> list[bytes]:
    """TCP, UDP or ICMP header shorter than its fixed part, total length consistent."""
    l4, cut = rng.choice([(_syn(rng), rng.randrange(0, 20)),
                          (UDP(sport=rng.randrange(1024, 65535), dport=PORT), rng.randrange(0, 8)),
                          (ICMP(type=8, id=rng.randrange(65536)), rng.randrange(0, 8))])
    ip = IP(src=a.attacker_ip, dst=dst, proto=l4.overload_fields.get(IP, {}).get("proto", 6))
    return [_raw_ip(a, bytes(ip / Raw(bytes(l4)[:cut])))]


def ip_options(rng: random.Random, a: Addresses, dst: str) -> list[bytes]:
    options = rng.choice([[IPOption_RR()], [IPOption_Timestamp()],
                          [IPOption_LSRR(routers=[a.node_ip, dst])],
                          [IPOption_RR(), IPOption_Timestamp(flg=1)]])
    return [bytes(_eth(a) / IP(src=a.attacker_ip, dst=dst, options=options) / _syn(rng))]


def fragments(rng: random.Random, a: Addresses, dst: str) -> list[bytes]:
    """A SYN cut into fragments: whole, orphaned later parts, overlapping, or a first
    fragment too short for the TCP header."""
    ident = rng.randrange(65536)
    packet = IP(src=a.attacker_ip, dst=dst, id=ident) / _syn(rng) / Raw(b"x" * 64)
    parts = fragment(packet, fragsize=rng.choice([8, 16, 24]))
    kind = rng.randrange(4)
    if kind == 1:
        parts = parts[1:]  # the first fragment never comes
    elif kind == 2:  # a later fragment overwriting the TCP header's ports and flags
        parts = [*parts, IP(src=a.attacker_ip, dst=dst, id=ident, frag=0, flags="MF")
                 / Raw(bytes(TCP(sport=1, dport=22, flags="A"))[:8])]
    elif kind == 3:  # a first fragment holding 8 bytes of TCP
        parts = [IP(src=a.attacker_ip, dst=dst, id=ident, flags="MF", proto=6)
                 / Raw(bytes(_syn(rng))[:8]), *parts[1:]]
    return [bytes(_eth(a) / p) for p in parts]


def forged_source(rng: random.Random, a: Addresses, dst: str) -> list[bytes]:
    src = rng.choice([f"10.244.{rng.randrange(256)}.{rng.randrange(1, 255)}", dst,
                      a.bystander_ip, a.node_ip, "0.0.0.0", "255.255.255.255", "127.0.0.1",
                      "169.254.1.1", f"{rng.randrange(1, 224)}.{rng.randrange(256)}.0.9"])
    l4 = rng.choice([_syn(rng), UDP(sport=rng.randrange(1024, 65535), dport=PORT) / Raw(b"x")])
    return [bytes(_eth(a) / IP(src=src, dst=dst) / l4)]


def no_connection(rng: random.Random, a: Addresses, dst: str) -> list[bytes]:
    """TCP that belongs to no connection, ICMP errors quoting one, a bad checksum."""
    quoted = IP(src=dst, dst=a.attacker_ip) / TCP(sport=PORT, dport=rng.randrange(1024, 65535))
    l4 = rng.choice([TCP(sport=rng.randrange(1024, 65535), dport=PORT, flags=f)
                     for f in ("A", "R", "F", "PA", "FPU", "SA", "")]
                    + [ICMP(type=3, code=rng.randrange(16)) / bytes(quoted)[:28],
                       ICMP(type=11) / bytes(quoted), ICMP(type=0, id=rng.randrange(65536)),
                       _syn(rng)])
    return [bytes(_eth(a) / IP(src=a.attacker_ip, dst=dst, chksum=rng.choice([None, 0, 0xbeef]))
                  / l4)]


def other_l3(rng: random.Random, a: Addresses, dst: str) -> list[bytes]:
    inner = IP(src=a.attacker_ip, dst=dst) / _syn(rng)
    return [bytes(rng.choice([_eth(a) / Dot1Q(vlan=rng.randrange(1, 4095)) / inner,
                              _eth(a) / IPv6(dst="fe80::1") / Raw(b"x" * 20),
                              Ether(src=a.attacker_mac, dst="ff:ff:ff:ff:ff:ff") / inner,
                              Ether(src=a.attacker_mac, dst=a.gateway_mac, type=0x88b5)
                              / Raw(bytes(inner))]))]


CRAFTS: dict[str, Craft] = {
    "IP header truncated": truncated_ip_header, "IP length beyond frame": length_beyond_frame,
    "IP length below header": length_below_header, "IP ihl/version": bad_ihl_or_version,
    "L4 header truncated": truncated_l4, "IP options": ip_options, "fragments": fragments,
    "forged sources": forged_source, "no connection": no_connection, "other L3": other_l3}


def craft(count: int, a: Addresses, targets: list[str], seed: int,
          ) -> tuple[list[bytes], dict[str, int]]:
    """At least `count` frames, a round of every kind for each target in turn; and how
    many frames each kind made."""
    rng = random.Random(seed)
    frames: list[bytes] = []
    made = dict.fromkeys(CRAFTS, 0)
    round_ = 0
    while len(frames) < count:
        target = targets[round_ % len(targets)]
        for name, kind in CRAFTS.items():
            new = kind(rng, a, target)
            made[name] += len(new)
            frames += new
        round_ += 1
    # AF_PACKET wants at least an Ethernet header.
    return [f.ljust(14, b"\0") for f in frames], made


class Capture:
    """Every frame arriving at a target's eth0, and its application's sockets."""

    def __init__(self, namespaces: list[str]) -> None:
        self.frames = self.app = 0
        self.sockets: list[socket.socket] = []
        for ns in namespaces:
            raw = netns.socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            raw.bind(("eth0", ETH_P_ALL))
            tcp = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
            tcp.bind(("0.0.0.0", PORT))
            tcp.listen(128)
            udp = netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("0.0.0.0", PORT))
            self.sockets += [raw, tcp, udp]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for sock in select.select(self.sockets, [], [], 0.1)[0]:
                if sock.family == socket.AF_PACKET:
                    frame, address = sock.recvfrom(65535)
                    ethertype = int.from_bytes(frame[12:14], "big")
                    # ARP between the pod and its gateway is no attack traffic.
                    self.frames += address[2] != PACKET_OUTGOING and ethertype != 0x0806
                elif sock.type == socket.SOCK_STREAM:
                    sock.accept()[0].close()
                    self.app += 1
                else:
                    sock.recv(65535)
                    self.app += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


def _link(ns: str, args: list[str]) -> Any:
    out = netns.run(ns, ["ip", "-j", *args])
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} in {ns}: {out.stderr}")
    return json.loads(out.stdout)


def addresses(lab: Lab, pods: dict[str, tuple[str, str]]) -> Addresses:
    ns, ip = pods[f"{NAMESPACE}/atk"]
    gateway = next(n["lladdr"] for n in _link(ns, ["neigh", "show", "dev", "eth0"])
                   if n.get("dst") == "169.254.1.1")
    return Addresses(ip, _link(ns, ["link", "show", "eth0"])[0]["address"], gateway,
                     pods[f"{NAMESPACE}/bystander"][1], lab.node(1).underlay_ip)


def counted(lab: Lab, index: int) -> dict[str, float]:
    """Packets the node's datapath counted, by reason (FORWARDED included)."""
    samples_ = lab.metrics(lab.node(index))
    reasons = drops_by_reason(samples_)
    reasons["FORWARDED"] = sum(v for (name, _), v in samples_.items()
                               if name == "podwire_forwarded_packets_total")
    return reasons


def agent_marks(lab: Lab) -> list[tuple[int | None, int]]:
    """Each agent's pid and the length of its log, to see a crash or a traceback later."""
    return [(lab.agent_pid(n), n.agent_log.stat().st_size) for n in lab.state.node_layouts()]


def crashes(lab: Lab, before: list[tuple[int | None, int]]) -> int:
    found = 0
    for node, (pid, size) in zip(lab.state.node_layouts(), before, strict=True):
        with node.agent_log.open("rb") as f:
            f.seek(size)
            tracebacks = f.read().count(b"Traceback")
        found += tracebacks + (lab.agent_pid(node) != pid or not lab.status(node)["ready"])
    return found


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def run(lab: Lab, count: int, seed: int) -> Figures:
    objects = [samples.namespace(NAMESPACE), DENY_TARGETS,
               samples.pod(NAMESPACE, "atk", (80,), node="node1"),
               samples.pod(NAMESPACE, "bystander", (80,), node="node1"),
               samples.pod(NAMESPACE, "tgt1", (80,), {"role": "target"}, "node1"),
               samples.pod(NAMESPACE, "tgt2", (80,), {"role": "target"}, "node2")]
    workload.apply(lab.kube, lab.state, manifests.parse(samples.to_yaml(objects)))
    pods = lab.pods()
    targets = [pods[f"{NAMESPACE}/{t}"] for t in ("tgt1", "tgt2")]
    frames, made = craft(count, addresses(lab, pods), [ip for _, ip in targets], seed)
    log(f"crafted-packets: {len(frames)} frames crafted")
    capture = Capture([ns for ns, _ in targets])
    marks = agent_marks(lab)
    before = [counted(lab, 1), counted(lab, 2)]
    try:
        sender = netns.socket_in(pods[f"{NAMESPACE}/atk"][0], socket.AF_PACKET, socket.SOCK_RAW)
        with sender:
            sender.bind(("eth0", 0))
            for frame in frames:
                sender.send(frame)
        time.sleep(1.0)  # what is in flight arrives, what the agents read is read
    finally:
        capture.close()
    node1, node2 = delta(counted(lab, 1), before[0]), delta(counted(lab, 2), before[1])
    forwarded = node1.get("FORWARDED", 0.0)
    unknown = sum(v for d in (node1, node2) for k, v in d.items() if k.startswith("UNKNOWN"))
    unnamed = (max(0.0, len(frames) - sum(node1.values()))
               + max(0.0, forwarded - sum(node2.values())) + unknown)
    scalars: dict[str, float] = {"frames sent": len(frames),
                                 **{f"frames: {k}": v for k, v in made.items()},
                                 "counted by node1 (sender)": sum(node1.values()),
                                 "forwarded by node1 into the tunnel": forwarded,
                                 "counted by node2 (receiver)": sum(node2.values())}
    scalars |= {f"node1 {k}": v for k, v in sorted(node1.items())}
    scalars |= {f"node2 {k}": v for k, v in sorted(node2.items())}
    found = {"frames that reached the targets": capture.frames,
             "packets that reached the application": capture.app,
             "agent crashes": crashes(lab, marks), "drops without a named reason": unnamed}
    return Figures(scalars={f"crafted-packets: {k}": float(v) for k, v in scalars.items()},
                   expectations=[Expectation("crafted-packets", k, v, "==", 0)
                                 for k, v in found.items()])

"""Map entries as the agent computes them: plain values, independent of the C layout.

`agent/desired.py` produces these from the cluster model, `agent/reconcile.py` diffs
them against what is installed, and `agent/programmer.py` turns them into the C structs
of `agent/structs.py`. Keeping them here, small and hashable, lets the semantics be
tested without a kernel.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from podwire.bpf.constants import (
    POLICY_PREFIX_ANY_PORT,
    POLICY_PREFIX_ANY_PROTO,
    Direction,
    LbScope,  # lb_key.scope, read from bpf/lib/types.h; part of this module's contract
    PolicyAction,  # policy_value's actions (types.h); part of this module's contract
)
from podwire.policy import Direction as PolicyDirection


def datapath_direction(direction: PolicyDirection) -> Direction:
    """The datapath's direction for a policy type: the one place the agent converts.

    policy/ is pure and keeps its own (a policy type, "Ingress"/"Egress"); both name
    their members INGRESS and EGRESS.
    """
    return Direction[direction.name]


def policy_direction(direction: Direction) -> PolicyDirection:
    """Inverse of datapath_direction."""
    return PolicyDirection[direction.name]


class Protocol(enum.IntEnum):
    """IP protocol numbers; ANY means every protocol (a rule with no ports)."""

    ANY = 0
    ICMP = 1
    TCP = 6
    UDP = 17
    SCTP = 132

    @classmethod
    def from_name(cls, name: str) -> Protocol:
        return cls[name.upper()]


@dataclass(frozen=True)
class EndpointEntry:
    ifindex: int
    ep_id: int
    identity: int
    # A NetworkPolicy selects the pod that way (what none allows is denied, or audited).
    ingress_isolated: bool
    egress_isolated: bool
    pod_mac: str
    host_mac: str
    # A cluster policy selects the pod that way: policy is looked up even when no
    # NetworkPolicy isolates it.
    ingress_tiered: bool = False
    egress_tiered: bool = False
    # Every NetworkPolicy isolating it that way is in audit mode.
    ingress_audit: bool = False
    egress_audit: bool = False


@dataclass(frozen=True)
class IpcacheEntry:
    identity: int
    # Identity of the longest ipBlock prefix containing this prefix (0: none).
    cidr_identity: int
    # Underlay address of the node hosting this prefix, for remote pods and pod CIDRs.
    tunnel_ip: str | None = None


class PolicyKey(NamedTuple):
    # A tuple, not a dataclass: plans build and hash hundreds of thousands of these, and
    # a tuple is made and hashed in C.
    ep_id: int
    direction: Direction
    identity: int
    protocol: Protocol = Protocol.ANY
    port: int = 0
    # How many leading bits of the port are fixed: 16 is one port, 0 every port.
    port_bits: int = 0

    @property
    def prefixlen(self) -> int:
        if self.protocol == Protocol.ANY:
            return POLICY_PREFIX_ANY_PROTO
        return POLICY_PREFIX_ANY_PORT + self.port_bits


class TierVerdict(NamedTuple):
    """A cluster policy tier's say at one key: the earliest rule there (lowest rank).

    Tuples, like PolicyKey: a tiered change makes and compares tens of thousands."""

    rank: int  # the rule's place in its tier, from 1; 0 is reconcile's changing deny
    action: PolicyAction
    ref: int  # the agent's number of the rule (PolicyRefs), 0 for the changing deny


# What reconcile writes for the instant a key's cluster policy verdict changes: it comes
# before every rule, and denies.
CHANGING = TierVerdict(0, PolicyAction.DENY, 0)


class PolicyValue(NamedTuple):
    # Index into the agent's table of "namespace/name"; names the allowing
    # NetworkPolicy, 0 when none allows at this key.
    policy_ref: int = 0
    admin: TierVerdict | None = None
    baseline: TierVerdict | None = None


def port_mask(port: int, bits: int) -> int:
    """The port with all but its `bits` leading bits cleared (a key's first port)."""
    return port & PORT_MASKS[bits]


def wider_keys(key: PolicyKey) -> Iterator[PolicyKey]:
    """The keys of the same endpoint, direction and identity whose prefix holds `key`'s,
    widest first: the LPM trie's fallbacks when `key` is absent."""
    if key.protocol is Protocol.ANY:
        return
    ep_id, direction, identity, protocol, port = (key.ep_id, key.direction, key.identity,
                                                  key.protocol, key.port)
    yield PolicyKey(ep_id, direction, identity)
    for bits in range(key.port_bits):
        yield PolicyKey(ep_id, direction, identity, protocol, port & PORT_MASKS[bits], bits)


PORT_MASKS = tuple((0xFFFF << (16 - bits)) & 0xFFFF for bits in range(17))


def port_range_blocks(start: int, end: int) -> list[tuple[int, int]]:
    """Cover [start, end] with aligned power-of-two blocks: (first port, fixed bits).

    An endPort range costs at most 30 LPM entries instead of one entry per port, and a
    lookup stays a single LPM walk.
    """
    if not 0 <= start <= end <= 0xFFFF:
        raise ValueError(f"invalid port range {start}-{end}")
    blocks: list[tuple[int, int]] = []
    port = start
    while port <= end:
        size_bits = 0
        while size_bits < 16:
            size = 1 << (size_bits + 1)
            if port % size != 0 or port + size - 1 > end:
                break
            size_bits += 1
        blocks.append((port, 16 - size_bits))
        port += 1 << size_bits
    return blocks


def prefix_of(network: str | ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(network, strict=False)


# --- Services (kube-proxy replacement): the load balancer's maps -------------------
#
# The contract between the control plane (agent/services.py computes these from Services
# and EndpointSlices) and the datapath (agent/programmer.py writes them as the C structs
# of bpf/lib/types.h; bpf/lib/lb.h reads them). A frontend is one Service port on one
# address, as seen from one scope; its entry lists the backends that take new
# connections, in slot order (the datapath picks slot 1..len at random, or the one a
# ClientIP affinity remembers).


# Slotted: a cluster of 10,000 Services holds tens of thousands of each (no __dict__).
@dataclass(frozen=True, order=True, slots=True)
class FrontendKey:
    address: str  # ClusterIP, or a node address for a NodePort
    port: int  # the Service port (or nodePort)
    protocol: Protocol  # TCP, UDP or SCTP
    scope: LbScope = LbScope.INTERNAL


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    # Index into the agent's table of "namespace/name" (NodeState.service_name), so a
    # flow names the Service it went through.
    service_id: int
    # Backend ids (keys of the backends map) that take new connections, in slot order.
    # Empty: the Service has no usable backend and the datapath refuses at once.
    backend_ids: tuple[int, ...]
    # ClientIP session affinity: seconds a client stays on its backend; 0 is none.
    affinity_timeout: int = 0
    # externalTrafficPolicy Local on a NodePort frontend: the client's address is kept
    # and only this node's backends are listed.
    keep_client_address: bool = False
    # A NodePort frontend (node address:nodePort) rather than a ClusterIP.
    node_port: bool = False


@dataclass(frozen=True, slots=True)
class BackendEntry:
    address: str  # the backend pod's IP
    port: int  # its target port (a named targetPort resolved for this pod)

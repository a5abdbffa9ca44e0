"""The datapath's vocabulary, read from the C headers in bpf/lib/ when imported.

Every constant the programs and the agent share (identities, directions, hooks,
flags, policy key prefix lengths, conntrack states, drop reason codes, the map
declarations) is written once, in C; this module reads the headers, so Python cannot
drift from what the programs are compiled with. A name Python needs is spelled here
with its value taken from the header: a header that loses it fails the import.

It imports nothing of podwire's outside bpf/, so the agent, common/ and the CLI all
read the same vocabulary without importing one another.
"""

from __future__ import annotations

import enum
import ipaddress
from pathlib import Path
from typing import Final

from podwire.bpf.header import defines, map_decls

LIB = Path(__file__).resolve().parent / "lib"

_TYPES_TEXT = (LIB / "types.h").read_text()
_DROP_TEXT = (LIB / "drop.h").read_text()
_C: Final = {**defines(_TYPES_TEXT), **defines(_DROP_TEXT)}


class Direction(enum.IntEnum):
    """Of traffic relative to the endpoint (policy_key.direction, flow_event.direction)."""

    INGRESS = _C["DIR_INGRESS"]
    EGRESS = _C["DIR_EGRESS"]

    @property
    def label(self) -> str:
        """The name flow records, metrics and the CLI use: `ingress`, `egress`."""
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Direction:
        return cls[label.upper()]


DIR_MAX: Final = _C["DIR_MAX"]


class ReservedIdentity(enum.IntEnum):
    """Identities below the pod identities (docs/contracts.md). ANY is the policy key's
    "any peer"; the others are what an address that is no pod stands for."""

    ANY = _C["IDENTITY_ANY"]
    HOST = _C["IDENTITY_HOST"]
    WORLD = _C["IDENTITY_WORLD"]
    REMOTE_NODE = _C["IDENTITY_REMOTE_NODE"]

    @property
    def label(self) -> str:
        """`host`, `world`, `remote-node`: how the CLI names such an address."""
        return self.name.lower().replace("_", "-")


_PEER_LABELS = {int(i): i.label for i in ReservedIdentity if i is not ReservedIdentity.ANY}


def reserved_label(identity: int) -> str | None:
    """What a peer identity stands for when it is reserved, else None: a pod or CIDR
    identity, or ANY, which is no peer."""
    return _PEER_LABELS.get(identity)


class Hook(enum.IntEnum):
    """Where a packet was seen (flow_event.hook)."""

    FROM_POD = _C["HOOK_FROM_POD"]
    TO_POD = _C["HOOK_TO_POD"]
    FROM_OVERLAY = _C["HOOK_FROM_OVERLAY"]
    FROM_NETDEV = _C["HOOK_FROM_NETDEV"]

    @property
    def label(self) -> str:
        """`from-pod`, `to-pod`, `from-overlay`: the name flow records carry."""
        return self.name.lower().replace("_", "-")


# flow_event.family and trace_event.family: an IPv4 packet's (addresses saddr, daddr) or
# an IPv6 one's (saddr6, daddr6).
FAMILY_IPV4: Final = _C["FAMILY_IPV4"]
FAMILY_IPV6: Final = _C["FAMILY_IPV6"]


class EventType(enum.IntEnum):
    """flow_event.type: a new connection allowed, or a packet dropped."""

    FLOW = _C["EVENT_FLOW"]
    DROP = _C["EVENT_DROP"]


class Aggregation(enum.IntEnum):
    """node_config.aggregation: what the datapath summarises before reporting (types.h)."""

    NONE = _C["AGG_NONE"]
    CONNECTION = _C["AGG_CONNECTION"]
    MAX = _C["AGG_MAX"]

    @property
    def label(self) -> str:
        """`none`, `connection`, `max`: AgentConfig.flow_aggregation's values."""
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Aggregation:
        """The mode a setting names, with an error listing the known ones."""
        try:
            return cls[label.upper()]
        except KeyError:
            raise ValueError(f"flow_aggregation {label!r} is none of "
                             f"{', '.join(m.label for m in cls)}") from None


class EventsLost(enum.IntEnum):
    """events_lost's index: the stage in the kernel where an event was lost."""

    RING = _C["EVENTS_LOST_RING"]
    RATE = _C["EVENTS_LOST_RATE"]
    TABLE = _C["EVENTS_LOST_TABLE"]

    @property
    def label(self) -> str:
        """`ring`, `rate`, `table`: the stage as /status and the metrics name it."""
        return self.name.lower()


EVENTS_LOST_MAX: Final = _C["EVENTS_LOST_MAX"]
class TraceOutcome(enum.IntEnum):
    """trace_event.outcome: where a traced packet went from the hook (types.h)."""

    TO_POD = _C["TRACE_TO_POD"]
    TO_TUNNEL = _C["TRACE_TO_TUNNEL"]
    TO_HOST = _C["TRACE_TO_HOST"]
    DROPPED = _C["TRACE_DROPPED"]

    @property
    def label(self) -> str:
        """`to-pod`, `to-tunnel`, `to-host`, `dropped`: what a trace hop names."""
        return self.name.lower().replace("_", "-")


class CtStatus(enum.IntEnum):
    """What conntrack said of a packet (trace_event.ct_status; conntrack.h's enum)."""

    NEW = _C["CT_STATUS_NEW"]
    ESTABLISHED = _C["CT_STATUS_ESTABLISHED"]
    REPLY = _C["CT_STATUS_REPLY"]
    RELATED = _C["CT_STATUS_RELATED"]
    UNKNOWN = _C["CT_STATUS_UNKNOWN"]

    @property
    def label(self) -> str:
        return self.name.lower()


# podwire trace: DSCP tags 1..TRACE_TAGS-1 and their flags (trace.h).
TRACE_TAGS: Final = _C["TRACE_TAGS"]
TRACE_F_CONSUME: Final = _C["TRACE_F_CONSUME"]
TRACE_F_LIVE: Final = _C["TRACE_F_LIVE"]


class CtState(enum.IntEnum):
    """ct_value.state: a connection's phase, each with its idle timeout (types.h)."""

    NEW = _C["CT_STATE_NEW"]
    OPENING = _C["CT_STATE_OPENING"]
    ESTABLISHED = _C["CT_STATE_ESTABLISHED"]
    CLOSING = _C["CT_STATE_CLOSING"]


class CtScope(enum.IntEnum):
    """ct_key.scope: a connection's own entry, or the frontend tuple's (its backend)."""

    FLOW = _C["CT_SCOPE_FLOW"]
    SERVICE = _C["CT_SCOPE_SERVICE"]


class LbScope(enum.IntEnum):
    """lb_key.scope: who reaches a frontend: pods and the node itself (internalTrafficPolicy
    applies), or clients outside the cluster through a NodePort (externalTrafficPolicy)."""

    INTERNAL = _C["LB_SCOPE_INTERNAL"]
    EXTERNAL = _C["LB_SCOPE_EXTERNAL"]


# The IPv6 load balancer's programs by their slot of lb6_progs (types.h).
LB6_PROG_FRONTEND: Final = _C["LB6_PROG_FRONTEND"]
LB6_PROG_REPLY: Final = _C["LB6_PROG_REPLY"]
LB6_PROG_RELATED: Final = _C["LB6_PROG_RELATED"]
LB6_PROG_FRONTEND_ICMP: Final = _C["LB6_PROG_FRONTEND_ICMP"]

# lb_value.flags, ct_value.flags
LB_F_KEEP_CLIENT: Final = _C["LB_F_KEEP_CLIENT"]
LB_F_NODE_PORT: Final = _C["LB_F_NODE_PORT"]
CT_F_HAIRPIN: Final = _C["CT_F_HAIRPIN"]
# The source a pod reaching itself through a Service is given.
LB_HAIRPIN_IP: Final = str(ipaddress.IPv4Address(_C["LB_HAIRPIN_IP"]))
LB6_HAIRPIN_IP: Final = str(ipaddress.IPv6Address(
    _C["LB6_HAIRPIN_IP_HIGH"] << 96 | _C["LB_HAIRPIN_IP"]))

# endpoint_info.flags and node_config.flags
EP_F_INGRESS_ISOLATED: Final = _C["EP_F_INGRESS_ISOLATED"]
EP_F_EGRESS_ISOLATED: Final = _C["EP_F_EGRESS_ISOLATED"]
EP_F_INGRESS_TIERED: Final = _C["EP_F_INGRESS_TIERED"]
EP_F_EGRESS_TIERED: Final = _C["EP_F_EGRESS_TIERED"]
EP_F_INGRESS_AUDIT: Final = _C["EP_F_INGRESS_AUDIT"]
EP_F_EGRESS_AUDIT: Final = _C["EP_F_EGRESS_AUDIT"]
CFG_F_EVENTS: Final = _C["CFG_F_EVENTS"]

# policy_key.prefixlen: the peer on any protocol, on any port of one protocol, on one port.
POLICY_PREFIX_ANY_PROTO: Final = _C["POLICY_PREFIX_ANY_PROTO"]
POLICY_PREFIX_ANY_PORT: Final = _C["POLICY_PREFIX_ANY_PORT"]
POLICY_PREFIX_FULL: Final = _C["POLICY_PREFIX_FULL"]

class PolicyAction(enum.IntEnum):
    """policy_value.admin_action / baseline_action: what a cluster policy rule does there.
    AUDIT is the Deny of a policy in audit mode (forwarded and reported)."""

    NONE = _C["POLICY_ACTION_NONE"]
    ACCEPT = _C["POLICY_ACTION_ACCEPT"]
    DENY = _C["POLICY_ACTION_DENY"]
    PASS = _C["POLICY_ACTION_PASS"]
    AUDIT = _C["POLICY_ACTION_AUDIT"]


# Reason codes, as counters and events carry them (drop.h).
REASON_FORWARDED: Final = _C["REASON_FORWARDED"]
REASON_AUDIT: Final = _C["REASON_AUDIT"]
REASON_MAX: Final = _C["REASON_MAX"]
DROP_CODE_BASE: Final = _C["DROP_CODE_BASE"]


def drop_code(reason: int) -> int:
    """The code a (negative) drop reason is counted and reported under; DROP_CODE() in C."""
    return -reason - DROP_CODE_BASE


def metrics_index(code: int, direction: int) -> int:
    """The metrics array slot of a reason code and direction; metrics_index() in C."""
    return code * DIR_MAX + direction


MAPS: Final = map_decls((LIB / "maps.h").read_text(), _C)

"""Which flow records `podwire observe` (and the lab demo) shows: pure logic over records.

The flags combine the way `hubble observe` combines them (cilium/hubble
cmd/observe/flows_filter.go), so a hubble user gets the same answer:

- A filter (`FlowFilter`) ANDs its fields; each field ORs its values. Repeating a flag
  ORs its values; different flags AND.
- The flags are collected, in command-line order, into two filters, `left` and `right`,
  and a flow is shown when it matches either. `--from-X`/`--to-X` go into both; a
  side-less flag (`--pod`, `--ip`, `--port`, `--label`, `--identity`, `-n`) puts its
  source form into `left` and its destination form into `right`: so `--pod p --port 80`
  is "p's port 80", not "p, and port 80 anywhere".
- `-n/--from-namespace/--to-namespace` become pod filters `ns/` (or qualify the pod and
  Service names given without a namespace) when the filters are built.
- `--not` sends the next flag into a second pair (the denylist): a flow matching it is
  not shown. All `--not` flags share that one pair, as in hubble, so `--not --from-ip A
  --not --to-ip B` hides flows from A to B.
- `-4`/`-6` keep one IP version (both given: either); `--ip`, `--from-ip`, `--to-ip`
  take addresses and prefixes of either family, and a prefix never matches an address
  of the other family (10.0.0.0/8 is not ::ffff:10.0.0.0/104).
- Combinations hubble refuses (`--label` with `--from-label`, `--port` with `--to-port`,
  ...) are refused with hubble's message.

Time bounds (`--since`, `--until`) apply outside the filters, as in hubble's request.
Every parser raises ValueError with a message naming the bad value, for the CLI to print
as it is.
"""

from __future__ import annotations

import datetime
import fnmatch
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from podwire.bpf.constants import ReservedIdentity
from podwire.common.flow import FlowEnd, FlowRecord
from podwire.common.flowtime import parse_when
from podwire.policy import PortlessProtocol, Protocol

VERDICTS = ("FORWARDED", "DROPPED", "AUDIT")
TYPES = ("policy-verdict", "drop", "trace")
DIRECTIONS = ("ingress", "egress")
# What the datapath names in a record (agent/flows.py), as hubble's --protocol takes them.
PROTOCOLS = (Protocol.TCP, Protocol.UDP, PortlessProtocol.ICMP, PortlessProtocol.ICMPV6,
             Protocol.SCTP)
# hubble's -4/--ipv4 and -6/--ipv6: flags without a value, each one IP version.
IP_VERSION_FLAGS = {"ipv4": 4, "ipv6": 6}
TCP_FLAG_NAMES = ("SYN", "FIN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")
_LABEL_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_./]*)?[A-Za-z0-9]$")
_SET_TERM = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^()]*)\)\s*$")

# Flags that cannot be given together to one list (hubble's conflict table, for the
# flags podwire has).
CONFLICTS: tuple[tuple[str, ...], ...] = (
    ("from-ip", "ip", "from-namespace", "namespace"),
    ("from-ip", "ip", "from-pod", "pod"),
    ("to-ip", "ip", "to-namespace", "namespace"),
    ("to-ip", "ip", "to-pod", "pod"),
    ("to-pod", "namespace"),
    ("from-pod", "namespace"),
    ("to-service", "namespace"),
    ("from-service", "namespace"),
    ("label", "from-label"),
    ("label", "to-label"),
    ("port", "to-port"),
    ("port", "from-port"),
    ("identity", "to-identity"),
    ("identity", "from-identity"),
)
NAMESPACE_FLAGS = ("namespace", "from-namespace", "to-namespace")


@dataclass(frozen=True)
class PodRef:
    """`ns/name-prefix` (name may be empty: the whole namespace), or a bare name prefix
    in any namespace."""

    namespace: str | None
    prefix: str

    def matches(self, end: FlowEnd) -> bool:
        pod = end.get("pod")
        if pod is None:
            return False
        if self.namespace is not None and end.get("namespace") != self.namespace:
            return False
        return str(pod).startswith(self.prefix)

    def __str__(self) -> str:
        return self.prefix if self.namespace is None else f"{self.namespace}/{self.prefix}"


@dataclass(frozen=True)
class ServiceRef:
    """`ns/name` of a Service exactly, or a bare name in any namespace."""

    namespace: str | None
    name: str

    def matches(self, end: FlowEnd) -> bool:
        service = end.get("service")
        if not service:
            return False
        namespace, _, name = str(service).partition("/")
        return name == self.name and self.namespace in (None, namespace)

    def __str__(self) -> str:
        return self.name if self.namespace is None else f"{self.namespace}/{self.name}"


def parse_pod(text: str) -> PodRef:
    namespace, sep, name = text.partition("/")
    if sep and not namespace:
        raise ValueError(f"pod {text!r}: expected NAMESPACE/NAME (a name prefix) or NAME")
    if not sep and not text:
        raise ValueError("pod filter is empty")
    return PodRef(namespace, name) if sep else PodRef(None, text)


def parse_service(text: str) -> ServiceRef:
    """`namespace/name` of a Service, or a bare `name` (any namespace)."""
    namespace, sep, name = text.partition("/")
    if not text or (sep and not (namespace and name)) or "/" in name:
        raise ValueError(f"service {text!r}: expected NAMESPACE/NAME or NAME")
    return ServiceRef(namespace, name) if sep else ServiceRef(None, text)


def parse_namespace(text: str) -> str:
    if not text:
        raise ValueError("namespace filter is empty")
    if "/" in text:
        raise ValueError(f"namespace {text!r}: a namespace has no '/'")
    return text


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or CIDR") from None


def parse_port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number from 0 to 65535")
    return int(text)


def parse_choice(text: str, choices: Sequence[str], what: str) -> str:
    for choice in choices:
        if text.lower() == choice.lower():
            return choice
    raise ValueError(f"{what} {text!r} is not one of {', '.join(choices)}")


_RESERVED = {i.label: int(i) for i in ReservedIdentity if i is not ReservedIdentity.ANY}


def parse_identity(text: str) -> int:
    """A numeric identity, or a reserved one by name (`host`, `world`, `remote-node`,
    also as hubble spells them, `reserved:world`)."""
    name = text.strip().lower().removeprefix("reserved:")
    if name in _RESERVED:
        return _RESERVED[name]
    if name.isdigit() and int(name) < 1 << 32:
        return int(name)
    raise ValueError(f"identity {text!r}: expected a number or one of "
                     f"{', '.join(_RESERVED)}")


def parse_tcp_flags(text: str) -> frozenset[str]:
    """`SYN`, `syn,ack`: a flow matches when it has all of them."""
    names = [part.strip().upper() for part in text.split(",")]
    for name in names:
        if name not in TCP_FLAG_NAMES:
            raise ValueError(f"tcp flag {name!r} in {text!r} is not one of "
                             f"{', '.join(TCP_FLAG_NAMES)}")
    return frozenset(names)


def parse_node_name(text: str) -> str:
    """A node name or a shell pattern (`node*`, `worker-?`)."""
    if not text.strip():
        raise ValueError("node name filter is empty")
    return text.strip()


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: key=value, key!=value, key (exists), !key,
    key in (a,b), key notin (a,b)."""

    key: str
    op: str  # "=", "!=", "exists", "!exists", "in", "notin"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op in ("=", "in"):
            return labels.get(self.key) in self.values
        if self.op in ("!=", "notin"):
            return labels.get(self.key) not in self.values
        if self.op == "exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    """Requirements that must all hold (kubectl's selector syntax)."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _selector_terms(text: str) -> list[str]:
    """Split on the commas outside parentheses (`a in (x,y),b`)."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _requirement(term: str, text: str) -> Requirement:
    set_term = _SET_TERM.match(term)
    values: tuple[str, ...]
    if set_term:
        key, op = set_term.group(1), set_term.group(2)
        values = tuple(v.strip() for v in set_term.group(3).split(",") if v.strip())
    elif "!=" in term:
        key, _, value = term.partition("!=")
        op, values = "!=", (value.strip(),)
    elif "=" in term:
        key, _, value = term.partition("=")
        key, op, values = key.rstrip("="), "=", (value.lstrip("=").strip(),)
    elif term.startswith("!"):
        key, op, values = term[1:], "!exists", ()
    else:
        key, op, values = term, "exists", ()
    key = key.strip().removeprefix("k8s:")
    if not _LABEL_KEY.match(key):
        raise ValueError(f"label selector {text!r}: {term!r} has no valid label key")
    return Requirement(key, op, values)


def parse_selector(text: str) -> LabelSelector:
    return LabelSelector(tuple(_requirement(t.strip(), text) for t in _selector_terms(text)))


def record_time(record: FlowRecord) -> datetime.datetime:
    return datetime.datetime.fromisoformat(record["time"])


def _in_any(end: FlowEnd, networks: Iterable[Any]) -> bool:
    try:
        address = ipaddress.ip_address(end.get("ip", ""))
    except ValueError:
        return False
    return any(address in net for net in networks)


Predicate = Callable[[FlowRecord], bool]


@dataclass(frozen=True)
class FlowFilter:
    """One filter, hubble's FlowFilter: every non-empty field must match (AND), a field
    matches when any of its values does (OR). Empty: matches every flow."""

    source_pod: tuple[PodRef, ...] = ()
    destination_pod: tuple[PodRef, ...] = ()
    source_service: tuple[ServiceRef, ...] = ()
    destination_service: tuple[ServiceRef, ...] = ()
    source_ip: tuple[Any, ...] = ()
    destination_ip: tuple[Any, ...] = ()
    source_label: tuple[LabelSelector, ...] = ()
    destination_label: tuple[LabelSelector, ...] = ()
    source_port: tuple[int, ...] = ()
    destination_port: tuple[int, ...] = ()
    source_identity: tuple[int, ...] = ()
    destination_identity: tuple[int, ...] = ()
    protocol: tuple[str, ...] = ()
    verdict: tuple[str, ...] = ()
    type: tuple[str, ...] = ()
    node_name: tuple[str, ...] = ()
    tcp_flags: tuple[frozenset[str], ...] = ()
    traffic_direction: tuple[str, ...] = ()
    drop_reason: tuple[str, ...] = ()
    ip_version: tuple[int, ...] = ()

    def with_values(self, name: str, values: Iterable[Any]) -> FlowFilter:
        extended: dict[str, Any] = {name: (*getattr(self, name), *values)}
        return replace(self, **extended)

    def matches(self, record: FlowRecord) -> bool:
        return all(self._field_matches(f.name, record) for f in fields(self)
                   if getattr(self, f.name))

    def _field_matches(self, name: str, record: FlowRecord) -> bool:
        values = getattr(self, name)
        side, _, what = name.partition("_")
        if side in ("source", "destination"):
            return _END_MATCHERS[what](record[side], values)  # type: ignore[literal-required]
        return _RECORD_MATCHERS[name](record, values)


_END_MATCHERS: dict[str, Callable[[FlowEnd, Any], bool]] = {
    "pod": lambda end, refs: any(r.matches(end) for r in refs),
    "service": lambda end, refs: any(r.matches(end) for r in refs),
    "ip": _in_any,
    "label": lambda end, sels: any(s.matches(end.get("labels") or {}) for s in sels),
    "port": lambda end, ports: end.get("port") in ports,
    "identity": lambda end, ids: end.get("identity") in ids,
}


def _has_flags(record: FlowRecord, wanted: tuple[frozenset[str], ...]) -> bool:
    have = {str(f).upper() for f in record.get("tcp_flags") or []}
    return str(record.get("protocol", "")).upper() == "TCP" and any(w <= have for w in wanted)


def _ip_version(record: FlowRecord) -> int | None:
    """A record's IP version, as its source address reads (both ends share a family)."""
    try:
        return ipaddress.ip_address(record["source"].get("ip", "")).version
    except (KeyError, ValueError):
        return None


_RECORD_MATCHERS: dict[str, Callable[[FlowRecord, Any], bool]] = {
    "protocol": lambda r, v: str(r.get("protocol", "")).upper() in {p.upper() for p in v},
    "verdict": lambda r, v: r.get("verdict") in v,
    "type": lambda r, v: r.get("type") in v,
    "node_name": lambda r, v: any(fnmatch.fnmatchcase(str(r.get("node", "")), p) for p in v),
    "tcp_flags": _has_flags,
    "traffic_direction": lambda r, v: r.get("direction") in v,
    "drop_reason": lambda r, v: r.get("drop_reason") in v,
    "ip_version": lambda r, v: _ip_version(r) in v,
}


@dataclass
class _Tracker:
    """hubble's filterTracker: the flags given to one list (allow or deny), as a pair of
    filters `left OR right`, plus the namespaces applied when the pair is built."""

    left: FlowFilter | None = None
    right: FlowFilter | None = None
    ns: list[str] = field(default_factory=list)
    src_ns: list[str] = field(default_factory=list)
    dst_ns: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def both(self, name: str, values: Iterable[Any]) -> None:
        values = list(values)
        self.left = (self.left or FlowFilter()).with_values(name, values)
        self.right = (self.right or FlowFilter()).with_values(name, values)

    def split(self, what: str, values: Iterable[Any]) -> None:
        """A side-less flag: its source form left, its destination form right."""
        values = list(values)
        self.left = (self.left or FlowFilter()).with_values(f"source_{what}", values)
        self.right = (self.right or FlowFilter()).with_values(f"destination_{what}", values)

    def check_conflicts(self, name: str) -> None:
        if name not in self.changed:
            self.changed.append(name)
        for group in CONFLICTS:
            if name not in group:
                continue
            for other in group:
                if other != name and other in self.changed:
                    raise ValueError(f"filters --{other} and --{name} cannot be combined")

    def filters(self) -> list[FlowFilter]:
        if self.left is None and self.right is None and not (
                self.ns or self.src_ns or self.dst_ns):
            return []
        left, right = self.left or FlowFilter(), self.right or FlowFilter()
        if self.dst_ns:
            left, right = _in_namespaces(left, "destination", self.dst_ns), _in_namespaces(
                right, "destination", self.dst_ns)
        if self.src_ns:
            left, right = _in_namespaces(left, "source", self.src_ns), _in_namespaces(
                right, "source", self.src_ns)
        if self.ns:
            left = _in_namespaces(left, "source", self.ns)
            right = _in_namespaces(right, "destination", self.ns)
        return [left] if left == right else [left, right]


def _in_namespaces(flt: FlowFilter, side: str, namespaces: list[str]) -> FlowFilter:
    """hubble's namespaceModifier: with no pod or Service filter on `side`, the side must
    be a pod in one of `namespaces`; otherwise the names given without a namespace are
    looked for in each of them."""
    pods: tuple[PodRef, ...] = getattr(flt, f"{side}_pod")
    services: tuple[ServiceRef, ...] = getattr(flt, f"{side}_service")
    if not pods and not services:
        pods = (PodRef(None, ""),)
    qualified: dict[str, Any] = {
        f"{side}_pod": tuple(ref if ref.namespace is not None else PodRef(ns, ref.prefix)
                             for ref in pods
                             for ns in ([None] if ref.namespace is not None else namespaces)),
        f"{side}_service": tuple(
            ref if ref.namespace is not None else ServiceRef(ns, ref.name)
            for ref in services
            for ns in ([None] if ref.namespace is not None else namespaces)),
    }
    return replace(flt, **qualified)


def _conflicting_namespace(refs: Sequence[PodRef | ServiceRef], namespaces: list[str],
                           flag: str) -> None:
    for ns in namespaces:
        for ref in refs:
            if ref.namespace is not None and ref.namespace != ns:
                raise ValueError(f"namespace conflict: --{flag} {ns!r} does not contain "
                                 f"{ref}")


@dataclass(frozen=True)
class Parsers:
    """What knows the valid values of each flag; `drop_reasons` are the datapath's
    reason names (the CLI reads them from bpf/lib/drop.h)."""

    drop_reasons: tuple[str, ...] = ()

    def drop_reason(self, text: str) -> str:
        if not self.drop_reasons:
            return text.upper()
        return parse_choice(text, self.drop_reasons, "drop reason")


# The flags about an end: `--X` (either end), `--from-X`, `--to-X`.
_END_FLAGS: dict[str, Callable[[str], Any]] = {
    "pod": parse_pod, "ip": parse_cidr, "label": parse_selector, "port": parse_port,
    "identity": parse_identity, "service": parse_service}
_RECORD_FLAGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "protocol": ("protocol", lambda t: parse_choice(t, PROTOCOLS, "protocol")),
    "verdict": ("verdict", lambda t: parse_choice(t, VERDICTS, "verdict")),
    "type": ("type", lambda t: parse_choice(t, TYPES, "type")),
    "node-name": ("node_name", parse_node_name),
    "tcp-flags": ("tcp_flags", parse_tcp_flags),
    "traffic-direction": ("traffic_direction",
                          lambda t: parse_choice(t, DIRECTIONS, "traffic direction")),
}
FILTER_FLAGS = (*_END_FLAGS, *(f"from-{k}" for k in _END_FLAGS),
                *(f"to-{k}" for k in _END_FLAGS),
                *NAMESPACE_FLAGS, *_RECORD_FLAGS, "drop-reason", *IP_VERSION_FLAGS)
NOT = "not"


def _apply(tracker: _Tracker, name: str, text: str, parsers: Parsers) -> None:
    tracker.check_conflicts(name)
    side, _, what = name.partition("-")
    if name in NAMESPACE_FLAGS:
        {"namespace": tracker.ns, "from-namespace": tracker.src_ns,
         "to-namespace": tracker.dst_ns}[name].append(parse_namespace(text))
    elif name in _END_FLAGS:
        tracker.split(name, [_END_FLAGS[name](text)])
    elif side in ("from", "to") and what in _END_FLAGS:
        prefix = "source" if side == "from" else "destination"
        tracker.both(f"{prefix}_{what}", [_END_FLAGS[what](text)])
    elif name in _RECORD_FLAGS:
        field_name, parse = _RECORD_FLAGS[name]
        tracker.both(field_name, [parse(text)])
    elif name == "drop-reason":
        tracker.both("drop_reason", [parsers.drop_reason(text)])
    elif name in IP_VERSION_FLAGS:
        tracker.both("ip_version", [IP_VERSION_FLAGS[name]])
    else:
        raise ValueError(f"--{name} is not a flow filter")
    _check_namespaces(tracker)


def _check_namespaces(tracker: _Tracker) -> None:
    """hubble's checkNamespaceConflicts: `-n x --from-pod y/a` selects nothing, so it is
    refused rather than answered with silence."""
    for flt in (tracker.left, tracker.right):
        if flt is None:
            continue
        for namespaces, side, flag in ((tracker.ns, "source", "namespace"),
                                       (tracker.ns, "destination", "namespace"),
                                       (tracker.src_ns, "source", "from-namespace"),
                                       (tracker.dst_ns, "destination", "to-namespace")):
            _conflicting_namespace([*getattr(flt, f"{side}_pod"),
                                             *getattr(flt, f"{side}_service")],
                                   namespaces, flag)


@dataclass(frozen=True)
class FlowQuery:
    """What `podwire observe` shows: flows matching any allow filter (or every flow when
    there is none), matching no deny filter, inside the time bounds."""

    allow: tuple[FlowFilter, ...] = ()
    deny: tuple[FlowFilter, ...] = ()
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None

    def matches(self, record: FlowRecord) -> bool:
        if self.since is not None or self.until is not None:
            when = record_time(record)
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when > self.until:
                return False
        if self.allow and not any(f.matches(record) for f in self.allow):
            return False
        return not any(f.matches(record) for f in self.deny)


def build(flags: Sequence[tuple[str, str]] = (), *, since: str | None = None,
          until: str | None = None, now: datetime.datetime | None = None,
          parsers: Parsers = Parsers()) -> FlowQuery:
    """A FlowQuery from the filter flags in command-line order: `(name, value)` pairs
    with hubble's names (`from-pod`, `to-port`, ...) and `("not", "")` before a flag to
    deny; ValueError names the first bad value or combination."""
    moment = now or datetime.datetime.now(datetime.UTC)
    allow, deny = _Tracker(), _Tracker()
    negate = False
    for name, text in flags:
        if name == NOT:
            if negate:
                raise ValueError("consecutive --not statements")
            negate = True
            continue
        _apply(deny if negate else allow, name, text, parsers)
        negate = False
    if negate:
        raise ValueError("trailing --not found in the arguments")
    start = parse_when(since, moment, "--since") if since is not None else None
    end = parse_when(until, moment, "--until") if until is not None else None
    if start is not None and end is not None and end < start:
        raise ValueError(f"--until {until!r} is before --since {since!r}")
    return FlowQuery(tuple(allow.filters()), tuple(deny.filters()), start, end)


def merge_by_time(batches: Sequence[Sequence[FlowRecord]]) -> list[FlowRecord]:
    """Records of several nodes in one time order (stable for equal times)."""
    return sorted((r for batch in batches for r in batch), key=record_time)

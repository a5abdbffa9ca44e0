"""Which flow records `podwire observe` (and the lab demo) shows: pure logic over records.

Filters follow `hubble observe`: repeating a flag ORs its values, different flags AND.
Side-less flags (`--pod`, `--ip`, `--port`, `-n`, `-l`) match either end of a flow.
`--to-service`/`--from-service NS/NAME` match the end a Service stands for (the
record's `destination.service` / `source.service`, common/flow.py).
Every parser raises ValueError with a message naming the bad value, for the CLI to
print as it is.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from podwire.common.flow import FlowEnd, FlowRecord
from podwire.policy import PortlessProtocol, Protocol

Predicate = Callable[[FlowRecord], bool]

VERDICTS = ("FORWARDED", "DROPPED", "AUDIT")
TYPES = ("policy-verdict", "drop", "trace")
# What the IPv4 datapath names in a record (ICMPv6 needs IPv6).
PROTOCOLS = (Protocol.TCP, Protocol.UDP, PortlessProtocol.ICMP, Protocol.SCTP)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_LABEL_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_./]*)?[A-Za-z0-9]$")


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


def parse_pod(text: str) -> PodRef:
    namespace, sep, name = text.partition("/")
    if sep and not namespace:
        raise ValueError(f"pod {text!r}: expected NAMESPACE/NAME (a name prefix) or NAME")
    if not sep and not text:
        raise ValueError("pod filter is empty")
    return PodRef(namespace, name) if sep else PodRef(None, text)


def parse_service(text: str) -> str:
    """`namespace/name` of a Service, exactly."""
    namespace, sep, name = text.partition("/")
    if not (sep and namespace and name) or "/" in name:
        raise ValueError(f"service {text!r}: expected NAMESPACE/NAME")
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


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: key=value, key!=value, key (exists), !key."""

    key: str
    op: str  # "=", "!=", "exists", "!exists"
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "=":
            return labels.get(self.key) == self.value
        if self.op == "!=":
            return labels.get(self.key) != self.value
        if self.op == "exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    """Comma-separated requirements, all of which must hold (kubectl's equality syntax)."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def parse_selector(text: str) -> LabelSelector:
    requirements = []
    for term in text.split(","):
        term = term.strip()
        if "!=" in term:
            key, _, value = term.partition("!=")
            op = "!="
        elif "=" in term:
            key, _, value = term.partition("=")
            key, value, op = key.rstrip("="), value.lstrip("="), "="
        elif term.startswith("!"):
            key, value, op = term[1:], "", "!exists"
        else:
            key, value, op = term, "", "exists"
        key, value = key.strip(), value.strip()
        if not _LABEL_KEY.match(key):
            raise ValueError(f"label selector {text!r}: {term!r} has no valid label key")
        requirements.append(Requirement(key, op, value))
    return LabelSelector(tuple(requirements))


def parse_since(text: str, now: datetime.datetime) -> datetime.datetime:
    """A duration back from `now` (`90s`, `5m`, `1.5h`, `2d`) or an ISO 8601 time
    (taken as UTC when it names no zone)."""
    match = _DURATION.match(text.strip())
    if match:
        return now - datetime.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: expected a duration like 5m, 30s, 2h or a "
                         "time like 2026-01-31T12:00:00") from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def record_time(record: FlowRecord) -> datetime.datetime:
    return datetime.datetime.fromisoformat(record["time"])


def _ends(record: FlowRecord) -> tuple[FlowEnd, FlowEnd]:
    return record["source"], record["destination"]


def _in_any(end: FlowEnd, networks: Sequence[Any]) -> bool:
    try:
        address = ipaddress.ip_address(end.get("ip", ""))
    except ValueError:
        return False
    return any(address in net for net in networks)


@dataclass
class FlowFilter:
    """The flags of `podwire observe` that select flows; empty lists select everything."""

    from_pod: list[PodRef] = field(default_factory=list)
    to_pod: list[PodRef] = field(default_factory=list)
    pod: list[PodRef] = field(default_factory=list)
    from_service: list[str] = field(default_factory=list)
    to_service: list[str] = field(default_factory=list)
    namespace: list[str] = field(default_factory=list)
    from_ip: list[Any] = field(default_factory=list)
    to_ip: list[Any] = field(default_factory=list)
    ip: list[Any] = field(default_factory=list)
    port: list[int] = field(default_factory=list)
    protocol: list[str] = field(default_factory=list)
    verdict: list[str] = field(default_factory=list)
    type: list[str] = field(default_factory=list)
    label: list[LabelSelector] = field(default_factory=list)
    since: datetime.datetime | None = None

    def matches(self, record: FlowRecord) -> bool:
        return all(check(record) for check in (*self._end_checks(), *self._record_checks()))

    def _end_checks(self) -> list[Predicate]:
        """The flags about a flow's ends: who and where, on either side or one."""
        checks: list[Predicate] = []
        if self.from_pod:
            checks.append(lambda r: any(p.matches(_ends(r)[0]) for p in self.from_pod))
        if self.to_pod:
            checks.append(lambda r: any(p.matches(_ends(r)[1]) for p in self.to_pod))
        if self.pod:
            checks.append(lambda r: any(p.matches(e) for p in self.pod for e in _ends(r)))
        if self.from_service:
            checks.append(lambda r: _ends(r)[0].get("service") in self.from_service)
        if self.to_service:
            checks.append(lambda r: _ends(r)[1].get("service") in self.to_service)
        if self.namespace:
            checks.append(lambda r: any(e.get("namespace") in self.namespace
                                        for e in _ends(r)))
        if self.from_ip:
            checks.append(lambda r: _in_any(_ends(r)[0], self.from_ip))
        if self.to_ip:
            checks.append(lambda r: _in_any(_ends(r)[1], self.to_ip))
        if self.ip:
            checks.append(lambda r: any(_in_any(e, self.ip) for e in _ends(r)))
        if self.port:
            checks.append(lambda r: any(e.get("port") in self.port for e in _ends(r)))
        if self.label:
            checks.append(lambda r: any(s.matches(e.get("labels") or {})
                                        for s in self.label for e in _ends(r)))
        return checks

    def _record_checks(self) -> list[Predicate]:
        """The flags about the flow itself: protocol, verdict, type, time."""
        checks: list[Predicate] = []
        if self.protocol:
            checks.append(lambda r: str(r.get("protocol", "")).upper() in self.protocol)
        if self.verdict:
            checks.append(lambda r: r.get("verdict") in self.verdict)
        if self.type:
            checks.append(lambda r: r.get("type") in self.type)
        if self.since is not None:
            since = self.since
            checks.append(lambda r: record_time(r) >= since)
        return checks


def build(from_pod: Sequence[str] = (), to_pod: Sequence[str] = (), pod: Sequence[str] = (),
          namespace: Sequence[str] = (), from_ip: Sequence[str] = (),
          to_ip: Sequence[str] = (), ip: Sequence[str] = (), port: Sequence[str] = (),
          protocol: Sequence[str] = (), verdict: Sequence[str] = (),
          type: Sequence[str] = (), label: Sequence[str] = (), since: str | None = None,
          now: datetime.datetime | None = None, from_service: Sequence[str] = (),
          to_service: Sequence[str] = ()) -> FlowFilter:
    """A FlowFilter from the flags' raw text; ValueError names the first bad value."""
    moment = now or datetime.datetime.now(datetime.UTC)
    for name in namespace:
        if not name:
            raise ValueError("namespace filter is empty")
    return FlowFilter(
        from_pod=[parse_pod(t) for t in from_pod],
        to_pod=[parse_pod(t) for t in to_pod],
        pod=[parse_pod(t) for t in pod],
        from_service=[parse_service(t) for t in from_service],
        to_service=[parse_service(t) for t in to_service],
        namespace=list(namespace),
        from_ip=[parse_cidr(t) for t in from_ip],
        to_ip=[parse_cidr(t) for t in to_ip],
        ip=[parse_cidr(t) for t in ip],
        port=[parse_port(t) for t in port],
        protocol=[parse_choice(t, PROTOCOLS, "protocol") for t in protocol],
        verdict=[parse_choice(t, VERDICTS, "verdict") for t in verdict],
        type=[parse_choice(t, TYPES, "type") for t in type],
        label=[parse_selector(t) for t in label],
        since=parse_since(since, moment) if since is not None else None,
    )


def merge_by_time(batches: Sequence[Sequence[FlowRecord]]) -> list[FlowRecord]:
    """Records of several nodes in one time order (stable for equal times)."""
    return sorted((r for batch in batches for r in batch), key=record_time)

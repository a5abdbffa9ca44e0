"""The networking.k8s.io/v1 NetworkPolicy, decoded and validated as the API server would.

Absent and empty lists mean the same thing in this API and are stored the same way:
- `spec.ingress` / `spec.egress` absent or `[]`: no rules (a selected pod is isolated and
  nothing is allowed in that direction); `[{}]`: one rule allowing everything.
- `from` / `to` absent or `[]`: the rule admits every peer (`Rule.peers == ()`).
- `ports` absent or `[]`: the rule admits every port and protocol (`Rule.ports == ()`).
- `policyTypes` absent or `[]`: Ingress, plus Egress when `spec.egress` has a rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .fields import Reader, child, item
from .names import dns1123_label_error, dns1123_subdomain_error, port_name_error
from .selectors import LabelSelector

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
# ObjectMeta fields a stored object may carry; anything else under metadata is a typo.
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


class Protocol(StrEnum):
    """The protocols a NetworkPolicy port may name."""

    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"

    @property
    def number(self) -> int:
        """The IP protocol number, as the datapath keys it."""
        return _PROTOCOL_NUMBERS[self]


class PortlessProtocol(StrEnum):
    """Protocols of traffic that have no ports: only rules without `ports` admit them."""

    ICMP = "ICMP"
    ICMPV6 = "ICMPv6"

    @property
    def number(self) -> int:
        """The IP protocol number, as the datapath reports it."""
        return _PROTOCOL_NUMBERS[self]


# What a verdict may be asked about: a protocol with ports, or one without.
TrafficProtocol = Protocol | PortlessProtocol

_PROTOCOL_NUMBERS: dict[TrafficProtocol, int] = {
    Protocol.TCP: 6, Protocol.UDP: 17, Protocol.SCTP: 132,
    PortlessProtocol.ICMP: 1, PortlessProtocol.ICMPV6: 58,
}


class Direction(StrEnum):
    """A policy type, which is also the direction of traffic relative to the selected pod."""

    INGRESS = "Ingress"
    EGRESS = "Egress"


@dataclass(frozen=True)
class IPBlock:
    """`cidr` minus every `except` prefix (each strictly inside `cidr`)."""

    cidr: IPNetwork
    except_: tuple[IPNetwork, ...] = ()

    def contains(self, address: IPAddress) -> bool:
        """Whether `address` is inside `cidr` and outside every except prefix."""
        if address.version != self.cidr.version or address not in self.cidr:
            return False
        return not any(address in excluded for excluded in self.except_)


@dataclass(frozen=True)
class Peer:
    """One `from`/`to` entry.

    Exactly one shape is valid: `ip_block` alone, or one or both selectors. Both selectors
    together mean pods matching `pod_selector` in namespaces matching `namespace_selector`
    (AND); `pod_selector` alone means pods of the policy's own namespace;
    `namespace_selector` alone means every pod of the matching namespaces.
    """

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PolicyPort:
    """One `ports` entry. `port` None means every port of `protocol`.

    `port` is a number or an IANA_SVC_NAME resolved against the destination pod's
    container ports; `end_port` (only with a numeric port) makes it the range
    `port..end_port`.
    """

    protocol: Protocol = Protocol.TCP
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    """An ingress or egress rule: traffic must match one peer AND one port.

    An empty `peers` admits every peer, an empty `ports` every port and protocol.
    """

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    """A decoded, validated and defaulted NetworkPolicy."""

    namespace: str
    name: str
    pod_selector: LabelSelector
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    policy_types: frozenset[Direction] = frozenset({Direction.INGRESS})

    @property
    def key(self) -> str:
        """`namespace/name`, how verdicts and the datapath name the policy."""
        return f"{self.namespace}/{self.name}"

    def rules(self, direction: Direction) -> tuple[Rule, ...]:
        """The rules in effect for `direction`: none unless the policy has that type."""
        if direction not in self.policy_types:
            return ()
        return self.ingress if direction is Direction.INGRESS else self.egress

    @classmethod
    def from_api(cls, obj: object, default_namespace: str = "default") -> NetworkPolicy:
        """Decode an API object (a dict as JSON/YAML gives it).

        `default_namespace` stands in for a missing `metadata.namespace`, as kubectl's
        context namespace does. Raises PolicyErrors listing every problem found.
        """
        reader = Reader()
        policy = _parse_policy(obj, reader, default_namespace)
        reader.raise_if_failed()
        assert policy is not None  # no errors implies a policy was built
        return policy


def parse_network(text: str, path: str, reader: Reader) -> IPNetwork | None:
    """A CIDR such as `10.0.0.0/8` or `fd00::/64`; host bits are masked off like Go's ParseCIDR."""
    if "/" not in text:
        reader.error(path, f"{text!r}: must be a valid CIDR in the form address/prefix-length")
        return None
    address, _, length = text.partition("/")
    if not length.isdigit() or (len(length) > 1 and length.startswith("0")):
        reader.error(path, f"{text!r}: invalid prefix length")
        return None
    try:
        ipaddress.ip_address(address)
        return ipaddress.ip_network(text, strict=False)
    except ValueError as problem:
        reader.error(path, f"{text!r}: must be a valid CIDR: {problem}")
        return None


def _parse_policy(obj: object, reader: Reader, default_namespace: str) -> NetworkPolicy | None:
    body = reader.mapping(obj, "", ("apiVersion", "kind", "metadata", "spec"))
    if body is None:
        return None
    if body.get("apiVersion", API_VERSION) != API_VERSION:
        reader.error("apiVersion", f"must be {API_VERSION!r}, got {body.get('apiVersion')!r}")
    if body.get("kind", KIND) != KIND:
        reader.error("kind", f"must be {KIND!r}, got {body.get('kind')!r}")
    meta = parse_metadata(body.get("metadata"), reader, default_namespace)
    spec = _parse_spec(body.get("spec"), reader)
    if reader.errors or meta.name is None or meta.namespace is None or spec is None:
        return None
    pod_selector, ingress, egress, policy_types = spec
    return NetworkPolicy(meta.namespace, meta.name, pod_selector, ingress, egress, policy_types)


@dataclass(frozen=True)
class Metadata:
    """The ObjectMeta fields policy reads; None where a field was missing or invalid."""

    name: str | None
    namespace: str | None
    labels: Mapping[str, str]


def parse_metadata(value: object, reader: Reader, default_namespace: str | None) -> Metadata:
    """An object's metadata; a cluster-scoped caller passes no default namespace."""
    if value is None:
        reader.error("metadata.name", "Required value: name is required")
        return Metadata(None, None, {})
    meta = reader.mapping(value, "metadata", OBJECT_META_FIELDS)
    if meta is None:
        return Metadata(None, None, {})
    name = None
    if meta.get("name") is None:
        reader.error("metadata.name", "Required value: name is required")
    else:
        name = reader.string(meta["name"], "metadata.name")
        problem = dns1123_subdomain_error(name) if name is not None else None
        if problem:
            reader.error("metadata.name", f"{name!r}: {problem}")
            name = None
    namespace = default_namespace
    # An empty namespace means "the default", as kubectl reads it.
    if meta.get("namespace") not in (None, "") and default_namespace is not None:
        namespace = reader.string(meta["namespace"], "metadata.namespace")
        problem = dns1123_label_error(namespace) if namespace is not None else None
        if problem:
            reader.error("metadata.namespace", f"{namespace!r}: {problem}")
            namespace = None
    labels: dict[str, str] = {}
    if meta.get("labels") is not None:
        labels = reader.string_map(meta["labels"], "metadata.labels") or {}
    if meta.get("annotations") is not None:
        reader.string_map(meta["annotations"], "metadata.annotations")
    return Metadata(name, namespace, labels)


_SpecParts = tuple[LabelSelector, tuple[Rule, ...], tuple[Rule, ...], frozenset[Direction]]


def _parse_spec(value: object, reader: Reader) -> _SpecParts | None:
    if value is None:
        reader.error("spec", "Required value")
        return None
    spec = reader.mapping(value, "spec", ("podSelector", "ingress", "egress", "policyTypes"))
    if spec is None:
        return None
    pod_selector = None
    if "podSelector" not in spec:
        reader.error("spec.podSelector", "Required value")
    elif spec["podSelector"] is None:
        # Go decodes null into the non-pointer struct as the empty selector.
        pod_selector = LabelSelector()
    else:
        pod_selector = LabelSelector.parse(spec["podSelector"], "spec.podSelector", reader)
    ingress = _parse_rules(spec.get("ingress"), "spec.ingress", "from", reader)
    egress = _parse_rules(spec.get("egress"), "spec.egress", "to", reader)
    policy_types = _parse_policy_types(spec.get("policyTypes"), reader)
    if pod_selector is None or ingress is None or egress is None or policy_types is None:
        return None
    if not policy_types:
        # The API server's defaulting (SetDefaults_NetworkPolicySpec).
        policy_types = {Direction.INGRESS}
        if egress:
            policy_types.add(Direction.EGRESS)
    return pod_selector, ingress, egress, frozenset(policy_types)


def _parse_policy_types(value: object, reader: Reader) -> set[Direction] | None:
    if value is None:
        return set()
    entries = reader.sequence(value, "spec.policyTypes")
    if entries is None:
        return None
    if len(entries) > len(Direction):
        reader.error("spec.policyTypes", "may not specify more than two policyTypes")
        return None
    types: set[Direction] = set()
    for index, entry in enumerate(entries):
        text = reader.string(entry, item("spec.policyTypes", index))
        if text is None:
            return None
        try:
            types.add(Direction(text))
        except ValueError:
            reader.error(
                item("spec.policyTypes", index),
                f'Unsupported value: {text!r}: supported values: "Ingress", "Egress"',
            )
            return None
    return types


def _parse_rules(
    value: object, path: str, peers_field: str, reader: Reader
) -> tuple[Rule, ...] | None:
    if value is None:
        return ()
    entries = reader.sequence(value, path)
    if entries is None:
        return None
    before = len(reader.errors)
    rules = []
    for index, entry in enumerate(entries):
        rule_path = item(path, index)
        body = reader.mapping(entry, rule_path, ("ports", peers_field))
        if body is None:
            continue
        peers = _parse_list(
            body.get(peers_field), child(rule_path, peers_field), _parse_peer, reader
        )
        ports = _parse_list(body.get("ports"), child(rule_path, "ports"), _parse_port, reader)
        rules.append(Rule(tuple(peers), tuple(ports)))
    return tuple(rules) if len(reader.errors) == before else None


def _parse_list(value: object, path: str, parse: Any, reader: Reader) -> list[Any]:
    if value is None:
        return []
    parsed = []
    for index, entry in enumerate(reader.sequence(value, path) or []):
        result = parse(entry, item(path, index), reader)
        if result is not None:
            parsed.append(result)
    return parsed


def _parse_peer(value: object, path: str, reader: Reader) -> Peer | None:
    body = reader.mapping(value, path, ("podSelector", "namespaceSelector", "ipBlock"))
    if body is None:
        return None
    present = [
        name
        for name in ("podSelector", "namespaceSelector", "ipBlock")
        if body.get(name) is not None
    ]
    if not present:
        reader.error(path, "Required value: must specify a peer")
        return None
    if "ipBlock" in present and len(present) > 1:
        reader.error(path, "Forbidden: may not specify both ipBlock and another peer")
        return None
    if "ipBlock" in present:
        block = _parse_ip_block(body["ipBlock"], child(path, "ipBlock"), reader)
        return Peer(ip_block=block) if block is not None else None
    pods = namespaces = None
    if "podSelector" in present:
        pods = LabelSelector.parse(body["podSelector"], child(path, "podSelector"), reader)
        if pods is None:
            return None
    if "namespaceSelector" in present:
        namespaces = LabelSelector.parse(
            body["namespaceSelector"], child(path, "namespaceSelector"), reader
        )
        if namespaces is None:
            return None
    return Peer(pod_selector=pods, namespace_selector=namespaces)


def _parse_ip_block(value: object, path: str, reader: Reader) -> IPBlock | None:
    body = reader.mapping(value, path, ("cidr", "except"))
    if body is None:
        return None
    if body.get("cidr") is None:
        reader.error(child(path, "cidr"), "Required value")
        return None
    before = len(reader.errors)
    text = reader.string(body["cidr"], child(path, "cidr"))
    cidr = parse_network(text, child(path, "cidr"), reader) if text is not None else None
    excepts: list[IPNetwork] = []
    if body.get("except") is not None:
        except_path = child(path, "except")
        for index, entry in enumerate(reader.sequence(body["except"], except_path) or []):
            entry_path = item(except_path, index)
            entry_text = reader.string(entry, entry_path)
            excluded = (
                parse_network(entry_text, entry_path, reader) if entry_text is not None else None
            )
            if excluded is None or cidr is None:
                continue
            # Upstream: the except prefix must start inside cidr and be strictly longer.
            if (
                excluded.version != cidr.version
                or excluded.network_address not in cidr
                or excluded.prefixlen <= cidr.prefixlen
            ):
                reader.error(
                    entry_path, f"{entry_text!r}: must be a strict subset of `cidr` {text!r}"
                )
                continue
            excepts.append(excluded)
    if cidr is None or len(reader.errors) != before:
        return None
    return IPBlock(cidr, tuple(excepts))


def _parse_port(value: object, path: str, reader: Reader) -> PolicyPort | None:
    body = reader.mapping(value, path, ("protocol", "port", "endPort"))
    if body is None:
        return None
    before = len(reader.errors)
    protocol = _parse_protocol(body, path, reader)
    port = _parse_port_value(body.get("port"), child(path, "port"), reader)
    end_port = _parse_end_port(body, path, port, reader)
    if len(reader.errors) != before:
        return None
    return PolicyPort(protocol, port, end_port)


def _parse_protocol(body: Mapping[str, Any], path: str, reader: Reader) -> Protocol:
    """The port's protocol, TCP when absent (errors recorded, TCP returned)."""
    if body.get("protocol") is None:
        return Protocol.TCP
    text = reader.string(body["protocol"], child(path, "protocol"))
    if text is None:
        return Protocol.TCP
    try:
        return Protocol(text)
    except ValueError:
        reader.error(
            child(path, "protocol"),
            f'Unsupported value: {text!r}: supported values: "SCTP", "TCP", "UDP"',
        )
        return Protocol.TCP


def _parse_port_value(raw: object, path: str, reader: Reader) -> int | str | None:
    """A named port (kept even when invalid, so endPort is judged against it) or a number."""
    if isinstance(raw, str):
        problem = port_name_error(raw)
        if problem:
            reader.error(path, f"{raw!r}: {problem}")
        return raw
    if raw is None:
        return None
    port = reader.integer(raw, path)
    if port is not None and not 1 <= port <= 65535:
        reader.error(path, f"{port}: must be between 1 and 65535, inclusive")
    return port


def _parse_end_port(
    body: Mapping[str, Any], path: str, port: int | str | None, reader: Reader
) -> int | None:
    if body.get("endPort") is None:
        return None
    end_path = child(path, "endPort")
    end_port = reader.integer(body["endPort"], end_path)
    if end_port is None:
        return None
    if body.get("port") is None:
        reader.error(
            child(path, "port"), "Required value: must be specified when endPort is specified"
        )
    elif isinstance(port, str):
        reader.error(end_path, "may not be specified when `port` is non-numeric")
    elif not 1 <= end_port <= 65535:
        reader.error(end_path, f"{end_port}: must be between 1 and 65535, inclusive")
    elif isinstance(port, int) and end_port < port:
        reader.error(end_path, f"{end_port}: must be greater than or equal to `port` ({port})")
    return end_port


def policy_to_api(policy: NetworkPolicy) -> dict[str, Any]:
    """The policy as an API object (defaults made explicit), for round trips and output."""
    spec: dict[str, Any] = {
        "podSelector": _selector_to_api(policy.pod_selector),
        "policyTypes": [d.value for d in Direction if d in policy.policy_types],
    }
    if policy.ingress:
        spec["ingress"] = _rules_to_api(policy.ingress, "from")
    if policy.egress:
        spec["egress"] = _rules_to_api(policy.egress, "to")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": policy.name, "namespace": policy.namespace},
        "spec": spec,
    }


def _selector_to_api(value: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if value.match_labels:
        out["matchLabels"] = dict(value.match_labels)
    if value.match_expressions:
        out["matchExpressions"] = [
            {
                "key": r.key,
                "operator": r.operator.value,
                **({"values": sorted(r.values)} if r.values else {}),
            }
            for r in value.match_expressions
        ]
    return out


def _peer_to_api(value: Peer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if value.ip_block is not None:
        block: dict[str, Any] = {"cidr": str(value.ip_block.cidr)}
        if value.ip_block.except_:
            block["except"] = [str(net) for net in value.ip_block.except_]
        out["ipBlock"] = block
    if value.pod_selector is not None:
        out["podSelector"] = _selector_to_api(value.pod_selector)
    if value.namespace_selector is not None:
        out["namespaceSelector"] = _selector_to_api(value.namespace_selector)
    return out


def _port_to_api(value: PolicyPort) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": value.protocol.value}
    if value.port is not None:
        out["port"] = value.port
    if value.end_port is not None:
        out["endPort"] = value.end_port
    return out


def _rules_to_api(values: tuple[Rule, ...], peers_field: str) -> list[dict[str, Any]]:
    out = []
    for rule in values:
        entry: dict[str, Any] = {}
        if rule.peers:
            entry[peers_field] = [_peer_to_api(p) for p in rule.peers]
        if rule.ports:
            entry["ports"] = [_port_to_api(p) for p in rule.ports]
        out.append(entry)
    return out


def is_policy_object(obj: Mapping[str, Any]) -> bool:
    """Whether a decoded document is a NetworkPolicy (by kind)."""
    return obj.get("kind") == KIND

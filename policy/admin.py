"""The network-policy-api's cluster-wide kinds, decoded and validated as their CRDs would.

Three kinds, one model (`AdminPolicy`):
- `AdminNetworkPolicy` (policy.networking.k8s.io/v1alpha1): the Admin tier, `spec.priority`
  0..1000, actions Allow, Deny, Pass.
- `BaselineAdminNetworkPolicy` (v1alpha1): the Baseline tier, a singleton that must be
  named `default`, no priority, actions Allow and Deny.
- `ClusterNetworkPolicy` (v1alpha2): `spec.tier` Admin or Baseline, `spec.priority`
  0..1000, actions Accept, Deny, Pass in either tier.

v1alpha1's Allow and v1alpha2's Accept mean the same and are one `Action.ACCEPT`;
`AdminPolicy.action_word` spells an action back in the policy's own vocabulary.

Limits and shapes follow each version's types (`apis/v1alpha1`, `apis/v1alpha2`):
v1alpha1 allows 100 rules a direction, 100 peers and 100 ports a rule, and ports as
`portNumber` / `namedPort` / `portRange`; v1alpha2 allows 25 of each, and ports as
`protocols: [{tcp|udp|sctp: {destinationPort: {number | range}}} | {destinationNamedPort}]`.
Both: at most 25 `networks` a peer, ingress peers are `namespaces` or `pods`, egress peers
also `nodes` and `networks`, exactly one field set in each subject, peer and port, a port
range's start below its end, and no named port in an egress rule towards nodes or
networks (which have no named ports). `domainNames` peers are refused: podwire does not
implement them (matching needs the DNS answers a pod received).

A null field is an absent one, as the API server prunes nulls from CRD objects before
validating them. Every rule lists at least one peer, so an empty `peers` never occurs; an empty `ports`
(the field absent) means every protocol and port, ICMP included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .cluster import Namespace, Pod
from .fields import Reader, child, item
from .model import Direction, IPAddress, IPNetwork, Protocol, parse_metadata, parse_network
from .resolve import MAX_PORT
from .selectors import LabelSelector

GROUP = "policy.networking.k8s.io"
V1ALPHA1 = f"{GROUP}/v1alpha1"
V1ALPHA2 = f"{GROUP}/v1alpha2"
MIN_PRIORITY, MAX_PRIORITY = 0, 1000
# The API's message for the BaselineAdminNetworkPolicy singleton rule, as its CRD says it.
BASELINE_SINGLETON = "default"
SINGLETON_MESSAGE = (
    'Only one baseline admin network policy with metadata.name="default" '
    "can be created in the cluster"
)
RULE_NAME_MAX = 100
MAX_NETWORKS = 25
CIDR_MAX_LENGTH = 43
NAMED_PORT_TO_NODES_MESSAGE = (
    "networks/nodes peer cannot be set with namedPorts since there are no namedPorts "
    "for networks/nodes"
)


class Tier(StrEnum):
    """Where a cluster policy sits: before NetworkPolicy (Admin) or after it (Baseline)."""

    ADMIN = "Admin"
    BASELINE = "Baseline"


class Action(StrEnum):
    """What a matching rule does. v1alpha1's `Allow` is `ACCEPT`."""

    ACCEPT = "Accept"
    DENY = "Deny"
    PASS = "Pass"


@dataclass(frozen=True)
class KindSpec:
    """What one kind allows: the parser and the CRD schema both read these."""

    kind: str
    api_version: str
    plural: str
    short_name: str
    tier: Tier | None  # None: the object says, in spec.tier
    has_priority: bool
    actions: Mapping[str, Action]  # spelled as the API spells them
    max_rules: int
    max_peers: int
    max_ports: int
    ports_field: str
    egress_peers: tuple[str, ...]

    @property
    def version(self) -> str:
        """`v1alpha1` or `v1alpha2`."""
        return self.api_version.rpartition("/")[2]


ANP = KindSpec(
    kind="AdminNetworkPolicy", api_version=V1ALPHA1, plural="adminnetworkpolicies",
    short_name="anp", tier=Tier.ADMIN, has_priority=True,
    actions={"Allow": Action.ACCEPT, "Deny": Action.DENY, "Pass": Action.PASS},
    egress_peers=("namespaces", "pods", "nodes", "networks", "domainNames"),
    max_rules=100, max_peers=100, max_ports=100, ports_field="ports",
)
BANP = KindSpec(
    kind="BaselineAdminNetworkPolicy", api_version=V1ALPHA1, plural="baselineadminnetworkpolicies",
    short_name="banp", tier=Tier.BASELINE, has_priority=False,
    actions={"Allow": Action.ACCEPT, "Deny": Action.DENY},
    egress_peers=("namespaces", "pods", "nodes", "networks"),
    max_rules=100, max_peers=100, max_ports=100, ports_field="ports",
)
CNP = KindSpec(
    kind="ClusterNetworkPolicy", api_version=V1ALPHA2, plural="clusternetworkpolicies",
    short_name="cnp", tier=None, has_priority=True,
    actions={"Accept": Action.ACCEPT, "Deny": Action.DENY, "Pass": Action.PASS},
    egress_peers=("namespaces", "pods", "nodes", "networks", "domainNames"),
    max_rules=25, max_peers=25, max_ports=25, ports_field="protocols",
)
KINDS: dict[str, KindSpec] = {spec.kind: spec for spec in (ANP, BANP, CNP)}
INGRESS_PEERS = ("namespaces", "pods")
# Peers the model parses; the CRDs leave the rest out, so the API server refuses them too.
UNSUPPORTED_PEERS = frozenset({"domainNames"})


@dataclass(frozen=True)
class PodSet:
    """Pods chosen by namespace and, optionally, by pod labels: a subject or a pod peer.

    `pod_selector` None is the `namespaces` form (every pod of the namespaces); set, it
    is the `pods` form (`namespaceSelector` AND `podSelector`).
    """

    namespace_selector: LabelSelector = field(default_factory=LabelSelector)
    pod_selector: LabelSelector | None = None

    def matches(self, namespace: Namespace, pod: Pod) -> bool:
        """Whether `pod`, living in `namespace`, is one of these pods."""
        if not self.namespace_selector.matches(namespace.labels):
            return False
        return self.pod_selector is None or self.pod_selector.matches(pod.labels)


@dataclass(frozen=True)
class NodePeer:
    """Nodes by label; the peer is any address in a matching node's `status.addresses`."""

    selector: LabelSelector = field(default_factory=LabelSelector)


@dataclass(frozen=True)
class NetworkPeer:
    """CIDRs; they match pod addresses as well as addresses outside the cluster."""

    networks: tuple[IPNetwork, ...]

    def contains(self, address: IPAddress) -> bool:
        """Whether `address` lies in one of the networks."""
        return any(address.version == net.version and address in net for net in self.networks)


AdminPeer = PodSet | NodePeer | NetworkPeer


@dataclass(frozen=True)
class AdminPort:
    """A destination port match: `start..end` of `protocol`, or a named container port.

    A named port has `protocol` None: the destination pod's container port of that name
    says both the protocol and the number.
    """

    protocol: Protocol | None = None
    start: int = 0
    end: int = MAX_PORT
    name: str | None = None


@dataclass(frozen=True)
class AdminRule:
    """One rule: traffic with one of `peers` AND on one of `ports` gets `action`.

    `ports` empty means every protocol and port.
    """

    action: Action
    peers: tuple[AdminPeer, ...]
    ports: tuple[AdminPort, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class AdminPolicy:
    """A decoded, validated cluster policy of any of the three kinds.

    `priority` is None for a BaselineAdminNetworkPolicy, which has none.
    """

    kind: str
    name: str
    tier: Tier
    priority: int | None
    subject: PodSet
    ingress: tuple[AdminRule, ...] = ()
    egress: tuple[AdminRule, ...] = ()

    @property
    def key(self) -> str:
        """`Kind/name`: how verdicts name the policy. NetworkPolicies are `namespace/name`;
        a namespace name is lower case, so the two never read alike."""
        return f"{self.kind}/{self.name}"

    def rules(self, direction: Direction) -> tuple[AdminRule, ...]:
        """The rules for traffic of `direction` relative to the subject."""
        return self.ingress if direction is Direction.INGRESS else self.egress

    def rule_label(self, direction: Direction, index: int) -> str:
        """The rule's name, or its place (`ingress[2]`) when it has none."""
        name = self.rules(direction)[index].name
        return name or f"{direction.value.lower()}[{index}]"

    def action_word(self, action: Action) -> str:
        """`action` as this policy's API version spells it (`Allow` in v1alpha1)."""
        spelled = {value: word for word, value in KINDS[self.kind].actions.items()}
        return spelled.get(action, action.value)

    @classmethod
    def from_api(cls, obj: object) -> AdminPolicy:
        """Decode an API object (a dict as JSON/YAML gives it) of one of the three kinds.

        Raises PolicyErrors listing every problem found, each with its field path.
        """
        reader = Reader()
        policy = _parse_policy(obj, reader)
        reader.raise_if_failed()
        assert policy is not None  # no errors implies a policy was built
        return policy


def is_admin_object(obj: object) -> bool:
    """Whether a decoded document is one of the three cluster policy kinds (by kind)."""
    return isinstance(obj, Mapping) and obj.get("kind") in KINDS


def _parse_policy(obj: object, reader: Reader) -> AdminPolicy | None:
    body = reader.mapping(obj, "", ("apiVersion", "kind", "metadata", "spec", "status"))
    if body is None:
        return None
    kind = KINDS.get(body.get("kind"))  # type: ignore[arg-type]
    if kind is None:
        reader.error("kind", f"must be one of {', '.join(KINDS)}, got {body.get('kind')!r}")
        return None
    if body.get("apiVersion", kind.api_version) != kind.api_version:
        reader.error(
            "apiVersion", f"must be {kind.api_version!r}, got {body.get('apiVersion')!r}"
        )
    meta = parse_metadata(body.get("metadata"), reader, None)
    if kind is BANP and meta.name is not None and meta.name != BASELINE_SINGLETON:
        reader.error("metadata.name", f"Invalid value: {meta.name!r}: {SINGLETON_MESSAGE}")
    spec = _parse_spec(body.get("spec"), kind, reader)
    if reader.errors or meta.name is None or spec is None:
        return None
    tier, priority, subject, ingress, egress = spec
    return AdminPolicy(kind.kind, meta.name, tier, priority, subject, ingress, egress)


_Spec = tuple[Tier, int | None, PodSet, tuple[AdminRule, ...], tuple[AdminRule, ...]]


def _parse_spec(value: object, kind: KindSpec, reader: Reader) -> _Spec | None:
    if value is None:
        reader.error("spec", "Required value")
        return None
    known = ["subject", "ingress", "egress"]
    known += ["priority"] if kind.has_priority else []
    known += ["tier"] if kind.tier is None else []
    spec = reader.mapping(value, "spec", known)
    if spec is None:
        return None
    tier = kind.tier or _parse_tier(spec, reader)
    priority = _parse_priority(spec, reader) if kind.has_priority else None
    subject = _parse_subject(spec.get("subject"), kind, reader)
    ingress = _parse_rules(spec.get("ingress"), Direction.INGRESS, kind, reader)
    egress = _parse_rules(spec.get("egress"), Direction.EGRESS, kind, reader)
    if tier is None or subject is None or ingress is None or egress is None:
        return None
    if kind.has_priority and priority is None:
        return None
    return tier, priority, subject, ingress, egress


def _parse_tier(spec: Mapping[str, Any], reader: Reader) -> Tier | None:
    if spec.get("tier") is None:
        reader.error("spec.tier", "Required value")
        return None
    text = reader.string(spec["tier"], "spec.tier")
    if text is None:
        return None
    return _enum(text, "spec.tier", {t.value: t for t in Tier}, reader)


def _parse_priority(spec: Mapping[str, Any], reader: Reader) -> int | None:
    if spec.get("priority") is None:
        reader.error("spec.priority", "Required value")
        return None
    priority = reader.integer(spec["priority"], "spec.priority")
    if priority is not None and not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        reader.error(
            "spec.priority",
            f"Invalid value: {priority}: must be between {MIN_PRIORITY} and {MAX_PRIORITY}, "
            "inclusive",
        )
        return None
    return priority


def _enum(text: str, path: str, choices: Mapping[str, Any], reader: Reader) -> Any:
    if text in choices:
        return choices[text]
    supported = ", ".join(f'"{word}"' for word in choices)
    reader.error(path, f"Unsupported value: {text!r}: supported values: {supported}")
    return None


def _one_of(body: Mapping[str, Any], fields: tuple[str, ...], path: str, reader: Reader) -> str | None:
    """The one field of `fields` that `body` sets; an error unless exactly one is."""
    present = [name for name in fields if body.get(name) is not None]
    if len(present) == 1:
        return present[0]
    got = f", got {', '.join(present)}" if present else ""
    reader.error(path, f"must set exactly one of {', '.join(fields)}{got}")
    return None


def _parse_subject(value: object, kind: KindSpec, reader: Reader) -> PodSet | None:
    path = "spec.subject"
    if value is None:
        reader.error(path, "Required value")
        return None
    return _parse_pod_set(value, path, kind, reader)


def _parse_pod_set(value: object, path: str, kind: KindSpec, reader: Reader) -> PodSet | None:
    """A `{namespaces: selector}` or `{pods: {namespaceSelector, podSelector}}` object."""
    body = reader.mapping(value, path, INGRESS_PEERS)
    if body is None:
        return None
    chosen = _one_of(body, INGRESS_PEERS, path, reader)
    if chosen is None:
        return None
    return _pod_set_field(body, chosen, path, kind, reader)


def _pod_set_field(
    body: Mapping[str, Any], chosen: str, path: str, kind: KindSpec, reader: Reader
) -> PodSet | None:
    if chosen == "namespaces":
        selector = LabelSelector.parse(body["namespaces"], child(path, "namespaces"), reader)
        return PodSet(selector) if selector is not None else None
    return _parse_namespaced_pod(body["pods"], child(path, "pods"), kind, reader)


def _parse_namespaced_pod(
    value: object, path: str, kind: KindSpec, reader: Reader
) -> PodSet | None:
    body = reader.mapping(value, path, ("namespaceSelector", "podSelector"))
    if body is None:
        return None
    namespaces = _selector_field(body, "namespaceSelector", path, kind is not CNP, reader)
    pods = _selector_field(body, "podSelector", path, True, reader)
    if namespaces is None or pods is None:
        return None
    return PodSet(namespaces, pods)


def _selector_field(
    body: Mapping[str, Any], name: str, path: str, required: bool, reader: Reader
) -> LabelSelector | None:
    # The API server prunes a null from a CRD object before validating, so null is absent.
    if body.get(name) is None:
        if required:
            reader.error(child(path, name), "Required value")
            return None
        return LabelSelector()
    return LabelSelector.parse(body[name], child(path, name), reader)


def _bounded_list(
    value: object, path: str, minimum: int, maximum: int, what: str, reader: Reader
) -> list[Any] | None:
    entries = reader.sequence(value, path)
    if entries is None:
        return None
    if len(entries) < minimum:
        reader.error(path, f"Required value: must have at least {minimum} {what}")
        return None
    if len(entries) > maximum:
        reader.error(path, f"Too many: {len(entries)}: must have at most {maximum} {what}")
        return None
    return entries


def _parse_rules(
    value: object, direction: Direction, kind: KindSpec, reader: Reader
) -> tuple[AdminRule, ...] | None:
    if value is None:
        return ()
    path = f"spec.{direction.value.lower()}"
    entries = _bounded_list(value, path, 0, kind.max_rules, "rules", reader)
    if entries is None:
        return None
    before = len(reader.errors)
    rules = [
        _parse_rule(entry, item(path, index), direction, kind, reader)
        for index, entry in enumerate(entries)
    ]
    if len(reader.errors) != before:
        return None
    return tuple(rule for rule in rules if rule is not None)


def _parse_rule(
    value: object, path: str, direction: Direction, kind: KindSpec, reader: Reader
) -> AdminRule | None:
    peers_field = "from" if direction is Direction.INGRESS else "to"
    body = reader.mapping(value, path, ("name", "action", peers_field, kind.ports_field))
    if body is None:
        return None
    before = len(reader.errors)
    name = _parse_rule_name(body.get("name"), child(path, "name"), reader)
    action = _parse_action(body, path, kind, reader)
    peers = _parse_peers(body.get(peers_field), child(path, peers_field), direction, kind, reader)
    ports = _parse_ports(body.get(kind.ports_field), child(path, kind.ports_field), kind, reader)
    if len(reader.errors) != before or action is None or peers is None or ports is None:
        return None
    towards_addresses = any(isinstance(peer, NodePeer | NetworkPeer) for peer in peers)
    if towards_addresses and any(port.name is not None for port in ports):
        reader.error(path, f"Invalid value: {NAMED_PORT_TO_NODES_MESSAGE}")
        return None
    return AdminRule(action, peers, ports, name)


def _parse_rule_name(value: object, path: str, reader: Reader) -> str:
    if value is None:
        return ""
    name = reader.string(value, path)
    if name is not None and len(name) > RULE_NAME_MAX:
        reader.error(path, f"Too long: may not be more than {RULE_NAME_MAX} characters")
    return name or ""


def _parse_action(body: Mapping[str, Any], path: str, kind: KindSpec, reader: Reader) -> Action | None:
    action_path = child(path, "action")
    if body.get("action") is None:
        reader.error(action_path, "Required value")
        return None
    text = reader.string(body["action"], action_path)
    if text is None:
        return None
    action: Action | None = _enum(text, action_path, kind.actions, reader)
    return action


def _parse_peers(
    value: object, path: str, direction: Direction, kind: KindSpec, reader: Reader
) -> tuple[AdminPeer, ...] | None:
    if value is None:
        reader.error(path, "Required value: must have at least 1 peer")
        return None
    entries = _bounded_list(value, path, 1, kind.max_peers, "peers", reader)
    if entries is None:
        return None
    fields = INGRESS_PEERS if direction is Direction.INGRESS else kind.egress_peers
    before = len(reader.errors)
    peers = [
        _parse_peer(entry, item(path, index), fields, kind, reader)
        for index, entry in enumerate(entries)
    ]
    if len(reader.errors) != before:
        return None
    return tuple(peer for peer in peers if peer is not None)


def _parse_peer(
    value: object, path: str, fields: tuple[str, ...], kind: KindSpec, reader: Reader
) -> AdminPeer | None:
    body = reader.mapping(value, path, fields)
    if body is None:
        return None
    chosen = _one_of(body, fields, path, reader)
    if chosen is None:
        return None
    field_path = child(path, chosen)
    if chosen in UNSUPPORTED_PEERS:
        reader.error(field_path, f"Unsupported: podwire does not implement {chosen} peers")
        return None
    if chosen == "nodes":
        selector = LabelSelector.parse(body["nodes"], field_path, reader)
        return NodePeer(selector) if selector is not None else None
    if chosen == "networks":
        return _parse_networks(body["networks"], field_path, reader)
    return _pod_set_field(body, chosen, path, kind, reader)


def _parse_networks(value: object, path: str, reader: Reader) -> NetworkPeer | None:
    entries = _bounded_list(value, path, 1, MAX_NETWORKS, "CIDRs", reader)
    if entries is None:
        return None
    before = len(reader.errors)
    seen: set[str] = set()
    networks: list[IPNetwork] = []
    for index, entry in enumerate(entries):
        entry_path = item(path, index)
        text = reader.string(entry, entry_path)
        if text is None:
            continue
        if text in seen:
            reader.error(entry_path, f"Duplicate value: {text!r}")
            continue
        seen.add(text)
        if len(text) > CIDR_MAX_LENGTH:
            reader.error(entry_path, f"Too long: may not be more than {CIDR_MAX_LENGTH} characters")
            continue
        network = parse_network(text, entry_path, reader)
        if network is not None:
            networks.append(network)
    if len(reader.errors) != before:
        return None
    return NetworkPeer(tuple(networks))


def _parse_ports(
    value: object, path: str, kind: KindSpec, reader: Reader
) -> tuple[AdminPort, ...] | None:
    if value is None:
        return ()
    entries = _bounded_list(value, path, 1, kind.max_ports, "ports", reader)
    if entries is None:
        return None
    parse = _parse_v1alpha1_port if kind.ports_field == "ports" else _parse_v1alpha2_protocol
    before = len(reader.errors)
    ports = [parse(entry, item(path, index), reader) for index, entry in enumerate(entries)]
    if len(reader.errors) != before:
        return None
    return tuple(port for port in ports if port is not None)


def _parse_v1alpha1_port(value: object, path: str, reader: Reader) -> AdminPort | None:
    fields = ("portNumber", "namedPort", "portRange")
    body = reader.mapping(value, path, fields)
    if body is None:
        return None
    chosen = _one_of(body, fields, path, reader)
    field_path = child(path, chosen or "")
    if chosen == "namedPort":
        return _parse_port_name(body["namedPort"], field_path, reader)
    if chosen == "portNumber":
        number = reader.mapping(body["portNumber"], field_path, ("protocol", "port"))
        if number is None:
            return None
        protocol = _parse_protocol(number.get("protocol"), child(field_path, "protocol"), reader)
        port = _required_port(number, "port", field_path, reader)
        if protocol is None or port is None:
            return None
        return AdminPort(protocol, port, port)
    if chosen == "portRange":
        ranged = reader.mapping(body["portRange"], field_path, ("protocol", "start", "end"))
        if ranged is None:
            return None
        protocol = _parse_protocol(ranged.get("protocol"), child(field_path, "protocol"), reader)
        bounds = _parse_range(ranged, field_path, reader)
        if protocol is None or bounds is None:
            return None
        return AdminPort(protocol, *bounds)
    return None


def _parse_v1alpha2_protocol(value: object, path: str, reader: Reader) -> AdminPort | None:
    by_field = {"tcp": Protocol.TCP, "udp": Protocol.UDP, "sctp": Protocol.SCTP}
    fields = (*by_field, "destinationNamedPort")
    body = reader.mapping(value, path, fields)
    if body is None:
        return None
    chosen = _one_of(body, fields, path, reader)
    if chosen is None:
        return None
    field_path = child(path, chosen)
    if chosen == "destinationNamedPort":
        return _parse_port_name(body[chosen], field_path, reader)
    match = reader.mapping(body[chosen], field_path, ("destinationPort",))
    if match is None:
        return None
    if match.get("destinationPort") is None:
        reader.error(child(field_path, "destinationPort"), "Required value")
        return None
    port_path = child(field_path, "destinationPort")
    port = reader.mapping(match["destinationPort"], port_path, ("number", "range"))
    if port is None:
        return None
    shape = _one_of(port, ("number", "range"), port_path, reader)
    if shape == "number":
        number = _required_port(port, "number", port_path, reader)
        return AdminPort(by_field[chosen], number, number) if number is not None else None
    if shape == "range":
        range_path = child(port_path, "range")
        ranged = reader.mapping(port["range"], range_path, ("start", "end"))
        bounds = _parse_range(ranged, range_path, reader) if ranged is not None else None
        return AdminPort(by_field[chosen], *bounds) if bounds is not None else None
    return None


def _parse_port_name(value: object, path: str, reader: Reader) -> AdminPort | None:
    # The API takes any string; one that is no IANA_SVC_NAME names no container port
    # and so matches nothing, which lint points out rather than the parser refusing.
    name = reader.string(value, path)
    if name is None:
        return None
    if not name:
        reader.error(path, "Required value: a port name must not be empty")
        return None
    return AdminPort(name=name)


def _parse_protocol(value: object, path: str, reader: Reader) -> Protocol | None:
    if value is None:
        return Protocol.TCP  # the CRD's default
    text = reader.string(value, path)
    if text is None:
        return None
    protocol: Protocol | None = _enum(text, path, {p.value: p for p in Protocol}, reader)
    return protocol


def _required_port(body: Mapping[str, Any], name: str, path: str, reader: Reader) -> int | None:
    port_path = child(path, name)
    if body.get(name) is None:
        reader.error(port_path, "Required value")
        return None
    port = reader.integer(body[name], port_path)
    if port is not None and not 1 <= port <= MAX_PORT:
        reader.error(port_path, f"Invalid value: {port}: must be between 1 and 65535, inclusive")
        return None
    return port


def _parse_range(body: Mapping[str, Any], path: str, reader: Reader) -> tuple[int, int] | None:
    start = _required_port(body, "start", path, reader)
    end = _required_port(body, "end", path, reader)
    if start is None or end is None:
        return None
    if start >= end:
        reader.error(path, f"Invalid value: {start}..{end}: Start port must be less than End port")
        return None
    return start, end

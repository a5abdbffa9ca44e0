"""Lint for NetworkPolicy files: schema and API errors, then the traps that pass validation.

Errors are what the API server would refuse (the upstream JSON schema, then the API
server's own validation in `model`). Warnings are policies that are accepted but very
likely not what their author meant. Each finding carries the file, the line and the
field path, so an editor can underline the spot.

Warnings need different amounts of context: the shape of a policy alone (separate peers,
policyTypes, duplicates, shadowed rules) or the cluster (named ports, ipBlocks over pod
addresses, selectors that match nothing); the latter are skipped without a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .context import ClusterContext
from .cover import peer_covers, port_covers, rule_covers, selector_covers
from .errors import PolicyErrors
from .fields import child, item
from .model import KIND, Direction, IPBlock, NetworkPolicy, Peer, PolicyPort, Rule
from .resolve import pods_matching_peer
from .schema import schema_errors
from .sourcemap import SourceDocument, SourceSyntaxError, load_with_marks

MAX_NAMED = 4  # pods named in one message before "and N more"


class Severity(StrEnum):
    """How bad a finding is: errors are refused by the API server, warnings are traps."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem, placed as precisely as the input allows."""

    severity: Severity
    code: str
    message: str
    path: str = ""
    file: str = ""
    line: int | None = None
    document: int | None = None
    policy: str | None = None

    def describe(self) -> str:
        """`file:line: severity: ns/name: path: message [code]`, one line for terminals."""
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        parts = [where, self.severity.value]
        parts += [p for p in (self.policy, self.path) if p]
        return ": ".join(parts) + f": {self.message} [{self.code}]"

    def as_json(self) -> dict[str, Any]:
        """The finding as a JSON object for editors."""
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "path": self.path,
            "file": self.file,
            "line": self.line,
            "document": self.document,
            "policy": self.policy,
        }


@dataclass(frozen=True)
class _Located:
    """A decoded policy and where it came from, so findings about it get a line."""

    policy: NetworkPolicy
    raw: Mapping[str, Any]
    file: str
    document: SourceDocument
    prefix: str

    def line(self, path: str) -> int:
        return self.document.line(child(self.prefix, path) if self.prefix else path)


@dataclass
class _Collector:
    findings: list[Finding] = field(default_factory=list)

    def add(self, where: _Located, code: str, path: str, message: str) -> None:
        self.findings.append(
            Finding(
                Severity.WARNING,
                code,
                message,
                _join(where.prefix, path),
                where.file,
                where.line(path),
                where.document.index,
                where.policy.key,
            )
        )


def lint(
    sources: Sequence[tuple[str, str]],
    context: ClusterContext | None = None,
    default_namespace: str = "default",
) -> list[Finding]:
    """Lint `(file name, text)` pairs together; `context` enables the cluster checks.

    Files are linted together so duplicates across files are found. Documents of other
    kinds (a manifest directory mixes them) are passed over.
    """
    findings: list[Finding] = []
    located: list[_Located] = []
    for name, text in sources:
        try:
            documents = load_with_marks(text)
        except SourceSyntaxError as problem:
            findings.append(Finding(Severity.ERROR, "syntax", problem.message, "", name,
                                    problem.line))
            continue
        for document in documents:
            for prefix, obj in _objects(document.data):
                findings += _validate(name, document, prefix, obj, default_namespace, located)
    collector = _Collector()
    for index, where in enumerate(located):
        _check_policy(where, collector)
        _check_across(where, located[:index], collector)
        if context is not None:
            _check_in_cluster(where, context, collector)
    findings += collector.findings
    return sorted(findings, key=lambda f: (f.file, f.line or 0, f.path, f.code))


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    return f"{prefix}.{path}" if path else prefix


def _objects(data: object) -> Iterator[tuple[str, object]]:
    if isinstance(data, Mapping) and data.get("kind") == "List":
        entries = data.get("items")
        if isinstance(entries, list):
            for index, entry in enumerate(entries):
                yield item("items", index), entry
            return
    yield "", data


def _validate(
    name: str,
    document: SourceDocument,
    prefix: str,
    obj: object,
    default_namespace: str,
    located: list[_Located],
) -> list[Finding]:
    def error(code: str, path: str, message: str) -> Finding:
        full = _join(prefix, path)
        return Finding(Severity.ERROR, code, message, full, name, document.line(full),
                       document.index)

    if not isinstance(obj, Mapping):
        return [error("invalid", "", "must be an object (a Kubernetes API object)")]
    kind = obj.get("kind")
    if kind is None:
        return [error("invalid", "kind", "Required value: kind is missing")]
    if kind != KIND:
        return []
    found = [error("schema", e.path, e.message) for e in schema_errors(obj)]
    schema_paths = [e.path for e in found]
    try:
        policy = NetworkPolicy.from_api(obj, default_namespace)
    except PolicyErrors as problem:
        # The schema already reported type errors; the API checks add the rest.
        found += [
            error("invalid", e.path, e.message)
            for e in problem.errors
            if not any(_within(_join(prefix, e.path), seen) for seen in schema_paths)
        ]
        return found
    if not found:
        located.append(_Located(policy, obj, name, document, prefix))
    return found


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith((parent + ".", parent + "["))


def _rule_field(direction: Direction) -> tuple[str, str]:
    return ("spec.ingress", "from") if direction is Direction.INGRESS else ("spec.egress", "to")


def _rules(policy: NetworkPolicy) -> Iterator[tuple[Direction, int, Rule, str, str]]:
    """Every rule with its direction, index, path and peers field name."""
    for direction in Direction:
        base, peers_field = _rule_field(direction)
        rules = policy.ingress if direction is Direction.INGRESS else policy.egress
        for index, rule in enumerate(rules):
            yield direction, index, rule, item(base, index), peers_field


# ------------------------------------------------------------------ one policy alone


def _check_policy(where: _Located, out: _Collector) -> None:
    _check_policy_types(where, out)
    for _direction, _index, rule, path, peers_field in _rules(where.policy):
        _check_separate_peers(where, rule, path, peers_field, out)
        _check_redundant_entries(where, rule.peers, child(path, peers_field), "peer",
                                 peer_covers, out)
        _check_redundant_entries(where, rule.ports, child(path, "ports"), "port",
                                 port_covers, out)
    for direction in Direction:
        base, _ = _rule_field(direction)
        rules = where.policy.ingress if direction is Direction.INGRESS else where.policy.egress
        for later in range(len(rules)):
            for earlier in range(len(rules)):
                if later == earlier:
                    continue
                wide, narrow = rules[earlier], rules[later]
                if not rule_covers(wide, narrow):
                    continue
                both = rule_covers(narrow, wide)
                if both and later < earlier:
                    continue  # reported once, on the later of two equivalent rules
                code = "duplicate" if both else "shadowed"
                text = "repeats" if both else "admits nothing beyond"
                out.add(where, code, item(base, later),
                        f"this rule {text} {item(base, earlier)}; remove it or narrow the other")
                break


def _check_policy_types(where: _Located, out: _Collector) -> None:
    policy = where.policy
    spec = where.raw.get("spec") or {}
    explicit = bool(spec.get("policyTypes"))
    for direction in Direction:
        base, _ = _rule_field(direction)
        rules = policy.ingress if direction is Direction.INGRESS else policy.egress
        if explicit and rules and direction not in policy.policy_types:
            out.add(where, "policy-types", "spec.policyTypes",
                    f"{base} has {len(rules)} rule(s) but policyTypes lacks "
                    f"{direction.value}, so they are ignored; add {direction.value} to "
                    "policyTypes to enforce them")
    if not explicit and policy.egress and not policy.ingress:
        out.add(where, "policy-types", "spec",
                "no policyTypes and egress rules only: the API server defaults policyTypes "
                "to [Ingress, Egress], so this policy also denies all ingress to the pods "
                "it selects; write policyTypes: [Egress] if only egress was meant")


def _describe_peer(peer: Peer) -> str:
    if peer.namespace_selector is not None:
        return f"namespaceSelector {peer.namespace_selector}"
    return f"podSelector {peer.pod_selector}"


def _check_separate_peers(
    where: _Located, rule: Rule, path: str, peers_field: str, out: _Collector
) -> None:
    """`- namespaceSelector: ...` and `- podSelector: ...` as two entries are an OR."""
    namespace_only = [
        (i, p) for i, p in enumerate(rule.peers)
        if p.namespace_selector is not None and p.pod_selector is None
    ]
    pod_only = [
        (i, p) for i, p in enumerate(rule.peers)
        if p.pod_selector is not None and p.namespace_selector is None
    ]
    if not namespace_only or not pod_only:
        return
    (ns_index, ns_peer), (pod_index, pod_peer) = namespace_only[0], pod_only[0]
    peers_path = child(path, peers_field)
    out.add(where, "separate-peers", item(peers_path, max(ns_index, pod_index)),
            f"{item(peers_path, ns_index)} ({_describe_peer(ns_peer)}) and "
            f"{item(peers_path, pod_index)} ({_describe_peer(pod_peer)}) are separate peers, "
            "so either one admits (OR): every pod of those namespaces, plus matching pods of "
            f"{where.policy.namespace}; for pods matching both, put both selectors in one "
            "peer (drop the '-' before podSelector)")


def _check_redundant_entries(
    where: _Located,
    entries: Sequence[Peer] | Sequence[PolicyPort],
    path: str,
    noun: str,
    covers: Any,
    out: _Collector,
) -> None:
    for later, narrow in enumerate(entries):
        for earlier, wide in enumerate(entries):
            if earlier == later or not covers(wide, narrow):
                continue
            both = covers(narrow, wide)
            if both and later < earlier:
                continue
            code, text = ("duplicate", "repeats") if both else ("shadowed", "is inside")
            out.add(where, code, item(path, later),
                    f"this {noun} {text} {item(path, earlier)}; remove it")
            break


# ------------------------------------------------------------------ across policies


def _check_across(where: _Located, earlier: Sequence[_Located], out: _Collector) -> None:
    """Compare a policy with the ones before it: duplicates, and rules another makes moot."""
    policy = where.policy
    for other in earlier:
        if other.policy.namespace != policy.namespace:
            continue
        # One duplicate finding per policy says enough; its rules are then moot.
        if other.policy.name == policy.name:
            out.add(where, "duplicate", "metadata.name",
                    f"{policy.key} is also defined at {_at(other)}; the one applied last "
                    "replaces the other")
            return
        if _same_spec(other.policy, policy):
            out.add(where, "duplicate", "spec",
                    f"same spec as {other.policy.key} ({_at(other)}); one of them is enough")
            return
        _check_shadowed_by(where, other, out)
        _check_shadowed_by(other, where, out)


def _at(where: _Located) -> str:
    return f"{where.file}:{where.line('metadata.name')}"


def _check_shadowed_by(narrow: _Located, wide: _Located, out: _Collector) -> None:
    """Rules of `narrow` that `wide` already admits for every pod `narrow` selects."""
    for direction, _index, rule, path, _ in _rules(narrow.policy):
        if not _selects_superset(wide.policy, narrow.policy, direction):
            continue
        base, _ = _rule_field(direction)
        for wide_index, wide_rule in enumerate(wide.policy.rules(direction)):
            if rule_covers(wide_rule, rule):
                out.add(narrow, "shadowed", path,
                        f"{wide.policy.key} ({_at(wide)}) selects these pods too and its "
                        f"{item(base, wide_index)} already admits everything this rule does")
                break


def _same_spec(a: NetworkPolicy, b: NetworkPolicy) -> bool:
    return (a.pod_selector, a.ingress, a.egress, a.policy_types) == (
        b.pod_selector, b.ingress, b.egress, b.policy_types)


def _selects_superset(wide: NetworkPolicy, narrow: NetworkPolicy, direction: Direction) -> bool:
    return direction in wide.policy_types and selector_covers(
        wide.pod_selector, narrow.pod_selector
    )


# ------------------------------------------------------------------ against the cluster


def _names(pods: Sequence[Any]) -> str:
    keys = sorted(pod.key for pod in pods)
    shown = ", ".join(keys[:MAX_NAMED])
    return shown + (f" and {len(keys) - MAX_NAMED} more" if len(keys) > MAX_NAMED else "")


def _check_in_cluster(where: _Located, context: ClusterContext, out: _Collector) -> None:
    _check_ip_blocks(where, context, out)
    cluster = context.cluster
    if not cluster.namespace_names():
        return  # only pod CIDRs were given: no objects to match selectors against
    policy = where.policy
    in_namespace = list(cluster.pods_in(policy.namespace))
    selected = [p for p in in_namespace if policy.pod_selector.matches(p.labels)]
    if not selected:
        detail = (f"namespace {policy.namespace} has no pods" if not in_namespace else
                  f"none of the {len(in_namespace)} pods of {policy.namespace} has labels "
                  f"{policy.pod_selector}")
        out.add(where, "selects-nothing", "spec.podSelector",
                f"selects no pod in the current cluster: {detail}")
    for direction, _index, rule, path, peers_field in _rules(policy):
        for peer_index, peer in enumerate(rule.peers):
            peer_path = item(child(path, peers_field), peer_index)
            if peer.ip_block is None and not any(True for _ in pods_matching_peer(cluster, policy, peer)):
                out.add(where, "peer-selects-nothing", peer_path,
                        f"this peer ({_describe_peer(peer)}) matches no pod in the current "
                        "cluster")
        if direction is Direction.INGRESS:
            destinations = selected
        elif rule.peers:
            destinations = list({pod.key: pod for peer in rule.peers
                                 for pod in pods_matching_peer(cluster, policy, peer)}.values())
        else:
            destinations = list(cluster.pods())
        for port_index, port in enumerate(rule.ports):
            if not isinstance(port.port, str) or not destinations:
                continue
            if not any(pod.named_ports(port.port, port.protocol) for pod in destinations):
                whose = "selected" if direction is Direction.INGRESS else "destination"
                out.add(where, "named-port", item(child(path, "ports"), port_index),
                        f"no {whose} pod declares a {port.protocol} container port named "
                        f"{port.port!r} ({_names(destinations)}), so this port admits nothing")


def _check_ip_blocks(where: _Located, context: ClusterContext, out: _Collector) -> None:
    dual_stack = _families(context) == {4, 6}
    for direction, _index, rule, path, peers_field in _rules(where.policy):
        for peer_index, peer in enumerate(rule.peers):
            if peer.ip_block is not None:
                peer_path = item(child(path, peers_field), peer_index)
                _check_ip_block(where, peer.ip_block, peer_path, context, out)
                if dual_stack:
                    _check_other_family(where, direction, rule, peer.ip_block, peer_path, out)


def _families(context: ClusterContext) -> set[int]:
    """The address families of the cluster's pod network (pod CIDRs, pod addresses)."""
    families: set[int] = {cidr.version for cidr in context.pod_cidrs}
    for pod in context.cluster.pods():
        families.update(address.version for address in pod.addresses)
    return families


_EVERYWHERE = {4: "0.0.0.0/0", 6: "::/0"}


def _opens_everything(block: IPBlock | None, version: int) -> bool:
    return (block is not None and block.cidr.version == version and block.cidr.prefixlen == 0
            and not block.except_)


def _check_other_family(
    where: _Located, direction: Direction, rule: Rule, block: IPBlock, path: str,
    out: _Collector,
) -> None:
    """An allow-all of one family in a dual-stack cluster leaves the other one closed:
    `0.0.0.0/0` covers no IPv6 address (upstream semantics), so an isolated pod stays
    unreachable over IPv6 (and the reverse for `::/0`), unless a rule of the same
    direction with the same ports opens the other family too."""
    if block.cidr.prefixlen != 0:
        return
    other = 6 if block.cidr.version == 4 else 4
    rules = where.policy.ingress if direction is Direction.INGRESS else where.policy.egress
    if any(
        candidate.ports == rule.ports
        and any(_opens_everything(peer.ip_block, other) for peer in candidate.peers)
        for candidate in rules
    ):
        return
    out.add(where, "ipblock-one-family", child(path, "ipBlock"),
            f"ipBlock {block.cidr} admits IPv{block.cidr.version} addresses only and the "
            f"cluster is dual-stack: IPv{other} traffic stays denied; add a peer "
            f"{{ipBlock: {{cidr: {_EVERYWHERE[other]}}}}} to allow both families")


def _check_ip_block(
    where: _Located, block: IPBlock, path: str, context: ClusterContext, out: _Collector
) -> None:
    ranges = [
        str(cidr) for cidr in context.pod_cidrs
        if cidr.version == block.cidr.version
        and cidr.overlaps(block.cidr)  # type: ignore[arg-type]
        and not any(cidr.subnet_of(hole) for hole in block.except_)  # type: ignore[arg-type]
    ]
    pods = [
        pod for pod in context.cluster.pods_in_network(block.cidr)
        if any(block.contains(address) for address in pod.addresses)
    ]
    if not ranges and not pods:
        return
    covered = []
    if ranges:
        covered.append(f"pod CIDR {', '.join(ranges)}")
    if pods:
        covered.append(f"pods {_names(pods)}")
    out.add(where, "ipblock-pods", child(path, "ipBlock"),
            f"ipBlock {block.cidr} covers pod addresses ({'; '.join(covered)}); pod IPs "
            "change when pods are re-created, so select pods with podSelector/"
            "namespaceSelector, or list the pod CIDR under except")


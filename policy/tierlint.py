"""Lint for the cluster policy kinds: API errors with lines, then the traps of the tiers.

Errors are what the CRDs and podwire's decoder refuse (`AdminPolicy.from_api`).
Warnings (codes):
- `tier-shadowed`: a rule that can never match, because a rule before it in the tier (an
  earlier rule of the policy, or a rule of a policy of higher precedence whose subject
  covers this one's) matches all of its traffic first, whatever that rule's action.
- `tier-priority-collision`: two policies of one tier at one priority. The API leaves
  the outcome undefined where both match; podwire applies them by name, then kind.
- `tier-pass-to-nothing`: a Pass with nothing below it that decides: in the Baseline
  tier always (only the default allow follows); in the Admin tier, with a cluster, when
  no NetworkPolicy selects any subject pod for that direction and no Baseline policy
  has rules for it.
- `tier-named-port`: a named port that is no IANA_SVC_NAME, so no container port has it.
- `tier-no-subject` (with a cluster): the subject selects no pod.

Like `policy.lint`, answers about covering are sound, not complete: a warning is never
raised for a rule that does add something.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from .admin import (
    Action,
    AdminPeer,
    AdminPolicy,
    AdminPort,
    AdminRule,
    NetworkPeer,
    NodePeer,
    PodSet,
    Tier,
    is_admin_object,
)
from .context import ClusterContext
from .cover import selector_covers
from .errors import PolicyErrors
from .fields import child, item
from .lint import Finding, Severity
from .model import Direction, IPNetwork
from .names import port_name_error
from .sourcemap import SourceDocument, SourceSyntaxError, load_with_marks
from .tiers import Tiers


@dataclass(frozen=True)
class Located:
    """A decoded cluster policy and where it came from."""

    policy: AdminPolicy
    file: str
    document: SourceDocument
    prefix: str

    def finding(self, code: str, path: str, message: str) -> Finding:
        full = f"{self.prefix}.{path}" if self.prefix and path else (self.prefix or path)
        return Finding(Severity.WARNING, code, message, full, self.file,
                       self.document.line(full), self.document.index, self.policy.key)


def lint_tiers(
    sources: Sequence[tuple[str, str]], context: ClusterContext | None = None
) -> list[Finding]:
    """Lint the cluster policies among `(file name, text)` pairs; other kinds are passed over
    (`policy.lint` reads those). `context` enables the cluster checks."""
    findings: list[Finding] = []
    located: list[Located] = []
    for name, text in sources:
        try:
            documents = load_with_marks(text)
        except SourceSyntaxError:
            continue  # `policy.lint` reports it once
        for document in documents:
            for prefix, obj in _objects(document.data):
                findings += _decode(name, document, prefix, obj, located)
    findings += _check_shadowed(located)
    findings += _check_collisions(located)
    findings += _check_passes(located, context)
    findings += _check_named_ports(located)
    if context is not None:
        findings += _check_subjects(located, context)
    return sorted(findings, key=lambda f: (f.file, f.line or 0, f.path, f.code))


def _objects(data: object) -> Iterator[tuple[str, object]]:
    if isinstance(data, Mapping) and data.get("kind") == "List":
        entries = data.get("items")
        if isinstance(entries, list):
            for index, entry in enumerate(entries):
                yield item("items", index), entry
            return
    yield "", data


def _decode(name: str, document: SourceDocument, prefix: str, obj: object,
            located: list[Located]) -> list[Finding]:
    if not is_admin_object(obj):
        return []
    try:
        policy = AdminPolicy.from_api(obj)
    except PolicyErrors as problem:
        out = []
        for error in problem.errors:
            full = f"{prefix}.{error.path}" if prefix and error.path else (prefix or error.path)
            out.append(Finding(Severity.ERROR, "invalid", error.message, full, name,
                               document.line(full), document.index))
        return out
    located.append(Located(policy, name, document, prefix))
    return []


def rule_path(direction: Direction, index: int) -> str:
    return item(f"spec.{direction.value.lower()}", index)


# ------------------------------------------------------------------ shadowed rules


def pod_set_covers(wide: PodSet, narrow: PodSet) -> bool:
    """Whether every pod `narrow` names is one `wide` names."""
    if not selector_covers(wide.namespace_selector, narrow.namespace_selector):
        return False
    if wide.pod_selector is None:
        return True
    return narrow.pod_selector is not None and selector_covers(wide.pod_selector,
                                                               narrow.pod_selector)


def peer_covers(wide: AdminPeer, narrow: AdminPeer) -> bool:
    """Whether every peer `narrow` names is one `wide` names (sound, not complete)."""
    if isinstance(wide, PodSet) and isinstance(narrow, PodSet):
        return pod_set_covers(wide, narrow)
    if isinstance(wide, NodePeer) and isinstance(narrow, NodePeer):
        return selector_covers(wide.selector, narrow.selector)
    if isinstance(wide, NetworkPeer) and isinstance(narrow, NetworkPeer):
        return all(any(_within(net, big) for big in wide.networks) for net in narrow.networks)
    return False


def _within(net: IPNetwork, big: IPNetwork) -> bool:
    if isinstance(net, IPv4Network) and isinstance(big, IPv4Network):
        return net.subnet_of(big)
    if isinstance(net, IPv6Network) and isinstance(big, IPv6Network):
        return net.subnet_of(big)
    return False


def port_covers(wide: AdminPort, narrow: AdminPort) -> bool:
    if wide.name is not None or narrow.name is not None:
        return wide.name == narrow.name
    return wide.protocol is narrow.protocol and wide.start <= narrow.start and narrow.end <= wide.end


def rule_covers(wide: AdminRule, narrow: AdminRule) -> bool:
    """Whether `wide` matches all the traffic `narrow` matches (for one subject)."""
    if not all(any(peer_covers(w, n) for w in wide.peers) for n in narrow.peers):
        return False
    if not wide.ports:
        return True
    return bool(narrow.ports) and all(any(port_covers(w, n) for w in wide.ports)
                                      for n in narrow.ports)


def _check_shadowed(located: Sequence[Located]) -> list[Finding]:
    by_key = {where.policy.key: where for where in located}
    tiers = Tiers.of(where.policy for where in located)
    out: list[Finding] = []
    for tier in Tier:
        ordered = tiers.tier(tier)
        for position, policy in enumerate(ordered):
            for direction in Direction:
                for index, rule in enumerate(policy.rules(direction)):
                    earlier = _first_cover(ordered[: position + 1], policy, direction, index, rule)
                    if earlier is not None:
                        out.append(by_key[policy.key].finding(
                            "tier-shadowed", rule_path(direction, index),
                            f"this rule never matches: {earlier} matches all of its traffic "
                            "first; remove it or narrow the other"))
    return out


def _first_cover(before: Sequence[AdminPolicy], policy: AdminPolicy, direction: Direction,
                 index: int, rule: AdminRule) -> str | None:
    for wide_policy in before:
        own = wide_policy is policy
        if not own and not pod_set_covers(wide_policy.subject, policy.subject):
            continue
        rules = wide_policy.rules(direction)
        for earlier in range(index if own else len(rules)):
            if rule_covers(rules[earlier], rule):
                where = rule_path(direction, earlier)
                return where if own else f"{wide_policy.key} {where}"
    return None


# ------------------------------------------------------------------ collisions


def _check_collisions(located: Sequence[Located]) -> list[Finding]:
    tiers = Tiers.of(where.policy for where in located)
    by_key = {where.policy.key: where for where in located}
    out: list[Finding] = []
    for tier in Tier:
        ordered = tiers.tier(tier)
        for position, policy in enumerate(ordered):
            if policy.priority is None:
                continue
            same = [p.key for p in ordered[:position] if p.priority == policy.priority]
            if same:
                out.append(by_key[policy.key].finding(
                    "tier-priority-collision", "spec.priority",
                    f"{tier.value} tier priority {policy.priority} is also that of "
                    f"{', '.join(same)}: where both match, the API leaves the outcome "
                    f"undefined (podwire applies {same[0]} first, by name); give each a "
                    "priority of its own"))
    return out


# ------------------------------------------------------------------ passes


def _check_passes(located: Sequence[Located], context: ClusterContext | None) -> list[Finding]:
    baseline = [w.policy for w in located if w.policy.tier is Tier.BASELINE]
    out: list[Finding] = []
    for where in located:
        policy = where.policy
        for direction in Direction:
            for index, rule in enumerate(policy.rules(direction)):
                if rule.action is not Action.PASS:
                    continue
                reason = _nothing_below(policy, direction, baseline, context)
                if reason:
                    out.append(where.finding("tier-pass-to-nothing",
                                             child(rule_path(direction, index), "action"), reason))
    return out


def _nothing_below(policy: AdminPolicy, direction: Direction, baseline: Sequence[AdminPolicy],
                   context: ClusterContext | None) -> str | None:
    if policy.tier is Tier.BASELINE:
        return ("a Pass in the Baseline tier hands the traffic to the default, which allows "
                "it (skipping later Baseline rules): write Accept if that is meant")
    if context is None:
        return None
    cluster = context.cluster
    subjects = [pod for pod in cluster.pods()
                if policy.subject.matches(cluster.namespace(pod.namespace), pod)]
    selected = any(direction in np.policy_types and np.pod_selector.matches(pod.labels)
                   for pod in subjects for np in cluster.policies_in(pod.namespace))
    below = any(b.rules(direction) for b in baseline)
    if subjects and not selected and not below:
        return (f"nothing below this Pass decides: no NetworkPolicy selects its subject's pods "
                f"for {direction.value.lower()} and no Baseline policy has "
                f"{direction.value.lower()} rules, so the traffic is allowed by default")
    return None


# ------------------------------------------------------------------ ports and subjects


def _check_named_ports(located: Sequence[Located]) -> list[Finding]:
    out: list[Finding] = []
    for where in located:
        ports_field = "ports" if where.policy.kind != "ClusterNetworkPolicy" else "protocols"
        named = "namedPort" if ports_field == "ports" else "destinationNamedPort"
        for direction in Direction:
            for index, rule in enumerate(where.policy.rules(direction)):
                for number, port in enumerate(rule.ports):
                    problem = port_name_error(port.name) if port.name is not None else None
                    if problem:
                        path = child(item(child(rule_path(direction, index), ports_field),
                                          number), named)
                        out.append(where.finding(
                            "tier-named-port", path,
                            f"{port.name!r} is no port name ({problem}): no container port "
                            "has it, so this entry matches nothing"))
    return out


def _check_subjects(located: Sequence[Located], context: ClusterContext) -> list[Finding]:
    cluster = context.cluster
    out: list[Finding] = []
    for where in located:
        subject = where.policy.subject
        if not any(subject.matches(cluster.namespace(pod.namespace), pod)
                   for pod in cluster.pods()):
            out.append(where.finding("tier-no-subject", "spec.subject",
                                     "the subject selects no pod of the cluster"))
    return out

"""Whether one part of a policy admits everything another admits, read from the spec alone.

Lint uses this to find duplicate and shadowed rules. Every answer is sound but not
complete: True means "certainly covers"; False means "not certainly", so a warning is
never raised for a rule that does add something.
"""

from __future__ import annotations

from .model import IPBlock, Peer, PolicyPort, Rule
from .selectors import LabelSelector, Operator, Requirement


def selector_covers(wide: LabelSelector, narrow: LabelSelector) -> bool:
    """Whether every label set `narrow` matches is matched by `wide`."""
    if any(narrow.match_labels.get(key) != value for key, value in wide.match_labels.items()):
        return False
    return all(_implied(requirement, narrow) for requirement in wide.match_expressions)


def _implied(requirement: Requirement, narrow: LabelSelector) -> bool:
    if requirement in narrow.match_expressions:
        return True
    fixed = narrow.match_labels.get(requirement.key)
    if fixed is not None:
        # narrow pins the key's value, which decides every operator.
        return requirement.matches({requirement.key: fixed})
    for known in narrow.match_expressions:
        if known.key != requirement.key:
            continue
        if known.operator is Operator.IN:
            if requirement.operator is Operator.EXISTS:
                return True
            if requirement.operator is Operator.IN and known.values <= requirement.values:
                return True
            if requirement.operator is Operator.NOT_IN and not known.values & requirement.values:
                return True
        if (
            known.operator is Operator.NOT_IN
            and requirement.operator is Operator.NOT_IN
            and requirement.values <= known.values
        ):
            return True
        if known.operator is Operator.DOES_NOT_EXIST and requirement.operator in (
            Operator.DOES_NOT_EXIST,
            Operator.NOT_IN,
        ):
            return True
    return False


def ip_block_covers(wide: IPBlock, narrow: IPBlock) -> bool:
    """Whether every address `narrow` admits is admitted by `wide`."""
    if wide.cidr.version != narrow.cidr.version:
        return False
    if not narrow.cidr.subnet_of(wide.cidr):  # type: ignore[arg-type]
        return False
    for hole in wide.except_:
        if not hole.overlaps(narrow.cidr):
            continue
        # The addresses wide leaves out must be left out by narrow as well.
        if not any(hole.subnet_of(own) for own in narrow.except_):  # type: ignore[arg-type]
            return False
    return True


def peer_covers(wide: Peer, narrow: Peer) -> bool:
    """Whether every endpoint `narrow` names is named by `wide` (in the same policy)."""
    if wide.ip_block is not None or narrow.ip_block is not None:
        return (
            wide.ip_block is not None
            and narrow.ip_block is not None
            and ip_block_covers(wide.ip_block, narrow.ip_block)
        )
    if wide.namespace_selector is None:
        namespaces_ok = narrow.namespace_selector is None
    elif wide.namespace_selector.is_empty:
        namespaces_ok = True
    else:
        namespaces_ok = narrow.namespace_selector is not None and selector_covers(
            wide.namespace_selector, narrow.namespace_selector
        )
    if wide.pod_selector is None or wide.pod_selector.is_empty:
        pods_ok = True
    else:
        pods_ok = narrow.pod_selector is not None and selector_covers(
            wide.pod_selector, narrow.pod_selector
        )
    return namespaces_ok and pods_ok


def port_covers(wide: PolicyPort, narrow: PolicyPort) -> bool:
    """Whether every port `narrow` admits is admitted by `wide`."""
    if wide.protocol is not narrow.protocol:
        return False
    if wide.port is None:
        return True
    if narrow.port is None:
        return False
    if isinstance(wide.port, str) or isinstance(narrow.port, str):
        return wide.port == narrow.port
    wide_end = wide.end_port if wide.end_port is not None else wide.port
    narrow_end = narrow.end_port if narrow.end_port is not None else narrow.port
    return wide.port <= narrow.port and narrow_end <= wide_end


def rule_covers(wide: Rule, narrow: Rule) -> bool:
    """Whether every connection `narrow` admits is admitted by `wide` (same selected pods)."""
    peers_ok = not wide.peers or (
        bool(narrow.peers)
        and all(any(peer_covers(w, n) for w in wide.peers) for n in narrow.peers)
    )
    ports_ok = not wide.ports or (
        bool(narrow.ports)
        and all(any(port_covers(w, n) for w in wide.ports) for n in narrow.ports)
    )
    return peers_ok and ports_ok

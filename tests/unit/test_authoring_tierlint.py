"""Lint of the cluster policy kinds: errors with their lines, and each tier trap found (and
not found where it is absent)."""

from __future__ import annotations

import textwrap

from tiers_fixtures import cluster, np

from podwire.policy.context import ClusterContext
from podwire.policy.lint import Finding, Severity
from podwire.policy.tierlint import lint_tiers

HEAD = "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n"


def cnp(name: str, tier: str, priority: int, body: str, subject: str = "namespaces: {}") -> str:
    return (HEAD + f"metadata:\n  name: {name}\nspec:\n  tier: {tier}\n  priority: {priority}\n"
            f"  subject:\n    {subject}\n" + textwrap.indent(textwrap.dedent(body), "  "))


def lint(*texts: str, context: ClusterContext | None = None) -> list[Finding]:
    return lint_tiers([(f"f{n}.yaml", text) for n, text in enumerate(texts)], context)


def codes(findings: list[Finding]) -> list[tuple[str, str, str | None]]:
    return [(f.code, f.path, f.policy) for f in findings]


FROM_ALL = """\
ingress:
  - name: all
    action: Deny
    from:
      - namespaces: {}
"""
FROM_RED_80 = """\
ingress:
  - name: red-web
    action: Accept
    from:
      - namespaces:
          matchLabels: {team: red}
    protocols:
      - tcp:
          destinationPort: {number: 80}
"""


def test_errors_carry_the_line_of_the_field() -> None:
    text = cnp("bad", "Admin", 5000, FROM_ALL)
    (finding,) = lint(text)
    assert finding.severity is Severity.ERROR and finding.code == "invalid"
    assert finding.path == "spec.priority" and finding.line == 7
    assert "between 0 and 1000" in finding.message


def test_other_kinds_are_passed_over() -> None:
    text = "kind: NetworkPolicy\nmetadata: {name: x}\nspec: {podSelector: {}}\n"
    assert lint(text) == []


def test_a_rule_after_a_wider_one_in_the_same_policy_is_shadowed() -> None:
    body = FROM_ALL + FROM_RED_80.split("\n", 1)[1]
    findings = lint(cnp("p", "Admin", 1, body))
    assert codes(findings) == [("tier-shadowed", "spec.ingress[1]", "ClusterNetworkPolicy/p")]
    assert "spec.ingress[0] matches all of its traffic first" in findings[0].message
    assert findings[0].line == 15
    # The other way round, the narrow rule first, nothing is shadowed.
    body = FROM_RED_80 + FROM_ALL.split("\n", 1)[1]
    assert lint(cnp("p", "Admin", 1, body)) == []


def test_a_higher_priority_policy_covering_the_subject_shadows() -> None:
    wide = cnp("wide", "Admin", 1, FROM_ALL)
    narrow = cnp("narrow", "Admin", 2, FROM_RED_80, "namespaces: {matchLabels: {team: red}}")
    assert codes(lint(wide, narrow)) == [
        ("tier-shadowed", "spec.ingress[0]", "ClusterNetworkPolicy/narrow")]
    # A narrower subject above does not shadow a wider subject below.
    wide_below = cnp("wide", "Admin", 3, FROM_RED_80)
    narrow_above = cnp("narrow", "Admin", 2, FROM_ALL, "namespaces: {matchLabels: {team: red}}")
    assert lint(narrow_above, wide_below) == []
    # Nor does a policy of the other tier.
    assert codes(lint(cnp("wide", "Baseline", 1, FROM_ALL), narrow)) == []


def test_priorities_that_collide_in_one_tier() -> None:
    first = cnp("a", "Admin", 7, FROM_RED_80)
    second = cnp("b", "Admin", 7, FROM_ALL.replace("namespaces: {}", "namespaces: {matchLabels: {team: blue}}"))
    findings = lint(second, first)
    assert codes(findings) == [("tier-priority-collision", "spec.priority",
                                "ClusterNetworkPolicy/b")]
    assert "podwire applies ClusterNetworkPolicy/a first" in findings[0].message
    # The same priority in different tiers is no collision.
    assert lint(first, cnp("b", "Baseline", 7, FROM_ALL)) == []


BASELINE_PASS = """\
egress:
  - action: Pass
    to:
      - networks: ["10.0.0.0/8"]
"""


def test_a_pass_in_the_baseline_tier_has_nothing_below() -> None:
    findings = lint(cnp("p", "Baseline", 1, BASELINE_PASS))
    assert codes(findings) == [("tier-pass-to-nothing", "spec.egress[0].action",
                                "ClusterNetworkPolicy/p")]


def test_an_admin_pass_with_nothing_below_in_the_cluster() -> None:
    admin_pass = cnp("p", "Admin", 1, FROM_ALL.replace("Deny", "Pass"))
    without = ClusterContext(cluster())
    assert codes(lint(admin_pass, context=without)) == [
        ("tier-pass-to-nothing", "spec.ingress[0].action", "ClusterNetworkPolicy/p")]
    assert lint(admin_pass) == []  # without a cluster, it cannot be told
    isolating = ClusterContext(cluster(np("gryffindor", "x", {"podSelector": {}})))
    assert lint(admin_pass, context=isolating) == []
    baseline = cnp("b", "Baseline", 1, FROM_ALL)
    assert lint(admin_pass, baseline, context=without) == []


def test_a_named_port_that_no_container_can_have() -> None:
    body = """\
    ingress:
      - action: Deny
        from: [{namespaces: {}}]
        protocols: [{destinationNamedPort: Web_Port}]
    """
    findings = lint(cnp("p", "Admin", 1, body))
    assert codes(findings) == [("tier-named-port",
                                "spec.ingress[0].protocols[0].destinationNamedPort",
                                "ClusterNetworkPolicy/p")]


def test_a_subject_that_selects_no_pod() -> None:
    text = cnp("p", "Admin", 1, FROM_ALL, "namespaces: {matchLabels: {house: azkaban}}")
    assert codes(lint(text, context=ClusterContext(cluster()))) == [
        ("tier-no-subject", "spec.subject", "ClusterNetworkPolicy/p")]
    assert lint(text) == []


def test_networks_and_nodes_cover_by_prefix_and_selector() -> None:
    body = """\
    egress:
      - action: Deny
        to: [{networks: ["10.0.0.0/8", "fd00::/8"]}, {nodes: {}}]
      - action: Accept
        to: [{networks: ["10.1.0.0/16", "fd00:1::/32"]}, {nodes: {matchLabels: {a: b}}}]
      - action: Accept
        to: [{networks: ["11.0.0.0/8"]}]
      - action: Accept
        to: [{networks: ["::/0"]}]
    """
    findings = lint(cnp("p", "Admin", 1, body))
    assert codes(findings) == [("tier-shadowed", "spec.egress[1]", "ClusterNetworkPolicy/p")]

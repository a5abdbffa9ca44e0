"""Field paths back to lines: what lets lint findings point at the spot to edit."""

from __future__ import annotations

import pytest

from podwire.policy.sourcemap import SourceSyntaxError, load_with_marks

YAML = """\
# a comment
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: a
spec:
  podSelector:
    matchLabels:
      app: web
      app.kubernetes.io/name: shop
  ingress:
  - from:
    - podSelector: {}
    - namespaceSelector:
        matchLabels: {team: blue}
---
---
kind: Second
"""


def test_paths_map_to_the_line_of_their_key_or_item() -> None:
    first, second = load_with_marks(YAML)
    assert (first.index, second.index) == (0, 2)  # the empty document still counts
    assert first.data["spec"]["podSelector"]["matchLabels"]["app"] == "web"  # type: ignore[index]
    assert first.line("spec.podSelector.matchLabels.app.kubernetes.io/name") == 10
    assert first.line("spec.podSelector.matchLabels.app") == 9
    assert first.line("spec.ingress[0].from[1]") == 14
    assert first.line("spec.ingress[0].from[1].namespaceSelector.matchLabels.team") == 15
    assert first.line("") == 2
    # A path that leaves the document stops at the deepest field that exists.
    assert first.line("spec.ingress[0].from[7].podSelector") == 12
    assert first.line("spec.egress") == 6
    assert second.line("kind") == 18


def test_json_has_lines_too() -> None:
    (doc,) = load_with_marks('{"kind": "NetworkPolicy",\n "spec": {\n  "ingress": [\n'
                             '   {"ports": [{"port": 80}]}]}}')
    assert doc.line("spec.ingress[0].ports[0].port") == 4


def test_syntax_errors_carry_the_line() -> None:
    with pytest.raises(SourceSyntaxError) as problem:
        load_with_marks("kind: A\nspec:\n  - a\n b: c\n")
    assert problem.value.line == 4 and "line 4" in problem.value.message

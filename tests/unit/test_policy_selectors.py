"""Label selector semantics: every operator, empty vs null, and AND of requirements."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podwire.policy import Labels, LabelSelector, Operator, Requirement, selector_matches
from podwire.policy.fields import Reader

KEYS = st.sampled_from(["app", "tier", "env", "example.com/team"])
VALUES = st.sampled_from(["a", "b", "c", ""])
LABELS = st.dictionaries(KEYS, VALUES, max_size=4)
VALUE_SETS = st.frozensets(VALUES, min_size=1, max_size=3)


def requirements() -> st.SearchStrategy[Requirement]:
    with_values = st.builds(
        Requirement, KEYS, st.sampled_from([Operator.IN, Operator.NOT_IN]), VALUE_SETS
    )
    without = st.builds(
        Requirement, KEYS, st.sampled_from([Operator.EXISTS, Operator.DOES_NOT_EXIST])
    )
    return st.one_of(with_values, without)


def parse(value: object) -> LabelSelector | None:
    reader = Reader()
    selector = LabelSelector.parse(value, "sel", reader)
    assert (selector is None) == bool(reader.errors)
    return selector


@pytest.mark.parametrize(
    ("operator", "values", "labels", "expected"),
    [
        (Operator.IN, {"a", "b"}, {"k": "a"}, True),
        (Operator.IN, {"a", "b"}, {"k": "c"}, False),
        (Operator.IN, {"a"}, {}, False),
        (Operator.NOT_IN, {"a"}, {"k": "b"}, True),
        (Operator.NOT_IN, {"a"}, {"k": "a"}, False),
        (Operator.NOT_IN, {"a"}, {}, True),  # a missing key is "not in"
        (Operator.EXISTS, set(), {"k": ""}, True),
        (Operator.EXISTS, set(), {"other": "x"}, False),
        (Operator.DOES_NOT_EXIST, set(), {}, True),
        (Operator.DOES_NOT_EXIST, set(), {"k": "a"}, False),
    ],
)
def test_each_operator(
    operator: Operator, values: set[str], labels: dict[str, str], expected: bool
) -> None:
    assert Requirement("k", operator, frozenset(values)).matches(labels) is expected


def test_empty_selector_matches_everything_and_null_nothing() -> None:
    empty = parse({})
    assert empty is not None and empty.is_empty
    assert empty.matches({}) and empty.matches({"a": "b"})
    assert selector_matches(empty, {"x": "y"})
    assert not selector_matches(None, {})
    assert not selector_matches(None, {"x": "y"})


def test_match_labels_and_expressions_are_anded() -> None:
    selector = parse(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}],
        }
    )
    assert selector is not None
    assert selector.matches({"app": "web"})
    assert selector.matches({"app": "web", "env": "dev"})
    assert not selector.matches({"app": "web", "env": "prod"})
    assert not selector.matches({"env": "dev"})


def test_match_label_with_empty_value_needs_the_key() -> None:
    selector = parse({"matchLabels": {"flag": ""}})
    assert selector is not None
    assert selector.matches({"flag": ""})
    assert not selector.matches({})


def test_null_fields_inside_a_selector_are_absent() -> None:
    selector = parse({"matchLabels": None, "matchExpressions": None})
    assert selector is not None and selector.is_empty


@given(LABELS, st.lists(requirements(), max_size=4), LABELS)
def test_selector_is_the_and_of_its_parts(
    match_labels: dict[str, str], reqs: list[Requirement], labels: dict[str, str]
) -> None:
    selector = LabelSelector(Labels(match_labels), tuple(reqs))
    parts = [labels.get(k) == v for k, v in match_labels.items()] + [
        r.matches(labels) for r in reqs
    ]
    assert selector.matches(labels) is all(parts)
    assert selector.matches(Labels(labels)) is selector.matches(labels)


@given(KEYS, VALUE_SETS, LABELS)
def test_complementary_operators(key: str, values: frozenset[str], labels: dict[str, str]) -> None:
    assert Requirement(key, Operator.IN, values).matches(labels) is not Requirement(
        key, Operator.NOT_IN, values
    ).matches(labels)
    assert Requirement(key, Operator.EXISTS).matches(labels) is not Requirement(
        key, Operator.DOES_NOT_EXIST
    ).matches(labels)


@given(KEYS, VALUES, LABELS)
def test_match_label_equals_in_with_one_value(key: str, value: str, labels: dict[str, str]) -> None:
    as_label = LabelSelector(Labels({key: value}))
    as_expression = LabelSelector(
        match_expressions=(Requirement(key, Operator.IN, frozenset({value})),)
    )
    assert as_label.matches(labels) is as_expression.matches(labels)


@given(LABELS)
def test_labels_are_hashable_and_order_free(labels: dict[str, str]) -> None:
    forward, backward = Labels(labels), Labels(dict(reversed(list(labels.items()))))
    assert forward == backward and hash(forward) == hash(backward)
    assert forward == labels
    assert len({forward, backward}) == 1

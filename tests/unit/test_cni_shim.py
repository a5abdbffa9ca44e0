"""podwire-cni: its JSON through `_json` alone must read and write exactly what `json`
does, and what it cannot import from the package it must agree with."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podwire.cni.protocol import Code
from podwire.cni.shim import (
    CODE_DECODE_FAILURE,
    CODE_INVALID_ENV,
    CODE_NOT_AVAILABLE,
    CODE_TRY_AGAIN_LATER,
    DEFAULT_AGENT_SOCKET,
    dumps,
    loads,
)
from podwire.common.agentapi import DEFAULT_SOCKET

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(VALUES)
def test_dumps_and_loads_agree_with_json(value: object) -> None:
    assert dumps(value) == json.dumps(value)
    assert loads(json.dumps(value)) == json.loads(json.dumps(value))
    assert loads(json.dumps(value, indent=2).encode()) == json.loads(json.dumps(value))


@given(st.text())
def test_loads_accepts_and_refuses_what_json_does(text: str) -> None:
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            loads(text)
    else:
        # Compared as JSON text: NaN never equals itself, and 1 == True would pass.
        assert json.dumps(loads(text)) == json.dumps(expected)


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} x', "[1,]", "nul", "{'a': 1}"])
def test_loads_refuses_bad_json(text: str) -> None:
    with pytest.raises(ValueError):
        loads(text)


def test_the_shims_default_socket_is_the_agents() -> None:
    assert DEFAULT_AGENT_SOCKET == str(DEFAULT_SOCKET)


def test_the_shims_codes_are_the_protocols() -> None:
    assert (CODE_INVALID_ENV, CODE_DECODE_FAILURE, CODE_TRY_AGAIN_LATER, CODE_NOT_AVAILABLE) == (
        Code.INVALID_ENV, Code.DECODE_FAILURE, Code.TRY_AGAIN_LATER, Code.NOT_AVAILABLE)

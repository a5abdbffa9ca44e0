"""The programmer's fast policy-key bytes (batched writes) are the ctypes mirror's bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from podwire.agent import programmer
from podwire.agent.entries import CHANGING, PolicyKey, PolicyValue, Protocol, TierVerdict
from podwire.bpf.constants import Direction, PolicyAction

KEYS = st.builds(PolicyKey, st.integers(0, 2**32 - 1), st.sampled_from(Direction),
                 st.integers(0, 2**32 - 1), st.sampled_from(Protocol), st.integers(0, 0xFFFF),
                 st.integers(0, 16))
VERDICTS = st.none() | st.just(CHANGING) | st.builds(
    TierVerdict, st.integers(1, 2**32 - 1),
    st.sampled_from([a for a in PolicyAction if a is not PolicyAction.NONE]),
    st.integers(1, 2**32 - 1))


@given(KEYS)
def test_policy_key_bytes_are_the_structs(key: PolicyKey) -> None:
    assert programmer.policy_key_bytes(key) == bytes(programmer.policy_key(key))


@given(st.builds(PolicyValue, st.integers(0, 2**32 - 1), VERDICTS, VERDICTS))
def test_policy_value_bytes_are_the_structs(value: PolicyValue) -> None:
    assert programmer.policy_value_bytes(value) == bytes(programmer.policy_value(value))
    assert programmer.policy_entry(
        type(programmer.policy_value(value)).from_buffer_copy(
            programmer.policy_value_bytes(value))) == value

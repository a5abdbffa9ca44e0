"""Tests converge by waiting on state, never by sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, deadline: float = 30.0,
             interval: float = 0.02) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail naming
    `what` when `deadline` seconds pass first."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)

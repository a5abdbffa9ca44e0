"""The README's main job, `podwire lab demo`, runs end to end and leaves nothing behind."""

from __future__ import annotations

import re

import pytest
from lab_helpers import cli, leftovers

PREFIX = "pwtdm"


def test_demo_shows_the_policy_taking_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the width it is given
    try:
        proc = cli(PREFIX, "demo", timeout=600)
    finally:
        cli(PREFIX, "down")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    before, _, after = out.partition("with x-from-y-on-80")
    assert "✗" not in before, "without a policy every pod reaches every pod"
    rows = {line.split()[1]: line for line in after.splitlines() if re.match(r"^│ [xyz]/[abc] ", line)}
    assert "✗" in rows["z/a"] and "✗" not in rows["y/a"], "x admits y only"
    assert "allowed by x/x-from-y-on-80" in after
    assert "isolated by x/x-from-y-on-80" in after
    assert leftovers(PREFIX) == []

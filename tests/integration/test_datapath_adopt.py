"""A restarted agent whose datapath build is unchanged adopts the pins without compiling."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from podwire.agent.loader import BUILD_MAP, DatapathSizes, pinned_build_matches, run_loader


def test_same_build_is_adopted_and_a_changed_build_recompiles() -> None:
    pin_dir = Path(f"/sys/fs/bpf/pwtad{os.getpid()}")
    sizes = DatapathSizes(conntrack=1024)
    try:
        assert not pinned_build_matches(pin_dir, sizes)
        first = run_loader(pin_dir, sizes)
        assert not first.get("adopted") and (pin_dir / BUILD_MAP).exists()
        program = (pin_dir / "prog_from_pod").stat().st_ino

        again = run_loader(pin_dir, sizes)
        assert again.get("adopted"), "an unchanged build must not be compiled again"
        assert (pin_dir / "prog_from_pod").stat().st_ino == program

        changed = DatapathSizes(conntrack=1024, fragments=4096)
        assert not pinned_build_matches(pin_dir, changed)
        rebuilt = run_loader(pin_dir, changed)
        assert not rebuilt.get("adopted")
        assert pinned_build_matches(pin_dir, changed)
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)

"""Every header of bpf/lib compiles on its own with bcc: it includes what it uses.

The entry programs include several headers, so a header that relies on another being
included first compiles there and breaks the day the order changes. Each header is
spliced alone (as the loader splices the entry files) and compiled against real pins.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from podwire.agent.loader import BPF_DIR, DatapathSizes, cflags, datapath_source, ensure_maps

HEADERS = sorted(path.name for path in (BPF_DIR / "lib").glob("*.h"))


@pytest.fixture(scope="module")
def pinned() -> Iterator[list[str]]:
    """The loader's flags for a pin dir holding every map (bcc opens them, never creates)."""
    pin_dir = Path(f"/sys/fs/bpf/pwthd{os.getpid()}")
    sizes = DatapathSizes(endpoints=16, ipcache=64, policy=64, conntrack=64, fragments=16,
                          events_pages=1)
    try:
        yield cflags(pin_dir, ensure_maps(pin_dir, sizes))
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)


@pytest.mark.parametrize("header", HEADERS)
def test_header_compiles_alone(header: str, pinned: list[str]) -> None:
    from bcc import BPF  # only here: bcc is the toolchain under test

    bpf = BPF(text=datapath_source((f"lib/{header}",)).encode(), cflags=pinned)
    bpf.cleanup()


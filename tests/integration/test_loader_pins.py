"""A pin dir left by another build: which pinned maps the loader recreates, which it refuses."""

from __future__ import annotations

import ctypes
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from podwire.agent import bpfsys, ringbuf
from podwire.agent.loader import (
    GROWN_AT_END,
    DatapathSizes,
    LoaderError,
    ensure_maps,
    map_specs,
)

SIZES = DatapathSizes(endpoints=16, ipcache=64, policy=64, conntrack=64, fragments=16,
                      events_pages=1)


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    path = Path(f"/sys/fs/bpf/pwtlp{os.getpid()}")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pin_with_value_size(pin_dir: Path, name: str, value_size: int,
                        max_entries: int | None = None) -> None:
    """Pin map `name` as an older build would have made it: another value size (or size)."""
    spec = next(s for s in map_specs(SIZES) if s.name == name)
    pin_dir.mkdir(parents=True, exist_ok=True)
    fd = bpfsys.map_create(spec.type, spec.key_size, value_size,
                           max_entries or spec.max_entries, name, spec.flags)
    try:
        bpfsys.obj_pin(fd, str(pin_dir / name))
    finally:
        os.close(fd)


def value_size(path: Path) -> int:
    fd = bpfsys.obj_get(str(path))
    try:
        return bpfsys.map_info(fd).value_size
    finally:
        os.close(fd)


def max_entries(path: Path) -> int:
    fd = bpfsys.obj_get(str(path))
    try:
        return bpfsys.map_info(fd).max_entries
    finally:
        os.close(fd)


def test_counters_of_another_layout_or_size_are_recreated(pin_dir: Path) -> None:
    # IPv6 grew the flow events (and so the aggregates' values) and the reason codes
    # (so the metrics array): an upgraded agent starts with fresh counters.
    specs = {s.name: s for s in map_specs(SIZES)}
    pin_with_value_size(pin_dir, "flow_aggregates", specs["flow_aggregates"].value_size - 32)
    metrics = specs["metrics"]
    pin_with_value_size(pin_dir, "metrics", metrics.value_size, metrics.max_entries // 2)
    # The flow events were one ring for every CPU: now a ring per CPU.
    fd = bpfsys.map_create("ringbuf", 0, 0, specs["events"].ring_bytes, "events")
    try:
        bpfsys.obj_pin(fd, str(pin_dir / "events"))
    finally:
        os.close(fd)
    in_force = ensure_maps(pin_dir, SIZES)
    assert value_size(pin_dir / "flow_aggregates") == specs["flow_aggregates"].value_size
    assert max_entries(pin_dir / "metrics") == metrics.max_entries
    rings = ringbuf.per_cpu(str(pin_dir / "events"))
    try:
        assert len(rings) == bpfsys.possible_cpus() == max_entries(pin_dir / "events")
        assert {ring.size for ring in rings} == {SIZES.max_entries("events")}
    finally:
        for ring in rings:
            ring.close()
    # Adopted as they are at the next start, each ring's bytes in force.
    assert ensure_maps(pin_dir, SIZES)["events"] == in_force["events"] == SIZES.max_entries(
        "events")


@pytest.mark.parametrize("name", ["config", "policy"])
def test_a_map_the_agent_recomputes_is_recreated_in_another_layout(pin_dir: Path,
                                                                     name: str) -> None:
    # policy grew from 8 to 24 bytes with the admin tiers: an upgraded agent starts.
    want = next(s.value_size for s in map_specs(SIZES) if s.name == name)
    pin_with_value_size(pin_dir, name, 8 if name == "policy" else want - 8)
    ensure_maps(pin_dir, SIZES)
    assert value_size(pin_dir / name) == want


def test_connection_state_grown_at_its_end_keeps_every_entry(pin_dir: Path) -> None:
    # conntrack6's value grew the IPv6 frontend of a Service connection (ct6_value): the
    # connections an older build tracked are carried over, the new field zeroed.
    spec = next(s for s in map_specs(SIZES) if s.name == "conntrack6")
    old_size = GROWN_AT_END["conntrack6"]
    pin_with_value_size(pin_dir, "conntrack6", old_size, max_entries=spec.max_entries + 8)
    fd = bpfsys.obj_get(str(pin_dir / "conntrack6"))
    entries = {bytes([n]) * spec.key_size: bytes([n + 100]) * old_size for n in range(1, 41)}
    try:
        for key, value in entries.items():
            bpfsys.update(fd, ctypes.create_string_buffer(key, spec.key_size),
                          ctypes.create_string_buffer(value, old_size))
    finally:
        os.close(fd)
    in_force = ensure_maps(pin_dir, SIZES)
    assert value_size(pin_dir / "conntrack6") == spec.value_size > old_size
    assert in_force["conntrack6"] == max_entries(pin_dir / "conntrack6") == spec.max_entries + 8
    fd = bpfsys.obj_get(str(pin_dir / "conntrack6"))
    try:
        for key, value in entries.items():
            out = ctypes.create_string_buffer(spec.value_size)
            assert bpfsys.lookup(fd, ctypes.create_string_buffer(key, spec.key_size), out)
            assert out.raw == value + bytes(spec.value_size - old_size)
    finally:
        os.close(fd)
    assert not (pin_dir / "conntrack6_grown").exists()


def test_state_map_of_another_layout_is_refused_and_kept(pin_dir: Path) -> None:
    want = next(s.value_size for s in map_specs(SIZES) if s.name == "conntrack")
    pin_with_value_size(pin_dir, "conntrack", want + 8)
    with pytest.raises(LoaderError, match="conntrack has another layout"):
        ensure_maps(pin_dir, SIZES)
    assert value_size(pin_dir / "conntrack") == want + 8

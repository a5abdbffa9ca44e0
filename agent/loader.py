"""Compile bpf/ with bcc and pin maps and programs, in a subprocess.

`python -m podwire.agent.loader --pin-dir DIR --sizes-json '{...}'` creates every
map that is not pinned yet (reusing the pinned ones, so a restarted agent adopts the
live conntrack, policy and endpoints), compiles the datapath against those pins,
pins the programs as prog_<name> (atomically replacing older ones) and exits. Only
this short-lived process imports bcc and holds LLVM; the agent calls
`run_loader()` and keeps to raw bpf(2).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from podwire.agent import bpfsys, structs
from podwire.bpf.constants import (
    LB6_PROG_FRONTEND,
    LB6_PROG_FRONTEND_ICMP,
    LB6_PROG_RELATED,
    LB6_PROG_REPLY,
    MAPS,
    Hook,
)
from podwire.bpf.header import MapDecl

log = logging.getLogger("podwire.loader")

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
TC_PROGRAMS = ("from_pod", "to_pod", "from_overlay", "from_netdev")
# The IPv6 programs, by the hook whose IPv4 program tail-calls them (progs6, entry.h).
TAIL_PROGRAMS6 = {"from_pod6": Hook.FROM_POD, "to_pod6": Hook.TO_POD,
                  "from_overlay6": Hook.FROM_OVERLAY}
PROG_ARRAY6 = "progs6"
# The IPv6 load balancer's programs, by their slot of lb6_progs (bpf_lb6.c).
LB6_PROGRAMS = {"lb6_frontend": LB6_PROG_FRONTEND, "lb6_reply": LB6_PROG_REPLY,
                "lb6_related": LB6_PROG_RELATED, "lb6_frontend_icmp": LB6_PROG_FRONTEND_ICMP}
LB6_PROG_ARRAY = "lb6_progs"
# The node's own sockets (bpf_sock.c): cgroup sock_addr programs by the hook they serve.
SOCK_PROGRAMS = {
    "sock_connect4": "cgroup_inet4_connect",
    "sock_sendmsg4": "cgroup_udp4_sendmsg",
    "sock_recvmsg4": "cgroup_udp4_recvmsg",
    "sock_getpeername4": "cgroup_inet4_getpeername",
    "sock_connect6": "cgroup_inet6_connect",
    "sock_sendmsg6": "cgroup_udp6_sendmsg",
    "sock_recvmsg6": "cgroup_udp6_recvmsg",
    "sock_getpeername6": "cgroup_inet6_getpeername",
}
PROGRAMS = (*TC_PROGRAMS, *TAIL_PROGRAMS6, *LB6_PROGRAMS, *SOCK_PROGRAMS)
# Entry files, compiled as one unit so the programs share one set of maps.
ENTRY_FILES = ("bpf_pod.c", "bpf_overlay.c", "bpf_host.c", "bpf_sock.c", "bpf_pod6.c",
               "bpf_overlay6.c", "bpf_lb6.c")
_LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class DatapathSizes:
    """Capacities of the maps maps.h sizes by a macro, by map name (events in pages).
    Pinned maps keep the size they were created with."""

    endpoints: int = 1024
    ipcache: int = 65536
    policy: int = 65536
    conntrack: int = 65536
    fragments: int = 8192
    # IPv6's own maps (maps.h); policy is identity-keyed and shared by both families.
    endpoints6: int = 1024
    ipcache6: int = 65536
    conntrack6: int = 65536
    fragments6: int = 8192
    # Frontend slots: one per Service port and address, plus one per backend of each.
    lb_services: int = 65536
    lb_backends: int = 65536
    lb_affinity: int = 65536
    lb_sock_revnat: int = 65536
    # IPv6's (maps.h): slots and backends as IPv4's.
    lb6_services: int = 65536
    lb6_backends: int = 65536
    lb6_affinity: int = 65536
    lb6_sock_revnat: int = 65536
    # Each CPU's flow events ring (bpf/lib/maps.h): 512 pages (2 MiB) hold about 26,200
    # IPv4 events (18,700 IPv6), room for a burst while the agent's reader catches up.
    events_pages: int = 512
    # Flows counted per flow (AgentConfig.flow_aggregation) until the agent reports them:
    # active flows, since the agent removes each once it is reported and idle.
    flow_aggregates: int = 16384
    flow_aggregates6: int = 16384

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"datapath size {f.name} must be positive")
        if self.events_pages & (self.events_pages - 1):
            raise ValueError("datapath size events_pages must be a power of two")

    def max_entries(self, name: str) -> int:
        """The capacity of map name (its max_entries; bytes for the ring buffer)."""
        if name == "events":
            return self.events_pages * PAGE_SIZE
        if name not in {f.name for f in dataclasses.fields(self)}:
            raise LoaderError(f"bpf/lib/maps.h leaves the size of map {name} to the loader, "
                              "but DatapathSizes has no field for it")
        return int(getattr(self, name))


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: str
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    # A ring buffer per CPU (MapDecl.inner): the bytes of each inner ring, the map one
    # entry per possible CPU.
    ring_bytes: int = 0


# A one-entry map holding the fingerprint of the build the pinned programs came from.
# It lives and dies with the pins, so "these pins are this build" cannot go stale.
BUILD_MAP = "build"
BUILD_ID_SIZE = 32


class LoaderError(RuntimeError):
    """The datapath could not be compiled or pinned; the message says which step."""


def _spec(decl: MapDecl, sizes: DatapathSizes) -> MapSpec:
    def size(c_type: str) -> int:
        return ctypes.sizeof(structs.ctype(c_type)) if c_type else 0

    flags = 0
    for flag in decl.flags:
        flags |= bpfsys.MAP_FLAGS[flag]
    entries = sizes.max_entries(decl.name) if decl.max_entries is None else decl.max_entries
    if decl.inner == "ringbuf":
        return MapSpec(decl.name, decl.type, size(decl.key), size(decl.value),
                       bpfsys.possible_cpus(), flags, ring_bytes=entries)
    if decl.inner:
        raise LoaderError(f"map {decl.name}: maps of {decl.inner} maps are not supported")
    return MapSpec(decl.name, decl.type, size(decl.key), size(decl.value), entries, flags)


def _create(spec: MapSpec) -> int:
    """A new map's fd; a ring buffer per CPU comes with its rings in place."""
    if not spec.ring_bytes:
        return bpfsys.map_create(spec.type, spec.key_size, spec.value_size, spec.max_entries,
                                 spec.name, spec.flags)
    rings: list[int] = []
    try:
        for _ in range(spec.max_entries):
            rings.append(bpfsys.map_create("ringbuf", 0, 0, spec.ring_bytes,
                                           f"{spec.name}_cpu"))
        fd = bpfsys.map_create(spec.type, spec.key_size, spec.value_size, spec.max_entries,
                               spec.name, spec.flags, inner_map_fd=rings[0])
        try:
            for cpu, ring in enumerate(rings):
                bpfsys.update(fd, ctypes.c_uint32(cpu), ctypes.c_uint32(ring))
        except OSError:
            os.close(fd)
            raise
        return fd  # the map holds the rings now
    finally:
        for ring in rings:
            os.close(ring)


def _ring_bytes(fd: int) -> int:
    """The size of the first ring of a ring buffer per CPU (all are alike)."""
    ring = bpfsys.inner_map_fd(fd, 0)
    try:
        return bpfsys.map_info(ring).max_entries
    finally:
        os.close(ring)


def map_specs(sizes: DatapathSizes) -> list[MapSpec]:
    """Every map bpf/lib/maps.h declares, with its sizes, then the loader's build map."""
    return [*(_spec(decl, sizes) for decl in MAPS.values()),
            MapSpec(BUILD_MAP, "array", 4, BUILD_ID_SIZE, 1)]


# Maps whose whole content the agent computes again at every start (its settings, and
# what it derives from the API and its endpoint records): a build whose layout of them
# differs recreates them instead of refusing the pin dir. Until the agent's first resync
# fills them, the new programs refuse new connections to isolated pods (empty policy),
# never let through what policy denies; established ones go on through conntrack. The
# connection state (conntrack, affinities, socket translations) and the load balancer's
# backend ids that conntrack entries name must be adopted as they are: a layout change
# of them is refused, or connections would be cut or sent elsewhere.
REWRITTEN_AT_START = frozenset({"config", "policy", "ipcache", "endpoints", "ipcache6",
                                "endpoints6"})
# Counts the agent reads: a build that changes their layout (flow events grew IPv6
# addresses), or the fixed size of the metrics array (more reason codes), recreates them.
# What was not read yet is lost once, at that upgrade; Prometheus sees a counter reset.
# The flow events' rings too (one ring became one a CPU): what they held unread is lost.
# And the per-CPU scratch a packet's programs pass between them, which outlives no packet.
RESET_AT_UPGRADE = frozenset({"metrics", "flow_aggregates", "flow_agg_scratch", "events",
                              "lb6_translated"})


# Connection state whose value a build grew by fields at its end, by the value size of
# the build before: its entries are copied into the new layout with those fields zeroed,
# so an upgrade keeps every connection. conntrack6 grew the IPv6 frontend of a Service
# connection (ct6_value.rev_addr6); the build before made no IPv6 Service connections,
# so no entry it left needs one.
GROWN_AT_END = {"conntrack6": ctypes.sizeof(structs.CtValue)}


def _copy_grown(path: str, spec: MapSpec, old_fd: int, old_value_size: int) -> None:
    """Replace the pinned map at `path` (open as old_fd) by one of spec's layout holding
    its entries, each value followed by zeros. The new map is pinned beside it and renamed
    over it (bpffs takes no dot in a name): a crash leaves the old map or the new, whole. Entries the old build's
    programs add between the copy and their replacement are not carried over."""
    batch = 4096
    keys = ctypes.create_string_buffer(spec.key_size * batch)
    values = ctypes.create_string_buffer(old_value_size * batch)
    token, out_token = None, ctypes.create_string_buffer(spec.key_size)
    grown = b"\0" * (spec.value_size - old_value_size)
    new_fd = _create(spec)
    try:
        more = True
        while more:
            got, more = bpfsys.lookup_batch(old_fd, keys, values, batch, token, out_token)
            if got:
                old = values.raw
                padded = b"".join(old[i * old_value_size:(i + 1) * old_value_size] + grown
                                  for i in range(got))
                bpfsys.update_batch(new_fd, keys, ctypes.create_string_buffer(padded), got)
            token, out_token = out_token, ctypes.create_string_buffer(spec.key_size)
        if os.path.exists(path + "_grown"):  # a copy a crash cut short
            os.unlink(path + "_grown")
        bpfsys.obj_pin(new_fd, path + "_grown")
    finally:
        os.close(new_fd)
    os.rename(path + "_grown", path)


def ensure_maps(pin_dir: Path, sizes: DatapathSizes) -> dict[str, int]:
    """Create and pin missing maps, adopt existing ones; name -> max_entries in force (for
    a ring buffer per CPU, the bytes of each ring)."""
    pin_dir.mkdir(parents=True, exist_ok=True)
    in_force: dict[str, int] = {}
    for spec in map_specs(sizes):
        path = str(pin_dir / spec.name)
        if os.path.exists(path):
            fd = bpfsys.obj_get(path)
            try:
                info = bpfsys.map_info(fd)
                kept_ring_bytes = _ring_bytes(fd) if spec.ring_bytes and info.type == \
                    bpfsys.MAP_TYPES[spec.type] else 0
            finally:
                os.close(fd)
            have = (bpfsys.MAP_TYPES[spec.type], spec.key_size, spec.value_size)
            changed = (info.type, info.key_size, info.value_size) != have
            resized = (spec.name in RESET_AT_UPGRADE and MAPS[spec.name].max_entries is not None
                       and info.max_entries != spec.max_entries)
            if (changed and info.type == have[0] and info.key_size == have[1]
                    and GROWN_AT_END.get(spec.name) == info.value_size):
                fd = bpfsys.obj_get(path)
                try:
                    _copy_grown(path, dataclasses.replace(spec, max_entries=info.max_entries),
                                fd, info.value_size)
                finally:
                    os.close(fd)
                log.warning("event=map_grown map=%s old_value_size=%d new_value_size=%d "
                            "entries=kept", spec.name, info.value_size, spec.value_size)
                in_force[spec.name] = info.max_entries
                continue
            if (changed and spec.name in REWRITTEN_AT_START | RESET_AT_UPGRADE) or resized:
                # Programs still attached keep the old map through their own reference
                # until the new build replaces them; the agent fills the new one.
                log.warning("event=map_recreated map=%s reason=layout_changed "
                            "old_value_size=%d new_value_size=%d old_max_entries=%d",
                            spec.name, info.value_size, spec.value_size, info.max_entries)
                os.unlink(path)
            elif changed:
                raise LoaderError(f"pinned map {path} has another layout (type/key/value "
                                  f"{info.type}/{info.key_size}/{info.value_size}, want "
                                  f"{have[0]}/{have[1]}/{have[2]}); remove the pin dir")
            else:
                in_force[spec.name] = kept_ring_bytes or info.max_entries
                continue
        fd = _create(spec)
        try:
            bpfsys.obj_pin(fd, path)
        finally:
            os.close(fd)
        in_force[spec.name] = spec.ring_bytes or spec.max_entries
    return in_force


def cflags(pin_dir: Path, in_force: dict[str, int]) -> list[str]:
    """The pin dir, and each map size maps.h takes from a macro: the size in force."""
    return [f"-I{BPF_DIR}", f'-DPIN_DIR="{pin_dir}"',
            *(f"-D{decl.size_macro}={in_force[decl.name]}" for decl in MAPS.values()
              if decl.size_macro)]


def datapath_source(entry_files: tuple[str, ...] = ENTRY_FILES) -> str:
    """The entry files with their local headers spliced in, each header once.

    bcc rewrites map calls (`conntrack.lookup(...)`) only in its main file, and
    makes programs only of main-file functions; splicing keeps bpf/lib/ as small
    headers while bcc sees one file.
    """
    seen: set[Path] = set()

    def splice(path: Path) -> list[str]:
        out = []
        for line in path.read_text().splitlines():
            match = _LOCAL_INCLUDE.match(line)
            if not match:
                out.append(line)
                continue
            header = (path.parent / match.group(1)).resolve()
            if header not in seen:
                seen.add(header)
                out.extend(splice(header))
        return out

    lines: list[str] = []
    for name in entry_files:
        lines.extend(splice(BPF_DIR / name))
    return "\n".join(lines) + "\n"


def compile_and_pin(pin_dir: Path, sizes: DatapathSizes) -> dict[str, object]:
    """The loader's whole job (runs in the subprocess: imports bcc)."""
    from bcc import BPF  # only here: the agent process never imports bcc

    in_force = ensure_maps(pin_dir, sizes)
    bpf = BPF(text=datapath_source(), cflags=cflags(pin_dir, in_force))
    verified: dict[str, int] = {}
    for name in PROGRAMS:
        if name in SOCK_PROGRAMS:
            # bcc 0.26 loads a sock_addr program only when told its attach type.
            fn = bpf.load_func(name, BPF.CGROUP_SOCK_ADDR,
                               attach_type=bpfsys.ATTACH_TYPES[SOCK_PROGRAMS[name]])
        else:
            fn = bpf.load_func(name, BPF.SCHED_CLS)
        verified[name] = bpfsys.prog_verified_insns(fn.fd)
        final = pin_dir / prog_pin(name)
        staging = pin_dir / f"{prog_pin(name)}_staging"  # bpffs refuses names with a dot
        if staging.exists():
            staging.unlink()
        bpfsys.obj_pin(fn.fd, str(staging))
        # rename(2) on bpffs swaps the pin in one step: tc re-attach finds either
        # the old program or the new one, never no program.
        os.replace(staging, final)
        if name in TAIL_PROGRAMS6:
            _set_tail_program(pin_dir, PROG_ARRAY6, TAIL_PROGRAMS6[name], fn.fd)
        if name in LB6_PROGRAMS:
            _set_tail_program(pin_dir, LB6_PROG_ARRAY, LB6_PROGRAMS[name], fn.fd)
    # Last, once every program is pinned: a crash before this leaves no matching build.
    _write_build_id(pin_dir, build_id(pin_dir, sizes))
    return {"pin_dir": str(pin_dir), "maps": in_force, "programs": list(PROGRAMS),
            "verified_insns": verified}


def _set_tail_program(pin_dir: Path, array: str, slot: int, prog_fd: int) -> None:
    """Point a slot of a prog array at a freshly loaded program (progs6: the hook's IPv6
    program; lb6_progs: the IPv6 load balancer's): its callers tail-call the new one from
    the next packet on."""
    fd = bpfsys.obj_get(str(pin_dir / array))
    try:
        bpfsys.update(fd, ctypes.c_uint32(slot), ctypes.c_uint32(prog_fd))
    finally:
        os.close(fd)


def build_id(pin_dir: Path, sizes: DatapathSizes) -> bytes:
    """What the compiled programs depend on: the source, the sizes, the pin paths."""
    digest = hashlib.sha256(datapath_source().encode())
    digest.update(json.dumps(dataclasses.asdict(sizes), sort_keys=True).encode())
    digest.update(str(pin_dir).encode())
    return digest.digest()


def _write_build_id(pin_dir: Path, value: bytes) -> None:
    fd = bpfsys.obj_get(str(pin_dir / BUILD_MAP))
    try:
        bpfsys.update(fd, ctypes.c_uint32(0), (ctypes.c_uint8 * BUILD_ID_SIZE)(*value))
    finally:
        os.close(fd)


def pinned_build_matches(pin_dir: Path, sizes: DatapathSizes) -> bool:
    """Whether the pins hold exactly this build, so a restart has nothing to compile."""
    if not all((pin_dir / name).exists() for name in [BUILD_MAP, *map(prog_pin, PROGRAMS)]):
        return False
    fd = bpfsys.obj_get(str(pin_dir / BUILD_MAP))
    try:
        value = (ctypes.c_uint8 * BUILD_ID_SIZE)()
        if not bpfsys.lookup(fd, ctypes.c_uint32(0), value):
            return False
    finally:
        os.close(fd)
    return bytes(value) == build_id(pin_dir, sizes)


def prog_pin(name: str) -> str:
    """The pin of program name in the pin dir."""
    return f"prog_{name}"


def run_loader(pin_dir: Path, sizes: DatapathSizes, timeout: float = 120.0) -> dict:
    """Run the loader subprocess; returns its summary or raises LoaderError.

    When the pins already hold this very build (an agent restart or upgrade with the
    same datapath), nothing is compiled: the programs keep running as they are.
    """
    if pinned_build_matches(pin_dir, sizes):
        return {"pin_dir": str(pin_dir), "adopted": True, "programs": list(PROGRAMS)}
    cmd = [sys.executable, "-m", "podwire.agent.loader", "--pin-dir", str(pin_dir),
           "--sizes-json", json.dumps(dataclasses.asdict(sizes))]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        raise LoaderError(f"datapath loader failed (exit {proc.returncode}): {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podwire.agent.loader",
                                     description="compile and pin the podwire datapath")
    parser.add_argument("--pin-dir", required=True, type=Path)
    parser.add_argument("--sizes-json", default="{}",
                        help="DatapathSizes fields as JSON, e.g. '{\"conntrack\": 1024}'")
    args = parser.parse_args(argv)
    try:
        raw = json.loads(args.sizes_json)
        if not isinstance(raw, dict):
            raise TypeError("--sizes-json must be a JSON object")
        known = {f.name for f in dataclasses.fields(DatapathSizes)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown datapath size(s): {', '.join(unknown)}")
        sizes = DatapathSizes(**raw)
        summary = compile_and_pin(args.pin_dir, sizes)
    except (ValueError, TypeError, LoaderError, OSError) as exc:
        print(f"level=error msg=\"datapath load failed\" error=\"{exc}\"", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception on compile/verifier errors
        print(f"level=error msg=\"datapath compile failed\" error=\"{exc}\"", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

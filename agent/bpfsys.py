"""Raw bpf(2) through ctypes: what the long-running agent needs of BPF objects.

The agent must not import bcc (77 MB) nor keep LLVM resident (134 MB): compiling
happens in a short-lived loader subprocess, and everything afterwards — reopening
pins, reading and writing maps — goes through these thin syscall wrappers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass
from functools import cache

_SYS_BPF = 321  # x86_64

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_AND_DELETE_ELEM = 21
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_LOOKUP_AND_DELETE_BATCH = 25
BPF_MAP_UPDATE_BATCH = 26
BPF_MAP_DELETE_BATCH = 27
BPF_LINK_CREATE = 28
BPF_LINK_UPDATE = 29
BPF_ENABLE_STATS = 32

BPF_STATS_RUN_TIME = 0

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

BPF_F_NO_PREALLOC = 1
# Map flags by the name maps.h declares them with.
MAP_FLAGS = {"BPF_F_NO_PREALLOC": BPF_F_NO_PREALLOC}

MAP_TYPES = {
    "hash": 1,
    "array": 2,
    "prog": 3,  # BPF_MAP_TYPE_PROG_ARRAY, as bcc names it
    "percpu_hash": 5,
    "percpu_array": 6,
    "lru_hash": 9,
    "lpm_trie": 11,
    "array_of_maps": 12,
    "ringbuf": 27,
}
PERCPU_TYPES = {5, 6}

# enum bpf_attach_type: the cgroup sock_addr hooks the node's own sockets go through.
ATTACH_TYPES = {
    "cgroup_inet4_connect": 10,
    "cgroup_udp4_sendmsg": 14,
    "cgroup_udp4_recvmsg": 19,
    "cgroup_inet4_getpeername": 29,
    "cgroup_inet6_connect": 11,
    "cgroup_udp6_sendmsg": 15,
    "cgroup_udp6_recvmsg": 20,
    "cgroup_inet6_getpeername": 30,
}

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A failed bpf(2) command; the message names the command and the object."""


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    ret = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf cmd {cmd} on {what}: {os.strerror(err)}")
    return int(ret)


class _MapCreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * 16),
    ]


class _ElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _ObjAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [
        ("in_batch", ctypes.c_uint64),
        ("out_batch", ctypes.c_uint64),
        ("keys", ctypes.c_uint64),
        ("values", ctypes.c_uint64),
        ("count", ctypes.c_uint32),
        ("map_fd", ctypes.c_uint32),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _LinkCreateAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("rest", ctypes.c_uint8 * 32),
    ]


class _LinkUpdateAttr(ctypes.Structure):
    _fields_ = [
        ("link_fd", ctypes.c_uint32),
        ("new_prog_fd", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("old_prog_fd", ctypes.c_uint32),
    ]


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("rest", ctypes.c_uint8 * 64),
    ]


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def _addr(buf: ctypes._CData | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


@cache
def possible_cpus() -> int:
    """Per-CPU map values hold one slot per possible CPU (not online CPU)."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def map_create(map_type: str, key_size: int, value_size: int, max_entries: int,
               name: str, flags: int = 0, inner_map_fd: int = 0) -> int:
    """Create a map and return its fd; a map of maps takes its inner maps' kind from
    `inner_map_fd`, one of them."""
    if map_type not in MAP_TYPES:
        raise ValueError(f"unknown map type {map_type!r}")
    attr = _MapCreateAttr(map_type=MAP_TYPES[map_type], key_size=key_size,
                          value_size=value_size, max_entries=max_entries, map_flags=flags,
                          inner_map_fd=inner_map_fd, map_name=name.encode()[:15])
    return _bpf(BPF_MAP_CREATE, attr, f"map {name}")


def obj_pin(fd: int, path: str) -> None:
    raw = ctypes.create_string_buffer(os.fsencode(path))
    _bpf(BPF_OBJ_PIN, _ObjAttr(pathname=_addr(raw), bpf_fd=fd), path)


def link_create(prog_fd: int, target_fd: int, attach_type: str) -> int:
    """Attach a program to a target (a cgroup's fd) as a bpf_link; returns the link's fd.
    The attachment lasts while the link is held: by an fd, or by a pin."""
    attr = _LinkCreateAttr(prog_fd=prog_fd, target_fd=target_fd,
                           attach_type=ATTACH_TYPES[attach_type])
    return _bpf(BPF_LINK_CREATE, attr, f"link of {attach_type}")


def link_update(link_fd: int, prog_fd: int) -> None:
    """Swap the program behind a link in one step."""
    _bpf(BPF_LINK_UPDATE, _LinkUpdateAttr(link_fd=link_fd, new_prog_fd=prog_fd),
         f"link fd {link_fd}")


def obj_get(path: str) -> int:
    """Open a pinned object; raises FileNotFoundError-like BpfError (ENOENT) if absent."""
    raw = ctypes.create_string_buffer(os.fsencode(path))
    return _bpf(BPF_OBJ_GET, _ObjAttr(pathname=_addr(raw)), path)


class _IdAttr(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32),
                ("open_flags", ctypes.c_uint32)]


def map_fd_by_id(map_id: int) -> int:
    """Open a map by its id (what a map of maps holds for each inner map)."""
    return _bpf(BPF_MAP_GET_FD_BY_ID, _IdAttr(id=map_id), f"map id {map_id}")


def map_info(fd: int) -> MapInfo:
    info = _MapInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=_addr(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"fd {fd}")
    return MapInfo(info.type, info.id, info.key_size, info.value_size, info.max_entries,
                   info.map_flags, info.name.decode(errors="replace"))


class _ProgInfo(ctypes.Structure):
    """struct bpf_prog_info up to verified_insns (uapi/linux/bpf.h); the kernel fills what
    fits."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("between", ctypes.c_uint8 * 32),  # lengths, instruction pointers, load time
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("rest", ctypes.c_uint8 * 112),  # ifindex .. prog_tags
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


def _prog_info(fd: int) -> _ProgInfo:
    info = _ProgInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=_addr(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"fd {fd}")
    return info


def prog_verified_insns(fd: int) -> int:
    """The instructions the verifier processed loading the program (its limit is 1M)."""
    return int(_prog_info(fd).verified_insns)


def prog_run_stats(fd: int) -> tuple[int, int]:
    """A program's (run_time_ns, run_cnt) so far: counted only while run time stats are
    on (enable_run_time_stats)."""
    info = _prog_info(fd)
    return info.run_time_ns, info.run_cnt


def enable_run_time_stats() -> int:
    """Count every BPF program's run time and runs until the returned fd is closed (the
    kernel's bpf_stats_enabled, released with the fd even if the process dies)."""
    class _StatsAttr(ctypes.Structure):
        _fields_ = [("type", ctypes.c_uint32)]
    return _bpf(BPF_ENABLE_STATS, _StatsAttr(type=BPF_STATS_RUN_TIME), "run time stats")


def lookup(fd: int, key: ctypes._CData, value: ctypes._CData) -> bool:
    """Fill value from key's entry; False when there is none."""
    attr = _ElemAttr(map_fd=fd, key=_addr(key), value=_addr(value))
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, attr, f"map fd {fd}")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def inner_map_fd(outer_fd: int, index: int) -> int:
    """Open the map at `index` of a map of maps (read from user space, it holds map ids)."""
    map_id = ctypes.c_uint32()
    if not lookup(outer_fd, ctypes.c_uint32(index), map_id):
        raise BpfError(errno.ENOENT, f"map fd {outer_fd} holds no map at {index}")
    return map_fd_by_id(map_id.value)


def update(fd: int, key: ctypes._CData, value: ctypes._CData, flags: int = BPF_ANY) -> None:
    _bpf(BPF_MAP_UPDATE_ELEM, _ElemAttr(map_fd=fd, key=_addr(key), value=_addr(value),
                                        flags=flags), f"map fd {fd}")


def delete(fd: int, key: ctypes._CData) -> bool:
    """Delete key's entry; False when there was none."""
    try:
        _bpf(BPF_MAP_DELETE_ELEM, _ElemAttr(map_fd=fd, key=_addr(key)), f"map fd {fd}")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def lookup_and_delete_each(fd: int, keys: ctypes._CData, key_size: int,
                           values: ctypes._CData, value_size: int, count: int) -> list[bool]:
    """Fill each value from its key's entry and delete the entry in one step (hash maps,
    Linux 5.14), for `count` keys laid end to end in keys, each value written to its
    place in values: one system call a key (no batch command takes chosen keys of a
    hash map), each entry read and deleted in one step so no count that lands on it in
    between is lost. Whether each key had an entry."""
    attr = _ElemAttr(map_fd=fd)
    ref, size = ctypes.byref(attr), ctypes.sizeof(attr)
    key, value = ctypes.addressof(keys), ctypes.addressof(values)
    found: list[bool] = []
    for i in range(count):
        attr.key, attr.value = key + i * key_size, value + i * value_size
        if _libc.syscall(_SYS_BPF, BPF_MAP_LOOKUP_AND_DELETE_ELEM, ref, size) == 0:
            found.append(True)
            continue
        err = ctypes.get_errno()
        if err != errno.ENOENT:
            raise BpfError(err, f"bpf cmd {BPF_MAP_LOOKUP_AND_DELETE_ELEM} on map fd {fd}: "
                                f"{os.strerror(err)}")
        found.append(False)
    return found


def next_key(fd: int, key: ctypes._CData | None, out: ctypes._CData) -> bool:
    """Fill out with the key after key (the first key when key is None); False at the end."""
    attr = _ElemAttr(map_fd=fd, key=_addr(key) if key is not None else 0, value=_addr(out))
    try:
        _bpf(BPF_MAP_GET_NEXT_KEY, attr, f"map fd {fd}")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def lookup_batch(fd: int, keys: ctypes._CData, values: ctypes._CData, count: int,
                 token: ctypes.Array | None, out_token: ctypes.Array,
                 delete: bool = False) -> tuple[int, bool]:
    """One BPF_MAP_LOOKUP_BATCH step (hash maps) of up to `count` entries into keys and
    values (each laid end to end): (entries read, more remain). With `delete`,
    BPF_MAP_LOOKUP_AND_DELETE_BATCH: each entry read is deleted with it, bucket by bucket
    under the bucket's lock, so nothing counted on it between is lost.

    token is None for the first step, then the out_token of the previous step.
    """
    attr = _BatchAttr(in_batch=_addr(token), out_batch=_addr(out_token), keys=_addr(keys),
                      values=_addr(values), count=count, map_fd=fd)
    cmd = BPF_MAP_LOOKUP_AND_DELETE_BATCH if delete else BPF_MAP_LOOKUP_BATCH
    ret = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        if err == errno.ENOENT:
            return attr.count, False
        raise BpfError(err, f"bpf lookup{' and delete' if delete else ''} batch on map fd "
                            f"{fd}: {os.strerror(err)}")
    return attr.count, True


def update_batch(fd: int, keys: ctypes._CData, values: ctypes._CData, count: int,
                 flags: int = BPF_ANY) -> None:
    """Write `count` entries, the keys and values laid end to end in two buffers, in
    their order: the kernel writes one element after the other, each seen by packets as
    soon as it is written, as `count` updates would be, in one system call."""
    if count == 0:
        return
    attr = _BatchAttr(keys=_addr(keys), values=_addr(values), count=count, map_fd=fd,
                      elem_flags=flags)
    ret = _libc.syscall(_SYS_BPF, BPF_MAP_UPDATE_BATCH, ctypes.byref(attr),
                        ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf update batch on map fd {fd} (entry {attr.count} of "
                            f"{count}): {os.strerror(err)}")


def delete_batch(fd: int, keys: ctypes._CData, count: int) -> int:
    """Delete the first count keys, in order, stopping at the first that is absent;
    returns how many were deleted before it (count when none is absent)."""
    if count == 0:
        return 0
    attr = _BatchAttr(keys=_addr(keys), count=count, map_fd=fd)
    ret = _libc.syscall(_SYS_BPF, BPF_MAP_DELETE_BATCH, ctypes.byref(attr),
                        ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        if err != errno.ENOENT:
            raise BpfError(err, f"bpf delete batch on map fd {fd}: {os.strerror(err)}")
    return attr.count

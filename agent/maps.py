"""Typed handles over pinned BPF maps: lookup, update, delete, items, len.

A map is opened by the name bpf/lib/maps.h declares it under, with the ctypes mirrors
of the key and value types the header gives it; a mirror of another type is refused,
so the agent cannot read a map as something the datapath does not write.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from podwire.agent import bpfsys, structs
from podwire.bpf.constants import MAPS

K = TypeVar("K", bound="ctypes._CData")
V = TypeVar("V", bound="ctypes._CData")


@dataclass(frozen=True)
class RawEntries:
    """`count` entries of a map as bytes: keys and values, each laid end to end."""

    keys: memoryview
    values: memoryview
    count: int
    key_size: int
    value_size: int

    def key(self, index: int) -> bytes:
        return bytes(self.keys[index * self.key_size:(index + 1) * self.key_size])


def check_declared(name: str, key_type: type[Any], value_type: type[Any]) -> None:
    """Raise unless maps.h declares map name with these mirrors as key and value."""
    decl = MAPS.get(name)
    if decl is None:
        raise ValueError(f"bpf/lib/maps.h declares no map {name!r}")
    for what, c_type, mirror in (("key", decl.key, key_type), ("value", decl.value, value_type)):
        if structs.ctype(c_type) is not mirror:
            raise TypeError(f"map {name}: {what} is {c_type} in maps.h, not {mirror.__name__}")


class BpfMap(Generic[K, V]):
    """A map opened from its pin, with ctypes key and value types.

    The sizes are checked against the kernel's view on open, so a stale pin from an
    older layout fails loudly instead of being misread.
    """

    def __init__(self, pin_dir: Path, name: str, key_type: type[K], value_type: type[V]) -> None:
        check_declared(name, key_type, value_type)
        self.name = name
        self.path = path = str(pin_dir / name)
        self.fd = bpfsys.obj_get(path)
        self.key_type = key_type
        self.value_type = value_type
        self.info = bpfsys.map_info(self.fd)
        self._batch: tuple[ctypes.Array[ctypes.c_char], ctypes.Array[ctypes.c_char]] | None = None
        for what, want, have in (("key", ctypes.sizeof(key_type), self.info.key_size),
                                 ("value", ctypes.sizeof(value_type), self.info.value_size)):
            if want != have:
                os.close(self.fd)
                raise ValueError(f"map {path}: {what} size {have} in the kernel, "
                                 f"{want} expected (stale pin from another layout?)")

    @property
    def max_entries(self) -> int:
        return self.info.max_entries

    def lookup(self, key: K) -> V | None:
        value = self.value_type()
        return value if bpfsys.lookup(self.fd, key, value) else None

    def update(self, key: K, value: V, flags: int = bpfsys.BPF_ANY) -> None:
        bpfsys.update(self.fd, key, value, flags)

    def delete(self, key: K) -> bool:
        return bpfsys.delete(self.fd, key)

    def update_batch(self, keys: bytes, values: bytes) -> None:
        """Write entries given as their keys' and values' bytes laid end to end, in order
        (one system call; each entry is seen as soon as it is written)."""
        count = self._count(keys, self.key_type)
        if self._count(values, self.value_type) != count:
            raise ValueError(f"map {self.name}: {count} keys but "
                             f"{len(values) // ctypes.sizeof(self.value_type)} values")
        bpfsys.update_batch(self.fd, _buffer(keys), _buffer(values), count)

    def delete_batch(self, keys: bytes) -> int:
        """Delete the entries of keys laid end to end, in order; an absent key is skipped.
        Returns how many were deleted."""
        size = ctypes.sizeof(self.key_type)
        count = self._count(keys, self.key_type)
        buffer = _buffer(keys)
        deleted = done = 0
        while done < count:
            rest = (ctypes.c_char * ((count - done) * size)).from_buffer(buffer, done * size)
            step = bpfsys.delete_batch(self.fd, rest, count - done)
            deleted += step
            done += step + 1  # the one after those deleted is absent: skip it
        return deleted

    def _count(self, data: bytes, c_type: type[Any]) -> int:
        size = ctypes.sizeof(c_type)
        if len(data) % size:
            raise ValueError(f"map {self.name}: {len(data)} bytes is not a whole number "
                             f"of {c_type.__name__} ({size} bytes)")
        return len(data) // size

    def keys(self) -> Iterator[K]:
        """Keys by GET_NEXT_KEY; entries deleted meanwhile may restart the walk (kernel rule)."""
        prev: K | None = None
        while True:
            key = self.key_type()
            if not bpfsys.next_key(self.fd, prev, key):
                return
            yield key
            prev = key

    def items(self) -> Iterator[tuple[K, V]]:
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def snapshot(self) -> RawEntries:
        """Every entry of a hash map as raw bytes, keys and values each laid end to end, by
        BPF_MAP_LOOKUP_BATCH into buffers of the map's size: one system call for the whole
        table and no object per entry (a full 16k-entry table: 29 ms as ctypes pairs).
        The views are over buffers the next snapshot (or drain) overwrites."""
        return self._batch_read(delete=False)

    def drain(self) -> RawEntries:
        """As snapshot, every entry deleted as it is read (BPF_MAP_LOOKUP_AND_DELETE_BATCH):
        the table emptied in one system call, each value exact."""
        return self._batch_read(delete=True)

    def _batch_read(self, delete: bool) -> RawEntries:
        key_size, value_size = ctypes.sizeof(self.key_type), ctypes.sizeof(self.value_type)
        if self._batch is None:
            self._batch = ((ctypes.c_char * (key_size * self.max_entries))(),
                           (ctypes.c_char * (value_size * self.max_entries))())
        keys, values = self._batch
        token_in, token_out = (ctypes.c_uint8 * 8)(), (ctypes.c_uint8 * 8)()
        count, first = 0, True
        while count < self.max_entries:
            step = self.max_entries - count
            room_k = (ctypes.c_char * (step * key_size)).from_buffer(keys, count * key_size)
            room_v = (ctypes.c_char * (step * value_size)).from_buffer(values,
                                                                      count * value_size)
            got, more = bpfsys.lookup_batch(self.fd, room_k, room_v, step,
                                            None if first else token_in, token_out, delete)
            count, first = count + got, False
            if not more:
                break
            ctypes.memmove(token_in, token_out, 8)
        return RawEntries(memoryview(keys).cast("B")[:count * key_size],
                          memoryview(values).cast("B")[:count * value_size],
                          count, key_size, value_size)

    def take_many(self, keys: Sequence[bytes]) -> list[V | None]:
        """Each key's value, its entry deleted in the same step (hash maps); None for a key
        without one."""
        size = ctypes.sizeof(self.key_type)
        if any(len(key) != size for key in keys):
            raise ValueError(f"map {self.name}: a key is not {size} bytes")
        raw = _buffer(b"".join(keys))
        values = (self.value_type * max(len(keys), 1))()  # type: ignore[operator]
        found = bpfsys.lookup_and_delete_each(self.fd, raw, size, values,
                                              ctypes.sizeof(self.value_type), len(keys))
        return [cast(V, values[i]) if ok else None for i, ok in enumerate(found)]

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _buffer(data: bytes) -> ctypes.Array[ctypes.c_char]:
    return (ctypes.c_char * max(len(data), 1)).from_buffer_copy(data or b"\0")


S = TypeVar("S", bound="ctypes.Structure | ctypes._SimpleCData")


class PerCpuArray(Generic[S]):
    """A per-CPU array: each lookup returns one value per possible CPU."""

    def __init__(self, pin_dir: Path, name: str, value_type: type[S]) -> None:
        check_declared(name, ctypes.c_uint32, value_type)
        self.name = name
        self.path = path = str(pin_dir / name)
        self.fd = bpfsys.obj_get(path)
        self.value_type = value_type
        self.info = bpfsys.map_info(self.fd)
        # The kernel pads each CPU's slot to 8 bytes.
        self._slot = (ctypes.sizeof(value_type) + 7) & ~7
        self._ncpu = bpfsys.possible_cpus()

    def lookup(self, index: int) -> list[S]:
        buf = (ctypes.c_uint8 * (self._slot * self._ncpu))()
        if not bpfsys.lookup(self.fd, ctypes.c_uint32(index), buf):
            raise KeyError(f"{self.path}: index {index} out of range")
        return [cast(S, self.value_type.from_buffer_copy(buf, cpu * self._slot))
                for cpu in range(self._ncpu)]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

"""Typed handles over pinned BPF maps: lookup, update, delete, items, len."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from typing import Generic, TypeVar, cast

from podwire.agent import bpfsys

K = TypeVar("K", bound="ctypes._CData")
V = TypeVar("V", bound="ctypes._CData")


class BpfMap(Generic[K, V]):
    """A map opened from its pin, with ctypes key and value types.

    The sizes are checked against the kernel's view on open, so a stale pin from an
    older layout fails loudly instead of being misread.
    """

    def __init__(self, path: str, key_type: type[K], value_type: type[V]) -> None:
        self.path = path
        self.fd = bpfsys.obj_get(path)
        self.key_type = key_type
        self.value_type = value_type
        self.info = bpfsys.map_info(self.fd)
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

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


S = TypeVar("S", bound="ctypes.Structure | ctypes._SimpleCData")


class PerCpuArray(Generic[S]):
    """A per-CPU array: each lookup returns one value per possible CPU."""

    def __init__(self, path: str, value_type: type[S]) -> None:
        self.path = path
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

"""Read a BPF ring buffer by mmap of its map fd, without bcc or libbpf.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (we write it),
page 1 the producer position, then the data area mapped twice in a row so a record
that wraps reads as one contiguous slice. Each record starts with an 8-byte header:
u32 length with BUSY (still being written) and DISCARD bits, u32 page offset.
Memory is bounded by the ring itself plus at most `max_records` copies per poll.
"""

from __future__ import annotations

import mmap
import os
import select
import struct

from podwire.agent import bpfsys

PAGE_SIZE = mmap.PAGESIZE
_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8
_U32 = struct.Struct("<I")


class RingBuffer:
    """Consumer side of one ring buffer map, opened from its pin (or `adopt`ed by fd)."""

    def __init__(self, path: str) -> None:
        self._open(bpfsys.obj_get(path), path)

    @classmethod
    def adopt(cls, fd: int, name: str) -> RingBuffer:
        """The ring of an open fd, which it owns from now on."""
        ring = cls.__new__(cls)
        ring._open(fd, name)
        return ring

    def _open(self, fd: int, path: str) -> None:
        self.path = path
        self.fd = fd
        try:
            self.size = bpfsys.map_info(self.fd).max_entries
            self._consumer = mmap.mmap(self.fd, PAGE_SIZE, mmap.MAP_SHARED,
                                       mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._producer = mmap.mmap(self.fd, PAGE_SIZE + 2 * self.size, mmap.MAP_SHARED,
                                       mmap.PROT_READ, offset=PAGE_SIZE)
            self._epoll = select.epoll()
            self._epoll.register(self.fd, select.EPOLLIN)
        except OSError:
            os.close(self.fd)
            raise

    def _positions(self) -> tuple[int, int]:
        (consumer,) = struct.unpack_from("<Q", self._consumer, 0)
        (producer,) = struct.unpack_from("<Q", self._producer, 0)
        return consumer, producer

    def pending(self) -> int:
        """Bytes the producer has written that we have not consumed."""
        consumer, producer = self._positions()
        return producer - consumer

    def read(self, max_records: int = 1024) -> list[bytes]:
        """Up to max_records committed records, oldest first, freeing their space.

        The consumer position is written once for the batch, not once a record: the
        kernel reuses the space a moment later, and the reader saves a store a record.
        """
        out: list[bytes] = []
        data = self._producer
        mask = self.size - 1
        unpack = _U32.unpack_from
        consumer, producer = self._positions()
        start = consumer
        while consumer < producer and len(out) < max_records:
            off = PAGE_SIZE + (consumer & mask)
            (header,) = unpack(data, off)
            if header & _BUSY:
                break  # reserved but not yet submitted: later records must wait too
            length = header & ~(_BUSY | _DISCARD)
            if not header & _DISCARD:
                out.append(data[off + _HDR: off + _HDR + length])
            consumer += (length + _HDR + 7) & ~7
        if consumer != start:
            struct.pack_into("<Q", self._consumer, 0, consumer)
        return out

    def wait(self, timeout: float | None) -> bool:
        """Block until the kernel signals data (or timeout seconds); True if readable."""
        if self.pending():
            return True
        return bool(self._epoll.poll(-1 if timeout is None else timeout))

    def close(self) -> None:
        if self.fd >= 0:
            self._epoll.close()
            self._consumer.close()
            self._producer.close()
            os.close(self.fd)
            self.fd = -1


def per_cpu(path: str) -> list[RingBuffer]:
    """Every ring of a pinned ring buffer per CPU (bpf/lib/maps.h), by CPU."""
    outer = bpfsys.obj_get(path)
    rings: list[RingBuffer] = []
    try:
        for cpu in range(bpfsys.map_info(outer).max_entries):
            rings.append(RingBuffer.adopt(bpfsys.inner_map_fd(outer, cpu), f"{path}[{cpu}]"))
    except OSError:
        for ring in rings:
            ring.close()
        raise
    finally:
        os.close(outer)
    return rings

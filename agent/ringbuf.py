"""Read a BPF ring buffer by mmap of its map fd, without bcc or libbpf.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (we write it),
page 1 the producer position, then the data area mapped twice in a row so a record
that wraps reads as one contiguous slice. Each record starts with an 8-byte header:
u32 length with BUSY (still being written) and DISCARD bits, u32 page offset.
Memory is bounded by the ring itself plus at most `max_records` copies per poll.

The positions are read and written whole, one 8-byte access each (Position): the kernel
reads the consumer position at every reserve, and struct.pack_into zeroes its target
before it writes the value, so a reserve that came in between saw the ring full (all it
ever produced unread) and the event was lost with the ring nearly empty.
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


class Position:
    """A ring position: the u64 at the start of a page shared with the kernel, loaded
    and stored in one aligned 8-byte access (a memoryview of format Q copies it with one
    memcpy of 8 bytes, never a byte at a time nor through zero)."""

    def __init__(self, page: mmap.mmap) -> None:
        self._word = memoryview(page)[:8].cast("Q")

    def load(self) -> int:
        return int(self._word[0])

    def store(self, value: int) -> None:
        self._word[0] = value

    def release(self) -> None:
        """Let go of the page, so that it can be closed."""
        self._word.release()


def uniform_run(pending: memoryview, max_records: int) -> tuple[int, int]:
    """(length, count): how many records at the start of `pending` (the ring's unread
    bytes, headers and all) are committed and as long as the first, at most max_records.
    Their headers are taken side by side in one strided copy and compared at once."""
    if len(pending) < _HDR:
        return 0, 0
    (length,) = _U32.unpack_from(pending, 0)
    if length & (_BUSY | _DISCARD):
        return 0, 0
    stride = (length + _HDR + 7) & ~7
    count = min(len(pending) // stride, max_records)
    # Each record's first u32: its length, with the BUSY and DISCARD bits.
    with pending[:count * stride].cast("I") as words:
        headers = words[::stride // 4].tobytes()
    same = _U32.pack(length)
    if headers == same * count:
        return length, count
    # The run ends before the first header that differs: the longest matching prefix.
    low, high = 1, count - 1
    while low < high:
        mid = (low + high + 1) // 2
        if headers[:4 * mid] == same * mid:
            low = mid
        else:
            high = mid - 1
    return length, low


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
            self._consumer_pos = Position(self._consumer)
            self._producer_pos = Position(self._producer)
            self._epoll = select.epoll()
            self._epoll.register(self.fd, select.EPOLLIN)
        except OSError:
            os.close(self.fd)
            raise

    def _positions(self) -> tuple[int, int]:
        return self._consumer_pos.load(), self._producer_pos.load()

    def pending(self) -> int:
        """Bytes the producer has written that we have not consumed."""
        consumer, producer = self._positions()
        return producer - consumer

    def read(self, max_records: int = 1024) -> list[bytes]:
        """Up to max_records committed records, oldest first, freeing their space.

        A run of committed records of one length, the common case (one kind of event),
        is found by comparing their headers at once and copied out of the mapping in one
        slice (the data area is mapped twice, so it is one even where it wraps), then cut
        by stride; records after the run are read one by one. Headers are read before the
        data they describe, as the kernel writes the data before it clears BUSY. The
        consumer position is written once for the batch: the kernel reuses the space a
        moment later, and the reader saves a store a record.
        """
        data = self._producer
        mask = self.size - 1
        consumer, producer = self._positions()
        start = consumer
        off = PAGE_SIZE + (consumer & mask)
        with memoryview(data) as view:
            length, count = uniform_run(view[off: off + producer - consumer], max_records)
        stride = (length + _HDR + 7) & ~7
        if count:
            chunk = data[off: off + count * stride]
            out = [chunk[at: at + length] for at in range(_HDR, count * stride, stride)]
            consumer += count * stride
        else:
            out = []
        unpack = _U32.unpack_from
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
            self._consumer_pos.store(consumer)
        return out

    def wait(self, timeout: float | None) -> bool:
        """Block until the kernel signals data (or timeout seconds); True if readable."""
        if self.pending():
            return True
        return bool(self._epoll.poll(-1 if timeout is None else timeout))

    def close(self) -> None:
        if self.fd >= 0:
            self._epoll.close()
            self._consumer_pos.release()
            self._producer_pos.release()
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

"""A ring position is stored whole: a reader on another CPU (the kernel, reading the
consumer position at every reserve) never sees it pass through a value between the old
and the new one. struct.pack_into zeroes its target before it writes, and a reserve
that read that zero found the ring full and lost its event (agent/ringbuf.py)."""

from __future__ import annotations

import mmap
import os
import struct
import time

from podwire.agent.ringbuf import PAGE_SIZE, Position

FIRST = 1 << 40  # every value stored is above it: a torn or zeroed word reads below
WRITE_SECONDS = 0.1


def _watch(position: Position, stop: memoryview, cpu: int | None, report: int) -> None:
    """In the child: load the position until told to stop; report (reads, values that
    went backwards)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    reads = backwards = 0
    last = position.load()
    while not stop[0]:
        value = position.load()
        if value < last:
            backwards += 1
        last = value
        reads += 1
    os.write(report, struct.pack("<QQ", reads, backwards))


def test_a_position_store_is_never_seen_half_done() -> None:
    page = mmap.mmap(-1, PAGE_SIZE)  # shared with the child across fork
    # The position, and a word after it that tells the watcher to stop.
    position, stop = Position(page), memoryview(page)[8:16].cast("Q")
    position.store(FIRST)
    cpus = sorted(os.sched_getaffinity(0))
    # Writer and watcher on CPUs of their own where there are two, so the loads and the
    # stores overlap in time.
    writer_cpu, watcher_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (None, None)
    before = os.sched_getaffinity(0)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the watcher
        try:
            os.close(read_end)
            _watch(position, stop, watcher_cpu, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        if writer_cpu is not None:
            os.sched_setaffinity(0, {writer_cpu})
        value, end = FIRST, time.monotonic() + WRITE_SECONDS
        while time.monotonic() < end:
            for _ in range(1000):
                value += 80  # a record's stride: every byte of the word changes in time
                position.store(value)
        stop[0] = 1
        reads, backwards = struct.unpack("<QQ", os.read(read_end, 16))
    finally:
        stop[0] = 1
        os.sched_setaffinity(0, before)
        os.waitpid(pid, 0)
        os.close(read_end)
        position.release()
        stop.release()
        page.close()
    assert reads > 1000, "the watcher read while the position was being stored"
    assert backwards == 0, f"{backwards} of {reads} loads saw a half-stored position"

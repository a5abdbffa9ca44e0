"""The datapath's own time, from the kernel's BPF run-time statistics (bpf_stats).

While a `RunTime` is open the kernel counts every program's runs and the nanoseconds
they took (`kernel.bpf_stats_enabled`, held by an fd and released with it, also when the
process dies). The load other processes put on the machine stretches a benchmark's
wall time but hardly a program's run, so ns per run says what the programs cost where
the traffic figures cannot.
"""

from __future__ import annotations

import os
from pathlib import Path

from podwire.agent import bpfsys
from podwire.agent.loader import prog_pin

# The programs on a pod's host veth (IPv4; the IPv6 ones are tail-called from them).
POD_PROGRAMS = ("from_pod", "to_pod")


class RunTime:
    """Run time and runs of the pinned programs `names` of the datapath at `pin_dir`."""

    def __init__(self, pin_dir: Path, names: tuple[str, ...] = POD_PROGRAMS) -> None:
        self._stats = bpfsys.enable_run_time_stats()
        self._progs = {name: bpfsys.obj_get(str(pin_dir / prog_pin(name))) for name in names}

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Each program's (run time in ns, runs) so far."""
        return {name: bpfsys.prog_run_stats(fd) for name, fd in self._progs.items()}

    def total_ns(self) -> int:
        return sum(ns for ns, _ in self.snapshot().values())

    def close(self) -> None:
        for fd in [*self._progs.values(), self._stats]:
            os.close(fd)


def per_run(before: dict[str, tuple[int, int]],
            after: dict[str, tuple[int, int]]) -> dict[str, tuple[float, int]]:
    """Between two snapshots: each program's ns per run and its number of runs."""
    out = {}
    for name, (ns, runs) in after.items():
        ns0, runs0 = before[name]
        out[name] = ((ns - ns0) / (runs - runs0) if runs > runs0 else 0.0, runs - runs0)
    return out

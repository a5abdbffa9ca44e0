"""connrate (connrate.c beside this file): new TCP connections/s with C on both sides,
compiled with gcc when a benchmark first asks for it, each side in its own namespace."""

from __future__ import annotations

import atexit
import functools
import os
import resource
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("connrate.c")
# Connects kept in flight by each client process: enough that it never waits on one
# round trip (1, 8 and 256 measured within 10 % of 64 here: the kernel's handshake work
# is the limit).
PARALLEL = 64
# Client processes, one per CPU this process may use, each pinned to its own
# (connrate.c): the handshake's kernel work runs on the client's CPU, so one client
# left the other CPUs idle and measured one core, not the machine.
CLIENTS = len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class ConnRate:
    """One connrate run: connections completed by the clients (handshake done, then RST)
    per second of their run, their counts, what the server accepted meanwhile, and the
    clients' user and system CPU time in CPUs' worth of their run (up to one a client;
    the kernel's handshake work is system time, the generator's own user time)."""

    per_s: float
    completed: int
    failed: int
    accepted: int
    seconds: float
    client_user_share: float
    client_system_share: float


@functools.cache
def binary() -> str:
    """bench/connrate.c compiled with gcc, once a process, in a directory removed at exit."""
    out = Path(tempfile.mkdtemp(prefix="pwconnrate-"))
    atexit.register(shutil.rmtree, out, True)
    path = out / "connrate"
    done = subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(path), str(SOURCE)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"gcc {SOURCE}: {done.stderr.strip()}")
    return str(path)


def connections_per_s(server_netns: str, server_ip: str, client_netns: str, port: int,
                      seconds: float, connect_to: tuple[str, int] | None = None,
                      parallel: int = PARALLEL, clients: int = CLIENTS) -> ConnRate:
    """New TCP connections/s from `client_netns` to a listener in `server_netns`, both
    sides connrate (C, epoll): `clients` processes each keep `parallel` connects in
    flight, each counted once its handshake completes and then reset (RST); the server
    accepts and closes. `connect_to` is the address the client dials when it is not the
    listener's own (a Service's frontend). Raises when more than 1 % of the connects
    failed or the server accepted fewer than the client completed."""
    program = binary()
    target = connect_to or (server_ip, port)
    server = subprocess.Popen(["nsenter", f"--net=/run/netns/{server_netns}", program, "serve",
                               server_ip, str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "listening":
            raise RuntimeError(f"connrate serve: {server.communicate(timeout=10)[1].strip()}")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = subprocess.run(["nsenter", f"--net=/run/netns/{client_netns}", program,
                                 "connect", target[0], str(target[1]), str(seconds),
                                 str(parallel), str(clients)],
                                capture_output=True, text=True, check=False,
                                timeout=seconds + 60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the client's, now waited for
        if client.returncode != 0:
            raise RuntimeError(f"connrate connect: {client.stderr.strip()}")
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    _, completed, _, failed, _, elapsed = client.stdout.split()
    accepted = int(out.split()[-1]) if out.split()[:1] == ["accepted"] else -1
    result = ConnRate(int(completed) / float(elapsed), int(completed), int(failed), accepted,
                      float(elapsed), (after.ru_utime - before.ru_utime) / float(elapsed),
                      (after.ru_stime - before.ru_stime) / float(elapsed))
    if result.failed > result.completed / 100 or result.accepted < result.completed:
        raise RuntimeError(f"connrate to {target[0]}:{target[1]}: {result} {err.strip()}")
    return result

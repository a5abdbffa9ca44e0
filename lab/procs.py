"""Background processes of the lab, tracked by pid files.

A pid file holds the pid and the process's start time (from /proc), so stopping after
a crash or a reboot never signals an unrelated process that reused the pid. Every lab
process also carries `PODWIRE_LAB=<prefix>` in its environment, so one whose pid file
is lost is still found.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("podwire.lab.procs")


def _start_time(pid: int) -> str | None:
    """The start time of a live process `pid`; None when gone or a zombie.

    A lab process outlives the command that started it, so its zombie waits for init
    to reap it: it must already count as stopped.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # After the command name (in parentheses, may hold spaces): state, ..., starttime (22).
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


TAG_VARIABLE = "PODWIRE_LAB"


def start(argv: list[str], pidfile: Path, logfile: Path, tag: str) -> int:
    """Start `argv` detached (own session), output to `logfile`; record it in `pidfile`."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **{TAG_VARIABLE: tag})
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, env=env)
    pidfile.write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
    log.info("event=process_started pid=%d pidfile=%s argv=%s", proc.pid, pidfile,
             " ".join(argv))
    return proc.pid


def running(pidfile: Path) -> int | None:
    """The pid recorded in `pidfile` if that very process still runs, else None."""
    try:
        pid_text, started = pidfile.read_text().split()
        pid = int(pid_text)
    except (FileNotFoundError, ValueError):
        return None
    # A zombie child of ours still has a stat line; reap it so it counts as gone.
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return None
    except ChildProcessError:
        pass
    return pid if _start_time(pid) == started else None


def stop(pidfile: Path, grace: float = 10.0) -> bool:
    """SIGTERM the process of `pidfile`, SIGKILL after `grace` s; remove the file.

    Returns whether a process was running. The whole session is signalled so helpers
    the process started (nsenter's child, servers) go too.
    """
    pid = running(pidfile)
    if pid is not None:
        _signal_group(pid, signal.SIGTERM)
        if not wait_for(lambda: running(pidfile) is None, grace):
            _signal_group(pid, signal.SIGKILL)
            wait_for(lambda: running(pidfile) is None, 5.0)
        log.info("event=process_stopped pid=%d pidfile=%s", pid, pidfile)
    pidfile.unlink(missing_ok=True)
    return pid is not None


def tagged(tag: str) -> list[int]:
    """Live processes started with `tag` (see `start`), whatever their pid files say."""
    marker = f"{TAG_VARIABLE}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ and _start_time(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found


def kill_tagged(tag: str) -> int:
    """SIGKILL every process tagged `tag`: the crash path, after pid files did their part."""
    pids = tagged(tag)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not set(pids) & set(tagged(tag)), 5.0)
    if pids:
        log.info("event=stray_processes_killed tag=%s pids=%s", tag, pids)
    return len(pids)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition` until true or `timeout` s pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)

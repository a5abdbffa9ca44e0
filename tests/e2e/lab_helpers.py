"""Shared pieces of the lab's end-to-end tests: the CLI, a lab fixture, leftovers."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from podwire.lab import cluster, netns, procs
from podwire.lab.kube import Kube
from podwire.lab.layout import LabLayout
from podwire.policy import Cluster, Namespace, NetworkPolicy, Pod, truth_table

# The CLI module rather than the console script: a concurrent `pip install -e` (setup.sh)
# rewrites .venv/bin and would fail an unlucky call.
PODWIRE = [sys.executable, "-m", "podwire.cli"]


def in_process(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`podwire ARGV...` run by `podwire.cli.main` in this process, its output captured.

    The same parsing, cluster path and printing as the executable without an interpreter
    start and imports each time (~1 s against ~30 ms): for tests that run the CLI dozens
    of times. Tests of the executable itself (exit codes, a real pipe) run it as a
    process.
    """
    from podwire.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exit_:  # argparse's usage errors
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.stdin = saved_stdin
    return subprocess.CompletedProcess(["podwire", *argv], code, out.getvalue(), err.getvalue())


def cli(prefix: str, *args: str, stdin: str | None = None, timeout: float = 180,
        ) -> subprocess.CompletedProcess[str]:
    """`podwire lab --prefix PREFIX ARGS...`, as a user runs it."""
    return subprocess.run([*PODWIRE, "lab", "--prefix", prefix, *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout, check=False)


def cli_ok(prefix: str, *args: str, stdin: str | None = None) -> str:
    proc = cli(prefix, *args, stdin=stdin)
    assert proc.returncode == 0, f"podwire lab {' '.join(args)}: {proc.stderr}{proc.stdout}"
    return proc.stdout


@contextlib.contextmanager
def lab_up(prefix: str, nodes: int, network: str, ip_family: str = "ipv4",
           ) -> Iterator[cluster.LabState]:
    """A lab for a module fixture, down afterwards even on failure."""
    layout = LabLayout(prefix)
    cluster.down(layout)  # a previous run that was killed may have left one
    try:
        proc = cli(prefix, "up", "--nodes", str(nodes), "--network", network, "--ip-family",
                   ip_family)
        assert proc.returncode == 0, proc.stderr
        yield cluster.load(layout)
    finally:
        cluster.down(layout)


def leftovers(prefix: str) -> list[str]:
    """Anything of lab `prefix` still on the machine: namespaces, pins, run dir, processes."""
    layout = LabLayout(prefix)
    found = [f"netns {n}" for n in netns.names_with_prefix(f"{prefix}-")]
    if layout.pin_root.is_dir():
        found += [f"pins {p}" for p in layout.pin_root.glob(layout.bpffs_dirs_glob)]
    if layout.run_dir.exists():
        found.append(f"dir {layout.run_dir}")
    found += [f"process {pid}" for pid in procs.tagged(prefix)]
    return found


def pods(prefix: str) -> list[dict[str, Any]]:
    """The pods as the API holds them (read in-process: the CLI's own listing is tested
    once, every other check saves an interpreter start)."""
    state = cluster.load(LabLayout(prefix))
    return Kube(Path(state.kubeconfig)).list_pods()["items"]  # type: ignore[no-any-return]


def matrix(prefix: str, port: int, protocol: str = "TCP", family: int | None = None,
           ) -> dict[str, dict[str, bool]]:
    """The probe matrix (over `family`, else the pods' primary addresses); 2 s a probe, so
    a busy shared machine never turns a working connection into a "blocked" verdict."""
    chosen = ("--family", str(family)) if family else ()
    out = cli_ok(prefix, "probe", "--matrix", "--port", str(port), "--protocol", protocol,
                 *chosen, "--timeout", "2", "-o", "json")
    return json.loads(out)  # type: ignore[no-any-return]


def model(state: cluster.LabState) -> Cluster:
    """The policy model of what the API holds now, as the reference evaluator reads it."""
    kube = Kube(Path(state.kubeconfig))
    return Cluster(
        namespaces=[Namespace.from_api(n) for n in kube.list_namespaces()["items"]],
        # The pods the probe matrix covers: kube-system's (cluster DNS) are the cluster's.
        pods=[Pod.from_api(p) for p in kube.list_pods()["items"]
              if p.get("status", {}).get("podIP") and p["metadata"]["namespace"] != "kube-system"],
        policies=[NetworkPolicy.from_api(p) for p in kube.list_policies()["items"]],
    )


def expected(state: cluster.LabState, port: int, protocol: str = "TCP", family: int = 4,
             ) -> dict[str, dict[str, bool]]:
    """The reference evaluator's truth table over what the API holds now, in `family`."""
    return truth_table(model(state), port, protocol, family=family)


def differences(got: dict[str, dict[str, bool]], want: dict[str, dict[str, bool]]) -> list[str]:
    """Pairs where the probes and the evaluator disagree, readable in a failure."""
    pairs = {(s, d) for s in got for d in got[s]} | {(s, d) for s in want for d in want[s]}
    return [f"{s} -> {d}: probe={got.get(s, {}).get(d)} evaluator={want.get(s, {}).get(d)}"
            for s, d in sorted(pairs) if got.get(s, {}).get(d) != want.get(s, {}).get(d)]

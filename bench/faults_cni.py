"""Fault scenario cni-chaos: CNI ADD/DEL under SIGKILLs of the plugin and the agent.

Pods are added and deleted concurrently on node1 while random plugin processes and the
agent itself are SIGKILLed; the "runtime" behaves as containerd does (a failed ADD is
followed by DEL, both retried), then calls CNI GC with the attachments it still holds.
Counted after GC: duplicate addresses, leaked addresses (IPAM store entries of no live
attachment), leaked host links, endpoints the agent reports (/status) that belong to no
live attachment, and live attachments missing a part. Expected: 0 of each.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from podwire.bench.faults_lab import Lab, link_names, log
from podwire.bench.figures import Expectation, Figures
from podwire.lab import cniexec, netns
from podwire.lab.layout import NodeLayout

# How long the "runtime" keeps retrying one CNI call before it gives the pod up (a dead
# agent is back well within it; what is given up is GC's to clean).
RETRY_FOR_S = 90.0
RETRY_PAUSE_S = 0.2
HOST_LINK = re.compile(r"^pw[0-9a-f]{11}$")  # podwire's host veths (cni/wiring.py)
# Share of first ADDs whose plugin was killed after which the runtime forgets the pod, as
# a runtime that died with its plugin does: no DEL ever comes, GC alone can clean up.
FORGET_SHARE = 0.5


@dataclass
class ChaosTally:
    calls: int = 0
    failed_calls: int = 0
    plugin_kills: int = 0
    given_up: int = 0
    forgotten: list[cniexec.Sandbox] = field(default_factory=list)
    agent_restart_s: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, ok: bool, killed: bool) -> None:
        with self.lock:
            self.calls += 1
            self.failed_calls += not ok
            self.plugin_kills += killed


class CniChaos:
    """A runtime adding and deleting pods on one node, with a random hand killing the
    plugin processes it starts and the node's agent."""

    def __init__(self, lab: Lab, pods: int, concurrency: int, kill_share: float,
                 agent_kills: int, seed: int) -> None:
        # The node holding fewest of the lab's own pods (its cluster DNS runs on one): the
        # chaos is about the runtime's pods, not the cluster's.
        self.lab = lab
        self.node = min((lab.node(1), lab.node(2)), key=lambda n: len(ipam_owners(n)))
        self.pods, self.concurrency = pods, concurrency
        self.kill_share, self.agent_kills = kill_share, agent_kills
        self.rng = random.Random(seed)
        self.rng_lock = threading.Lock()
        self.conf = cniexec.plugin_configs(json.loads(self.node.conf_file.read_text()))[0]
        self.plugin = lab.layout.bin_dir / self.conf["type"]
        self.tally = ChaosTally()
        self.live: dict[str, tuple[cniexec.Sandbox, dict[str, Any]]] = {}
        self.started = 0
        self.progress = threading.Condition()
        self.stopping = threading.Event()  # SIGINT: every runtime thread ends its pod
        self.killer_error: RuntimeError | OSError | None = None
        self.tag = secrets.token_hex(3)

    def random(self) -> float:
        with self.rng_lock:
            return self.rng.random()

    def call(self, command: str, sandbox: cniexec.Sandbox,
             extra: dict[str, Any] | None = None) -> tuple[bool, dict[str, Any]]:
        """One plugin process, exactly as a runtime starts it; maybe SIGKILLed midway."""
        conf = {**self.conf, **(extra or {})}
        proc = subprocess.Popen(
            ["nsenter", f"--net={netns.path(self.node.netns)}", str(self.plugin)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=cniexec.environment(command, sandbox, self.lab.layout.bin_dir))
        killer = None
        if command in ("ADD", "DEL") and self.random() < self.kill_share:
            # Within the plugin's own run time (interpreter start, the agent's answer).
            killer = threading.Timer(self.random() * 0.15, proc.kill)
            killer.start()
        out, _ = proc.communicate(json.dumps(conf), timeout=cniexec.CNI_TIMEOUT)
        if killer is not None:
            killer.cancel()
        killed = proc.returncode == -signal.SIGKILL
        self.tally.count(proc.returncode == 0, killed)
        if proc.returncode != 0:
            return False, {"killed": killed}
        return True, json.loads(out) if out.strip() else {}

    def retried(self, command: str, sandbox: cniexec.Sandbox,
                extra: dict[str, Any] | None = None, undo_first: bool = False,
                ) -> dict[str, Any] | None:
        """Call until it succeeds, as the kubelet does; None once the runtime gives up.
        A failed ADD is undone by a DEL before the next try (containerd's order)."""
        deadline = time.monotonic() + RETRY_FOR_S
        while time.monotonic() < deadline and not self.stopping.is_set():
            if undo_first and self.retried("DEL", sandbox) is None:
                return None
            ok, result = self.call(command, sandbox, extra)
            if ok:
                return result
            undo_first = command == "ADD"
            time.sleep(RETRY_PAUSE_S)
        return None

    def pod(self, index: int) -> None:
        if self.stopping.is_set():
            return
        sandbox = cniexec.Sandbox("faults", f"p{index}", f"uid-{self.tag}-{index}",
                                  f"cid-{self.tag}-{index}",
                                  f"{self.lab.layout.pod_netns_prefix}f{index:05d}")
        netns.create(sandbox.netns_name)
        with self.progress:
            self.started += 1
            self.progress.notify_all()
        ok, first = self.call("ADD", sandbox)
        if not ok and first["killed"] and self.random() < FORGET_SHARE:
            with self.tally.lock:
                self.tally.forgotten.append(sandbox)
            return
        result = first if ok else self.retried("ADD", sandbox, undo_first=True)
        if result is not None and self.random() < 0.9:
            # Most pods go again: the /24 holds 252 addresses, 1,000 pods pass through.
            if self.retried("DEL", sandbox, {"prevResult": result}) is not None:
                netns.remove(sandbox.netns_name)
                return
            result = None
        if result is None:
            with self.tally.lock:
                self.tally.given_up += 1
            return
        with self.tally.lock:
            self.live[sandbox.container_id] = (sandbox, result)

    def agent_killer(self) -> None:
        """Kill the agent at evenly spaced points of the run, restarting it each time
        (a DaemonSet's restart), and wait until it serves before the next kill."""
        try:
            for k in range(self.agent_kills):
                mark = self.pods * (k + 1) // (self.agent_kills + 1)
                with self.progress:
                    self.progress.wait_for(lambda: self.started >= mark)  # noqa: B023
                if self.stopping.is_set():
                    return
                time.sleep(self.random() * 0.1)
                log(f"cni-chaos: SIGKILL agent of {self.node.name} "
                    f"({k + 1}/{self.agent_kills})")
                self.lab.kill_agent(self.node)
                self.tally.agent_restart_s.append(self.lab.start_agent(self.node))
        except (RuntimeError, OSError) as exc:  # the runtime threads must not wait on it
            self.killer_error = exc
            self.stopping.set()

    def run(self) -> Figures:
        # The lab's own pods on this node (its cluster DNS) are no part of the chaos: GC
        # keeps them and the counts leave them out.
        owners = ipam_owners(self.node)
        self.kept_ips, self.kept_owners = set(owners), set(owners.values())
        self.kept_links = host_links(self.node)
        killer = threading.Thread(target=self.agent_killer, name="agent-killer")
        started = time.monotonic()
        killer.start()
        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="runtime") as pool:
                try:
                    list(pool.map(self.pod, range(self.pods)))
                except BaseException:
                    self.stopping.set()
                    raise
        finally:
            with self.progress:
                self.started = self.pods
                self.progress.notify_all()
            killer.join()
        if self.killer_error is not None:
            raise RuntimeError("killing and restarting the agent failed: "
                               f"{self.killer_error}") from self.killer_error
        seconds = time.monotonic() - started
        before_gc = self.leftovers()
        valid = [{"containerID": cid, "ifname": "eth0"} for cid in [*self.live, *self.kept_owners]]
        ok, _ = self.call("GC", cniexec.Sandbox("", "", "", "", ""),
                          {"cni.dev/valid-attachments": valid})
        if not ok:
            raise RuntimeError("CNI GC failed")
        figures = self.count(seconds, before_gc)
        self.clean_up()
        return figures

    def leftovers(self) -> dict[str, float]:
        """What GC has to clean: addresses, host links and endpoints of no live pod."""
        live_links = {result["interfaces"][0]["name"] for _, result in self.live.values()}
        live_ips = {cniexec.first_ipv4(result) for _, result in self.live.values()}
        return {"addresses left for GC": sum(1 for owner in ipam_owners(self.node).values()
                                             if owner not in self.live
                                             and owner not in self.kept_owners),
                "host links left for GC": len(host_links(self.node) - live_links
                                              - self.kept_links),
                "endpoints left for GC": sum(1 for e in self.lab.status(self.node)["endpoints"]
                                             if e["ip"] not in live_ips
                                             and e["ip"] not in self.kept_ips)}

    def count(self, seconds: float, before_gc: dict[str, float]) -> Figures:
        live_ips = [cniexec.first_ipv4(result) for _, result in self.live.values()]
        live_links = {result["interfaces"][0]["name"] for _, result in self.live.values()}
        endpoints = self.lab.status(self.node)["endpoints"]
        store = ipam_owners(self.node)
        links = host_links(self.node)
        endpoint_ips = [e["ip"] for e in endpoints]
        broken = sum(1 for ip, (sandbox, result) in zip(live_ips, self.live.values(),
                                                        strict=True)
                     if store.get(ip) != sandbox.container_id or ip not in endpoint_ips
                     or result["interfaces"][0]["name"] not in links)
        found = {
            "duplicate addresses": duplicates(live_ips) + duplicates(endpoint_ips),
            "leaked addresses": sum(1 for owner in store.values()
                                    if owner not in self.live and owner not in self.kept_owners),
            "leaked host links": len(links - live_links - self.kept_links),
            "endpoints without a pod": sum(1 for ip in endpoint_ips
                                           if ip not in live_ips and ip not in self.kept_ips),
            "live pods missing an address, link or endpoint": broken}
        restarts = self.tally.agent_restart_s
        scalars = {"pods": self.pods, "concurrency": self.concurrency,
                   "CNI calls": self.tally.calls, "failed CNI calls": self.tally.failed_calls,
                   "plugin SIGKILLs": self.tally.plugin_kills,
                   "agent SIGKILLs": len(restarts),
                   "agent restart to ready s (median)": statistics.median(restarts)
                   if restarts else 0.0,
                   "pods the runtime gave up": self.tally.given_up,
                   "pods the runtime forgot (killed with its plugin)":
                       len(self.tally.forgotten),
                   "pods live at GC": len(self.live), **before_gc, "seconds": seconds}
        return Figures(scalars={f"cni-chaos: {k}": float(v) for k, v in scalars.items()},
                       expectations=[Expectation("cni-chaos", k, v, "==", 0)
                                     for k, v in found.items()])

    def clean_up(self) -> None:
        for sandbox in self.tally.forgotten:
            netns.remove(sandbox.netns_name)
        for cid, (sandbox, result) in list(self.live.items()):
            ok, _ = self.call("DEL", sandbox, {"prevResult": result})
            if ok:
                netns.remove(sandbox.netns_name)
                del self.live[cid]


def duplicates(values: list[str]) -> int:
    return sum(n - 1 for n in Counter(values).values() if n > 1)


def ipam_owners(node: NodeLayout) -> dict[str, str]:
    """Allocated address -> owning container id, read from the agent's IPAM store (the
    host-local layout: one file per address, the owner on its first line)."""
    owners = {}
    for path in (node.state_dir / "ipam").glob("*/*"):
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", path.name):
            owners[path.name] = path.read_text().split("\n", 1)[0]
    return owners


def host_links(node: NodeLayout) -> set[str]:
    return {name for name in link_names(node) if HOST_LINK.match(name)}



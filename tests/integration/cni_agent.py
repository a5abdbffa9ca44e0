"""A stand-in agent for CNI tests: the CNI commands behind LocalApi in its own node netns.

The real daemon (agent/daemon.py) adds the datapath; these tests need only the CNI
side, so the hooks here record their calls (one JSON line each) and can be told to
fail, and readiness is a file the test toggles. Everything lives in one place so the
fixture can later switch to the real daemon.

Run as a script it is the agent process:
    cni_agent.py --socket S --state-dir D --pod-cidr C
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv/bin/python"
SHIM = REPO / ".venv/bin/podwire-cni"
NODE_IP = "192.0.2.10"  # TEST-NET-1, only ever inside the node netns
PREFIX = "pwtc"  # this suite's namespace prefix; the lab and other suites use others




def run(cmd: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


def unique(kind: str) -> str:
    return f"{PREFIX}{kind}-{secrets.token_hex(3)}"


@contextmanager
def netns(name: str | None = None) -> Iterator[str]:
    """A named network namespace with lo up, deleted afterwards; yields its path."""
    name = name or unique("p")
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield f"/run/netns/{name}"
    finally:
        run(["ip", "netns", "del", name], check=False)


@dataclass
class CniRun:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


class NodeAgent:
    """A node netns with the stand-in agent serving podwire's socket inside it."""

    def __init__(self, root: Path, pod_cidr: str = "10.77.0.0/24") -> None:
        self.root = root
        self.node = unique("n")
        self.node_path = f"/run/netns/{self.node}"
        self.state_dir = root / "state"
        self.socket = root / "agent.sock"
        self.records = root / "hooks.jsonl"
        self.pod_cidr = pod_cidr
        self.log = root / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        run(["ip", "netns", "add", self.node])
        run(["ip", "-n", self.node, "link", "set", "lo", "up"])
        # A node has an address of its own (its underlay IP); without one the kernel
        # would source pings to pods from 127.0.0.1, which the pod's reply cannot reach.
        run(["ip", "-n", self.node, "link", "add", "underlay0", "type", "veth", "peer",
             "name", "underlay1"])
        run(["ip", "-n", self.node, "addr", "add", NODE_IP + "/32", "dev", "underlay0"])
        run(["ip", "-n", self.node, "link", "set", "underlay0", "up"])
        run(["ip", "-n", self.node, "link", "set", "underlay1", "up"])
        self.start_process()

    def start_process(self) -> None:
        with self.log.open("ab") as log:
            proc = self.proc = subprocess.Popen(
                ["nsenter", f"--net={self.node_path}", str(PYTHON), __file__,
                 "--socket", str(self.socket), "--state-dir", str(self.state_dir),
                 "--pod-cidr", self.pod_cidr, "--records", str(self.records)],
                # Run as a script, this module imports the shared helpers in tests/.
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.socket.exists() or proc.poll() is not None, "agent socket")
        if proc.poll() is not None:
            raise AssertionError(f"agent died: {self.log.read_text()}")

    def stop_process(self) -> None:
        """Stop the agent, keeping its node netns and state (an agent restart)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        self.stop_process()
        run(["ip", "netns", "del", self.node], check=False)

    def conf(self, version: str = "1.1.0", **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {"cniVersion": version, "name": "pwtc-net", "type": "podwire",
                                "agentSocket": str(self.socket)}
        conf.update(extra)
        return conf

    def cni(self, command: str, conf: dict[str, Any] | str, container_id: str = "",
            netns: str = "", ifname: str = "eth0", args: str = "",
            extra_env: dict[str, str] | None = None) -> CniRun:
        """Invoke podwire-cni exactly as a runtime does."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command,
               "CNI_PATH": "/usr/lib/cni"}
        for key, value in (("CNI_CONTAINERID", container_id), ("CNI_NETNS", netns),
                           ("CNI_IFNAME", ifname), ("CNI_ARGS", args)):
            if value:
                env[key] = value
        env.update(extra_env or {})
        stdin = conf if isinstance(conf, str) else json.dumps(conf)
        done = subprocess.run([str(SHIM)], check=False, input=stdin, env=env, capture_output=True,
                              text=True, timeout=120)
        return CniRun(done.returncode, done.stdout, done.stderr)

    def in_node(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["nsenter", f"--net={self.node_path}", *cmd], check=check)

    def node_links(self) -> list[str]:
        out = self.in_node(["ip", "-o", "link", "show"]).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def host_veths(self) -> list[str]:
        return [name for name in self.node_links() if name.startswith("pw")]

    def node_routes(self) -> str:
        return self.in_node(["ip", "route", "show"]).stdout

    def allocations(self) -> list[str]:
        """Allocated addresses (both families) of every subnet in the agent's IPAM store."""
        return sorted(p.name for p in (self.state_dir / "ipam").glob("*/*")
                      if _is_address(p.name))

    def endpoints(self) -> list[str]:
        eps = self.state_dir / "endpoints"
        return sorted(p.name for p in eps.glob("*.json")) if eps.exists() else []

    def hook_calls(self) -> list[dict[str, Any]]:
        if not self.records.exists():
            return []
        return [json.loads(line) for line in self.records.read_text().splitlines()]

    def ping(self, ip: str) -> bool:
        return self.in_node(["ping", "-c1", "-W1", "-q", ip], check=False).returncode == 0

    def set_ready(self, ready: bool, reason: str = "datapath not loaded") -> None:
        flag = self.root / "not-ready"
        if ready:
            flag.unlink(missing_ok=True)
        else:
            flag.write_text(reason)

    def hold_hook(self, hold: bool) -> None:
        flag = self.root / "hold-hook"
        if hold:
            flag.write_text("1")
        else:
            flag.unlink(missing_ok=True)

    def set_hook_failure(self, fail: bool) -> None:
        flag = self.root / "fail-hook"
        if fail:
            flag.write_text("1")
        else:
            flag.unlink(missing_ok=True)


def exec_plugin(plugin: Path, command: str, conf: dict[str, Any], container_id: str,
                netns_path: str, ifname: str, node_path: str) -> CniRun:
    """Run one plugin binary the way a runtime does, inside the node netns (chained
    plugins like portmap change the netns they run in)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command,
           "CNI_CONTAINERID": container_id, "CNI_NETNS": netns_path, "CNI_IFNAME": ifname,
           "CNI_PATH": str(plugin.parent)}
    done = subprocess.run(["nsenter", f"--net={node_path}", str(plugin)], check=False,
                          input=json.dumps(conf), env=env, capture_output=True, text=True,
                          timeout=120)
    return CniRun(done.returncode, done.stdout, done.stderr)


def run_conflist(bin_dir: Path, conflist: dict[str, Any], command: str, container_id: str,
                 netns_path: str, node_path: str, ifname: str = "eth0",
                 runtime_config: dict[str, Any] | None = None,
                 prev_result: dict[str, Any] | None = None) -> CniRun:
    """Execute a conflist per the spec: ADD in order feeding each result to the next as
    prevResult; CHECK in order and DEL in reverse, each with the ADD's final result."""
    plugins = conflist["plugins"] if command != "DEL" else list(reversed(conflist["plugins"]))
    last = CniRun(0, "", "")
    result = prev_result
    for plugin in plugins:
        conf = dict(plugin, name=conflist["name"], cniVersion=conflist["cniVersion"])
        caps = {k: v for k, v in (runtime_config or {}).items()
                if plugin.get("capabilities", {}).get(k)}
        if caps:
            conf["runtimeConfig"] = caps
        if result is not None:
            conf["prevResult"] = result
        last = exec_plugin(bin_dir / plugin["type"], command, conf, container_id, netns_path,
                           ifname, node_path)
        if last.code != 0:
            return last
        if command == "ADD":
            result = last.json
    return CniRun(0, json.dumps(result) if command == "ADD" else "", last.stderr)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def pod_ip(result: dict[str, Any]) -> str:
    return str(result["ips"][-1]["address"]).split("/")[0]


@contextmanager
def node_agent(root: Path, pod_cidr: str = "10.77.0.0/24") -> Iterator[NodeAgent]:
    agent = NodeAgent(root, pod_cidr)
    try:
        agent.start()
        yield agent
    finally:
        agent.stop()
        shutil.rmtree(root, ignore_errors=True)


def _serve(args: argparse.Namespace) -> None:
    from podwire.agent.localapi import LocalApi, cni_route
    from podwire.cni.endpoints import Endpoint
    from podwire.cni.node import EndpointHook, Node

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    records = Path(args.records)
    root = Path(args.socket).parent
    lock = threading.Lock()

    def record(event: str, endpoint: Endpoint) -> None:
        with lock, records.open("a") as f:
            f.write(json.dumps({"event": event, **asdict(endpoint)}) + "\n")

    def added(endpoint: Endpoint) -> None:
        record("added", endpoint)
        # Holds ADD at its last step while the test does something to the caller.
        end = time.monotonic() + 60
        while (root / "hold-hook").exists() and time.monotonic() < end:
            time.sleep(0.02)
        if (root / "fail-hook").exists():
            raise RuntimeError("injected datapath failure")

    def ready() -> tuple[bool, str]:
        flag = root / "not-ready"
        return (False, flag.read_text()) if flag.exists() else (True, "")

    node = Node(Path(args.state_dir), args.pod_cidr.split(","), EndpointHook(
        added=added, removed=lambda ep: record("removed", ep), ready=ready))
    api = LocalApi(Path(args.socket))
    api.route("POST", "/cni", cni_route(node))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    api.start()
    stop.wait()
    api.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for flag in ("--socket", "--state-dir", "--pod-cidr", "--records"):
        parser.add_argument(flag, required=True)
    _serve(parser.parse_args(sys.argv[1:]))

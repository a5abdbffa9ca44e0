"""Invoking a CNI plugin exactly as a container runtime does.

The environment, stdin and working namespace follow the CNI spec and what containerd
sends for a Kubernetes pod (CNI_ARGS with the K8S_POD_* keys); the plugin runs from
inside the node's namespace, where a runtime on that node would run it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podwire.lab import netns

# A plugin talks to an agent that may be queueing other ADDs: generous, but bounded.
CNI_TIMEOUT = 120.0


class CniError(Exception):
    """The plugin failed; the message carries the CNI error code and text."""


@dataclass(frozen=True)
class Sandbox:
    """A pod sandbox as the runtime sees it."""

    namespace: str
    name: str
    uid: str
    container_id: str
    netns_name: str

    def cni_args(self) -> str:
        return ";".join([
            "IgnoreUnknown=1",
            f"K8S_POD_NAMESPACE={self.namespace}",
            f"K8S_POD_NAME={self.name}",
            f"K8S_POD_INFRA_CONTAINER_ID={self.container_id}",
            f"K8S_POD_UID={self.uid}",
        ])


def environment(command: str, sandbox: Sandbox, bin_dir: Path) -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": sandbox.container_id,
        "CNI_NETNS": str(netns.path(sandbox.netns_name)),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(bin_dir),
        "CNI_ARGS": sandbox.cni_args(),
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    }


def invoke(command: str, sandbox: Sandbox, node_netns: str, bin_dir: Path,
           plugin_conf: dict[str, Any], prev_result: dict[str, Any] | None = None,
           ) -> dict[str, Any]:
    """Run the plugin named by the config's `type` from CNI_PATH; its JSON result."""
    conf = dict(plugin_conf)
    if prev_result is not None:
        conf["prevResult"] = prev_result
    plugin = bin_dir / conf["type"]
    try:
        proc = subprocess.run(
            ["nsenter", f"--net={netns.path(node_netns)}", str(plugin)],
            input=json.dumps(conf), capture_output=True, text=True,
            env=environment(command, sandbox, bin_dir), timeout=CNI_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CniError(f"{command} timed out after {CNI_TIMEOUT:.0f}s") from exc
    if proc.returncode != 0:
        raise CniError(f"{command} exit={proc.returncode} {_error_text(proc.stdout, proc.stderr)}")
    if not proc.stdout.strip():
        return {}
    try:
        return json.loads(proc.stdout)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise CniError(f"{command} printed non-JSON: {proc.stdout[:200]!r}") from exc


def plugin_configs(conflist: dict[str, Any]) -> list[dict[str, Any]]:
    """Each plugin's stdin config: its entry plus the list's cniVersion and name."""
    return [dict(p, cniVersion=conflist["cniVersion"], name=conflist["name"])
            for p in conflist["plugins"]]


def add_network(conflist: dict[str, Any], sandbox: Sandbox, node_netns: str, bin_dir: Path,
                ) -> dict[str, Any]:
    """ADD through every plugin of the list in order, each given the previous result."""
    result: dict[str, Any] | None = None
    for conf in plugin_configs(conflist):
        result = invoke("ADD", sandbox, node_netns, bin_dir, conf, prev_result=result) or result
    return result or {}


def del_network(conflist: dict[str, Any], sandbox: Sandbox, node_netns: str, bin_dir: Path,
                prev_result: dict[str, Any] | None) -> None:
    """DEL through the plugins in reverse order; every plugin runs even if one fails."""
    errors = []
    for conf in reversed(plugin_configs(conflist)):
        try:
            invoke("DEL", sandbox, node_netns, bin_dir, conf, prev_result=prev_result)
        except CniError as exc:
            errors.append(f"{conf['type']}: {exc}")
    if errors:
        raise CniError("; ".join(errors))


def _error_text(stdout: str, stderr: str) -> str:
    try:
        err = json.loads(stdout)
        return f"code={err.get('code')} msg={err.get('msg')!r} details={err.get('details')!r}"
    except ValueError:
        return (stderr or stdout).strip()[:300]


def pod_ips(result: dict[str, Any]) -> list[str]:
    """The pod's addresses from an ADD result, one per family, IPv4 first (the order
    of status.podIPs, whose first is podIP); the last plugin's entries win, as a
    runtime reads a chain's result."""
    found: dict[int, str] = {}
    for ip in result.get("ips", []):
        text = str(ip.get("address", "")).split("/")[0]
        try:
            found[ipaddress.ip_address(text).version] = text
        except ValueError:
            continue
    if not found:
        raise CniError(f"ADD result has no address: {json.dumps(result)[:200]}")
    return [found[version] for version in sorted(found)]


def first_ipv4(result: dict[str, Any]) -> str:
    """The pod's IPv4 address from an ADD result (`ips[].address` is CIDR notation)."""
    for ip in result.get("ips", []):
        address = str(ip.get("address", "")).split("/")[0]
        if address.count(".") == 3:
            return address
    raise CniError(f"ADD result has no IPv4 address: {json.dumps(result)[:200]}")

"""Files a lab node needs: kubeconfig, agent settings, CNI conflist, the plugin binary.

The contents are computed by pure functions; `write_node_files` only puts them on disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from podwire.cni import executable
from podwire.lab.layout import MTU, LabLayout, NodeLayout


def kubeconfig(server: str, name: str = "podwire-lab") -> dict[str, Any]:
    """A kubeconfig for the lab API server (plain HTTP inside the lab, no credentials)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def agent_settings(node: NodeLayout, kubeconfig_path: Path,
                   ip_family: str = "ipv4") -> dict[str, Any]:
    """The agent's config file (fields of `podwire.agent.config.AgentConfig`)."""
    cidrs: dict[str, Any] = ({"pod_cidr": node.pod_cidr} if ip_family == "ipv4"
                             else {"pod_cidrs": node.pod_cidrs(ip_family)})
    return {
        "node_name": node.name,
        "pin_dir": str(node.pin_dir),
        "state_dir": str(node.state_dir),
        "socket_path": str(node.socket_path),
        **cidrs,
        "node_ip": node.underlay_ip,
        "mtu": MTU,
        # The metrics port lives in the node's namespace: the same number on every node.
        "metrics_address": node.underlay_ip,
        "kubeconfig": str(kubeconfig_path),
    }


def cni_conflist(node: NodeLayout, ip_family: str = "ipv4") -> dict[str, Any]:
    """The node's CNI network configuration list, as a runtime reads it from its conf dir."""
    ipam: dict[str, Any] = ({"subnet": node.pod_cidr} if ip_family == "ipv4"
                            else {"subnets": node.pod_cidrs(ip_family)})
    return {
        "cniVersion": "1.1.0",
        "name": "podwire",
        "plugins": [{
            "type": "podwire",
            "agentSocket": str(node.socket_path),
            "mtu": MTU,
            "ipam": ipam,
        }],
    }


def bridge_conflist(node: NodeLayout) -> dict[str, Any]:
    """The reference network (bridge + host-local, masquerade): a baseline lab without
    podwire, same addresses, no policy."""
    return {
        "cniVersion": "1.0.0",
        "name": "lab-bridge",
        "plugins": [{
            "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
            "mtu": MTU,
            "ipam": {"type": "host-local", "subnet": node.pod_cidr,
                     "routes": [{"dst": "0.0.0.0/0"}],
                     "dataDir": str(node.state_dir / "host-local")},
        }],
    }


REFERENCE_PLUGINS = Path("/usr/lib/cni")


def write_kubeconfig(path: Path, server: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig(server), sort_keys=False))


def write_bin_dir(layout: LabLayout) -> None:
    """The CNI bin dir: podwire's plugin under its type name, written as the DaemonSet
    writes it on a host (cni/executable.py), and links to the reference plugins."""
    layout.bin_dir.mkdir(parents=True, exist_ok=True)
    executable.install(layout.bin_dir / "podwire")
    for name in ("bridge", "host-local"):
        link = layout.bin_dir / name
        link.unlink(missing_ok=True)
        os.symlink(REFERENCE_PLUGINS / name, link)


def write_node_files(layout: LabLayout, node: NodeLayout, network: str,
                     ip_family: str = "ipv4") -> None:
    """Agent settings and the CNI conflist of `network` ("podwire" or "bridge")."""
    for d in (node.run_dir, node.state_dir, node.conf_dir):
        d.mkdir(parents=True, exist_ok=True)
    if network == "podwire":
        node.agent_config.write_text(
            json.dumps(agent_settings(node, layout.node_kubeconfig, ip_family), indent=2) + "\n")
        conflist = cni_conflist(node, ip_family)
    else:
        conflist = bridge_conflist(node)
    node.conf_file.write_text(json.dumps(conflist, indent=2) + "\n")

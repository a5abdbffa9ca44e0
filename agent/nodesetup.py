"""The node's own networking that the datapath relies on, set up once the agent knows
the node's address and pod CIDR: forwarding sysctls, the vxlan device the overlay
program sits on, and masquerade for pod traffic leaving the cluster.

Every step is idempotent: a restarting agent finds the device and the rule in place
and keeps them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from podwire.agent.config import AgentConfig
from podwire.common.netns import iproute

MASQUERADE_COMMENT = "podwire: masquerade pod traffic leaving the cluster"
# vxlan over IPv4/UDP: the outer headers the underlay MTU must also carry.
VXLAN_OVERHEAD = 50


def prepare(config: AgentConfig, node_ip: str, pod_cidr: str | None) -> int:
    """Set the node up for pod traffic; returns the vxlan device's ifindex. `pod_cidr`
    is the IPv4 one (None on an IPv6-only node: IPv6 masquerade waits for the IPv6
    datapath)."""
    sysctl("net.ipv4.ip_forward", "1")
    sysctl("net.ipv4.conf.all.rp_filter", "0")
    sysctl("net.ipv4.conf.default.rp_filter", "0")
    vxlan = ensure_vxlan_device(config.vxlan_device, node_ip, config.vxlan_port,
                                config.mtu + VXLAN_OVERHEAD)
    if pod_cidr is not None:
        ensure_masquerade(pod_cidr)
    return vxlan


def uplink_ifindex(node_ip: str, device: str | None = None) -> int:
    """The device NodePorts arrive on: the one named, else the one holding the node's
    address (its InternalIP, which the other nodes and the world reach it at)."""
    with iproute(None) as ipr:
        if device is not None:
            found = ipr.link_lookup(ifname=device)
            if not found:
                raise RuntimeError(f"uplink_device {device!r}: no such device on the node")
            return int(found[0])
        for addr in ipr.get_addr(family=2):
            if addr.get_attr("IFA_ADDRESS") == node_ip:
                return int(addr["index"])
    raise RuntimeError(f"no device on the node holds its address {node_ip}; "
                       "set uplink_device")


def sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value)


def ensure_vxlan_device(name: str, local_ip: str, port: int, mtu: int,
                        netns: str | None = None) -> int:
    """Create (or keep) a vxlan device in external/collect_md mode; returns its ifindex.

    The tunnel key (remote node, VNI) comes from from_pod per packet, so one device
    serves every remote node. MTU 1450 leaves room for the 50-byte encapsulation.
    """
    with iproute(netns) as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            ipr.link("add", ifname=name, kind="vxlan", vxlan_collect_metadata=1,
                     vxlan_port=port, vxlan_local=local_ip, vxlan_learning=0)
            found = ipr.link_lookup(ifname=name)
        ipr.link("set", index=found[0], mtu=mtu, state="up")
        return int(found[0])


def ensure_masquerade(pod_cidr: str) -> None:
    """Pods reach the world with the node's address; pod-to-pod traffic never gets here."""
    rule = ["POSTROUTING", "-s", pod_cidr, "!", "-d", pod_cidr, "-m", "comment",
            "--comment", MASQUERADE_COMMENT, "-j", "MASQUERADE"]
    check = subprocess.run(["iptables", "-t", "nat", "-C", *rule], check=False,
                           capture_output=True)
    if check.returncode != 0:
        subprocess.run(["iptables", "-t", "nat", "-A", *rule], check=True, capture_output=True)

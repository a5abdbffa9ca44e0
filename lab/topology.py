"""The lab's wires: underlay bridge, node namespaces, the external namespace.

Each node namespace is joined to the bridge in the underlay namespace by a veth
made directly between the two namespaces, so nothing ever touches the host's links.
"""

from __future__ import annotations

import logging

from podwire.lab import netns
from podwire.lab.layout import (
    API_UNDERLAY_IP,
    BRIDGE,
    EXTERNAL_IP,
    NODE_UPLINK,
    UNDERLAY,
    LabLayout,
    NodeLayout,
)

log = logging.getLogger("podwire.lab.topology")


def build_underlay(layout: LabLayout) -> None:
    """The underlay namespace with its bridge; the API server's address sits on it."""
    from pyroute2 import NetNS

    netns.create(layout.underlay_netns)
    with NetNS(layout.underlay_netns) as ul:
        ul.link("add", ifname=BRIDGE, kind="bridge")
        index = ul.link_lookup(ifname=BRIDGE)[0]
        ul.addr("add", index=index, address=API_UNDERLAY_IP, prefixlen=UNDERLAY.prefixlen)
        ul.link("set", index=index, state="up")
    log.info("event=underlay_up netns=%s bridge=%s ip=%s", layout.underlay_netns, BRIDGE,
             API_UNDERLAY_IP)


def _attach(layout: LabLayout, ns_name: str, port_name: str, address: str) -> None:
    """Join namespace `ns_name` to the underlay bridge with `address` on its uplink."""
    from pyroute2 import NetNS

    with NetNS(layout.underlay_netns) as ul:
        ul.link("add", ifname=port_name, kind="veth",
                peer={"ifname": NODE_UPLINK, "net_ns_fd": ns_name})
        bridge = ul.link_lookup(ifname=BRIDGE)[0]
        port = ul.link_lookup(ifname=port_name)[0]
        ul.link("set", index=port, master=bridge, state="up")
    with NetNS(ns_name) as ns:
        uplink = ns.link_lookup(ifname=NODE_UPLINK)[0]
        ns.addr("add", index=uplink, address=address, prefixlen=UNDERLAY.prefixlen)
        ns.link("set", index=uplink, state="up")


def build_node(layout: LabLayout, node: NodeLayout) -> None:
    """A node namespace on the underlay, forwarding on (it routes for its pods)."""
    netns.create(node.netns)
    _attach(layout, node.netns, node.bridge_port, node.underlay_ip)
    netns.sysctl(node.netns, "net.ipv4.ip_forward", "1")
    log.info("event=node_up node=%s netns=%s ip=%s", node.name, node.netns, node.underlay_ip)


def build_external(layout: LabLayout) -> None:
    """The namespace standing for the world, at 10.98.0.250 on the underlay."""
    netns.create(layout.external_netns)
    _attach(layout, layout.external_netns, "v-ext", EXTERNAL_IP)
    log.info("event=external_up netns=%s ip=%s", layout.external_netns, EXTERNAL_IP)


def route_pod_cidrs(nodes: list[NodeLayout]) -> None:
    """Plain routes to every other node's pod CIDR via its underlay address.

    On the bridge network they carry all pod traffic between nodes. On podwire's, pods'
    packets are tunnelled by the datapath before any route is looked at, so these carry
    only what the node itself sends (its hostNetwork pods) to other nodes' pods; the
    receiving node's to_pod hook applies the pods' policy to it.
    """
    from pyroute2 import NetNS

    for node in nodes:
        with NetNS(node.netns) as ns:
            for other in nodes:
                if other is not node:
                    ns.route("add", dst=other.pod_cidr, gateway=other.underlay_ip)


def lab_namespaces(layout: LabLayout) -> list[str]:
    """Every namespace of this lab that exists now, pods first, underlay last."""
    names = netns.names_with_prefix(f"{layout.prefix}-")
    return sorted(names, key=lambda n: (n == layout.underlay_netns,
                                        not n.startswith(layout.pod_netns_prefix), n))


def teardown(layout: LabLayout) -> list[str]:
    """Remove every namespace of the lab (their veths go with them); returns the names."""
    removed = []
    for name in lab_namespaces(layout):
        netns.remove(name)
        removed.append(name)
    if removed:
        log.info("event=namespaces_removed count=%d", len(removed))
    return removed

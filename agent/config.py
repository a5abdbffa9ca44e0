"""The agent's settings: one typed home, read once at start-up."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podwire.bpf.constants import Aggregation
from podwire.common.agentapi import DEFAULT_SOCKET, OBSERVE_PORT

# Where the kubelet mounts a pod's ServiceAccount token and the cluster CA.
IN_CLUSTER_SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class ConntrackTimeouts:
    """Idle timeouts in seconds, per protocol and TCP or SCTP state; each is the
    node_config field ct_<name>."""

    tcp_syn: int = 60
    tcp_established: int = 21600
    tcp_closing: int = 10
    udp: int = 60
    icmp: int = 30
    other: int = 60
    # TCP's: an association may turn its heartbeats off, so an idle one must not lose
    # its entry sooner than an idle TCP connection.
    sctp_init: int = 60
    sctp_established: int = 21600
    sctp_closing: int = 10


@dataclass(frozen=True)
class AgentConfig:
    node_name: str
    # Per-node bpffs directory: several lab nodes share one kernel.
    pin_dir: Path = Path("/sys/fs/bpf/podwire/node")
    state_dir: Path = Path("/var/lib/podwire")
    socket_path: Path = DEFAULT_SOCKET
    # Used when the Node object has no spec.podCIDR (standalone and lab use).
    pod_cidr: str | None = None
    # The same for a dual-stack (or IPv6) node: one CIDR per family, instead of
    # `pod_cidr` and of the Node's spec.podCIDRs.
    pod_cidrs: tuple[str, ...] = ()
    # The node's underlay address; taken from Node.status.addresses when unset.
    node_ip: str | None = None
    mtu: int = 1450
    tunnel_mode: str = "vxlan"
    vxlan_device: str = "pw_vxlan"
    vxlan_port: int = 8472
    history_size: int = 4096
    metrics_port: int = 9962
    metrics_address: str = "0.0.0.0"
    # The read-only flow and status API the cluster view reaches through the API
    # server's pods/portforward (deploy/README.md); loopback, so not on the network.
    # Port 0 turns it off.
    observe_port: int = OBSERVE_PORT
    observe_address: str = "127.0.0.1"
    # Whether that endpoint also serves `podwire trace` (/trace/*: arm, inject one
    # packet, read hops); off, the cluster view can watch but not trace.
    observe_trace: bool = True
    conntrack_max: int = 65536
    conntrack_timeouts: ConntrackTimeouts = field(default_factory=ConntrackTimeouts)
    conntrack_gc_interval: float = 10.0
    flow_events: bool = True
    # What the datapath summarises before it reports (bpf/lib/types.h AGG_*): `none`
    # (an event per new connection and per dropped packet), `connection` (an event per
    # new connection; a flow's drops counted and reported as one record per flow and
    # interval), `max` (new connections counted that way too, source port left out).
    # Counters (metrics) are exact in every mode.
    flow_aggregation: str = "connection"
    # A counted flow is reported when it has been quiet this long (and then forgotten),
    # and at least every flow_report_interval while it goes on. Seconds.
    flow_report_idle: float = 0.5
    flow_report_interval: float = 5.0
    # Flows the datapath can count at once (DatapathSizes.flow_aggregates); a new flow
    # beyond it is reported per event through the ring buffer.
    flow_aggregates_max: int = 16384
    # Ring buffer events a second for the node (0: no limit), with this burst; events
    # over it are counted as lost at stage `rate`. Split evenly between CPUs.
    flow_event_rate_limit: int = 0
    flow_event_burst: int = 1000
    # Services (kube-proxy replacement): watch Services and EndpointSlices and fill the
    # load balancer's maps. Off for clusters that keep kube-proxy: no watch, and the
    # lb_* maps stay empty.
    services: bool = True
    # Capacities of the load balancer's maps (DatapathSizes.lb_services, lb_backends,
    # lb_affinity): frontend slots (one per frontend plus one per backend it lists),
    # backends, and remembered ClientIP affinities. Pinned maps keep their size.
    # 10,000 Services with 50,000 endpoints take about 79,000 slots (bench/services_bench.py).
    # The device NodePorts arrive on (from_netdev is attached there, and their replies
    # leave by it); None: the one holding the node's address.
    uplink_device: str | None = None
    lb_services_max: int = 131072
    lb_backends_max: int = 65536
    lb_affinity_max: int = 65536
    # kubeconfig path; None means in-cluster configuration (ServiceAccount token).
    kubeconfig: str | None = None
    # The API server's address ("https://10.0.0.1:6443" or "10.0.0.1:6443") for the
    # in-cluster configuration, instead of KUBERNETES_SERVICE_HOST/PORT: in a cluster
    # without kube-proxy that is the `kubernetes` ClusterIP, which nothing serves until
    # this agent does.
    api_server: str | None = None
    # Where the in-cluster configuration reads the ServiceAccount's token and ca.crt; a
    # setting so the agent's in-cluster start can be exercised outside a pod.
    service_account_dir: Path = IN_CLUSTER_SERVICE_ACCOUNT_DIR

    def __post_init__(self) -> None:
        Aggregation.from_label(self.flow_aggregation)
        # A switch given as "false" would read as on.
        for name in ("observe_trace", "flow_events", "services"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"agent setting {name} must be true or false, "
                                f"not {getattr(self, name)!r}")
        for name in ("flow_report_idle", "flow_report_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"agent setting {name} must be positive, "
                                 f"not {getattr(self, name)!r}")
        for name in ("flow_event_rate_limit", "flow_event_burst"):
            if getattr(self, name) < 0:
                raise ValueError(f"agent setting {name} must not be negative, "
                                 f"not {getattr(self, name)!r}")
        if self.flow_aggregates_max < 1:
            raise ValueError("agent setting flow_aggregates_max must be positive")

    @property
    def aggregation(self) -> Aggregation:
        return Aggregation.from_label(self.flow_aggregation)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentConfig:
        """Build from a JSON/YAML mapping with the same field names; unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown agent setting(s): {', '.join(unknown)}")
        values = dict(data)
        for name in ("pin_dir", "state_dir", "socket_path", "service_account_dir"):
            if name in values:
                values[name] = Path(values[name])
        if "pod_cidrs" in values:
            values["pod_cidrs"] = _pod_cidrs(values["pod_cidrs"])
        if "conntrack_timeouts" in values:
            values["conntrack_timeouts"] = ConntrackTimeouts(**values["conntrack_timeouts"])
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> AgentConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _pod_cidrs(value: Any) -> tuple[str, ...]:
    """`pod_cidrs` checked: networks, at most one per family."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("agent setting pod_cidrs must be a list of CIDR strings")
    families: dict[int, str] = {}
    for text in value:
        try:
            net = ipaddress.ip_network(text)
        except ValueError as exc:
            raise ValueError(f"agent setting pod_cidrs: {text!r} is not a network ({exc})") from None
        if net.version in families:
            raise ValueError(f"agent setting pod_cidrs: {families[net.version]} and {text} are "
                             f"both IPv{net.version}; give one per family")
        families[net.version] = text
    return tuple(value)

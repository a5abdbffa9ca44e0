"""Names, addresses and paths of one lab, derived from its prefix alone.

Everything the lab creates is named from `LabLayout`, so `down` can find it again by
name after a crash, and a test lab with its own prefix never meets the default one.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PREFIX = "pwlab"
UNDERLAY = ipaddress.IPv4Network("10.98.0.0/24")
API_UNDERLAY_IP = "10.98.0.1"
API_UNDERLAY_PORT = 6443
EXTERNAL_IP = "10.98.0.250"
EXTERNAL_PORTS = (80, 81, 443)
# The API server's --service-cluster-ip-range: apart from the underlay (10.98.0.0/24) and
# the pod CIDRs (10.244.0.0/16). .1 is Service default/kubernetes, .10 kube-system/kube-dns.
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/16")
KUBERNETES_SERVICE_IP = str(SERVICE_CIDR.network_address + 1)
DNS_SERVICE_IP = str(SERVICE_CIDR.network_address + 10)
# The IPv6 service CIDR of a lab whose pods have IPv6 (kubeadm's example size, /112).
SERVICE_CIDR6 = ipaddress.IPv6Network("fd00:10:96::/112")
NODE_PORT_RANGE = range(30000, 32768)
CLUSTER_DOMAIN = "cluster.local"
BPFFS_ROOT = Path("/sys/fs/bpf/podwire")
MTU = 1450
# Interface names inside the lab's own namespaces: no clash with the host's.
BRIDGE = "br0"
NODE_UPLINK = "ul0"
MAX_NODES = 200
# `lab up --ip-family`: which address families the pods get (the underlay stays IPv4).
IP_FAMILIES = ("ipv4", "ipv6", "dual")


@dataclass(frozen=True)
class NodeLayout:
    """One lab node: its names, addresses and files."""

    name: str
    index: int
    netns: str
    underlay_ip: str
    pod_cidr: str
    pin_dir: Path
    run_dir: Path
    # The node's IPv6 pod CIDR, a /64 named after its index (node12: fd00:10:244:12::/64),
    # used when the lab's pods have IPv6.
    pod_cidr6: str = ""

    def pod_cidrs(self, ip_family: str) -> list[str]:
        """The node's pod CIDRs for `ip_family` (one of IP_FAMILIES), IPv4 first."""
        return {"ipv4": [self.pod_cidr], "ipv6": [self.pod_cidr6],
                "dual": [self.pod_cidr, self.pod_cidr6]}[ip_family]

    @property
    def bridge_port(self) -> str:
        """The node's veth end on the underlay bridge (in the underlay namespace)."""
        return f"v-{self.name}"[:15]

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "agent.sock"

    @property
    def conf_dir(self) -> Path:
        return self.run_dir / "net.d"

    @property
    def conf_file(self) -> Path:
        return self.conf_dir / "10-podwire.conflist"

    @property
    def agent_config(self) -> Path:
        return self.run_dir / "agent.json"

    @property
    def agent_log(self) -> Path:
        return self.run_dir / "agent.log"

    @property
    def agent_pidfile(self) -> Path:
        return self.run_dir / "agent.pid"


@dataclass(frozen=True)
class LabLayout:
    """The whole lab: namespaces, node list, process and file locations."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        # No '-' in a prefix: "<prefix>-" then never matches another lab's names.
        # Pod namespaces add "-p-" and 10 hex digits to it.
        if not (self.prefix.isascii() and self.prefix.isalnum() and self.prefix.islower()):
            raise ValueError(f"lab prefix {self.prefix!r} must be lower-case letters and digits")
        if not 2 <= len(self.prefix) <= 12:
            raise ValueError(f"lab prefix {self.prefix!r} must be 2 to 12 characters")

    @property
    def run_dir(self) -> Path:
        suffix = "" if self.prefix == DEFAULT_PREFIX else f"-{self.prefix}"
        return Path(f"/run/podwire-lab{suffix}")

    @property
    def underlay_netns(self) -> str:
        return f"{self.prefix}-ul"

    @property
    def external_netns(self) -> str:
        return f"{self.prefix}-ext"

    @property
    def pod_netns_prefix(self) -> str:
        return f"{self.prefix}-p-"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "lab.json"

    @property
    def bin_dir(self) -> Path:
        return self.run_dir / "bin"

    @property
    def host_kubeconfig(self) -> Path:
        return self.run_dir / "kubeconfig"

    @property
    def node_kubeconfig(self) -> Path:
        return self.run_dir / "kubeconfig.node"

    @property
    def api_state(self) -> Path:
        return self.run_dir / "apiserver.state.json"

    @property
    def pin_root(self) -> Path:
        return BPFFS_ROOT

    @property
    def bpffs_dirs_glob(self) -> str:
        """Pin directories of this lab's nodes under `pin_root`."""
        return f"{self.prefix}-*"

    def pod_dir(self, pod_uid: str) -> Path:
        """A running pod's files: its resolv.conf, its program's log."""
        return self.run_dir / "pods" / pod_uid

    def resolv_conf(self, pod_uid: str) -> Path:
        return self.pod_dir(pod_uid) / "resolv.conf"

    def revision_file(self, process: str) -> Path:
        """Where a control-plane process (slice controller, cluster DNS) reports its revision."""
        return self.run_dir / f"{process}.revision"

    def pidfile(self, process: str) -> Path:
        return self.run_dir / f"{process}.pid"

    def logfile(self, process: str) -> Path:
        return self.run_dir / f"{process}.log"

    def node(self, index: int) -> NodeLayout:
        """Node `index` (1-based): node1 at 10.98.0.11 with pod CIDRs 10.244.1.0/24 and
        fd00:10:244:1::/64."""
        if not 1 <= index <= MAX_NODES:
            raise ValueError(f"node index {index} out of range 1..{MAX_NODES}")
        name = f"node{index}"
        return NodeLayout(
            name=name,
            index=index,
            netns=self.node_netns(name),
            underlay_ip=str(UNDERLAY.network_address + 10 + index),
            pod_cidr=f"10.244.{index}.0/24",
            pin_dir=BPFFS_ROOT / f"{self.prefix}-{name}",
            run_dir=self.run_dir / name,
            pod_cidr6=f"fd00:10:244:{index}::/64",
        )

    def node_netns(self, name: str) -> str:
        """The namespace of node `name` (where its agent and hostNetwork pods run)."""
        return f"{self.prefix}-{name}"

    def nodes(self, count: int) -> list[NodeLayout]:
        return [self.node(i) for i in range(1, count + 1)]

    def pod_netns(self, pod_uid: str) -> str:
        """A pod's namespace name: from its uid, so a re-created pod never reuses one."""
        digest = hashlib.sha256(pod_uid.encode()).hexdigest()[:10]
        return f"{self.pod_netns_prefix}{digest}"

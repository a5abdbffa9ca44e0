"""Probes through Services and names: `--to-service`, `--to-host`, `--matrix --services`
and `--from external`.

A probe through a Service connects to its ClusterIP on the Service's port and succeeds
only when a pod the Service's EndpointSlices list answers: a reply from anything else
is not the Service working. A name is resolved inside the source pod as its resolver
would: the pod's resolv.conf (written by the lab kubelet), its search path and ndots,
queries over UDP from the pod's namespace to its nameserver.

`family` (4 or 6) picks the Service's ClusterIP of that family (`spec.clusterIPs`); None
its primary one (`spec.clusterIP`). A Service without a ClusterIP of the family asked
for is a ValueError naming it, in a single probe as in the matrix.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from podwire.lab import netns
from podwire.lab.clusterdns import candidates
from podwire.lab.kube import Kube
from podwire.lab.layout import LabLayout
from podwire.lab.probe import ProbeResult, ProbeTarget, family_of, probe
from podwire.lab.probes import SYSTEM_NAMESPACE, address_of, pod_address, running_pod

EXTERNAL = "external"
# Services the matrix leaves out: the cluster's own, whose servers do not answer probes.
SYSTEM_NAMESPACES = (SYSTEM_NAMESPACE,)
SYSTEM_SERVICES = ("default/kubernetes",)
SERVICE_MATRIX_HELP = ("every Service outside kube-system, and not default/kubernetes, "
                       "that has the port")
DNS_TIMEOUT = 1.0


def _split(ref: str, what: str) -> tuple[str, str]:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise ValueError(f"{ref!r}: expected NAMESPACE/{what}")
    return namespace, name


@dataclass(frozen=True)
class ServiceTarget:
    """Where a probe through a Service goes, and which pods may answer."""

    ref: str
    target: ProbeTarget
    backends: frozenset[str]


def _ref(obj: dict[str, Any]) -> str:
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def service_port(service: dict[str, Any], port: int, protocol: str) -> dict[str, Any] | None:
    for sp in service["spec"].get("ports") or []:
        if sp["port"] == port and sp.get("protocol", "TCP") == protocol:
            return dict(sp)
    return None


def backends(slices: list[dict[str, Any]], ref: str) -> frozenset[str]:
    """The pods (ns/name) the Service's slices list as endpoints."""
    namespace, name = ref.split("/", 1)
    return frozenset(
        f"{e['targetRef']['namespace']}/{e['targetRef']['name']}"
        for s in slices if s["metadata"]["namespace"] == namespace
        and (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == name
        for e in s.get("endpoints") or [] if e.get("targetRef"))


def cluster_ip(service: dict[str, Any], family: int | None) -> str:
    """The Service's ClusterIP of `family` (None: its primary one), or ValueError saying
    why there is none."""
    ref = _ref(service)
    spec = service["spec"]
    primary = spec.get("clusterIP")
    if not primary or primary == "None":
        raise ValueError(f"service {ref} has no ClusterIP (headless or ExternalName): "
                         "probe its pods, or its name with --to-host")
    if family is None:
        return str(primary)
    listed = spec.get("clusterIPs") or [primary]
    found = next((ip for ip in listed if ipaddress.ip_address(ip).version == family), None)
    if found is None:
        raise ValueError(f"service {ref} has no IPv{family} ClusterIP (its clusterIPs: "
                         f"{', '.join(listed)}; ipFamilies: "
                         f"{', '.join(spec.get('ipFamilies') or ['IPv4'])})")
    return str(found)


def service_target(service: dict[str, Any], slices: list[dict[str, Any]], port: int,
                   protocol: str, family: int | None = None) -> ServiceTarget:
    """The ClusterIP:port of `service` for `port` in `family`, or ValueError saying why
    there is none."""
    ref = _ref(service)
    ip = cluster_ip(service, family)
    if service_port(service, port, protocol) is None:
        ports = ", ".join(f"{p['port']}/{p.get('protocol', 'TCP')}"
                          for p in service["spec"].get("ports") or []) or "none"
        raise ValueError(f"service {ref} has no port {port}/{protocol} (its ports: {ports})")
    return ServiceTarget(ref, ProbeTarget(ip, port, protocol), backends(slices, ref))


def check_backend(result: ProbeResult, goal: ServiceTarget) -> ProbeResult:
    """A probe's result, failed when the answer came from a pod outside the Service."""
    if result.ok and result.answer.get("name") not in goal.backends:
        return ProbeResult(False, f"answered by {result.answer.get('name')}, not an endpoint "
                           f"of {goal.ref}", result.answer)
    return result


def source_netns(kube: Kube, layout: LabLayout, source: str) -> str:
    """`external` is the lab's external namespace; anything else a running pod NS/POD."""
    if source == EXTERNAL:
        return layout.external_netns
    return layout.pod_netns(running_pod(kube, source)["metadata"]["uid"])


def to_service(kube: Kube, layout: LabLayout, source: str, ref: str, port: int, protocol: str,
               timeout: float, family: int | None = None) -> tuple[ProbeResult, str]:
    namespace, name = _split(ref, "SERVICE")
    service = kube.read("Service", name, namespace)
    if service is None:
        raise ValueError(f"service {ref} does not exist")
    goal = service_target(service, kube.list_endpoint_slices()["items"], port, protocol,
                          family)
    if family is not None and source != EXTERNAL:
        pod_address(running_pod(kube, source), family)  # one it can connect from
    src = source_netns(kube, layout, source)
    result = check_backend(probe(src, goal.target, timeout), goal)
    return result, f"{ref} ({goal.target.ip})"


# ---- names ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvConf:
    nameserver: str
    search: list[str]
    ndots: int


def parse_resolv_conf(text: str) -> ResolvConf:
    nameserver, search, ndots = "", [], 1
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "nameserver" and len(words) > 1 and not nameserver:
            nameserver = words[1]
        elif words[0] == "search":
            search = words[1:]
        elif words[0] == "options":
            for option in words[1:]:
                if option.startswith("ndots:") and option[6:].isdigit():
                    ndots = int(option[6:])
    if not nameserver:
        raise ValueError("resolv.conf names no nameserver")
    return ResolvConf(nameserver, search, ndots)


_RECORD_TYPES = {4: dns.rdatatype.A, 6: dns.rdatatype.AAAA}


def _query(src_netns: str, server: str, name: str, version: int, timeout: float,
           ) -> tuple[int, list[str]]:
    """The rcode and the addresses of IP `version` (A or AAAA records) the server gives."""
    rdtype = _RECORD_TYPES[version]
    query = dns.message.make_query(name, rdtype)
    sock = netns.socket_in(src_netns, family_of(server), socket.SOCK_DGRAM)
    # dnspython waits on a given socket with its own timeout only if it does not block.
    sock.setblocking(False)
    with sock:
        reply = dns.query.udp(query, server, timeout=timeout, sock=sock)
    addresses = [r.to_text() for rrset in reply.answer if rrset.rdtype == rdtype
                 for r in rrset]
    return reply.rcode(), addresses


def resolve(src_netns: str, conf: ResolvConf, name: str, timeout: float = DNS_TIMEOUT,
            version: int = 4) -> tuple[str, str]:
    """(the name that answered, its first address of IP `version`), trying the search
    path as a stub resolver does; ValueError when no candidate resolves or the server is
    silent."""
    tried = []
    for candidate in candidates(name, conf.search, conf.ndots):
        try:
            rcode, addresses = _query(src_netns, conf.nameserver, candidate, version, timeout)
        except dns.exception.Timeout:
            raise ValueError(f"the nameserver {conf.nameserver} did not answer for "
                             f"{candidate} within {timeout:.1f}s") from None
        except OSError as exc:
            raise ValueError(f"cannot ask {conf.nameserver}: {exc.strerror or exc}") from None
        if rcode == dns.rcode.NOERROR and addresses:
            return candidate, addresses[0]
        if rcode == dns.rcode.NOERROR:
            tried.append(f"{candidate} (no {dns.rdatatype.to_text(_RECORD_TYPES[version])})")
        else:
            tried.append(f"{candidate} ({dns.rcode.to_text(dns.rcode.Rcode(rcode))})")
    raise ValueError(f"{name} does not resolve: tried {', '.join(tried)}")


def to_host(kube: Kube, layout: LabLayout, source: str, name: str, port: int, protocol: str,
            timeout: float, family: int | None = None) -> tuple[ProbeResult, str]:
    """Resolve `name` through the source pod's resolv.conf (AAAA with family 6, else A)
    and probe the address."""
    if source == EXTERNAL:
        raise ValueError("--to-host resolves through a pod's cluster DNS: --from NS/POD")
    pod = running_pod(kube, source)
    uid = pod["metadata"]["uid"]
    try:
        conf = parse_resolv_conf(layout.resolv_conf(uid).read_text())
    except FileNotFoundError:
        raise ValueError(f"pod {source} has no resolv.conf (started before the lab wrote "
                         "them?)") from None
    started = time.monotonic()
    answered, ip = resolve(layout.pod_netns(uid), conf, name, min(timeout, DNS_TIMEOUT),
                           family or 4)
    left = max(timeout - (time.monotonic() - started), 0.2)
    return probe(layout.pod_netns(uid), ProbeTarget(ip, port, protocol), left), (
        f"{answered} ({ip})")


# ---- the Service matrix -----------------------------------------------------------------


def matrix_targets(services: list[dict[str, Any]], slices: list[dict[str, Any]], port: int,
                   protocol: str, family: int | None = None) -> dict[str, ServiceTarget]:
    """The matrix's columns: see SERVICE_MATRIX_HELP."""
    out = {}
    for service in services:
        ref = _ref(service)
        if (service["metadata"]["namespace"] in SYSTEM_NAMESPACES or ref in SYSTEM_SERVICES
                or service_port(service, port, protocol) is None
                or service["spec"].get("clusterIP") in (None, "", "None")):
            continue
        out[ref] = service_target(service, slices, port, protocol, family)
    return out


def service_matrix(kube: Kube, layout: LabLayout, port: int, protocol: str, timeout: float,
                   family: int | None = None, workers: int = 32) -> dict[str, dict[str, bool]]:
    """`{"ns/pod": {"ns/service": connected}}` from every pod the pod matrix probes from
    (over `family`: those with an address of it)."""
    pods = [p for p in kube.list_pods()["items"]
            if p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP")
            and p["metadata"]["namespace"] not in SYSTEM_NAMESPACES
            and address_of(p, family) is not None]
    sources = {_ref(p): layout.pod_netns(p["metadata"]["uid"]) for p in pods}
    targets = matrix_targets(kube.list_services()["items"],
                             kube.list_endpoint_slices()["items"], port, protocol, family)
    pairs = [(s, t) for s in sorted(sources) for t in sorted(targets)]

    def one(pair: tuple[str, str]) -> bool:
        goal = targets[pair[1]]
        return check_backend(probe(sources[pair[0]], goal.target, timeout), goal).ok

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe") as pool:
        results = list(pool.map(one, pairs))
    out: dict[str, dict[str, bool]] = {s: {} for s in sorted(sources)}
    for (s, t), ok in zip(pairs, results):
        out[s][t] = ok
    return out

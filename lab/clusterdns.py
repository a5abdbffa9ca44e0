"""Cluster DNS names: what `<service>.<namespace>.svc.cluster.local` answers. Pure.

As the Kubernetes DNS specification (and CoreDNS's kubernetes plugin) says for A and
AAAA records: a Service with ClusterIPs answers them (A its IPv4 one, AAAA its IPv6 one:
`spec.clusterIPs`, one per family of a dual-stack Service); a headless one answers the
addresses of its ready endpoints (from its EndpointSlices of either address type), and
each endpoint with a hostname also has `<hostname>.<service>.<namespace>.svc.cluster.local`.
Every other name in the cluster domain, and every name outside it (the lab has no
upstream), is NXDOMAIN; a name with no address of the family asked has no data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from podwire.lab.layout import CLUSTER_DOMAIN

Object = dict[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def service_name(name: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> str:
    return f"{name}.{namespace}.svc.{domain}"


def search_path(namespace: str, domain: str = CLUSTER_DOMAIN) -> list[str]:
    """A pod's resolv.conf search list, as the kubelet writes it (ClusterFirst)."""
    return [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]


def resolv_conf(nameserver: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> str:
    return (f"search {' '.join(search_path(namespace, domain))}\n"
            f"nameserver {nameserver}\noptions ndots:5\n")


def candidates(name: str, search: list[str], ndots: int = 5) -> list[str]:
    """The names a stub resolver tries for `name`, in order (glibc's rules): an absolute
    name alone; one with at least `ndots` dots as is first; otherwise the search path
    first and the name as is last."""
    if name.endswith("."):
        return [name.rstrip(".")]
    expanded = [f"{name}.{suffix}" for suffix in search]
    return [name, *expanded] if name.count(".") >= ndots else [*expanded, name]


@dataclass
class Zone:
    """The addresses (A and AAAA records) of the cluster domain, rebuilt from Services and
    EndpointSlices."""

    domain: str = CLUSTER_DOMAIN
    records: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, services: list[Object], slices: list[Object],
              domain: str = CLUSTER_DOMAIN) -> Zone:
        zone = cls(domain)
        headless: set[tuple[str, str]] = set()
        for svc in services:
            meta, spec = svc["metadata"], svc.get("spec") or {}
            ip = spec.get("clusterIP")
            if spec.get("type") == "ExternalName" or not ip:
                continue
            key = (meta["namespace"], meta["name"])
            if ip == "None":
                headless.add(key)
                zone.records.setdefault(service_name(key[1], key[0], domain), [])
            else:
                zone.records[service_name(key[1], key[0], domain)] = list(
                    spec.get("clusterIPs") or [ip])
        for slice_ in slices:
            if slice_.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
                continue  # FQDN slices name no address
            owner = (slice_["metadata"]["namespace"],
                     (slice_["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL, ""))
            if owner in headless:
                zone._add_endpoints(owner, slice_)
        for name in zone.records:
            zone.records[name] = sorted(set(zone.records[name]))
        return zone

    def _add_endpoints(self, owner: tuple[str, str], slice_: Object) -> None:
        base = service_name(owner[1], owner[0], self.domain)
        for endpoint in slice_.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            addresses = endpoint.get("addresses") or []
            self.records[base] += addresses
            if endpoint.get("hostname"):
                self.records.setdefault(f"{endpoint['hostname']}.{base}", []).extend(addresses)

    def lookup(self, name: str, version: int | None = None) -> list[str] | None:
        """The addresses of `name` (no trailing dot, any case), those of IP `version` (4:
        A records, 6: AAAA) when given; None when the name does not exist."""
        found = self.records.get(name.rstrip(".").lower())
        if found is None or version is None:
            return found
        return [ip for ip in found if (":" in ip) == (version == 6)]

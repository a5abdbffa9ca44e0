"""Service ClusterIPs and NodePorts: which are taken, and the next free one.

The real server keeps these in bitmaps (`pkg/registry/core/service/ipallocator`,
`portallocator`); here they are sets rebuilt from the stored Services when the store is
loaded, so nothing can disagree with the objects. `admit` checks every address and port a
Service needs before it reserves any, so a refused write reserves nothing.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from itertools import chain
from typing import Any

from podwire.lab.api.errors import ApiError, field_invalid
from podwire.lab.api.resource import IP_FAMILY_NAMES, Object, ServiceRanges

HEADLESS = "None"
# Types that get node ports, and the one that gets no ClusterIP at all.
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
EXTERNAL_NAME = "ExternalName"


def _name(obj: Object) -> str:
    return str(obj["metadata"]["name"])


def _owner(obj: Object) -> str:
    return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


def _cluster_ip(spec: dict[str, Any]) -> str:
    return str(spec.get("clusterIP") or "")


def _node_ports(spec: dict[str, Any]) -> list[tuple[int, str]]:
    return [(int(p["nodePort"]), str(p.get("protocol", "TCP")))
            for p in spec.get("ports") or [] if p.get("nodePort")]


class ServiceAllocator:
    """The ClusterIPs and node ports of one store's Services."""

    def __init__(self, ranges: ServiceRanges) -> None:
        self.ranges = ranges
        self._ips: dict[str, str] = {}  # address -> ns/name holding it
        self._ports: dict[tuple[int, str], str] = {}  # (nodePort, protocol) -> ns/name
        self._rng = random.Random()

    @property
    def allocated_ips(self) -> set[str]:
        return set(self._ips)

    @property
    def allocated_node_ports(self) -> set[tuple[int, str]]:
        return set(self._ports)

    def load(self, obj: Object) -> None:
        """Count a stored Service's allocations (at start, from a saved state)."""
        spec = obj.get("spec") or {}
        for ip in spec.get("clusterIPs") or [_cluster_ip(spec)]:
            if ip and ip != HEADLESS:
                self._ips[ip] = _owner(obj)
        for port in _node_ports(spec):
            self._ports[port] = _owner(obj)

    def release(self, obj: Object) -> None:
        owner = _owner(obj)
        self._ips = {ip: o for ip, o in self._ips.items() if o != owner}
        self._ports = {p: o for p, o in self._ports.items() if o != owner}

    def admit(self, new: Object, old: Object | None) -> None:
        """Fill in and reserve what `new` needs (keeping what `old` held); 422 if taken."""
        spec = new["spec"]
        old_spec = (old or {}).get("spec") or {}
        ips = self._want_ips(new, old_spec)
        ports = self._want_node_ports(new, old_spec)
        owner = _owner(new)
        if old is not None:
            self.release(old)
        if ips is not None:
            spec["clusterIP"] = ips[0]
            spec["clusterIPs"] = ips
            for ip in ips:
                if ip != HEADLESS:
                    self._ips[ip] = owner
        for index, port in ports.items():
            spec["ports"][index]["nodePort"] = port
            self._ports[(port, spec["ports"][index].get("protocol", "TCP"))] = owner

    # ---- ClusterIPs ------------------------------------------------------------------

    def _want_ips(self, new: Object, old_spec: dict[str, Any]) -> list[str] | None:
        """spec.clusterIPs, one per family of spec.ipFamilies (which this fills in, with
        ipFamilyPolicy, as the real server's initIPFamilyFields does); None for none."""
        spec = new["spec"]
        if spec.get("type") == EXTERNAL_NAME:
            for field in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                spec.pop(field, None)
            return None
        asked = list(spec.get("clusterIPs") or [])
        if not asked and _cluster_ip(spec):
            asked = [_cluster_ip(spec)]
        elif asked and _cluster_ip(spec) and _cluster_ip(spec) != asked[0]:
            raise field_invalid("Service", _name(new), "spec.clusterIPs", "FieldValueInvalid",
                                asked, "element [0] must match clusterIP")
        families = self._families(new, asked)
        if asked == [HEADLESS]:
            return [HEADLESS]
        held = list(old_spec.get("clusterIPs") or ([_cluster_ip(old_spec)]
                                                   if _cluster_ip(old_spec) else []))
        if held and held[0] != HEADLESS and asked and asked[0] != held[0]:
            raise field_invalid("Service", _name(new), "spec.clusterIPs[0]",
                                "FieldValueInvalid", asked, "may not change once set")
        ips = []
        for index, family in enumerate(families):
            ip = asked[index] if index < len(asked) else ""
            if ip and ip in held:
                ips.append(ip)
            elif ip:
                ips.append(self._check_ip(new, index, family, ip))
            else:
                ips.append(self._next_ip(new, family, ips))
        return ips

    def _families(self, new: Object, asked: list[str]) -> list[str]:
        """spec.ipFamilies and spec.ipFamilyPolicy as the Service is stored with them: the
        families its clusterIPs name, those it asks for, and for a dual-stack policy the
        cluster's other family when it has one; 422 for what the cluster cannot give."""
        spec, name = new["spec"], _name(new)
        families = _families_of_ips(name, asked, list(spec.get("ipFamilies") or []))
        policy = spec.get("ipFamilyPolicy")
        if policy is None and (len(asked) == 2 or len(families) == 2):
            policy = "RequireDualStack"
        if asked == [HEADLESS] and not spec.get("selector"):
            # A selectorless headless Service takes every family the cluster has.
            policy = policy or "RequireDualStack"
            families = families or list(self.ranges.families)
        policy = policy or "SingleStack"
        self._check_policy(name, policy, len(asked), families)
        if not families:
            families = [self.ranges.families[0]]
        if policy != "SingleStack" and len(self.ranges.cidrs) == 2 and len(families) == 1:
            families += [f for f in self.ranges.families if f != families[0]]
        spec["ipFamilies"] = families
        spec["ipFamilyPolicy"] = policy
        return families

    def _check_policy(self, name: str, policy: str, ip_count: int, families: list[str]) -> None:
        for count, what in ((ip_count, "cluster IPs"), (len(families), "IP families")):
            if policy == "SingleStack" and count == 2:
                raise field_invalid("Service", name, "spec.ipFamilyPolicy", "FieldValueInvalid",
                                    policy, "must be 'RequireDualStack' or 'PreferDualStack' "
                                    f"when multiple {what} are specified")
        if len(self.ranges.cidrs) == 1 and (policy == "RequireDualStack" or len(families) == 2):
            raise field_invalid("Service", name, "spec.ipFamilyPolicy", "FieldValueInvalid",
                                policy, "this cluster is not configured for dual-stack "
                                "services")
        for index, family in enumerate(families):
            if family not in self.ranges.families:
                raise field_invalid("Service", name, f"spec.ipFamilies[{index}]",
                                    "FieldValueInvalid", families,
                                    f"ipfamily {family} is not configured on cluster")

    def _check_ip(self, new: Object, index: int, family: str, asked: str) -> str:
        fail = f"failed to allocate IP {asked}: "
        address = ipaddress.ip_address(asked)
        cidr = self.ranges.cidr_of(family)
        assert cidr is not None  # _families refused a family the cluster lacks
        last = cidr.broadcast_address if isinstance(cidr, ipaddress.IPv4Network) else None
        if address not in cidr or address in (cidr.network_address, last):
            raise field_invalid("Service", _name(new), "spec.clusterIPs", "FieldValueInvalid",
                                [asked], fail + f"the provided IP ({asked}) is not in the valid "
                                f"range. The range of valid IPs is {cidr}")
        if asked in self._ips:
            raise field_invalid("Service", _name(new), "spec.clusterIPs", "FieldValueInvalid",
                                [asked], fail + "provided IP is already allocated")
        return asked

    def _next_ip(self, new: Object, family: str, chosen: list[str]) -> str:
        cidr = self.ranges.cidr_of(family)
        assert cidr is not None
        # IPv4 loses the network and broadcast addresses, IPv6 only the network's (the
        # real allocator's range sizes).
        size = min(cidr.num_addresses, 1 << 24) - (2 if cidr.version == 4 else 1)
        # As the real allocator (ServiceIPStaticSubrange): dynamic addresses come from the
        # upper band first, so the lower one stays for fixed ones (kube-dns's .10).
        static = min(max(16, size // 16), 256, size)
        for offset in chain(_random_order(self._rng, static, size),
                            _random_order(self._rng, 0, static)):
            candidate = str(cidr.network_address + 1 + offset)
            if candidate not in self._ips and candidate not in chosen:
                return candidate
        raise ApiError(500, "InternalError", f'Internal error occurred: failed to allocate a '
                       f'serviceIP: range is full (Service "{_name(new)}")')

    # ---- NodePort --------------------------------------------------------------------

    def _want_node_ports(self, new: Object, old_spec: dict[str, Any]) -> dict[int, int]:
        """Port index -> node port for every port of a NodePort/LoadBalancer Service."""
        spec = new["spec"]
        ports = spec.get("ports") or []
        if spec.get("type") not in NODE_PORT_TYPES:
            for index, port in enumerate(ports):
                if port.get("nodePort"):
                    raise field_invalid("Service", _name(new), f"spec.ports[{index}].nodePort",
                                        "FieldValueForbidden", None, "may not be used when "
                                        f"`type` is '{spec.get('type', 'ClusterIP')}'")
            return {}
        owner = _owner(new)
        held = {(p.get("port"), p.get("protocol", "TCP")): p["nodePort"]
                for p in old_spec.get("ports") or [] if p.get("nodePort")}
        taken = {p for p, o in self._ports.items() if o != owner}
        wanted: dict[int, int] = {}
        for index, port in enumerate(ports):
            protocol = port.get("protocol", "TCP")
            number = port.get("nodePort") or held.get((port.get("port"), protocol))
            where = f"spec.ports[{index}].nodePort"
            if number:
                if number not in self.ranges.node_ports:
                    raise field_invalid("Service", _name(new), where, "FieldValueInvalid",
                                        number, "provided port is not in the valid range. The "
                                        f"range of valid ports is {self.ranges.node_ports.start}-"
                                        f"{self.ranges.node_ports.stop - 1}")
                if (number, protocol) in taken or (number, protocol) in {
                        (n, ports[i].get("protocol", "TCP")) for i, n in wanted.items()}:
                    raise field_invalid("Service", _name(new), where, "FieldValueInvalid",
                                        number, "provided port is already allocated")
            else:
                number = self._next_port(new, taken | {
                    (n, ports[i].get("protocol", "TCP")) for i, n in wanted.items()}, protocol)
            wanted[index] = int(number)
        return wanted

    def _next_port(self, new: Object, taken: set[tuple[int, str]], protocol: str) -> int:
        span = self.ranges.node_ports
        static = min(max(16, len(span) // 32), 128, len(span))
        for offset in chain(_random_order(self._rng, static, len(span)),
                            _random_order(self._rng, 0, static)):
            if (span[offset], protocol) not in taken:
                return span[offset]
        raise ApiError(500, "InternalError", "Internal error occurred: failed to allocate a "
                       f'nodePort: range is full (Service "{_name(new)}")')


def _families_of_ips(name: str, asked: list[str], families: list[str]) -> list[str]:
    """`families` completed with the family of each ClusterIP asked for beyond them; 422
    for an address that is none, or one whose family differs from the one listed."""
    for index, ip in enumerate(asked):
        if ip == HEADLESS:
            if index:
                raise field_invalid("Service", name, f"spec.clusterIPs[{index}]",
                                    "FieldValueInvalid", asked,
                                    "'None' must be the first and only value")
            continue
        try:
            family = IP_FAMILY_NAMES[ipaddress.ip_address(ip).version]
        except ValueError:
            raise field_invalid("Service", name, f"spec.clusterIPs[{index}]",
                                "FieldValueInvalid", ip, "must be a valid IP address, "
                                "(e.g. 10.9.8.7 or 2001:db8::ffff)") from None
        if index >= len(families):
            families.append(family)
        elif families[index] != family:
            raise field_invalid("Service", name, f"spec.ipFamilies[{index}]",
                                "FieldValueInvalid", families,
                                f"must be consistent with clusterIPs[{index}]")
    return families


def _random_order(rng: random.Random, first: int, stop: int) -> Iterator[int]:
    """first..stop-1 from a random start, wrapping: every offset once, none favoured."""
    size = stop - first
    if size <= 0:
        return
    start = rng.randrange(size)
    for step in range(size):
        yield first + (start + step) % size

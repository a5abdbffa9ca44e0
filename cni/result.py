"""The result of ADD as a typed value that renders itself for the requested spec version.

Held in the newest shape (1.1.0); `render` drops what older versions lack: 1.1.0 added
per-interface `mtu`, `socketPath` and `pciID` and the route attributes `mtu`, `advmss`,
`priority`, `table` and `scope`; before 1.0.0 every ip carried `"version": "4"|"6"`.
A prevResult (the result of the plugins before podwire in a chain, of any version) is
read into the same type, so ADD extends it and CHECK compares with it. Pure: no I/O.
The anchor is containernetworking/cni `pkg/types/100`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from podwire.cni.protocol import CniError, Code, version_tuple

JSON = dict[str, Any]


def _invalid(what: str) -> CniError:
    return CniError(Code.INVALID_CONFIG, f"prevResult is not a CNI result: {what}")


def _required(obj: JSON, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _invalid(f"{where}.{key} must be a string")
    return value


def _text(obj: JSON, key: str, where: str) -> str | None:
    return None if obj.get(key) is None else _required(obj, key, where)


def _number(obj: JSON, key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{where}.{key} must be an integer")
    return value


def _strings(obj: JSON, key: str) -> list[str] | None:
    value = obj.get(key)
    if value is not None and not (isinstance(value, list)
                                  and all(isinstance(v, str) for v in value)):
        raise _invalid(f"dns.{key} must be a list of strings")
    return value


def _objects(obj: JSON, key: str) -> list[JSON]:
    items = obj.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise _invalid(f"{key} must be a list of objects")
    return items


def _set(out: JSON, **values: Any) -> JSON:
    """`out` with every value that is set (the spec omits absent fields)."""
    out.update({k: v for k, v in values.items() if v is not None})
    return out


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str | None = None
    sandbox: str | None = None  # set for interfaces inside the pod
    mtu: int | None = None
    socket_path: str | None = None
    pci_id: str | None = None

    @classmethod
    def from_json(cls, obj: JSON) -> Interface:
        where = "interfaces[]"
        return cls(name=_required(obj, "name", where),
                   mac=_text(obj, "mac", where), sandbox=_text(obj, "sandbox", where),
                   mtu=_number(obj, "mtu", where), socket_path=_text(obj, "socketPath", where),
                   pci_id=_text(obj, "pciID", where))

    def render(self, version: tuple[int, int]) -> JSON:
        out = _set({"name": self.name}, mac=self.mac, sandbox=self.sandbox)
        if version >= (1, 1):
            _set(out, mtu=self.mtu, socketPath=self.socket_path, pciID=self.pci_id)
        return out


@dataclass(frozen=True)
class IPConfig:
    address: str  # CIDR notation, e.g. 10.244.1.5/32
    gateway: str | None = None
    interface: int | None = None  # index into the result's interfaces

    @classmethod
    def from_json(cls, obj: JSON) -> IPConfig:
        where = "ips[]"
        return cls(address=_required(obj, "address", where),
                   gateway=_text(obj, "gateway", where), interface=_number(obj, "interface", where))

    def render(self, version: tuple[int, int]) -> JSON:
        out = _set({"address": self.address}, gateway=self.gateway, interface=self.interface)
        if version < (1, 0):
            out["version"] = "6" if ":" in self.address else "4"
        return out


@dataclass(frozen=True)
class Route:
    dst: str
    gw: str | None = None
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None

    @classmethod
    def from_json(cls, obj: JSON) -> Route:
        where = "routes[]"
        return cls(dst=_required(obj, "dst", where), gw=_text(obj, "gw", where),
                   mtu=_number(obj, "mtu", where), advmss=_number(obj, "advmss", where),
                   priority=_number(obj, "priority", where), table=_number(obj, "table", where),
                   scope=_number(obj, "scope", where))

    def render(self, version: tuple[int, int]) -> JSON:
        out = _set({"dst": self.dst}, gw=self.gw)
        if version >= (1, 1):
            _set(out, mtu=self.mtu, advmss=self.advmss, priority=self.priority,
                 table=self.table, scope=self.scope)
        return out


@dataclass(frozen=True)
class DNS:
    nameservers: list[str] | None = None
    domain: str | None = None
    search: list[str] | None = None
    options: list[str] | None = None

    @classmethod
    def from_json(cls, obj: Any) -> DNS | None:
        """None when `obj` sets nothing (the spec omits an empty dns)."""
        if not obj:
            return None
        if not isinstance(obj, dict):
            raise _invalid("dns must be an object")
        return cls(nameservers=_strings(obj, "nameservers"), domain=_text(obj, "domain", "dns"),
                   search=_strings(obj, "search"), options=_strings(obj, "options"))

    def render(self) -> JSON:
        return _set({}, nameservers=self.nameservers, domain=self.domain, search=self.search,
                    options=self.options)


@dataclass(frozen=True)
class Result:
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS | None = None

    @classmethod
    def from_json(cls, obj: JSON | None) -> Result:
        """A prevResult of any spec version; an absent one is the empty result."""
        if obj is None:
            return cls()
        return cls(interfaces=[Interface.from_json(i) for i in _objects(obj, "interfaces")],
                   ips=[IPConfig.from_json(i) for i in _objects(obj, "ips")],
                   routes=[Route.from_json(r) for r in _objects(obj, "routes")],
                   dns=DNS.from_json(obj.get("dns")))

    def extended(self, interfaces: list[Interface], ips: list[IPConfig], routes: list[Route],
                 dns: DNS | None) -> Result:
        """This result with a plugin's own entries appended; `ips[].interface` of the
        new entries counts from the new interfaces (the plugin's first is 0)."""
        offset = len(self.interfaces)
        shifted = [replace(ip, interface=None if ip.interface is None else ip.interface + offset)
                   for ip in ips]
        return Result(self.interfaces + interfaces, self.ips + shifted, self.routes + routes,
                      dns or self.dns)

    def render(self, version: str) -> JSON:
        """The result as the spec's JSON object for `version` (a supported one)."""
        major_minor = version_tuple(version)[:2]
        out: JSON = {
            "cniVersion": version,
            "interfaces": [i.render(major_minor) for i in self.interfaces],
            "ips": [ip.render(major_minor) for ip in self.ips],
            "routes": [r.render(major_minor) for r in self.routes],
        }
        dns = self.dns.render() if self.dns is not None else {}
        if dns:
            out["dns"] = dns
        return out

"""The network configuration a runtime passes on stdin, parsed into one typed value.

Pure: no I/O. Unknown top-level keys are accepted because runtimes and conflists add
their own (`capabilities`, `runtimeConfig`, `args`, ...); inside `ipam`, which only
podwire reads, an unknown key is an unsupported field (code 2).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from podwire.cni.protocol import CniError, Code, version_tuple
from podwire.cni.shim import SUPPORTED_VERSIONS
from podwire.common.agentapi import DEFAULT_SOCKET

DEFAULT_MTU = 1450
# The first spec version that has each command (ADD and DEL are in every version).
_SINCE = {"CHECK": (0, 4, 0), "STATUS": (1, 1, 0), "GC": (1, 1, 0)}
_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_DNS_LIST_KEYS = ("nameservers", "search", "options")
# The longest prefixes that still leave an address to allocate (network, first host
# and last address are never handed out).
_LONGEST_PREFIX = {4: 30, 6: 126}

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Attachment:
    """One (container id, ifname) pair, the key of everything podwire makes for a pod."""

    container_id: str
    ifname: str


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    name: str
    agent_socket: str = str(DEFAULT_SOCKET)
    mtu: int = DEFAULT_MTU
    # ipam.subnet or ipam.subnets: at most one per family, IPv4 first; empty means the
    # agent's pod CIDRs.
    subnets: tuple[IPNetwork, ...] = ()
    dns: dict[str, Any] | None = None
    prev_result: dict[str, Any] | None = None
    # GC only: the attachments the runtime still uses; None when the key is absent.
    valid_attachments: tuple[Attachment, ...] | None = None


def _invalid(msg: str, details: str = "") -> CniError:
    return CniError(Code.INVALID_CONFIG, msg, details)


def peek_version(stdin: str) -> str | None:
    """The configuration's cniVersion if readable, for labelling an error object."""
    try:
        conf = json.loads(stdin)
    except ValueError:
        return None
    version = conf.get("cniVersion") if isinstance(conf, dict) else None
    return version if isinstance(version, str) else None


def _parse_subnet(raw: Any, where: str) -> IPNetwork:
    if not isinstance(raw, str):
        raise _invalid(f"{where} must be a string like 10.244.1.0/24 or fd00:10:244:1::/64")
    try:
        subnet = ipaddress.ip_network(raw, strict=True)
    except ValueError as exc:
        raise _invalid(f"{where} {raw!r} is not a network", str(exc)) from None
    longest = _LONGEST_PREFIX[subnet.version]
    if subnet.prefixlen > longest:
        raise _invalid(f"{where} {raw!r} is too small", f"use a prefix of /{longest} or shorter")
    return subnet


def _parse_subnets(ipam: Any) -> tuple[IPNetwork, ...]:
    """`ipam.subnet` (one network) or `ipam.subnets` (one per family), IPv4 first."""
    if ipam is None:
        return ()
    if not isinstance(ipam, dict):
        raise _invalid("ipam must be an object")
    unknown = sorted(set(ipam) - {"subnet", "subnets", "type"})
    if unknown:
        raise CniError(Code.UNSUPPORTED_FIELD, f"unsupported ipam field(s): {', '.join(unknown)}",
                       "podwire allocates addresses itself; only ipam.subnet or ipam.subnets "
                       "is read")
    if "type" in ipam and ipam["type"] != "podwire":
        raise CniError(Code.UNSUPPORTED_FIELD, f"ipam.type {ipam['type']!r} is not supported",
                       "podwire does its own IPAM; leave ipam.type out")
    if ipam.get("subnet") is not None and ipam.get("subnets") is not None:
        raise _invalid("ipam.subnet and ipam.subnets are exclusive", "give one of them")
    if ipam.get("subnet") is not None:
        return (_parse_subnet(ipam["subnet"], "ipam.subnet"),)
    raw = ipam.get("subnets")
    if raw is None:
        return ()
    if not isinstance(raw, list) or not 1 <= len(raw) <= 2:
        raise _invalid("ipam.subnets must be a list of one or two networks (one per family)")
    subnets = [_parse_subnet(item, f"ipam.subnets[{i}]") for i, item in enumerate(raw)]
    if len(subnets) == 2 and subnets[0].version == subnets[1].version:
        raise _invalid(f"ipam.subnets has two IPv{subnets[0].version} networks "
                       f"({subnets[0]}, {subnets[1]})", "give at most one per family")
    return tuple(sorted(subnets, key=lambda net: net.version))


def _parse_dns(dns: Any) -> dict[str, Any] | None:
    if dns is None:
        return None
    if not isinstance(dns, dict):
        raise _invalid("dns must be an object")
    out: dict[str, Any] = {}
    for key, value in dns.items():
        if key in _DNS_LIST_KEYS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _invalid(f"dns.{key} must be a list of strings")
            if key == "nameservers":
                for server in value:
                    try:
                        ipaddress.ip_address(server)
                    except ValueError:
                        raise _invalid(f"dns.nameservers: {server!r} is not an address") from None
        elif key == "domain":
            if not isinstance(value, str):
                raise _invalid("dns.domain must be a string")
        else:
            raise CniError(Code.UNSUPPORTED_FIELD, f"unsupported dns field {key!r}")
        out[key] = value
    return out or None


def _parse_attachments(raw: Any) -> tuple[Attachment, ...]:
    if not isinstance(raw, list):
        raise _invalid("cni.dev/valid-attachments must be a list")
    out = []
    for item in raw:
        if not (isinstance(item, dict) and isinstance(item.get("containerID"), str)
                and isinstance(item.get("ifname"), str)):
            raise _invalid("each cni.dev/valid-attachments item needs string containerID "
                           "and ifname")
        out.append(Attachment(item["containerID"], item["ifname"]))
    return tuple(out)


def _decode(stdin: str) -> dict[str, Any]:
    try:
        conf = json.loads(stdin)
    except ValueError as exc:
        raise CniError(Code.DECODE_FAILURE, "network configuration is not JSON", str(exc)) from None
    if not isinstance(conf, dict):
        raise CniError(Code.DECODE_FAILURE, "network configuration is not a JSON object")
    return conf


def _parse_version(version: Any, command: str) -> str:
    """The configuration's cniVersion, if podwire speaks it and it has `command`."""
    if not isinstance(version, str) or not version:
        raise _invalid("cniVersion is missing")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(Code.INCOMPATIBLE_VERSION, f"cniVersion {version!r} is not supported",
                       f"supported: {', '.join(SUPPORTED_VERSIONS)}")
    since = _SINCE.get(command)
    if since and version_tuple(version) < since:
        raise CniError(Code.INCOMPATIBLE_VERSION,
                       f"{command} needs cniVersion {'.'.join(map(str, since))} or later",
                       f"the configuration says {version}")
    return version


def _parse_mtu(mtu: Any) -> int:
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not 576 <= mtu <= 65535:
        raise _invalid(f"mtu {mtu!r} must be an integer between 576 and 65535")
    return mtu


def parse_netconf(stdin: str, command: str) -> NetConf:
    """Parse and validate the configuration for `command`; raises CniError."""
    conf = _decode(stdin)
    version = _parse_version(conf.get("cniVersion"), command)
    name = conf.get("name")
    if not isinstance(name, str) or not _NETWORK_NAME.match(name):
        raise _invalid(f"network name {name!r} is not valid",
                       "alphanumerics, '_', '.', '-', starting with an alphanumeric")
    socket_path = conf.get("agentSocket", str(DEFAULT_SOCKET))
    if not isinstance(socket_path, str) or not socket_path.startswith("/"):
        raise _invalid("agentSocket must be an absolute path")
    mtu = _parse_mtu(conf.get("mtu", DEFAULT_MTU))
    if conf.get("ipMasq"):
        raise CniError(Code.UNSUPPORTED_FIELD, "ipMasq is not supported",
                       "the agent's datapath decides masquerading")
    prev = conf.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _invalid("prevResult must be an object")
    attachments = None
    if command == "GC":
        if "cni.dev/valid-attachments" not in conf:
            raise _invalid("GC needs cni.dev/valid-attachments")
        attachments = _parse_attachments(conf["cni.dev/valid-attachments"])
    return NetConf(cni_version=version, name=name, agent_socket=socket_path, mtu=mtu,
                   subnets=_parse_subnets(conf.get("ipam")), dns=_parse_dns(conf.get("dns")),
                   prev_result=prev, valid_attachments=attachments)

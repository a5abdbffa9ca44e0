"""The CNI protocol (spec 1.1.0): commands, environment, error codes and result shapes.

Pure: no I/O. The agent's CNI service validates a request with these functions and
renders its answer with them, so every error a runtime sees is a spec error object.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any

from podwire.cni.shim import LATEST_VERSION, SUPPORTED_VERSIONS

__all__ = [
    "COMMANDS",
    "LATEST_VERSION",
    "SUPPORTED_VERSIONS",
    "CniEnv",
    "CniError",
    "Code",
    "PodArgs",
    "error_json",
    "parse_cni_args",
    "parse_env",
    "render_result",
    "version_tuple",
]

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")


class Code(enum.IntEnum):
    """Error codes: 1-99 are the spec's well-known codes, 100+ are podwire's own."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENV = 4
    IO_FAILURE = 5
    DECODE_FAILURE = 6
    INVALID_CONFIG = 7
    TRY_AGAIN_LATER = 11
    NOT_AVAILABLE = 50
    # podwire-specific
    POOL_EXHAUSTED = 100  # no free address left in the subnet
    WIRING_FAILED = 101  # netlink refused to build the pod's veth, address or routes
    DATAPATH_FAILED = 102  # the agent could not attach programs / write maps for the pod
    ALREADY_EXISTS = 103  # ADD for a container id + ifname that already has an attachment
    CHECK_FAILED = 104  # CHECK found the attachment differs from what ADD made
    INTERNAL = 199  # a bug in podwire; details name the exception, the agent logs it


class CniError(Exception):
    """A failure reported to the runtime as a spec error object."""

    def __init__(self, code: Code, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


def error_json(version: str | None, error: CniError) -> str:
    """The error object printed on stdout; `version` is the request's cniVersion."""
    body: dict[str, Any] = {
        "cniVersion": version if version in SUPPORTED_VERSIONS else LATEST_VERSION,
        "code": int(error.code),
        "msg": error.msg,
    }
    if error.details:
        body["details"] = error.details
    return json.dumps(body)


def version_tuple(version: str) -> tuple[int, int, int]:
    """'1.0.0' -> (1, 0, 0); callers pass only supported versions."""
    major, minor, patch = version.split(".")
    return int(major), int(minor), int(patch)


@dataclass(frozen=True)
class PodArgs:
    """The Kubernetes identity of a pod, carried in CNI_ARGS by CRI runtimes."""

    namespace: str = ""
    name: str = ""
    uid: str = ""
    infra_container_id: str = ""


@dataclass(frozen=True)
class CniEnv:
    """The CNI_* environment of one invocation, validated for its command."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    pod: PodArgs = field(default_factory=PodArgs)


# Spec: container ids start with an alphanumeric and continue with alphanumerics,
# underscore, dot or hyphen.
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_IFNAMSIZ = 16


def _check_ifname(name: str) -> None:
    # The kernel's dev_valid_name(): what `ip link` would refuse, we refuse first.
    if not name or len(name) >= _IFNAMSIZ or name in (".", ".."):
        raise CniError(Code.INVALID_ENV, f"CNI_IFNAME {name!r} is not a valid interface name",
                       "1 to 15 characters, not '.' or '..'")
    if any(c in "/:" or c.isspace() or not c.isprintable() for c in name):
        raise CniError(Code.INVALID_ENV, f"CNI_IFNAME {name!r} is not a valid interface name",
                       "no '/', ':', whitespace or control characters")


def parse_cni_args(raw: str) -> PodArgs:
    """Parse CNI_ARGS ('K=V;K=V'); keys other than the K8S_* ones are ignored."""
    values: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(Code.INVALID_ENV, f"CNI_ARGS item {pair!r} is not KEY=VALUE")
        values[key] = value
    return PodArgs(
        namespace=values.get("K8S_POD_NAMESPACE", ""),
        name=values.get("K8S_POD_NAME", ""),
        uid=values.get("K8S_POD_UID", ""),
        infra_container_id=values.get("K8S_POD_INFRA_CONTAINER_ID", ""),
    )


def parse_env(env: dict[str, str]) -> CniEnv:
    """Validate the environment for its CNI_COMMAND (spec: 'Parameters')."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(Code.INVALID_ENV, f"CNI_COMMAND {command!r} is not one of "
                       f"{', '.join(COMMANDS)}")
    if command in ("STATUS", "GC", "VERSION"):
        return CniEnv(command=command)
    required = ("CNI_CONTAINERID", "CNI_IFNAME") + (("CNI_NETNS",) if command != "DEL" else ())
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise CniError(Code.INVALID_ENV, f"{command} needs {', '.join(missing)}")
    container_id = env["CNI_CONTAINERID"]
    if not _CONTAINER_ID.match(container_id):
        raise CniError(Code.INVALID_ENV, f"CNI_CONTAINERID {container_id!r} is not valid",
                       "alphanumerics, '_', '.', '-', starting with an alphanumeric")
    _check_ifname(env["CNI_IFNAME"])
    netns = env.get("CNI_NETNS", "")
    if netns and (not netns.startswith("/") or "\0" in netns):
        raise CniError(Code.INVALID_ENV, f"CNI_NETNS {netns!r} is not an absolute path")
    return CniEnv(command=command, container_id=container_id, netns=netns,
                  ifname=env["CNI_IFNAME"], pod=parse_cni_args(env.get("CNI_ARGS", "")))


def render_result(version: str, result: dict[str, Any]) -> dict[str, Any]:
    """Render a result built in 1.1.0 shape for the requested cniVersion.

    1.1.0 added per-interface `mtu` (and `socketPath`, `pciID`) and route attributes;
    before 1.0.0 every ip carried `"version": "4"|"6"`.
    """
    out = json.loads(json.dumps(result))
    out["cniVersion"] = version
    major_minor = version_tuple(version)[:2]
    if major_minor < (1, 1):
        for iface in out.get("interfaces", []):
            for key in ("mtu", "socketPath", "pciID"):
                iface.pop(key, None)
        for route in out.get("routes", []):
            for key in ("mtu", "advmss", "priority", "table", "scope"):
                route.pop(key, None)
    if major_minor < (1, 0):
        for ip in out.get("ips", []):
            ip["version"] = "6" if ":" in ip["address"] else "4"
    else:
        for ip in out.get("ips", []):
            ip.pop("version", None)
    return out

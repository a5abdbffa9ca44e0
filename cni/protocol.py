"""The CNI protocol (spec 1.1.0): commands, environment, error codes and error objects.

Pure: no I/O. The commands validate a request with these functions, and every failure
a runtime sees is a spec error object. What podwire-cni must know to answer without
the agent (the versions, its own error codes, the error object) is defined in the shim
and imported from there.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from podwire.cni import shim

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
SUPPORTED_VERSIONS = shim.SUPPORTED_VERSIONS


class Code(enum.IntEnum):
    """Error codes: 1-99 are the spec's well-known codes, 100+ are podwire's own."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENV = shim.CODE_INVALID_ENV
    IO_FAILURE = 5
    DECODE_FAILURE = shim.CODE_DECODE_FAILURE
    INVALID_CONFIG = 7
    TRY_AGAIN_LATER = shim.CODE_TRY_AGAIN_LATER
    NOT_AVAILABLE = shim.CODE_NOT_AVAILABLE
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
    return shim.error_json(version, int(error.code), error.msg, error.details)


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

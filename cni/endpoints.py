"""The record of the pods this node wired, on disk, so a restarted agent knows them.

One JSON file per endpoint, named after its host veth (unique per container id and
ifname), written atomically (temporary file + rename). ADD writes it, DEL and GC
remove it, CHECK compares with it; the agent reads it to restore its datapath.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Endpoint:
    """One pod interface wired by ADD.

    `ip` is its first address (IPv4 when it has one), `ips` every address, one per
    family, `ip` first; a record written before dual stack has only `ip`.
    """

    container_id: str
    ifname: str
    netns: str
    network: str
    host_ifname: str
    host_ifindex: int
    host_mac: str
    pod_mac: str
    ip: str
    mtu: int
    pod_namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    ips: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # JSON gives a list; a record of an older agent has none.
        object.__setattr__(self, "ips", tuple(self.ips) or (self.ip,))

    def address(self, version: int) -> str | None:
        """The address of family `version` (4 or 6), None if it has none."""
        return next((ip for ip in self.ips if (":" in ip) == (version == 6)), None)

    @property
    def pod(self) -> str:
        """'namespace/name' for logs, or the container id outside Kubernetes."""
        if self.pod_name:
            return f"{self.pod_namespace}/{self.pod_name}" if self.pod_namespace else self.pod_name
        return self.container_id


class EndpointStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, host_ifname: str) -> Path:
        return self.root / f"{host_ifname}.json"

    def put(self, endpoint: Endpoint) -> None:
        path = self._path(endpoint.host_ifname)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:  # the node's first endpoint
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            os.write(fd, json.dumps(dataclasses.asdict(endpoint), sort_keys=True).encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def get(self, host_ifname: str) -> Endpoint | None:
        try:
            return Endpoint(**json.loads(self._path(host_ifname).read_text()))
        except FileNotFoundError:
            return None

    def remove(self, host_ifname: str) -> None:
        self._path(host_ifname).unlink(missing_ok=True)

    def all(self) -> list[Endpoint]:
        """Every record, by host veth; one a concurrent DEL removes while this reads is
        left out, not an error."""
        if not self.root.exists():
            return []
        found = (self.get(p.name.removesuffix(".json")) for p in sorted(self.root.glob("*.json")))
        return [endpoint for endpoint in found if endpoint is not None]

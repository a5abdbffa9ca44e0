"""Shared pieces of the real-runtime tests: an offline busybox image, a node agent."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

from podwire.cni import executable

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from cni_agent import NodeAgent

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
# A dual-stack node's pod CIDRs (the stand-in agent's --pod-cidr, one per family).
DUAL_STACK_CIDRS = "10.77.0.0/24,fd00:77::/64"
APPLETS = ("sh", "ip", "ping", "sleep", "cat", "hostname", "nc")


def busybox_rootfs_tar(path: Path) -> Path:
    """A rootfs tarball holding static busybox and a few applet links: an image
    without a registry."""
    with tarfile.open(path, "w") as tar:
        for name in ("bin", "etc", "proc", "sys", "dev", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return path


def cni_bin_dir(path: Path) -> Path:
    """A node's CNI bin dir: podwire written as on a host (cni/executable.py), plus
    loopback."""
    path.mkdir(parents=True, exist_ok=True)
    executable.install(path / "podwire")
    (path / "loopback").symlink_to("/usr/lib/cni/loopback")
    return path


def forward_ipv6(agent: NodeAgent) -> None:
    """IPv6 forwarding in the node netns. The real agent's datapath redirects from pod to
    pod without the node's stack; the stand-in agent has no datapath, so pod to pod goes
    through the node's routes, which for IPv6 forward only with forwarding on for all."""
    agent.in_node(["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])


def write_conflist(conf_dir: Path, name: str, socket: Path, version: str = "1.0.0") -> Path:
    conf_dir.mkdir(parents=True, exist_ok=True)
    conflist: dict[str, Any] = {"cniVersion": version, "name": name, "plugins": [
        {"type": "podwire", "agentSocket": str(socket)}]}
    path = conf_dir / f"10-{name}.conflist"
    path.write_text(json.dumps(conflist))
    return path


def unmount_under(root: Path) -> None:
    """Unmount whatever a runtime left mounted below `root` (deepest first)."""
    import subprocess

    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(root))), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)

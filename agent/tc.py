"""Attach pinned TC programs: clsact qdisc, bpf filter in direct-action.

Filters are written with `replace` on a fixed handle and priority, so re-attaching
(an agent restart, a new program) swaps the program in one netlink call and the
link is never without one. A pod's veth, attached on every ADD, takes its qdisc and
both filters in one round trip of podwire's own rtnetlink client (`attach_hooks`);
the node's devices, attached once, and the reads go through pyroute2.
"""

from __future__ import annotations

import errno
import logging
import os

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podwire.agent import bpfsys
from podwire.cni import rtnl

log = logging.getLogger(__name__)

PARENTS = {"ingress": "ffff:fff2", "egress": "ffff:fff3"}
FILTER_HANDLE = 1
FILTER_PRIO = 1


def ensure_clsact(ipr: IPRoute, ifindex: int) -> None:
    try:
        ipr.tc("add", "clsact", ifindex)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def attach(ipr: IPRoute, ifindex: int, hook: str, prog_path: str) -> None:
    """Attach the program pinned at prog_path on ifindex's hook ('ingress'/'egress')."""
    if hook not in PARENTS:
        raise ValueError(f"unknown tc hook {hook!r}; use 'ingress' or 'egress'")
    ensure_clsact(ipr, ifindex)
    fd = bpfsys.obj_get(prog_path)
    try:
        ipr.tc("replace-filter", "bpf", ifindex, handle=FILTER_HANDLE, fd=fd,
               name=os.path.basename(prog_path), parent=PARENTS[hook], prio=FILTER_PRIO,
               protocol=0x0003, direct_action=True)  # ETH_P_ALL
    finally:
        os.close(fd)
    log.info("event=tc_attach ifindex=%d hook=%s prog=%s", ifindex, hook, prog_path)


def _handle(text: str) -> int:
    """A tc handle written 'major:minor' (hex) as the kernel's u32."""
    major, minor = text.split(":")
    return (int(major, 16) << 16) | int(minor or "0", 16)


def attach_hooks(sock: rtnl.Rtnl, ifindex: int, programs: dict[str, str]) -> None:
    """Attach a pinned program on each of ifindex's hooks ({'ingress': path, ...}): the
    clsact qdisc and every filter in one netlink round trip."""
    unknown = set(programs) - set(PARENTS)
    if unknown:
        raise ValueError(f"unknown tc hook {sorted(unknown)}; use 'ingress' or 'egress'")
    fds: list[int] = []
    try:
        for path in programs.values():
            fds.append(bpfsys.obj_get(path))
        sock.run(rtnl.add_clsact(ifindex), *(
            rtnl.replace_bpf_filter(ifindex, _handle(PARENTS[hook]), FILTER_HANDLE,
                                    FILTER_PRIO, fd, os.path.basename(path))
            for (hook, path), fd in zip(programs.items(), fds, strict=True)))
    finally:
        for fd in fds:
            os.close(fd)
    log.info("event=tc_attach ifindex=%d hooks=%s", ifindex,
             ",".join(f"{hook}:{path}" for hook, path in programs.items()))


def detach(ipr: IPRoute, ifindex: int) -> None:
    """Remove the clsact qdisc (and with it every filter); absent is fine."""
    try:
        ipr.tc("del", "clsact", ifindex)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            raise


def detach_filter(ipr: IPRoute, ifindex: int, hook: str) -> None:
    """Remove only podwire's filter from a hook (a device podwire shares with others);
    absent is fine."""
    try:
        ipr.tc("del-filter", "bpf", ifindex, handle=FILTER_HANDLE, parent=PARENTS[hook],
               prio=FILTER_PRIO, protocol=0x0003)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            raise


def attached_program_names(ipr: IPRoute, ifindex: int, hook: str) -> list[str]:
    """Names of the bpf filters on a hook (for status and tests)."""
    names = []
    for msg in ipr.get_filters(ifindex, parent=PARENTS[hook]):
        opts = msg.get_attr("TCA_OPTIONS")
        if opts is not None and opts.get_attr("TCA_BPF_NAME"):
            names.append(opts.get_attr("TCA_BPF_NAME"))
    return names

"""The CNI commands, each reading like the spec: ADD, DEL, CHECK, STATUS and GC.

They stand on the small libraries beside them: the IPAM store and allocator, veth
wiring (which enters the pod's netns), the endpoint records and the typed Result. The
datapath is the agent's: ADD calls the node's endpoint hook before it answers, so the
datapath is in force when the runtime starts the pod, and DEL and GC call it before
they unwire. A failed ADD undoes every step it made, newest first. cni/plugin.py
decodes a request and calls these.
"""

from __future__ import annotations

import ipaddress
import logging
from contextlib import ExitStack

from podwire.cni import allocator, ipamstore, veth
from podwire.cni.config import Attachment, NetConf
from podwire.cni.endpoints import Endpoint
from podwire.cni.ipamstore import IPAddress, IpamStore, IPNetwork
from podwire.cni.node import Node
from podwire.cni.protocol import CniEnv, CniError, Code
from podwire.cni.result import DNS, Interface, IPConfig, Result, Route

log = logging.getLogger("podwire.cni")


def cmd_add(node: Node, env: CniEnv, conf: NetConf) -> Result:
    ready, reason = node.hook.ready()
    if not ready:
        raise CniError(Code.TRY_AGAIN_LATER, "podwire agent is not ready", reason)
    prev = Result.from_json(conf.prev_result)
    attachment = Attachment(env.container_id, env.ifname)
    host_name = veth.host_ifname(attachment)
    stores = [IpamStore(node.ipam_root, subnet) for subnet in _subnets(node, conf)]
    ips = allocator.allocate_all(stores, attachment, conf.name)
    with node.adding(host_name), ExitStack() as undo:
        for store in stores:
            undo.callback(store.release, attachment)
        undo.callback(veth.unwire, host_name)
        wired = veth.wire(env.netns, env.ifname, host_name, ips, conf.mtu)
        endpoint = Endpoint(
            container_id=env.container_id, ifname=env.ifname, netns=env.netns,
            network=conf.name, host_ifname=host_name, host_ifindex=wired.host_ifindex,
            host_mac=wired.host_mac, pod_mac=wired.pod_mac, ip=str(ips[0]), mtu=conf.mtu,
            pod_namespace=env.pod.namespace, pod_name=env.pod.name, pod_uid=env.pod.uid,
            ips=tuple(map(str, ips)))
        undo.callback(node.endpoints.remove, host_name)
        node.endpoints.put(endpoint)
        undo.callback(_detach, node, endpoint, "rollback_hook_failed")
        _attach(node, endpoint)
        undo.pop_all()
    log.info("event=endpoint_added pod=%s container=%s ifname=%s ip=%s host_if=%s",
             endpoint.pod, env.container_id, env.ifname, ",".join(endpoint.ips), host_name)
    return prev.extended(
        interfaces=[Interface(host_name, wired.host_mac),
                    Interface(env.ifname, wired.pod_mac, sandbox=env.netns, mtu=conf.mtu)],
        ips=[IPConfig(_host_cidr(ip), gateway=str(veth.gateway(ip.version)), interface=1)
             for ip in ips],
        routes=[Route(_DEFAULT_ROUTE[ip.version], gw=str(veth.gateway(ip.version)))
                for ip in ips],
        dns=DNS(**conf.dns) if conf.dns else None)


def cmd_del(node: Node, env: CniEnv, conf: NetConf) -> None:
    attachment = Attachment(env.container_id, env.ifname)
    host_name = veth.host_ifname(attachment)
    _remove(node, host_name, node.endpoints.get(host_name))
    freed = [ip for ipam in ipamstore.stores(node.ipam_root) for ip in ipam.release(attachment)]
    log.info("event=endpoint_deleted container=%s ifname=%s freed=%s", env.container_id,
             env.ifname, ",".join(map(str, freed)) or "-")


def cmd_check(node: Node, env: CniEnv, conf: NetConf) -> None:
    if conf.prev_result is None:
        raise CniError(Code.INVALID_CONFIG, "CHECK needs prevResult")
    prev = Result.from_json(conf.prev_result)
    host_name = veth.host_ifname(Attachment(env.container_id, env.ifname))
    endpoint = node.endpoints.get(host_name)
    if endpoint is None:
        raise CniError(Code.UNKNOWN_CONTAINER,
                       f"no attachment {env.container_id}/{env.ifname} on this node")
    problems = []
    ips = [ipaddress.ip_address(ip) for ip in endpoint.ips]
    listed = {ip.address for ip in prev.ips}
    problems += [f"prevResult lacks address {_host_cidr(ip)}" for ip in ips
                 if _host_cidr(ip) not in listed]
    if (env.ifname, env.netns) not in {(i.name, i.sandbox) for i in prev.interfaces}:
        problems.append(f"prevResult lacks interface {env.ifname} in {env.netns}")
    problems += veth.verify(env.netns, env.ifname, host_name, ips)
    if problems:
        raise CniError(Code.CHECK_FAILED, f"attachment {endpoint.pod} is not as ADD left it",
                       "; ".join(problems))


def cmd_status(node: Node, env: CniEnv, conf: NetConf) -> None:
    ready, reason = node.hook.ready()
    if not ready:
        raise CniError(Code.NOT_AVAILABLE, "podwire agent is not ready", reason)


def cmd_gc(node: Node, env: CniEnv, conf: NetConf) -> None:
    """Release every attachment of this network that the runtime no longer uses, and
    every host veth that no record explains (an ADD cut short by a crash)."""
    valid = set(conf.valid_attachments or ())
    valid_hosts = {veth.host_ifname(a) for a in valid}
    removed = 0
    for endpoint in node.endpoints.all():
        if endpoint.network == conf.name and endpoint.host_ifname not in valid_hosts:
            with node.attachment_lock(endpoint.host_ifname):
                # A DEL may have taken it while GC waited for the lock.
                current = node.endpoints.get(endpoint.host_ifname)
                if current is None:
                    continue
                _remove(node, endpoint.host_ifname, current)
            removed += 1
    explained = {e.host_ifname for e in node.endpoints.all()} | valid_hosts | node.being_added()
    for name in veth.host_links():
        if name not in explained:
            veth.unwire(name)
            removed += 1
    freed = [a for ipam in ipamstore.stores(node.ipam_root)
             for a in ipam.release_all_except(conf.name, valid)]
    log.info("event=cni_gc network=%s kept=%d removed=%d freed=%d", conf.name, len(valid),
             removed, len(freed))


_DEFAULT_ROUTE = {4: "0.0.0.0/0", 6: "::/0"}


def _host_cidr(ip: IPAddress) -> str:
    """The address as the result lists it: a host prefix (/32 or /128)."""
    return f"{ip}/{ip.max_prefixlen}"


def _subnets(node: Node, conf: NetConf) -> tuple[IPNetwork, ...]:
    """Where to allocate from, one subnet per family, IPv4 first."""
    subnets = conf.subnets or node.pod_cidrs
    if not subnets:
        raise CniError(Code.INVALID_CONFIG, "no subnet to allocate from",
                       "set ipam.subnet (or ipam.subnets) in the network configuration or "
                       "the agent's pod CIDRs")
    return subnets


def _attach(node: Node, endpoint: Endpoint) -> None:
    """Put the pod's datapath in force through the agent's hook."""
    try:
        node.hook.added(endpoint)
    except Exception as exc:
        log.exception("event=endpoint_hook_failed pod=%s", endpoint.pod)
        raise CniError(Code.DATAPATH_FAILED, f"datapath setup failed for {endpoint.pod}",
                       f"{type(exc).__name__}: {exc}") from None


def _detach(node: Node, endpoint: Endpoint, event: str) -> None:
    try:
        node.hook.removed(endpoint)
    except Exception:
        # The veth goes anyway; the agent's resync drops what the hook left.
        log.exception("event=%s pod=%s", event, endpoint.pod)


def _remove(node: Node, host_name: str, endpoint: Endpoint | None) -> None:
    """Take one pod off the node: datapath first, then the veth, then the record."""
    if endpoint is not None:
        _detach(node, endpoint, "endpoint_hook_failed")
    veth.unwire(host_name)
    node.endpoints.remove(host_name)

"""The agent's side of the CNI plugin: executes ADD, DEL, CHECK, STATUS and GC.

`podwire-cni` forwards each runtime call here (`POST /cni`). A command reads like the
spec: validate the environment and configuration, allocate an address, wire the veth,
then call the daemon's synchronous hook so the datapath (programs on the host veth,
map entries) is in force before ADD returns. Every failure is a spec error object;
a failed ADD rolls back everything it made.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podwire.agent.endpoints import Endpoint, EndpointStore
from podwire.agent.localapi import LocalApi, Request, Response
from podwire.cni import wiring
from podwire.cni.config import Attachment, NetConf, parse_netconf, peek_version
from podwire.cni.ipam import IpamStore
from podwire.cni.protocol import CniEnv, CniError, Code, error_json, parse_env, render_result
from podwire.cni.shim import version_info

log = logging.getLogger("podwire.cni")

EndpointHook = Callable[[Endpoint], None]
ReadyCheck = Callable[[], tuple[bool, str]]


@dataclass(frozen=True)
class CniResponse:
    """What the shim relays: its exit code, stdout and stderr."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""


def _no_hook(endpoint: Endpoint) -> None:
    """Default hook: no datapath to program (tests of the CNI alone)."""


def _always_ready() -> tuple[bool, str]:
    return True, ""


class CniService:
    """Executes CNI commands for one node.

    `on_endpoint_added` runs before ADD answers; if it raises, the ADD fails and is
    rolled back. `on_endpoint_removed` runs before DEL/GC unwire a pod. `ready` decides
    STATUS and whether ADD is accepted: an agent that is not ready refuses ADD with
    code 11 (try again later: the runtime retries) and answers STATUS with code 50.
    """

    def __init__(
        self,
        state_dir: Path,
        pod_cidr: str | None = None,
        on_endpoint_added: EndpointHook = _no_hook,
        on_endpoint_removed: EndpointHook = _no_hook,
        ready: ReadyCheck = _always_ready,
    ) -> None:
        self.pod_cidr = ipaddress.IPv4Network(pod_cidr) if pod_cidr else None
        self.ipam_root = state_dir / "ipam"
        self.endpoints = EndpointStore(state_dir / "endpoints")
        self.on_endpoint_added = on_endpoint_added
        self.on_endpoint_removed = on_endpoint_removed
        self.ready = ready
        # Serialises commands on one attachment (a runtime retrying while we work).
        self._attachment_locks: weakref.WeakValueDictionary[str, threading.Lock] = (
            weakref.WeakValueDictionary())
        self._locks_guard = threading.Lock()
        # Host veths of ADDs still in progress: GC must not take them for orphans.
        self._in_flight: set[str] = set()

    def register(self, api: LocalApi) -> None:
        api.route("POST", "/cni", self._serve)

    def _serve(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            body = None
        if not (isinstance(body, dict) and isinstance(body.get("env"), dict)
                and isinstance(body.get("stdin"), str)):
            err = CniError(Code.DECODE_FAILURE, "CNI request must be {command, env, stdin}")
            return Response(200, {"exit_code": int(err.code), "stdout": error_json(None, err),
                                  "stderr": ""})
        env = {str(k): str(v) for k, v in body["env"].items()}
        if isinstance(body.get("command"), str):
            env.setdefault("CNI_COMMAND", body["command"])
        answer = self.handle(env, body["stdin"])
        return Response(200, {"exit_code": answer.exit_code, "stdout": answer.stdout,
                              "stderr": answer.stderr})

    def handle(self, env: dict[str, str], stdin: str) -> CniResponse:
        """Execute one CNI invocation; never raises."""
        version = peek_version(stdin)
        started = time.monotonic()
        command = env.get("CNI_COMMAND", "")
        try:
            cni_env = parse_env(env)
            if cni_env.command == "VERSION":
                # The shim answers VERSION itself; answering here too keeps the service
                # a complete plugin for callers that talk to the socket directly.
                return CniResponse(0, version_info(stdin))
            conf = parse_netconf(stdin, cni_env.command)
            stdout = self._dispatch(cni_env, conf)
        except CniError as err:
            log.warning("event=cni_error command=%s container=%s code=%d msg=%r details=%r",
                        command, env.get("CNI_CONTAINERID", ""), err.code, err.msg, err.details)
            return CniResponse(int(err.code), error_json(version, err))
        except OSError as exc:
            io_error = CniError(Code.IO_FAILURE, f"I/O failure during {command}",
                                f"{type(exc).__name__}: {exc}")
            log.warning("event=cni_error command=%s code=5 details=%r", command,
                        io_error.details)
            return CniResponse(int(io_error.code), error_json(version, io_error))
        except Exception as exc:
            log.exception("event=cni_internal_error command=%s", command)
            bug = CniError(Code.INTERNAL, f"podwire internal error during {command}",
                           f"{type(exc).__name__}: {exc}")
            return CniResponse(int(bug.code), error_json(version, bug))
        log.info("event=cni_done command=%s container=%s ifname=%s ms=%.1f", command,
                 env.get("CNI_CONTAINERID", ""), env.get("CNI_IFNAME", ""),
                 (time.monotonic() - started) * 1000)
        return CniResponse(0, stdout)

    def _dispatch(self, env: CniEnv, conf: NetConf) -> str:
        if env.command == "STATUS":
            return self.status()
        if env.command == "GC":
            return self.gc(conf)
        with self._attachment_lock(wiring.host_ifname(Attachment(env.container_id, env.ifname))):
            if env.command == "ADD":
                return self.add(env, conf)
            if env.command == "DEL":
                return self.delete(env, conf)
            return self.check(env, conf)

    def _attachment_lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._attachment_locks.get(key)
            if lock is None:
                lock = threading.Lock()
                self._attachment_locks[key] = lock
            return lock

    def _ipam_stores(self) -> list[IpamStore]:
        """Every subnet this node has allocated from. DEL and GC search them all: a DEL
        may come without the ipam section its ADD had (the runtime's config changed)."""
        if not self.ipam_root.exists():
            return []
        stores = []
        for path in sorted(self.ipam_root.iterdir()):
            try:
                subnet = ipaddress.IPv4Network(path.name.replace("_", "/"))
            except ValueError:
                continue
            stores.append(IpamStore(self.ipam_root, subnet))
        return stores

    def _subnet(self, conf: NetConf) -> ipaddress.IPv4Network:
        subnet = conf.subnet or self.pod_cidr
        if subnet is None:
            raise CniError(Code.INVALID_CONFIG, "no subnet to allocate from",
                           "set ipam.subnet in the network configuration or the agent's "
                           "pod CIDR")
        return subnet

    def add(self, env: CniEnv, conf: NetConf) -> str:
        ready, reason = self.ready()
        if not ready:
            raise CniError(Code.TRY_AGAIN_LATER, "podwire agent is not ready", reason)
        attachment = Attachment(env.container_id, env.ifname)
        host_name = wiring.host_ifname(attachment)
        ipam = IpamStore(self.ipam_root, self._subnet(conf))
        ip = ipam.allocate(attachment, conf.name)
        with self._locks_guard:
            self._in_flight.add(host_name)
        endpoint: Endpoint | None = None
        try:
            wired = wiring.wire(env.netns, env.ifname, host_name, ip, conf.mtu)
            endpoint = Endpoint(
                container_id=env.container_id, ifname=env.ifname, netns=env.netns,
                network=conf.name, host_ifname=host_name, host_ifindex=wired.host_ifindex,
                host_mac=wired.host_mac, pod_mac=wired.pod_mac, ip=str(ip), mtu=conf.mtu,
                pod_namespace=env.pod.namespace, pod_name=env.pod.name, pod_uid=env.pod.uid)
            self.endpoints.put(endpoint)
            try:
                self.on_endpoint_added(endpoint)
            except Exception as exc:
                log.exception("event=endpoint_hook_failed pod=%s", endpoint.pod)
                raise CniError(Code.DATAPATH_FAILED, f"datapath setup failed for {endpoint.pod}",
                               f"{type(exc).__name__}: {exc}") from None
        except BaseException:
            self._rollback(attachment, host_name, ipam, endpoint)
            raise
        finally:
            with self._locks_guard:
                self._in_flight.discard(host_name)
        log.info("event=endpoint_added pod=%s container=%s ifname=%s ip=%s host_if=%s",
                 endpoint.pod, env.container_id, env.ifname, ip, host_name)
        return self._result(conf, endpoint)

    def _rollback(self, attachment: Attachment, host_name: str, ipam: IpamStore,
                  endpoint: Endpoint | None) -> None:
        if endpoint is not None:
            try:
                self.on_endpoint_removed(endpoint)
            except Exception:
                log.exception("event=rollback_hook_failed pod=%s", endpoint.pod)
            self.endpoints.remove(host_name)
        wiring.unwire(host_name)
        ipam.release(attachment)

    def _result(self, conf: NetConf, endpoint: Endpoint) -> str:
        prev = conf.prev_result or {}
        interfaces = list(prev.get("interfaces") or [])
        offset = len(interfaces)
        interfaces += [
            {"name": endpoint.host_ifname, "mac": endpoint.host_mac},
            {"name": endpoint.ifname, "mac": endpoint.pod_mac, "sandbox": endpoint.netns,
             "mtu": endpoint.mtu},
        ]
        result: dict[str, Any] = {
            "interfaces": interfaces,
            "ips": list(prev.get("ips") or []) + [
                {"address": f"{endpoint.ip}/32", "gateway": str(wiring.GATEWAY),
                 "interface": offset + 1}],
            "routes": list(prev.get("routes") or []) + [
                {"dst": "0.0.0.0/0", "gw": str(wiring.GATEWAY)}],
        }
        dns = conf.dns or prev.get("dns")
        if dns:
            result["dns"] = dns
        return json.dumps(render_result(conf.cni_version, result))

    def delete(self, env: CniEnv, conf: NetConf) -> str:
        attachment = Attachment(env.container_id, env.ifname)
        host_name = wiring.host_ifname(attachment)
        self._remove(host_name, self.endpoints.get(host_name))
        freed = [ip for store in self._ipam_stores() for ip in store.release(attachment)]
        log.info("event=endpoint_deleted container=%s ifname=%s freed=%s", env.container_id,
                 env.ifname, ",".join(map(str, freed)) or "-")
        return ""

    def _remove(self, host_name: str, endpoint: Endpoint | None) -> None:
        """Take one pod off the node: datapath first, then the veth, then the record."""
        if endpoint is not None:
            try:
                self.on_endpoint_removed(endpoint)
            except Exception:
                # The veth goes anyway; the daemon's resync drops what the hook left.
                log.exception("event=endpoint_hook_failed pod=%s", endpoint.pod)
        wiring.unwire(host_name)
        self.endpoints.remove(host_name)

    def check(self, env: CniEnv, conf: NetConf) -> str:
        if conf.prev_result is None:
            raise CniError(Code.INVALID_CONFIG, "CHECK needs prevResult")
        host_name = wiring.host_ifname(Attachment(env.container_id, env.ifname))
        endpoint = self.endpoints.get(host_name)
        if endpoint is None:
            raise CniError(Code.UNKNOWN_CONTAINER,
                           f"no attachment {env.container_id}/{env.ifname} on this node")
        prev_ips = {str(ip.get("address")) for ip in conf.prev_result.get("ips") or []
                    if isinstance(ip, dict)}
        prev_ifaces = {(i.get("name"), i.get("sandbox"))
                       for i in conf.prev_result.get("interfaces") or [] if isinstance(i, dict)}
        problems = []
        if f"{endpoint.ip}/32" not in prev_ips:
            problems.append(f"prevResult lacks address {endpoint.ip}/32")
        if (env.ifname, env.netns) not in prev_ifaces:
            problems.append(f"prevResult lacks interface {env.ifname} in {env.netns}")
        problems += wiring.verify(env.netns, env.ifname, host_name,
                                  ipaddress.IPv4Address(endpoint.ip))
        if problems:
            raise CniError(Code.CHECK_FAILED, f"attachment {endpoint.pod} is not as ADD left it",
                           "; ".join(problems))
        return ""

    def status(self) -> str:
        ready, reason = self.ready()
        if not ready:
            raise CniError(Code.NOT_AVAILABLE, "podwire agent is not ready", reason)
        return ""

    def gc(self, conf: NetConf) -> str:
        """Release every attachment of this network that the runtime no longer uses,
        and every host veth that no record explains (an ADD cut short by a crash)."""
        valid = set(conf.valid_attachments or ())
        valid_hosts = {wiring.host_ifname(a) for a in valid}
        removed = 0
        for endpoint in self.endpoints.all():
            if endpoint.network == conf.name and endpoint.host_ifname not in valid_hosts:
                with self._attachment_lock(endpoint.host_ifname):
                    # A DEL may have taken it while GC waited for the lock.
                    current = self.endpoints.get(endpoint.host_ifname)
                    if current is None:
                        continue
                    self._remove(endpoint.host_ifname, current)
                removed += 1
        recorded = {e.host_ifname for e in self.endpoints.all()}
        with self._locks_guard:
            busy = set(self._in_flight)
        for name in wiring.host_links():
            if name not in recorded and name not in valid_hosts and name not in busy:
                wiring.unwire(name)
                removed += 1
        freed = [a for store in self._ipam_stores()
                 for a in store.release_all_except(conf.name, valid)]
        log.info("event=cni_gc network=%s kept=%d removed=%d freed=%d", conf.name, len(valid),
                 removed, len(freed))
        return ""

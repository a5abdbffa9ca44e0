"""The lab kubelet: one process standing in for the kubelet and runtime of every node.

A watcher thread keeps a cache of all Pods (list, then watch from its resourceVersion;
relist on any error) and binds unscheduled pods to the least loaded node (a scheduler
stand-in). One worker thread per node reconciles level-based: every pod bound to its
node gets a namespace, a CNI ADD and servers on its container ports, then its status;
every pod that is gone gets its servers closed, a CNI DEL and its namespace removed.
All pods' servers live in one selector loop (`EchoServer`).

A hostNetwork pod gets no namespace and no CNI call, as with a real kubelet: its servers
run in its node's namespace and its podIP is the node's address. One whose node ports
another hostNetwork pod on the node holds is rejected (`hostports`).

Run: `python -m podwire.lab.kubelet --prefix pwlab --nodes 2`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from podwire.lab import cniexec, hostports, netns
from podwire.lab.clusterdns import resolv_conf
from podwire.lab.echo import EchoServer, Port
from podwire.lab.images import Program, program
from podwire.lab.kube import Kube
from podwire.lab.layout import DNS_SERVICE_IP, LabLayout, NodeLayout

log = logging.getLogger("podwire.lab.kubelet")

WATCH_SECONDS = 60
PROGRAM_READY_TIMEOUT = 30.0
PROGRAM_STOP_GRACE = 5.0
RETRY_FIRST = 1.0
RETRY_MAX = 15.0


def pod_ref(pod: dict[str, Any]) -> str:
    return f"{pod['metadata'].get('namespace', 'default')}/{pod['metadata']['name']}"


def pod_ports(pod: dict[str, Any]) -> list[Port]:
    """Every container port of the pod, TCP unless said otherwise."""
    return [Port(int(p["containerPort"]), p.get("protocol", "TCP"))
            for c in pod["spec"].get("containers", [])
            for p in c.get("ports") or []]


def wants_sandbox(pod: dict[str, Any], node: str) -> bool:
    """Bound to `node`, not being deleted, not finished."""
    return (pod["spec"].get("nodeName") == node
            and not pod["metadata"].get("deletionTimestamp")
            and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"))


def pick_node(pods: list[dict[str, Any]], nodes: list[str],
              pod: dict[str, Any] | None = None) -> str | None:
    """The node with the fewest pods bound to it where `pod`'s node ports are free (the
    NodePorts filter); ties go to the first. None when no node fits. The cluster's own
    pods (kube-system: cluster DNS) do not count, so workloads spread as without them."""
    load = {n: 0 for n in nodes}
    for other in pods:
        if (other.get("metadata") or {}).get("namespace") == "kube-system":
            continue
        bound = other["spec"].get("nodeName")
        if bound in load:
            load[bound] += 1
    fits = [n for n in nodes if pod is None or hostports.conflict(
        pod, [p for p in pods if p["spec"].get("nodeName") == n and wants_sandbox(p, n)])
        is None]
    return min(fits, key=lambda n: (load[n], nodes.index(n)), default=None)


@dataclass
class _Running:
    sandbox: cniexec.Sandbox | None  # None: a hostNetwork pod, in the node's namespace
    result: dict[str, Any]
    ips: list[str]  # status.podIPs: one per family, the first is podIP
    pod: dict[str, Any]


class PodCache:
    """All pods by uid, with a condition the node workers wait on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pods: dict[str, dict[str, Any]] = {}
        self.generation = 0

    def replace(self, pods: list[dict[str, Any]]) -> None:
        with self.cond:
            self.pods = {p["metadata"]["uid"]: p for p in pods}
            self.generation += 1
            self.cond.notify_all()

    def event(self, kind: str, pod: dict[str, Any]) -> None:
        with self.cond:
            if kind == "DELETED":
                self.pods.pop(pod["metadata"]["uid"], None)
            else:
                self.pods[pod["metadata"]["uid"]] = pod
            self.generation += 1
            self.cond.notify_all()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.cond:
            return list(self.pods.values())


class NodeWorker:
    """Reconciles the sandboxes of one node against the pods bound to it."""

    def __init__(self, layout: LabLayout, node: NodeLayout, kube: Kube, cache: PodCache,
                 servers: EchoServer, stop: threading.Event) -> None:
        self.layout, self.node, self.kube, self.cache = layout, node, kube, cache
        self.servers, self.stop = servers, stop
        self.running: dict[str, _Running] = {}
        self.programs: dict[str, subprocess.Popen[bytes]] = {}
        self.retry_delay: dict[str, float] = {}
        self.rejected: set[str] = set()
        self.conflist = json.loads(node.conf_file.read_text())

    def run(self) -> None:
        seen = -1

        def woken() -> bool:
            return self.cache.generation != seen or self.stop.is_set()

        while not self.stop.is_set():
            with self.cache.cond:
                # Failed pods are retried on the next change or after their delay.
                wait = min(self.retry_delay.values(), default=None)
                self.cache.cond.wait_for(woken, timeout=wait)
                seen = self.cache.generation
            if not self.stop.is_set():
                self.reconcile()

    def reconcile(self) -> None:
        desired = {p["metadata"]["uid"]: p for p in self.cache.snapshot()
                   if wants_sandbox(p, self.node.name)}
        for uid in [u for u in self.running if u not in desired]:
            self.teardown(uid)
        for uid in [u for u in self.retry_delay if u not in desired]:
            del self.retry_delay[uid]
        self.rejected &= set(desired)
        # Oldest first, so of two hostNetwork pods wanting one port the first one keeps it.
        for uid, pod in sorted(desired.items(), key=lambda item: (
                item[1]["metadata"].get("creationTimestamp") or "", pod_ref(item[1]))):
            if uid in self.rejected:
                continue
            if uid not in self.running:
                self.setup(pod)
            elif not self._reported(pod, self.running[uid].ips):
                # A status write that failed (or was overwritten) is made again.
                self._report_running(pod, self.running[uid].ips)

    @staticmethod
    def _reported(pod: dict[str, Any], ips: list[str]) -> bool:
        status = pod.get("status", {})
        return (status.get("phase") == "Running" and status.get("podIP") == ips[0]
                and [entry.get("ip") for entry in status.get("podIPs") or []] == ips)

    def sandbox(self, pod: dict[str, Any]) -> cniexec.Sandbox:
        uid = pod["metadata"]["uid"]
        return cniexec.Sandbox(
            namespace=pod["metadata"].get("namespace", "default"),
            name=pod["metadata"]["name"], uid=uid,
            container_id=hashlib.sha256(uid.encode()).hexdigest(),
            netns_name=self.layout.pod_netns(uid))

    def setup(self, pod: dict[str, Any]) -> None:
        if hostports.host_network(pod):
            self.setup_host_network(pod)
            return
        sb = self.sandbox(pod)
        ref = pod_ref(pod)
        try:
            # A namespace left by an earlier failed attempt is stale: start clean.
            netns.remove(sb.netns_name)
            netns.create(sb.netns_name)
            result = cniexec.add_network(self.conflist, sb, self.node.netns,
                                         self.layout.bin_dir)
            ips = cniexec.pod_ips(result)
            self._write_pod_files(pod, sb)
            lab_program = program(pod)
            if lab_program is None:
                self.servers.add(sb.uid, sb.netns_name, ref, pod_ports(pod))
            else:
                self._start_program(sb, lab_program)
        except (cniexec.CniError, OSError, ValueError) as exc:
            self._failed(pod, sb, exc)
            return
        self.running[sb.uid] = _Running(sb, result, ips, pod)
        self.retry_delay.pop(sb.uid, None)
        log.info("event=pod_started pod=%s node=%s ip=%s netns=%s", ref, self.node.name,
                 ",".join(ips), sb.netns_name)
        self._report_running(pod, ips)

    def _write_pod_files(self, pod: dict[str, Any], sb: cniexec.Sandbox) -> None:
        """The pod's resolv.conf as the real kubelet writes it for dnsPolicy ClusterFirst
        (lab pods have no filesystem of their own: the probe reads it from here)."""
        pod_dir = self.layout.pod_dir(sb.uid)
        pod_dir.mkdir(parents=True, exist_ok=True)
        self.layout.resolv_conf(sb.uid).write_text(resolv_conf(DNS_SERVICE_IP, sb.namespace))

    def _start_program(self, sb: cniexec.Sandbox, lab_program: Program) -> None:
        """Run the pod's program in its namespace; return once it is Ready."""
        log_path = self.layout.pod_dir(sb.uid) / "program.log"
        argv = ["nsenter", f"--net={netns.path(sb.netns_name)}", sys.executable, "-m",
                lab_program.module, "--kubeconfig", str(self.layout.node_kubeconfig),
                *lab_program.args]
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        self.programs[sb.uid] = proc
        log.info("event=program_started pod=%s/%s pid=%d module=%s", sb.namespace, sb.name,
                 proc.pid, lab_program.module)
        if lab_program.ready_port is None:
            return
        deadline = time.monotonic() + PROGRAM_READY_TIMEOUT
        while not _accepts(sb.netns_name, lab_program.ready_port):
            if proc.poll() is not None:
                raise OSError(f"{lab_program.module} exited with {proc.returncode} "
                              f"(log: {log_path})")
            if time.monotonic() > deadline or self.stop.is_set():
                raise OSError(f"{lab_program.module} not ready on port "
                              f"{lab_program.ready_port} after {PROGRAM_READY_TIMEOUT:.0f}s")
            self.stop.wait(0.05)

    def stop_program(self, uid: str) -> None:
        proc = self.programs.pop(uid, None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(PROGRAM_STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def setup_host_network(self, pod: dict[str, Any]) -> None:
        """Serve the pod's ports in the node's namespace, at the node's address."""
        uid, ref = pod["metadata"]["uid"], pod_ref(pod)
        why = hostports.conflict(pod, [r.pod for r in self.running.values()])
        if why is not None:
            log.warning("event=pod_rejected pod=%s node=%s reason=%s message=%r", ref,
                        self.node.name, hostports.REJECT_REASON, why)
            if self._patch_status(pod, {"phase": "Failed", "reason": hostports.REJECT_REASON,
                                        "message": f"Pod was rejected: {why}"}):
                self.rejected.add(uid)
                self.retry_delay.pop(uid, None)
            else:  # said again on the next reconcile
                self.retry_delay[uid] = RETRY_FIRST
            return
        try:
            self.servers.add(uid, self.node.netns, ref, pod_ports(pod))
        except OSError as exc:
            delay = min(self.retry_delay.get(uid, RETRY_FIRST / 2) * 2, RETRY_MAX)
            self.retry_delay[uid] = delay
            log.warning("event=pod_setup_failed pod=%s node=%s retry_in=%.1f error=%s", ref,
                        self.node.name, delay, exc)
            self._patch_status(pod, {"phase": "Pending", "reason": "HostPortsUnavailable",
                                     "message": str(exc)[:500]})
            return
        self.running[uid] = _Running(None, {}, [self.node.underlay_ip], pod)
        self.retry_delay.pop(uid, None)
        log.info("event=pod_started pod=%s node=%s ip=%s host_network=true", ref,
                 self.node.name, self.node.underlay_ip)
        self._report_running(pod, [self.node.underlay_ip])

    def _report_running(self, pod: dict[str, Any], ips: list[str]) -> None:
        uid = pod["metadata"]["uid"]
        if self._patch_status(pod, {
                "phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips],
                "hostIP": self.node.underlay_ip, "hostIPs": [{"ip": self.node.underlay_ip}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "message": None, "reason": None}):
            self.retry_delay.pop(uid, None)
        else:
            self.retry_delay[uid] = RETRY_FIRST

    def _failed(self, pod: dict[str, Any], sb: cniexec.Sandbox, exc: Exception) -> None:
        ref = pod_ref(pod)
        delay = min(self.retry_delay.get(sb.uid, RETRY_FIRST / 2) * 2, RETRY_MAX)
        self.retry_delay[sb.uid] = delay
        log.warning("event=pod_setup_failed pod=%s node=%s retry_in=%.1f error=%s", ref,
                    self.node.name, delay, exc)
        self._release(sb, None)
        self._patch_status(pod, {"phase": "Pending", "reason": "NetworkSetupFailed",
                                 "message": str(exc)[:500]})

    def teardown(self, uid: str) -> None:
        entry = self.running.pop(uid)
        if entry.sandbox is None:
            self.servers.remove(uid)
        else:
            self._release(entry.sandbox, entry.result)
        log.info("event=pod_stopped pod=%s node=%s", pod_ref(entry.pod), self.node.name)

    def _release(self, sb: cniexec.Sandbox, result: dict[str, Any] | None) -> None:
        self.servers.remove(sb.uid)
        self.stop_program(sb.uid)
        shutil.rmtree(self.layout.pod_dir(sb.uid), ignore_errors=True)
        try:
            cniexec.del_network(self.conflist, sb, self.node.netns, self.layout.bin_dir,
                                prev_result=result)
        except cniexec.CniError as exc:
            log.warning("event=cni_del_failed pod=%s/%s error=%s", sb.namespace, sb.name, exc)
        netns.remove(sb.netns_name)

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> bool:
        md = pod["metadata"]
        try:
            self.kube.core.patch_namespaced_pod_status(
                md["name"], md.get("namespace", "default"), {"status": status},
                _preload_content=False, _content_type="application/merge-patch+json")
        except (ApiException, HTTPError) as exc:
            # The pod may be gone (the next reconcile tears its sandbox down) or the API
            # server busy (the next reconcile writes again).
            log.warning("event=status_patch_failed pod=%s error=%s", pod_ref(pod), exc)
            return False
        return True


def _accepts(netns_name: str, port: int) -> bool:
    """A tcpSocket probe: does the pod's namespace accept a connection on `port`?"""
    try:
        sock = netns.socket_in(netns_name, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return False
    with sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Kubelet:
    """The watcher (and scheduler stand-in) plus one worker per node."""

    def __init__(self, layout: LabLayout, nodes: list[NodeLayout]) -> None:
        self.layout, self.nodes = layout, nodes
        self.kube = Kube(layout.host_kubeconfig)
        self.cache = PodCache()
        self.servers = EchoServer()
        self.stop = threading.Event()
        self.workers = [NodeWorker(layout, n, self.kube, self.cache, self.servers, self.stop)
                        for n in nodes]

    def start(self) -> None:
        threading.Thread(target=self.servers.serve_forever, name="servers", daemon=True).start()
        for w in self.workers:
            threading.Thread(target=w.run, name=f"node-{w.node.name}", daemon=True).start()
        threading.Thread(target=self.watch_pods, name="watch", daemon=True).start()

    def shutdown(self) -> None:
        self.stop.set()
        with self.cache.cond:
            self.cache.cond.notify_all()
        self.servers.stop()
        for worker in self.workers:
            for uid in list(worker.programs):
                worker.stop_program(uid)

    def watch_pods(self) -> None:
        backoff = RETRY_FIRST
        while not self.stop.is_set():
            try:
                listed = self.kube.list_pods()
                self.cache.replace(listed["items"])
                self.schedule(listed["items"])
                self._follow(listed["metadata"]["resourceVersion"])
                backoff = RETRY_FIRST
            except Exception as exc:  # noqa: BLE001 - any failure: relist after a pause
                log.warning("event=watch_error error=%r retry_in=%.1f", exc, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, RETRY_MAX)

    def _follow(self, resource_version: str) -> None:
        stream = watch.Watch().stream(
            self.kube.core.list_pod_for_all_namespaces, resource_version=resource_version,
            timeout_seconds=WATCH_SECONDS, allow_watch_bookmarks=True)
        for event in stream:
            if self.stop.is_set():
                return
            kind, pod = event["type"], event["raw_object"]
            if kind == "ERROR":
                log.info("event=watch_expired reason=%s", pod.get("reason"))
                return
            if kind == "BOOKMARK":
                continue
            self.cache.event(kind, pod)
            if kind != "DELETED":
                self.schedule([pod])

    def schedule(self, pods: list[dict[str, Any]]) -> None:
        """Bind pods without spec.nodeName, as a scheduler would."""
        names = [n.name for n in self.nodes]
        for pod in pods:
            if pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            node = pick_node(self.cache.snapshot(), names, pod)
            md = pod["metadata"]
            if node is None:
                log.warning("event=unschedulable pod=%s reason=%s", pod_ref(pod),
                            hostports.REJECT_REASON)
                continue
            try:
                bound = self.kube.patch("Pod", md["name"], md.get("namespace", "default"),
                                        {"spec": {"nodeName": node}})
            except ApiException as exc:
                log.warning("event=bind_failed pod=%s status=%s", pod_ref(pod), exc.status)
                continue
            # Count it at once so the next pod of a burst goes elsewhere.
            self.cache.event("MODIFIED", bound)
            log.info("event=pod_bound pod=%s node=%s", pod_ref(pod), node)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podwire.lab.kubelet", description=__doc__)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    layout = LabLayout(args.prefix)
    kubelet = Kubelet(layout, layout.nodes(args.nodes))
    # Blocked before any thread starts, so only the main thread's sigwait receives them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    kubelet.start()
    log.info("event=kubelet_started nodes=%d", args.nodes)
    signal.sigwait(stop_signals)
    kubelet.shutdown()
    log.info("event=kubelet_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

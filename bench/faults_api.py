"""Fault scenario api-outage: the API server stops, comes back and has compacted its
history, while pods and policies churn and denied pairs are probed.

Namespace fltapi holds srv1 (node1), isolated by a base policy throughout, and clients
deny1 (node1) and deny2 (node2) that no state allows. A churn thread creates and deletes
pods (role=client or role=other, either node) and allow policies on srv1 for the
clients, writing without pause whenever the API answers. Each outage freezes the API
server (SIGSTOP: it neither answers nor closes a connection, as a server that stopped),
then resumes it with every watch cut and the event history compacted, which is how a
restarted API server whose store compacted meanwhile meets its clients: the agents'
watches end, resume from a revision that is gone, get 410 and must relist. (The lab's
API server keeps its objects in memory, so a real restart would come back empty.)

Counted: per outage, the time from the resume until every agent reports the API's
revision applied; and denied-pair connections and datagrams delivered at all times
(the listeners in srv1 and the agents' flow records, as in policy-churn). Expected:
reconverged within the agent's relist time (< 10 s), and 0 denied traffic delivered.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import urllib.request
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from podwire.bench.faults_lab import Lab, log, stop_loops
from podwire.bench.faults_policy import PORT, FlowWatch, Listener, Prober
from podwire.bench.figures import Expectation, Figures
from podwire.common import agentapi
from podwire.lab import manifests, procs, samples, workload

NAMESPACE = "fltapi"
CHURN_PODS = 6  # alive at once: a few per node
RECONVERGE_TIMEOUT = 120.0


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def base_objects() -> list[dict[str, Any]]:
    return [samples.namespace(NAMESPACE),
            policy("srv-isolated", {"podSelector": {"matchLabels": {"pod": "srv1"}},
                                    "policyTypes": ["Ingress"]}),
            samples.pod(NAMESPACE, "srv1", (80,), node="node1"),
            samples.pod(NAMESPACE, "deny1", (80,), {"role": "never"}, "node1"),
            samples.pod(NAMESPACE, "deny2", (80,), {"role": "never"}, "node2")]


class Churn:
    """Pod and policy writes one after another while the API answers."""

    def __init__(self, lab: Lab, seed: int) -> None:
        self.lab, self.rng = lab, random.Random(seed)
        self.writes = self.errors = 0
        self.api_up = threading.Event()
        self.api_up.set()
        self.stop = threading.Event()
        self.pods: list[str] = []
        self.thread = threading.Thread(target=self._run, name="churn", daemon=True)

    def _run(self) -> None:
        serial = 0
        while not self.stop.is_set():
            self.api_up.wait()
            serial += 1
            try:
                if self.rng.random() < 0.5:
                    self._pod(serial)
                else:
                    self._policy()
                self.writes += 1
            except (ApiException, HTTPError) as exc:  # a write the outage cut short
                self.errors += 1
                log(f"api-outage: churn write failed: {exc}")
            time.sleep(0.05)

    def marker(self) -> int:
        """Label the namespace with a new value; the revision of that write."""
        done = self.lab.kube.patch("Namespace", NAMESPACE, None, {"metadata": {"labels": {
            "outage": str(time.monotonic_ns())}}})
        return int(done["metadata"]["resourceVersion"])

    def _pod(self, serial: int) -> None:
        if len(self.pods) >= CHURN_PODS:
            self.lab.kube.delete("Pod", self.pods.pop(0), NAMESPACE)
            return
        name = f"churn{serial}"
        role = self.rng.choice(["client", "other"])
        node = self.rng.choice(["node1", "node2"])
        self.lab.kube.create("Pod", samples.pod(NAMESPACE, name, (80,), {"role": role}, node),
                             NAMESPACE)
        self.pods.append(name)

    def _policy(self) -> None:
        name = f"allow-{self.rng.randrange(3)}"
        if self.lab.kube.read("NetworkPolicy", name, NAMESPACE) is not None:
            self.lab.kube.delete("NetworkPolicy", name, NAMESPACE)
            return
        peers = self.rng.choice([{"matchLabels": {"role": "client"}},
                                 {"matchExpressions": [{"key": "role", "operator": "In",
                                                        "values": ["client", "other"]}]}])
        self.lab.kube.create("NetworkPolicy", policy(name, {
            "podSelector": {"matchLabels": {"pod": "srv1"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": peers}],
                         "ports": [{"port": PORT}, {"port": 80}]}]}), NAMESPACE)


def admin(lab: Lab, action: str) -> None:
    """The lab API server's fault injection (POST /podwire-admin/<action>)."""
    url = f"http://127.0.0.1:{lab.state.api_port}/podwire-admin/{action}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10):
        pass


def reconverge_seconds(lab: Lab, started: float, wanted: int) -> float:
    """Seconds from `started` until every agent has applied revision `wanted`."""
    nodes = lab.state.node_layouts()
    while any((agentapi.revision(n.socket_path) or 0) < wanted for n in nodes):
        if time.monotonic() - started > RECONVERGE_TIMEOUT:
            return float("inf")
        time.sleep(0.05)
    return time.monotonic() - started


def relists(lab: Lab) -> int:
    """Relists after 410 the agents logged so far."""
    return sum(n.agent_log.read_bytes().count(b"event=relist ")
               for n in lab.state.node_layouts())


def outage(lab: Lab, churn: Churn, seconds: float) -> float:
    """One outage; seconds from the resume until the agents caught up."""
    pid = procs.running(lab.layout.pidfile("apiserver"))
    if pid is None:
        raise RuntimeError("the lab API server is not running")
    churn.api_up.clear()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    # A write the agents cannot have seen (their watches are cut before it), whose event
    # the compaction then removes: only a relist brings it to them.
    admin(lab, "drop-watches")
    marker = churn.marker()
    admin(lab, "compact")
    churn.api_up.set()
    return reconverge_seconds(lab, resumed, marker)


def run(lab: Lab, outages: int, seconds: float, seed: int) -> Figures:
    workload.apply(lab.kube, lab.state, manifests.parse(samples.to_yaml(base_objects())))
    pods = lab.pods()
    srv_ns, srv_ip = pods[f"{NAMESPACE}/srv1"]
    denied_ips = [pods[f"{NAMESPACE}/{d}"][1] for d in ("deny1", "deny2")]
    watch = FlowWatch(lab, lambda r: r["verdict"] == "FORWARDED" and "ingress" in r["evaluated"]
                      and r["source"]["ip"] in denied_ips and r["destination"]["ip"] == srv_ip)
    listener = Listener([srv_ns])
    probers = [Prober(pods[f"{NAMESPACE}/{d}"][0], [srv_ip]) for d in ("deny1", "deny2")]
    churn = Churn(lab, seed)
    times: list[float] = []
    relists_before = relists(lab)
    try:
        for thread in (watch.thread, *(p.thread for p in probers), churn.thread):
            thread.start()
        for k in range(outages):
            time.sleep(2.0)  # churn between outages
            times.append(outage(lab, churn, seconds))
            log(f"api-outage: {k + 1}/{outages}: agents caught up {times[-1]:.2f} s after "
                f"the resume")
        churn.stop.set()
        churn.thread.join()
        workload.wait_agents(lab.kube, lab.state, RECONVERGE_TIMEOUT)
        time.sleep(1.0)
    finally:
        churn.api_up.set()
        stop_loops([(churn.stop, churn.thread), (watch.stop, watch.thread),
                    *((p.stop, p.thread) for p in probers)])
        listener.close()
    watch.poll()
    scalars = {"outages": outages, "outage seconds": seconds, "writes": churn.writes,
               "agent relists after 410": relists(lab) - relists_before,
               "writes that failed": churn.errors,
               "denied TCP attempts": sum(p.tcp_attempts for p in probers),
               "denied UDP datagrams sent": sum(p.udp_sent for p in probers)}
    scalars |= {f"reconverged s after resume {k + 1}": t for k, t in enumerate(times)}
    denied = {"denied-pair TCP connections accepted":
              sum(listener.accepted[ip] for ip in denied_ips),
              "denied-pair UDP datagrams received":
              sum(listener.datagrams[ip] for ip in denied_ips),
              "denied-pair flows the datapath forwarded": len(watch.kept)}
    return Figures(
        scalars={f"api-outage: {k}": float(v) for k, v in scalars.items()},
        expectations=[Expectation("api-outage", "longest time to reconverge",
                                  max(times, default=0.0), "<", 10, "s"),
                      *(Expectation("api-outage", k, v, "==", 0) for k, v in denied.items())])

"""The per-node agent: loads the datapath, watches Kubernetes, programs maps by diff.

One lock serialises every change to the model and the maps, whether it comes from a
watch event or from a CNI ADD/DEL, so the maps always reflect one consistent model.
The agent publishes `revision`: the Kubernetes resourceVersion up to which it has
consumed every stream *and* applied the resulting map changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from podwire.agent import heap, nodesetup, programmer, structs
from podwire.agent.aggregates import AggregateReporter
from podwire.agent.config import AgentConfig
from podwire.agent.datapath import Datapath
from podwire.agent.desired import LocalEndpoint, NodeState
from podwire.agent.dispatch import apply_event
from podwire.agent.flownames import ModelNames
from podwire.agent.flows import EVENT_V4_SIZE, FlowEnricher, FlowHistory, RawFlow
from podwire.agent.localapi import LocalApi, ObserveApi, Request, Response, cni_route
from podwire.agent.maps import BpfMap
from podwire.agent.metrics import AgentMetrics
from podwire.agent.nodes import NodeInfo
from podwire.agent.reconcile import MapContents, apply_to, plan
from podwire.agent.traceapi import TraceApi
from podwire.agent.watch import WatchSet, api_client
from podwire.cni.endpoints import Endpoint
from podwire.cni.node import EndpointHook, Node, pod_networks
from podwire.common.flow import FlowRecord

log = logging.getLogger("podwire.agent")

# History entries named under one hold of the model's lock.
_NAMING_CHUNK = 256
# The flow reader reads the rings (one per CPU) every FLOW_READ_INTERVAL seconds,
# FLOW_READ_BATCH records a ring a read at most. A default ring (2 MiB: 26.2k IPv4 events of
# 80 bytes with their headers, 18.7k IPv6 ones of 112) holds 10 ms of 1.9M events/s or more
# from its CPU, several times what one CPU's datapath emits.
FLOW_READ_BATCH = 4096
FLOW_READ_INTERVAL = 0.01


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.state = NodeState(config.node_name)
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.ready = False
        self.not_ready_reason = "starting"
        self.revision = 0  # published: handled and applied to the maps
        self._handled_revision = 0
        self.reconciles = 0
        self.startup: dict[str, float] = {}
        self.last_reconcile_seconds = 0.0
        self.datapath: Datapath | None = None
        self.installed = MapContents()
        self.flows = FlowHistory(config.history_size)
        self.flows_short = 0  # ring records shorter than an IPv4 flow_event: not kept
        self.api = LocalApi(config.socket_path)
        self.observe_api = (ObserveApi(config.observe_address, config.observe_port)
                            if config.observe_port else None)
        self.cni = Node(config.state_dir, hook=EndpointHook(
            added=self._endpoint_added,
            removed=self._endpoint_removed,
            ready=lambda: (self.ready, self.not_ready_reason),
        ))
        self.watches: WatchSet | None = None
        self._threads: list[threading.Thread] = []
        self.metrics = AgentMetrics(datapath=lambda: self.datapath,
                                    endpoints=lambda: len(self.state.endpoints),
                                    revision=lambda: self.revision,
                                    ready=lambda: self.ready,
                                    agent_lost=lambda: {"agent": self.flows_short,
                                                        "readers": self.flows.lost})

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Come up: datapath, API, watches, first full sync; then serve changes."""
        self.api.route("GET", "/healthz", self._healthz)
        self.api.route("GET", "/status", self._status)
        self.api.route("GET", "/flows", self._flows)
        self.api.route("POST", "/cni", cni_route(self.cni))
        self.trace = TraceApi(self)
        self.trace.route(self.api)
        self.api.start()
        if self.observe_api is not None:
            for path, handler in (("/healthz", self._healthz), ("/status", self._status),
                                  ("/flows", self._flows)):
                self.observe_api.route("GET", path, handler)
            if self.config.observe_trace:
                self.trace.route(self.observe_api)
            self.observe_api.start()
        self.metrics.serve(self.config.metrics_address, self.config.metrics_port)

        started = time.perf_counter()
        self.datapath = Datapath.load(self.config)
        self.startup["datapath_seconds"] = time.perf_counter() - started
        self._attach_host_sockets(self.datapath)
        stray_slots = programmer.delete_stray_slots(self.datapath)
        self.installed = programmer.read_installed(self.datapath)
        with self.lock:
            self.state.adopt(self.installed)
        log.info("event=adopted endpoints=%d ipcache=%d policy=%d lb_services=%d "
                 "lb_backends=%d stray_lb_slots_deleted=%d", len(self.installed.endpoints),
                 len(self.installed.ipcache), len(self.installed.policy),
                 len(self.installed.lb_services), len(self.installed.lb_backends), stray_slots)

        self.watches = WatchSet(api_client(self.config.kubeconfig,
                                           self.config.service_account_dir,
                                           self.config.api_server),
                                kinds=watched_kinds(self.config),
                                # The model keeps what it needs of every object; whole
                                # copies in the caches would double the agent's memory.
                                keep_objects=False)
        sync_started = time.perf_counter()
        self.watches.start()
        while not self.watches.has_synced():
            # Into the model as they come: queued until every kind has synced, a large
            # cluster's objects were all decoded at once (10,000 Services and 50,000
            # endpoints: tens of MB the heap kept after they were freed).
            self._drain_events(wait=0.05)  # has_synced is looked at again as often as before
            if self.stopping.is_set():
                return
        self._drain_events(wait=0.0)

        node = self._own_node()
        self._set_up_node(node)
        self._restore_endpoints()
        with self.lock:
            self._reconcile()
            self.revision = self._handled_revision
        self.ready, self.not_ready_reason = True, ""
        frozen = heap.settle()
        # List of every kind, model, full compute and map diff: the resync a restart costs.
        self.startup["resync_seconds"] = time.perf_counter() - sync_started
        self.startup["total_seconds"] = time.perf_counter() - started
        log.info("event=ready node=%s revision=%d endpoints=%d frozen_objects=%d",
                 self.config.node_name, self.revision, len(self.state.endpoints), frozen)

        self._spawn("watch-loop", self._watch_loop)
        self._spawn("flow-reader", self._read_flows)
        self._spawn("flow-aggregates", self._report_aggregates)
        self.trace.open()
        self._spawn("trace-reader", self.trace.read_loop)
        self._spawn("conntrack-gc", self._conntrack_gc_loop)

    def stop(self) -> None:
        self.stopping.set()
        if self.watches is not None:
            self.watches.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self.api.close()
        if self.observe_api is not None:
            self.observe_api.close()
        self.metrics.close()
        self.trace.close()
        if self.datapath is not None:
            self.datapath.close()

    def _attach_host_sockets(self, datapath: Datapath) -> None:
        """With Services on, the node's own processes reach ClusterIPs through the socket
        programs; with them off (kube-proxy serves), they are detached."""
        if not self.config.services:
            datapath.detach_host_sockets()
            return
        try:
            datapath.attach_host_sockets()
        except OSError as e:
            # Pods still reach Services; the node's own processes do not.
            log.error("event=host_sockets_failed error=%s", e)

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # ------------------------------------------------------------ node set-up

    def _own_node(self) -> NodeInfo:
        """This node's address and pod CIDR: from its Node object, unless configured."""
        while True:
            known = self.state.nodes.get(self.config.node_name)
            node_ip = self.config.node_ip or (known.ip if known else None)
            pod_cidrs = (self.config.pod_cidrs
                         or ((self.config.pod_cidr,) if self.config.pod_cidr else ())
                         or (known.pod_cidrs if known else ()))
            if node_ip is not None and pod_cidrs:
                return NodeInfo(self.config.node_name, node_ip, pod_cidrs[0],
                                known.addresses if known else (),
                                labels=known.labels if known else (),
                                pod_cidrs=tuple(pod_cidrs))
            self.not_ready_reason = (f"node {self.config.node_name} has no "
                                     f"{'address' if node_ip is None else 'spec.podCIDR'} yet")
            if self.stopping.wait(0.2):
                raise SystemExit(0)
            self._drain_events(wait=0.0)

    def _set_up_node(self, node: NodeInfo) -> None:
        assert self.datapath is not None and node.ip and node.pod_cidr
        with self.lock:
            self.state.set_node(node)
        self.cni.pod_cidrs = pod_networks(node.pod_cidrs)
        ipv4 = next((c for c in self.cni.pod_cidrs if c.version == 4), None)
        vxlan = nodesetup.prepare(self.config, node.ip, str(ipv4) if ipv4 else None)
        self.datapath.attach_overlay(vxlan)
        self.datapath.set_node_config(node_ip=node.ip)
        self._attach_netdev(self.datapath, node.ip)

    def _attach_netdev(self, datapath: Datapath, node_ip: str) -> None:
        """With Services on, NodePorts from outside are served on the uplink; with them
        off (kube-proxy serves them) podwire's filter leaves it."""
        try:
            uplink = nodesetup.uplink_ifindex(node_ip, self.config.uplink_device)
        except RuntimeError as e:
            # Pods and the node still reach Services; the outside does not.
            log.error("event=uplink_not_found error=%r", str(e))
            return
        if self.config.services:
            datapath.attach_netdev(uplink)
        else:
            datapath.detach_netdev(uplink)

    def _restore_endpoints(self) -> None:
        """Endpoints wired before a restart: re-attach the (possibly new) programs."""
        assert self.datapath is not None
        for listed in self.cni.endpoints.all():
            # The CNI API serves DEL while the agent starts: under the attachment's lock
            # the record is read again, so a pod a DEL has just taken is not restored.
            with self.cni.attachment_lock(listed.host_ifname):
                endpoint = self.cni.endpoints.get(listed.host_ifname)
                if endpoint is None:
                    continue
                try:
                    self.datapath.attach_endpoint(endpoint.host_ifindex)
                except (OSError, NetlinkError) as err:  # the veth is gone: GC releases the rest
                    log.warning("event=endpoint_stale pod=%s ifname=%s error=%r", endpoint.pod,
                                endpoint.host_ifname, str(err))
                    continue
                with self.lock:
                    self.state.add_endpoint(_local(endpoint))

    # ------------------------------------------------------------ reconcile

    def _reconcile(self) -> None:
        """Bring the maps to the model; caller holds the lock."""
        assert self.datapath is not None
        started = time.perf_counter()
        desired, scope = self.state.compute()
        ops = plan(self.installed, desired, scope)
        programmer.apply(self.datapath, ops)
        apply_to(self.installed, ops)
        self.reconciles += 1
        self.last_reconcile_seconds = time.perf_counter() - started
        self.metrics.reconcile_seconds.observe(self.last_reconcile_seconds)
        if ops:
            log.info("event=reconciled ops=%d seconds=%.4f", len(ops), self.last_reconcile_seconds)

    def _watch_loop(self) -> None:
        while not self.stopping.is_set():
            self._drain_events(wait=0.5)

    def _drain_events(self, wait: float) -> None:
        """Apply the events queued, waiting up to `wait` seconds for the first."""
        assert self.watches is not None
        batch = list(self.watches.events(timeout=wait))
        if not batch:
            return
        with self.lock:
            for event in batch:
                apply_event(self.state, event)
            # Events arrive in revision order; the last one handled vouches for all.
            self._handled_revision = batch[-1].revision
            if self.ready:
                self._reconcile()
                self.revision = self._handled_revision

    # ------------------------------------------------------------ CNI hooks

    def _endpoint_added(self, endpoint: Endpoint) -> None:
        assert self.datapath is not None
        # Programs first: until the endpoint entry exists they drop its traffic.
        # Attaching touches only this pod's veth, so concurrent ADDs do it in parallel
        # and only the model and the maps wait for the lock.
        self.datapath.attach_endpoint(endpoint.host_ifindex)
        with self.lock:
            self.state.add_endpoint(_local(endpoint))
            self._reconcile()
        log.info("event=endpoint_added pod=%s ip=%s ifname=%s", endpoint.pod,
                 ",".join(endpoint.ips), endpoint.host_ifname)

    def _endpoint_removed(self, endpoint: Endpoint) -> None:
        with self.lock:
            self.state.remove_endpoint(_local(endpoint).ip)
            self._reconcile()
        log.info("event=endpoint_removed pod=%s ip=%s", endpoint.pod, ",".join(endpoint.ips))

    # ------------------------------------------------------------ flows

    def _read_flows(self) -> None:
        """Ingestion: every FLOW_READ_INTERVAL takes what the rings hold as one batch in
        time order (or several, until they are empty), counts it in the metrics and
        keeps it raw; names are looked up only when a reader asks. The datapath never
        wakes this reader (bpf/lib/events.h): reading on a clock costs a hundred wake-ups
        a second where waking at each event cost one per event."""
        assert self.datapath is not None
        reader = self.datapath.events()
        while not self.stopping.wait(FLOW_READ_INTERVAL):
            while batch := reader.read_raw(FLOW_READ_BATCH):
                kept = [raw for raw in batch if len(raw) >= EVENT_V4_SIZE]
                self.flows_short += len(batch) - len(kept)
                self.metrics.count_events(kept)
                self.flows.add(kept)
                if len(batch) < FLOW_READ_BATCH:
                    break

    def _report_aggregates(self) -> None:
        """The flows the datapath counts: reported when quiet or their interval is over
        (agent/aggregates.py), each as one history entry with its exact count."""
        assert self.datapath is not None
        # One reporter a family's table: each tracks the keys of its own.
        tables: list[tuple[BpfMap[Any, structs.FlowAggValue], AggregateReporter]] = [
            (table, AggregateReporter(int(self.config.flow_report_idle * 1e9),
                                            int(self.config.flow_report_interval * 1e9)))
             for table in (self.datapath.flow_aggregates, self.datapath.flow_aggregates6)]
        # A fifth of the idle time: a quiet flow is reported at most 20% late, and a
        # table a flood filled is walked five times a second, not more.
        tick = min(self.config.flow_report_idle, self.config.flow_report_interval) / 5
        while not self.stopping.wait(tick):
            for table, reporter in tables:
                try:
                    reports = reporter.tick(table, time.monotonic_ns())
                except OSError as err:
                    log.warning("event=flow_aggregates_failed error=%r", str(err))
                    continue
                counted = [(bytes(r.first), r.packets, r.bytes, r.last_ns) for r in reports]
                self.metrics.count_counted(counted)
                self.flows.add_counted(counted)

    def _conntrack_gc_loop(self) -> None:
        assert self.datapath is not None
        while not self.stopping.wait(self.config.conntrack_gc_interval):
            try:
                self.datapath.conntrack_gc()
            except OSError as err:
                log.warning("event=conntrack_gc_failed error=%r", str(err))

    # ------------------------------------------------------------ local API

    def _healthz(self, request: Request) -> Response:
        return Response(200 if self.ready else 503,
                        {"ready": self.ready, "reason": self.not_ready_reason})

    def _status(self, request: Request) -> Response:
        with self.lock:
            endpoints = [
                {"ip": e.ip, "ips": list(e.ips or (e.ip,)), "namespace": e.namespace,
                 "pod": e.name, "ep_id": e.ep_id, "ifindex": e.ifindex}
                for e in sorted(self.state.endpoints.values(), key=lambda e: e.ip)
            ]
            problems = [vars(p) for p in self.state.policy_problems.values()]
            services = self.state.services.status()
            service_problems = [vars(p) for p in self.state.service_problems]
            cluster_policies = [p.key for p in self.state.cluster_policies()]
        body: dict[str, Any] = {
            "node": self.config.node_name,
            "ready": self.ready,
            "reason": self.not_ready_reason,
            "revision": self.revision,
            "endpoints": endpoints,
            "policy_errors": problems,
            "services": services,
            "service_errors": service_problems,
            # Custom kinds (the cluster policies) whose CRD the API server does not have.
            "absent_kinds": sorted(kind for kind, informer in self.watches.informers.items()
                                   if informer.absent) if self.watches is not None else [],
            "cluster_policies": sorted(cluster_policies),
            "reconciles": self.reconciles,
            "startup": self.startup,
            "last_reconcile_seconds": self.last_reconcile_seconds,
        }
        if self.datapath is not None:
            body["maps"] = self.datapath.map_usage()
            stages = self.lost_by_stage()
            body["lost_events"] = sum(stages.values())
            body["lost_events_by_stage"] = stages
            body["flow_aggregation"] = self.config.flow_aggregation
            body["flow_history"] = {"entries": len(self.flows),
                                    "max": self.config.history_size,
                                    "bytes": self.flows.memory_bytes()}
            body["counters"] = [vars(c) for c in self.datapath.read_counters()]
        return Response(200, body)

    def lost_by_stage(self) -> dict[str, int]:
        """Flow events lost on the way, by stage: in the kernel (`ring` full, over the
        `rate` limit, the aggregates `table` full), in the agent (`agent`: records it could not read), and by
        `readers` (records that left the history before a follower read them)."""
        assert self.datapath is not None
        return {**self.datapath.lost_by_stage(), "agent": self.flows_short,
                "readers": self.flows.lost}

    def _named(self, batches: Iterable[list[RawFlow]]) -> Iterator[FlowRecord]:
        """Records of history entries, named when read: the model's lock is taken once
        a chunk, so a reader of a long history does not hold up the watch loop."""
        names = ModelNames(self.state)
        enricher = FlowEnricher(self.config.node_name, names.pod, self.state.policy_name,
                                names.isolating, services=self.state.service_name,
                                past=names.at, rules=self.state.refs.rule,
                                cluster_ip6=self.state.services.cluster_ip6)
        for batch in batches:
            for start in range(0, len(batch), _NAMING_CHUNK):
                with self.lock:
                    records = [enricher.from_raw(entry)
                               for entry in batch[start:start + _NAMING_CHUNK]]
                yield from records

    def _flows(self, request: Request) -> Response:
        values = request.query.get("last")
        last = values[0] if values else None
        try:
            count = int(last) if last is not None else None
        except ValueError:
            return Response(400, {"error": f"last={last!r} is not a number"})
        follow = (request.query.get("follow") or ["0"])[0] in ("1", "true")
        recent, after = self.flows.snapshot(count)
        if not follow:
            return Response(200, stream=self.flows.as_lines(self._named([recent])),
                            content_type="application/x-ndjson")

        def stream() -> Any:
            yield from self.flows.as_lines(self._named([recent]))
            yield from self.flows.as_lines(self._named(self.flows.follow(after,
                                                                         self.stopping)))

        return Response(200, stream=stream(), content_type="application/x-ndjson")


def watched_kinds(config: AgentConfig) -> tuple[str, ...]:
    """What the agent lists and watches: Services and EndpointSlices only when it serves
    them (a cluster that keeps kube-proxy needs neither, nor the RBAC for them)."""
    return WatchSet.DEFAULT_KINDS + (WatchSet.SERVICE_KINDS if config.services else ())


def _local(endpoint: Endpoint) -> LocalEndpoint:
    """The endpoint as the model keys it: by its first address (IPv4 when it has one,
    so an IPv6-only pod is keyed by its IPv6 address)."""
    # The host veth's ifindex is unique on the node for the pod's lifetime: it serves
    # as the endpoint id the policy map is keyed by.
    return LocalEndpoint(ip=endpoint.ip, ep_id=endpoint.host_ifindex,
                         ifindex=endpoint.host_ifindex, pod_mac=endpoint.pod_mac,
                         host_mac=endpoint.host_mac, namespace=endpoint.pod_namespace,
                         name=endpoint.pod_name, ips=endpoint.ips)


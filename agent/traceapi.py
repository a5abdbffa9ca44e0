"""The agent's `/trace/*` routes: what podwire/trace.py asks each node for.

    POST /trace/arm     {"tag", "trace_id", "flags": ["consume"|"live"], "seconds", "ip_id"}
    POST /trace/disarm  {"tag"}
    POST /trace/inject  {"tag", "ip_id", "from": "ns/pod", "to": TARGET, "port", "protocol",
                         "family": 4|6}
    POST /trace/live    the same: mark the pod's next matching packet instead
    GET  /trace/hops?trace_id=N&wait=SECONDS  ->  {"node", "hops": [...]}

TARGET is {"pod": "ns/name"} (its address of `family`), {"service": "ns/name"} (its
ClusterIP of `family` on `port`) or {"ip": ADDRESS} (IPv4 or IPv6: its own family, which
`family` must not contradict). `family` defaults to 4 (to an "ip" target's). The packet
leaves from the source pod's address of that family. inject and live answer 404 when the
source pod is not on this node, so the CLI can ask every agent until the right one
answers.

They are served on the agent's unix socket (`podwire trace --socket`) and on its observe
endpoint (agent/localapi.py ObserveApi), which `--lab` and `--kubeconfig` reach through
the API server's pods/portforward like `podwire observe`; the setting `observe_trace`
keeps them off the latter (deploy/README.md, "Who may trace").
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from podwire.agent.flownames import ModelNames
from podwire.agent.localapi import LocalApi, ObserveApi, Request, Response
from podwire.agent.tracehops import HopNamer, flow_record
from podwire.agent.tracepacket import TracePacket
from podwire.agent.tracer import TraceError, Tracer
from podwire.policy import Protocol

if TYPE_CHECKING:
    from podwire.agent.daemon import Agent

log = logging.getLogger("podwire.traceapi")

EPHEMERAL_PORTS = (32768, 60999)  # Linux's default ip_local_port_range


class TraceApi:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._tracer: Tracer | None = None

    def route(self, api: LocalApi | ObserveApi) -> None:
        """On the unix socket and, for the cluster view, the observe endpoint."""
        api.route("POST", "/trace/arm", self._handler(self._arm))
        api.route("POST", "/trace/disarm", self._handler(self._disarm))
        api.route("POST", "/trace/inject", self._handler(self._inject))
        api.route("POST", "/trace/live", self._handler(self._live))
        api.route("GET", "/trace/hops", self._handler(self._hops))

    def open(self) -> None:
        """Once the datapath is loaded (the trace maps are its) and the model synced."""
        agent = self.agent
        names = ModelNames(agent.state)
        namer = HopNamer(agent.config.node_name, names.pod, agent.state.policy_name,
                         names.isolating, agent.state.service_name, self._node_named,
                         self._frontend6)
        self._tracer = Tracer(agent.config.pin_dir, namer, on_hops=lambda hops: (
            agent.flows.add_records([flow_record(hop) for hop in hops])))

    @property
    def tracer(self) -> Tracer:
        if self._tracer is None:
            raise TraceError("the agent is not ready", 503)
        return self._tracer

    def read_loop(self) -> None:
        self.tracer.read(self.agent.stopping, self.agent.lock)

    def close(self) -> None:
        if self._tracer is not None:
            self._tracer.close()

    # ------------------------------------------------------------ handlers

    def _handler(self, serve: Any) -> Any:
        def handle(request: Request) -> Response:
            try:
                return serve(request)
            except TraceError as err:
                return Response(err.status, {"error": str(err)})
            except (ValueError, KeyError, TypeError) as err:
                return Response(400, {"error": f"bad trace request: {err}"})
        return handle

    def _arm(self, request: Request) -> Response:
        body = _body(request)
        self.tracer.arm(int(body["tag"]), int(body["trace_id"]), list(body.get("flags", [])),
                        float(body.get("seconds", 10.0)), int(body.get("ip_id", 0)))
        return Response(200, {"node": self.agent.config.node_name})

    def _disarm(self, request: Request) -> Response:
        self.tracer.disarm(int(_body(request)["tag"]))
        return Response(200, {"node": self.agent.config.node_name})

    def _hops(self, request: Request) -> Response:
        trace_id = int(request.query["trace_id"][0])
        wait = min(float((request.query.get("wait") or ["0"])[0]), 30.0)
        return Response(200, {"node": self.agent.config.node_name,
                              "hops": self.tracer.hops(trace_id, wait)})

    def _inject(self, request: Request) -> Response:
        body = _body(request)
        family = _family(body)
        source, netns = self._source(str(body["from"]), family)
        packet = TracePacket(source, self._target(body, family),
                             random.randint(*EPHEMERAL_PORTS),
                             int(body["port"]), _protocol(body), int(body["tag"]))
        self.tracer.inject(netns, packet, int(body["ip_id"]))
        return Response(200, {"node": self.agent.config.node_name,
                              "packet": {"source": {"ip": packet.src, "port": packet.sport},
                                         "destination": {"ip": packet.dst,
                                                         "port": packet.dport},
                                         "protocol": str(packet.protocol)}})

    def _live(self, request: Request) -> Response:
        body = _body(request)
        family = _family(body)
        source, _ = self._source(str(body["from"]), family)
        ep_id = next(e.ep_id for e in self.agent.state.endpoints.values()
                     if source in (e.ip, *e.ips))
        self.tracer.mark_live(ep_id, self._target(body, family), int(body["port"]),
                              _protocol(body).number, int(body["tag"]))
        return Response(200, {"node": self.agent.config.node_name})

    # ------------------------------------------------------------ names

    def _source(self, ref: str, family: int) -> tuple[str, str]:
        """The address of `family` and the netns of a pod on this node."""
        namespace, name = _ref(ref, "from")
        for endpoint in self.agent.cni.endpoints.all():
            if (endpoint.pod_namespace, endpoint.pod_name) == (namespace, name):
                address = endpoint.address(family)
                if address is None:
                    raise TraceError(f"pod {ref} has no IPv{family} address")
                return address, endpoint.netns
        raise TraceError(f"pod {ref} is not on node {self.agent.config.node_name}", 404)

    def _target(self, body: dict[str, Any], family: int) -> str:
        target = body["to"]
        if not isinstance(target, dict) or len(target) != 1:
            raise TraceError('"to" must be one of {"pod": ...}, {"service": ...}, {"ip": ...}')
        (kind, value), = target.items()
        state = self.agent.state
        if kind == "ip":
            return str(value)
        if kind == "pod":
            namespace, name = _ref(str(value), "to")
            with self.agent.lock:
                pod = state.cluster.pod(namespace, name)
            if pod is None or pod.ip is None:
                raise TraceError(f"pod {value} has no address (not found, or not running)", 404)
            address = _of_family(pod.ips or (pod.ip,), family)
            if address is None:
                raise TraceError(f"pod {value} has no IPv{family} address", 404)
            return address
        if kind == "service":
            port, protocol = int(body["port"]), _protocol(body)
            with self.agent.lock:
                services = state.services.status()
            for service in services:
                if service["name"] != value:
                    continue
                address = _of_family(
                    [str(f["ip"]) for f in service["frontends"]
                     if (f["scope"], f["port"], f["protocol"]) == ("internal", port,
                                                                  protocol.name)], family)
                if address is None:
                    raise TraceError(f"service {value} has no IPv{family} ClusterIP port "
                                     f"{port}/{protocol}", 404)
                return address
            raise TraceError(f"service {value} not found", 404)
        raise TraceError(f'"to" names {kind!r}; expected pod, service or ip')

    def _frontend6(self, service_id: int, port: int, proto: int) -> str | None:
        """(called under the agent's lock, as every HopNamer lookup)"""
        return self.agent.state.services.cluster_ip6(service_id, port, proto)

    def _node_named(self, ip: str) -> str | None:
        for node in self.agent.state.nodes:
            if node.ip == ip:
                return node.name
        return None


def _body(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise TraceError("the body must be a JSON object")
    return body


def _ref(ref: str, what: str) -> tuple[str, str]:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise TraceError(f"{what}: {ref!r} is not NAMESPACE/NAME")
    return namespace, name


def _family(body: dict[str, Any]) -> int:
    """The request's IP version: "family", else an "ip" target's, else 4."""
    target = body.get("to")
    address = target.get("ip") if isinstance(target, dict) else None
    try:
        version = ipaddress.ip_address(str(address)).version if address else None
    except ValueError:
        raise TraceError(f'"to": {address!r} is not an IP address') from None
    family = int(body.get("family") or version or 4)
    if family not in (4, 6):
        raise TraceError(f"family {family} is not 4 or 6")
    if version is not None and version != family:
        raise TraceError(f"{address} is an IPv{version} address, not IPv{family}")
    return family


def _of_family(addresses: Iterable[str], family: int) -> str | None:
    """The first of `addresses` of IP version `family`."""
    return next((a for a in addresses if ipaddress.ip_address(a).version == family), None)


def _protocol(body: dict[str, Any]) -> Protocol:
    text = str(body.get("protocol", "TCP")).upper()
    if text not in ("TCP", "UDP"):
        raise TraceError(f"protocol {text!r}: a trace is TCP or UDP")
    return Protocol(text)

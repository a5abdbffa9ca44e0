"""The Service model's rules against hand-written Service and EndpointSlice objects."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from podwire.agent.config import AgentConfig
from podwire.agent.daemon import watched_kinds
from podwire.agent.desired import NodeState
from podwire.agent.entries import BackendEntry, FrontendKey, LbScope, Protocol, ServiceEntry
from podwire.agent.identity import IdentityAllocator
from podwire.agent.lbslots import BACKEND6_ID_BASE
from podwire.agent.nodes import NodeInfo
from podwire.agent.reconcile import MapContents, Scope, apply_to, plan
from podwire.agent.service_objects import DEFAULT_AFFINITY_TIMEOUT
from podwire.agent.services import ServiceTable
from podwire.status import services_table

NODE = "n1"
NODE_IP = "10.98.0.11"
CIP = "10.96.0.10"


def service(name: str = "web", ns: str = "default", *, cluster_ip: str | None = CIP,
            ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": ports if ports is not None else [
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}
    if cluster_ip is not None:
        body["clusterIP"] = cluster_ip
        body["clusterIPs"] = [cluster_ip]
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "7"}, "spec": body}


def ep(address: str, node: str = NODE, ready: bool | None = True, serving: bool | None = None,
       terminating: bool | None = None) -> dict[str, Any]:
    conditions = {k: v for k, v in (("ready", ready), ("serving", serving),
                                    ("terminating", terminating)) if v is not None}
    return {"addresses": [address], "nodeName": node, "conditions": conditions}


def slice_(name: str, service_name: str | None = "web", *, endpoints: list[dict[str, Any]],
           ports: list[dict[str, Any]] | None = None, ns: str = "default",
           address_type: str = "IPv4") -> dict[str, Any]:
    labels = {"kubernetes.io/service-name": service_name} if service_name else {}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "resourceVersion": "9"},
            "addressType": address_type,
            "ports": ports if ports is not None else [
                {"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints}


def table() -> tuple[ServiceTable, MapContents]:
    maps = MapContents()
    svc = ServiceTable(NODE, maps.lb_services, maps.lb_backends)
    svc.set_node_addresses([NODE_IP])
    return svc, maps


def backends(maps: MapContents, key: FrontendKey) -> list[tuple[str, int]]:
    entry = maps.lb_services[key]
    return [(maps.lb_backends[i].address, maps.lb_backends[i].port) for i in entry.backend_ids]


def fe(port: int = 80, address: str = CIP, protocol: Protocol = Protocol.TCP,
       scope: LbScope = LbScope.INTERNAL) -> FrontendKey:
    return FrontendKey(address, port, protocol, scope)


# ------------------------------------------------------------------ ClusterIP


def test_cluster_ip_frontend_lists_ready_backends_of_every_slice() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.5"), ep("10.244.2.7", "n2")]))
    svc.set_endpoint_slice(slice_("web-b", endpoints=[ep("10.244.1.6")]))
    svc.compute()
    assert set(maps.lb_services) == {fe()}
    assert backends(maps, fe()) == [("10.244.1.5", 8080), ("10.244.1.6", 8080),
                                    ("10.244.2.7", 8080)]
    entry = maps.lb_services[fe()]
    assert svc.service_name(entry.service_id) == "default/web"
    assert (entry.affinity_timeout, entry.keep_client_address, entry.node_port) == (0, False,
                                                                                   False)


def test_every_cluster_ip_and_every_port_and_protocol_is_a_frontend() -> None:
    svc, maps = table()
    svc.set_service(service(ports=[
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
        clusterIPs=[CIP, "fd00::10", "10.96.0.11"], ipFamilies=["IPv4", "IPv6"]))
    svc.set_endpoint_slice(slice_("dns-1", endpoints=[ep("10.244.1.5")], ports=[
        {"name": "dns", "port": 5353, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 5354, "protocol": "TCP"}]))
    svc.compute()
    assert set(maps.lb_services) == {
        fe(53, ip, proto) for ip in (CIP, "fd00::10", "10.96.0.11")
        for proto in (Protocol.UDP, Protocol.TCP)}
    assert backends(maps, fe(53, CIP, Protocol.UDP)) == [("10.244.1.5", 5353)]
    assert backends(maps, fe(53, CIP, Protocol.TCP)) == [("10.244.1.5", 5354)]
    # No IPv6 slice: the IPv6 ClusterIP has no backend (and is refused at once).
    assert backends(maps, fe(53, "fd00::10", Protocol.UDP)) == []


# ------------------------------------------------------------------ conditions


def test_only_ready_endpoints_take_new_connections() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.set_endpoint_slice(slice_("web-a", endpoints=[
        ep("10.244.1.5"), ep("10.244.1.6", ready=False, serving=True, terminating=True),
        ep("10.244.1.7", ready=False, serving=False)]))
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.5", 8080)]


def test_terminating_but_serving_only_when_none_is_ready() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.set_endpoint_slice(slice_("web-a", endpoints=[
        ep("10.244.1.6", ready=False, serving=True, terminating=True),
        ep("10.244.1.7", ready=False, serving=False, terminating=True),
        ep("10.244.1.8", ready=False, serving=False)]))
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.6", 8080)]


def test_ready_terminating_transitions_move_the_backends() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.5"), ep("10.244.1.6")]))
    svc.compute()
    # 10.244.1.5 starts terminating (still serving): the ready one alone takes connections.
    svc.set_endpoint_slice(slice_("web-a", endpoints=[
        ep("10.244.1.5", ready=False, serving=True, terminating=True), ep("10.244.1.6")]))
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.6", 8080)]
    # Then 10.244.1.6 too: both terminate, both still serve, so both are used.
    svc.set_endpoint_slice(slice_("web-a", endpoints=[
        ep("10.244.1.5", ready=False, serving=True, terminating=True),
        ep("10.244.1.6", ready=False, serving=True, terminating=True)]))
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.5", 8080), ("10.244.1.6", 8080)]
    # A new pod becomes ready: the terminating ones take no new connections.
    svc.set_endpoint_slice(slice_("web-b", endpoints=[ep("10.244.1.9")]))
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.9", 8080)]


def test_unset_conditions_follow_the_api_defaults() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.5", ready=None)]))
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.5", 8080)]


def test_an_endpoint_in_two_slices_is_one_backend_ready_if_either_says_so() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.5", ready=False)]))
    svc.set_endpoint_slice(slice_("web-b", endpoints=[ep("10.244.1.5")]))
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.5", 8080)]


# ------------------------------------------------------------------ NodePort, policies


def node_port_service(**spec: Any) -> dict[str, Any]:
    return service(type="NodePort", ports=[
        {"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}], **spec)


def two_node_slices(svc: ServiceTable) -> None:
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.5"), ep("10.244.2.7", "n2")]))


def test_node_port_frontends_on_this_nodes_address_in_both_scopes() -> None:
    svc, maps = table()
    svc.set_service(node_port_service())
    two_node_slices(svc)
    svc.compute()
    external, internal = fe(30080, NODE_IP, scope=LbScope.EXTERNAL), fe(30080, NODE_IP)
    assert set(maps.lb_services) == {fe(), external, internal}
    for key in (external, internal):
        assert maps.lb_services[key].node_port
        assert backends(maps, key) == [("10.244.1.5", 8080), ("10.244.2.7", 8080)]
    assert not maps.lb_services[external].keep_client_address


def test_load_balancer_services_have_node_ports_too() -> None:
    svc, maps = table()
    svc.set_service(node_port_service() | {"spec": {**node_port_service()["spec"],
                                                    "type": "LoadBalancer"}})
    svc.compute()
    assert fe(30080, NODE_IP, scope=LbScope.EXTERNAL) in maps.lb_services


def test_external_traffic_policy_local_keeps_external_frontends_to_this_node() -> None:
    svc, maps = table()
    svc.set_service(node_port_service(externalTrafficPolicy="Local"))
    two_node_slices(svc)
    svc.compute()
    external = maps.lb_services[fe(30080, NODE_IP, scope=LbScope.EXTERNAL)]
    assert external.keep_client_address
    assert backends(maps, fe(30080, NODE_IP, scope=LbScope.EXTERNAL)) == [("10.244.1.5", 8080)]
    # Internal scopes keep every backend: the ClusterIP and the NodePort from inside.
    assert len(maps.lb_services[fe()].backend_ids) == 2
    assert len(maps.lb_services[fe(30080, NODE_IP)].backend_ids) == 2
    assert not maps.lb_services[fe(30080, NODE_IP)].keep_client_address


def test_internal_traffic_policy_local_keeps_internal_frontends_to_this_node() -> None:
    svc, maps = table()
    svc.set_service(node_port_service(internalTrafficPolicy="Local"))
    two_node_slices(svc)
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.5", 8080)]
    assert backends(maps, fe(30080, NODE_IP)) == [("10.244.1.5", 8080)]
    assert len(maps.lb_services[fe(30080, NODE_IP, scope=LbScope.EXTERNAL)].backend_ids) == 2


def test_local_policy_falls_back_to_local_terminating_endpoints() -> None:
    svc, maps = table()
    svc.set_service(service(internalTrafficPolicy="Local"))
    svc.set_endpoint_slice(slice_("web-a", endpoints=[
        ep("10.244.1.5", ready=False, serving=True, terminating=True),
        ep("10.244.2.7", "n2")]))
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.5", 8080)]


def test_node_address_change_moves_node_ports() -> None:
    svc, maps = table()
    svc.set_service(node_port_service())
    svc.compute()
    svc.set_node_addresses(["10.98.0.99"])
    changes = svc.compute()
    assert fe(30080, "10.98.0.99", scope=LbScope.EXTERNAL) in maps.lb_services
    assert fe(30080, NODE_IP, scope=LbScope.EXTERNAL) not in maps.lb_services
    assert changes.services is not None and fe(30080, NODE_IP) in changes.services


def test_client_ip_affinity_timeout_and_its_default() -> None:
    svc, maps = table()
    svc.set_service(service("a", sessionAffinity="ClientIP",
                            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}))
    svc.set_service(service("b", cluster_ip="10.96.0.11", sessionAffinity="ClientIP"))
    svc.set_service(service("c", cluster_ip="10.96.0.12", sessionAffinity="None"))
    svc.compute()
    assert maps.lb_services[fe()].affinity_timeout == 60
    assert maps.lb_services[fe(address="10.96.0.11")].affinity_timeout == \
        DEFAULT_AFFINITY_TIMEOUT
    assert maps.lb_services[fe(address="10.96.0.12")].affinity_timeout == 0


# ------------------------------------------------------------------ ids and increments


def test_backend_ids_are_stable_while_in_use_and_reused_only_after_a_compute() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.set_service(service("api", cluster_ip="10.96.0.11"))
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.5"), ep("10.244.1.6")]))
    svc.set_endpoint_slice(slice_("api-a", "api", endpoints=[ep("10.244.1.6")]))
    svc.compute()
    ids = {(b.address, b.port): i for i, b in maps.lb_backends.items()}
    assert len(ids) == 2  # one id for 10.244.1.6:8080 though two Services use it
    shared = ids[("10.244.1.6", 8080)]
    # web drops 10.244.1.6; api still uses it: same id. 10.244.1.5 goes, and its id waits.
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.7")]))
    svc.compute()
    gone = ids[("10.244.1.5", 8080)]
    assert maps.lb_services[fe(address="10.96.0.11")].backend_ids == (shared,)
    assert gone not in maps.lb_backends
    new = maps.lb_services[fe()].backend_ids[0]
    assert new not in (gone, shared)
    # After that compute the released id may serve another address.
    svc.set_endpoint_slice(slice_("web-b", endpoints=[ep("10.244.1.8")]))
    svc.compute()
    assert maps.lb_backends[gone] == BackendEntry("10.244.1.8", 8080)


def test_service_ids_name_the_service_and_stay() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.compute()
    first = maps.lb_services[fe()].service_id
    svc.remove_service("default", "web")
    svc.compute()
    svc.set_service(service())
    svc.compute()
    assert maps.lb_services[fe()].service_id == first
    assert svc.service_name(first) == "default/web"


def test_a_slice_change_touches_only_its_services_keys() -> None:
    svc, maps = table()
    for i in range(20):
        svc.set_service(service(f"s{i}", cluster_ip=f"10.96.1.{i}"))
        svc.set_endpoint_slice(slice_(f"s{i}-a", f"s{i}", endpoints=[ep(f"10.244.1.{i + 10}")]))
    full = svc.compute()
    assert full.services is None and full.backends is None
    svc.set_endpoint_slice(slice_("s3-a", "s3", endpoints=[ep("10.244.1.200")]))
    changes = svc.compute()
    assert changes.services == {fe(address="10.96.1.3")}
    assert changes.backends is not None and len(changes.backends) == 2
    assert backends(maps, fe(address="10.96.1.3")) == [("10.244.1.200", 8080)]


def test_removing_a_service_removes_its_frontends_and_unused_backends() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.5")]))
    svc.compute()
    svc.remove_service("default", "web")
    changes = svc.compute()
    assert maps.lb_services == {} and maps.lb_backends == {}
    assert changes.services == {fe()}
    # The slice stays known: the Service coming back finds its endpoints.
    svc.set_service(service())
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.5", 8080)]


def test_a_slice_arriving_before_its_service_is_used_once_it_comes() -> None:
    svc, maps = table()
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.5")]))
    svc.compute()
    assert maps.lb_services == {}
    svc.set_service(service())
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.5", 8080)]


def test_removing_a_slice_removes_its_backends() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.5")]))
    svc.set_endpoint_slice(slice_("web-b", endpoints=[ep("10.244.1.6")]))
    svc.compute()
    svc.remove_endpoint_slice("default", "web-a")
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.6", 8080)]
    assert [b.address for b in maps.lb_backends.values()] == ["10.244.1.6"]


def test_a_slice_relabelled_to_another_service_moves_its_endpoints() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.set_service(service("api", cluster_ip="10.96.0.11"))
    svc.set_endpoint_slice(slice_("shared", endpoints=[ep("10.244.1.5")]))
    svc.compute()
    svc.set_endpoint_slice(slice_("shared", "api", endpoints=[ep("10.244.1.5")]))
    svc.compute()
    assert maps.lb_services[fe()].backend_ids == ()
    assert backends(maps, fe(address="10.96.0.11")) == [("10.244.1.5", 8080)]


# ------------------------------------------------------------------ bad input


def test_a_port_with_an_unknown_protocol_is_skipped_and_reported() -> None:
    svc, maps = table()
    svc.set_service(service(ports=[{"name": "x", "port": 81, "protocol": "QUIC"},
                                   {"name": "http", "port": 80, "protocol": "TCP"}]))
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.5")]))
    svc.compute()
    assert set(maps.lb_services) == {fe()}
    problem = svc.problems[("Service", "default/web")]
    assert "spec.ports[0].protocol" in problem.message and "QUIC" in problem.message
    assert problem.resource_version == "7"
    # Fixed: the problem goes.
    svc.set_service(service())
    svc.compute()
    assert svc.problems == {}


def test_bad_ports_and_addresses_are_skipped_and_reported() -> None:
    svc, maps = table()
    svc.set_service(service(ports=[{"name": "a", "port": 0}, {"name": "b", "port": "80"},
                                   {"name": "http", "port": 80}], clusterIPs=["banana"]))
    svc.set_service(service("api", cluster_ip="10.96.0.11"))
    svc.compute()
    message = svc.problems[("Service", "default/web")].message
    assert "spec.ports[0].port" in message and "spec.ports[1].port" in message
    assert "'banana' is not an IP address" in message
    assert set(maps.lb_services) == {fe(address="10.96.0.11")}


def test_a_slice_naming_no_service_is_skipped_and_reported() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.5")]))
    svc.set_endpoint_slice(slice_("orphan", None, endpoints=[ep("10.244.1.9")]))
    svc.compute()
    assert "kubernetes.io/service-name" in svc.problems[("EndpointSlice",
                                                        "default/orphan")].message
    assert backends(maps, fe()) == [("10.244.1.5", 8080)]
    svc.remove_endpoint_slice("default", "orphan")
    assert svc.problems == {}


def test_garbage_endpoint_addresses_and_slice_ports_are_skipped_and_reported() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.set_endpoint_slice(slice_("web-a", endpoints=[
        ep("10.244.1.5"), ep("not-an-ip"), {"addresses": [], "conditions": {}}],
        ports=[{"name": "http", "port": 8080, "protocol": "TCP"},
               {"name": "bad", "port": 99999, "protocol": "TCP"},
               {"name": "odd", "port": 1, "protocol": "ICMP"}]))
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.5", 8080)]
    message = svc.problems[("EndpointSlice", "default/web-a")].message
    for part in ("endpoints[1].addresses", "endpoints[2].addresses", "ports[1].port",
                 "ports[2].protocol"):
        assert part in message


def test_a_cluster_ip_takes_backends_only_from_the_slices_of_its_family() -> None:
    svc, maps = table()
    svc.set_service(service(clusterIPs=[CIP, "fd00:10:96::a"], ipFamilies=["IPv4", "IPv6"],
                            type="NodePort", ports=[{"name": "http", "port": 80,
                                                     "protocol": "TCP", "nodePort": 30080}]))
    svc.set_endpoint_slice(slice_("web-4", endpoints=[ep("10.244.1.5")]))
    svc.set_endpoint_slice(slice_("web-6", endpoints=[ep("fd00:10:244:1::5"),
                                                      ep("10.244.1.9")], address_type="IPv6"))
    svc.set_endpoint_slice(slice_("web-n", endpoints=[ep("x.example")], address_type="FQDN"))
    svc.compute()
    assert backends(maps, fe()) == [("10.244.1.5", 8080)]
    v6 = maps.lb_services[fe(80, "fd00:10:96::a")]
    assert [(maps.lb_backends[i].address, maps.lb_backends[i].port) for i in v6.backend_ids] \
        == [("fd00:10:244:1::5", 8080)]
    # IPv6 backends are numbered apart, so their id names their map (lbslots).
    assert all(i >= BACKEND6_ID_BASE for i in v6.backend_ids)
    assert all(i < BACKEND6_ID_BASE for i in maps.lb_services[fe()].backend_ids)
    # The node's addresses are IPv4: its NodePort takes the IPv4 backends.
    assert backends(maps, fe(30080, NODE_IP)) == [("10.244.1.5", 8080)]
    # IPv6 flow events name the frontend by Service and port: the ClusterIP of that family.
    service_id = v6.service_id
    assert svc.cluster_ip6(service_id, 80, Protocol.TCP) == "fd00:10:96::a"
    assert svc.cluster_ip6(service_id, 81, Protocol.TCP) is None
    assert svc.cluster_ip6(service_id, 80, Protocol.UDP) is None
    # An IPv4 address in an IPv6 slice is skipped and said; an FQDN slice is no problem.
    assert set(svc.problems) == {("EndpointSlice", "default/web-6")}
    assert "has no IPv6 address" in svc.problems[("EndpointSlice", "default/web-6")].message


def test_a_frontend_two_services_claim_goes_to_the_first_and_the_second_is_told() -> None:
    svc, maps = table()
    svc.set_service(service("a"))
    svc.set_service(service("b"))
    svc.compute()
    owner = svc.service_name(maps.lb_services[fe()].service_id)
    other = "default/b" if owner == "default/a" else "default/a"
    assert "already served by" in svc.problems[("Service", f"{other}#frontends")].message
    # The owner goes: the other takes the frontend.
    svc.remove_service(*owner.split("/"))
    svc.compute()
    assert svc.service_name(maps.lb_services[fe()].service_id) == other
    assert svc.problems == {}


# ------------------------------------------------------------------ through NodeState


def test_node_state_reaches_the_plan_incrementally() -> None:
    state = NodeState(NODE)
    state.set_node(NodeInfo(NODE, NODE_IP, "10.244.1.0/24"))
    installed = MapContents()
    for i in range(5):
        state.set_service(service(f"s{i}", cluster_ip=f"10.96.1.{i}"))
        state.set_endpoint_slice(slice_(f"s{i}-a", f"s{i}", endpoints=[ep(f"10.244.1.{i + 10}")]))
    desired, scope = state.compute()
    apply_to(installed, plan(installed, desired, scope))
    assert installed.lb_services == desired.lb_services and len(installed.lb_services) == 5
    state.set_endpoint_slice(slice_("s2-a", "s2", endpoints=[ep("10.244.1.10"),
                                                            ep("10.244.1.99")]))
    desired, scope = state.compute()
    ops = plan(installed, desired, scope)
    assert scope.lb_services == {fe(address="10.96.1.2")}
    # The new backend (10.244.1.10 is s0's already), the one frontend that names it, then
    # the backend it no longer names (10.244.1.12).
    assert [(op.map.value, type(op).__name__) for op in ops] == [
        ("lb_backends", "Upsert"), ("lb_services", "Upsert"), ("lb_backends", "Delete")]
    apply_to(installed, ops)
    assert installed == desired
    assert backends(installed, fe(address="10.96.1.2")) == [("10.244.1.10", 8080),
                                                           ("10.244.1.99", 8080)]
    assert state.service_name(desired.lb_services[fe(address="10.96.1.2")].service_id) == \
        "default/s2"
    assert state.service_problems == []


def test_status_lists_every_service_with_its_frontends_and_backends() -> None:
    svc, _ = table()
    svc.set_service(node_port_service(externalTrafficPolicy="Local"))
    svc.set_service(service("headless", cluster_ip="None"))
    two_node_slices(svc)
    svc.compute()
    status = {s["name"]: s for s in svc.status()}
    assert status["default/headless"] == {"name": "default/headless", "frontends": [],
                                          "backends": []}
    web = status["default/web"]
    ids = {b["ip"]: b["id"] for b in web["backends"]}
    assert set(ids) == {"10.244.1.5", "10.244.2.7"}
    external = next(f for f in web["frontends"] if f["scope"] == "external")
    assert external == {"ip": NODE_IP, "port": 30080, "protocol": "TCP", "scope": "external",
                        "node_port": True, "backends": [ids["10.244.1.5"]],
                        "affinity_timeout": 0, "keep_client_address": True}
    assert len(web["frontends"]) == 3


def test_podwire_status_shows_each_frontend_with_its_backends() -> None:
    svc, _ = table()
    svc.set_service(node_port_service())
    svc.set_service(service("empty", cluster_ip="10.96.0.11"))
    two_node_slices(svc)
    svc.compute()
    console = Console(width=200, record=True)
    console.print(services_table(svc.status()))
    text = console.export_text()
    assert "services (2)" in text
    assert f"{CIP}:80/TCP" in text and f"{NODE_IP}:30080/TCP (external)" in text
    assert "10.244.1.5:8080, 10.244.2.7:8080" in text
    row = next(line for line in text.splitlines() if "default/empty" in line)
    assert "none" in row


def test_a_malformed_object_is_reported_and_its_last_good_version_stays() -> None:
    svc, maps = table()
    svc.set_service(service())
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.5")]))
    svc.compute()
    before = dict(maps.lb_services)
    svc.set_service(service(ports=["http"]))  # type: ignore[list-item]
    svc.set_endpoint_slice(slice_("web-a", endpoints=[{"addresses": ["10.244.1.9"],
                                                       "conditions": ["ready"]}]))
    svc.set_endpoint_slice(slice_("web-b", endpoints=["nope"]))  # type: ignore[list-item]
    svc.compute()
    assert maps.lb_services == before
    assert set(svc.problems) == {("Service", "default/web"), ("EndpointSlice", "default/web-a"),
                                 ("EndpointSlice", "default/web-b")}
    assert "malformed" in svc.problems[("Service", "default/web")].message


def test_a_restarted_agent_keeps_the_ids_the_maps_hold() -> None:
    # Conntrack and ClientIP affinity in the datapath remember backend and service ids:
    # a restart that renumbered them would move live connections to other backends.
    objects = [service("a", cluster_ip="10.96.0.1"), service("b", cluster_ip="10.96.0.2"),
               slice_("a-1", "a", endpoints=[ep("10.244.1.5"), ep("10.244.1.6")]),
               slice_("b-1", "b", endpoints=[ep("10.244.1.7"), ep("10.244.1.6")])]
    first, installed = table()
    for obj in objects:
        (first.set_service if "spec" in obj else first.set_endpoint_slice)(obj)
    first.compute()
    # Churn, so ids are no longer in feeding order.
    first.set_endpoint_slice(slice_("a-1", "a", endpoints=[ep("10.244.1.9"), ep("10.244.1.6")]))
    first.compute()
    objects[2] = slice_("a-1", "a", endpoints=[ep("10.244.1.9"), ep("10.244.1.6")])

    maps = MapContents()
    restarted = ServiceTable(NODE, maps.lb_services, maps.lb_backends)
    restarted.set_node_addresses([NODE_IP])
    restarted.adopt(dict(installed.lb_services), dict(installed.lb_backends))
    restarted.set_service(service("new", cluster_ip="10.96.0.3"))  # a Service born meanwhile
    restarted.set_endpoint_slice(slice_("new-1", "new", endpoints=[ep("10.244.1.8")]))
    for obj in reversed(objects):
        (restarted.set_service if "spec" in obj else restarted.set_endpoint_slice)(obj)
    restarted.compute()
    for key, entry in installed.lb_services.items():
        assert maps.lb_services[key] == entry
    assert {k: v for k, v in maps.lb_backends.items() if v.address != "10.244.1.8"} == \
        installed.lb_backends
    new = maps.lb_services[fe(address="10.96.0.3")]
    assert new.service_id not in {e.service_id for e in installed.lb_services.values()}
    assert new.backend_ids[0] not in installed.lb_backends


def test_adopted_backends_nothing_uses_are_released_by_the_first_compute() -> None:
    maps = MapContents()
    svc = ServiceTable(NODE, maps.lb_services, maps.lb_backends)
    svc.adopt({}, {7: BackendEntry("10.244.1.70", 8080)})
    svc.set_service(service())
    svc.set_endpoint_slice(slice_("web-a", endpoints=[ep("10.244.1.5")]))
    svc.compute()
    assert [(b.address, b.port) for b in maps.lb_backends.values()] == [("10.244.1.5", 8080)]
    assert 7 not in maps.lb_backends


def test_allocator_gives_a_preferred_number_only_when_it_is_free() -> None:
    ids: IdentityAllocator[str] = IdentityAllocator(1, 100)
    assert ids.acquire("a", prefer=5) == (5, True)
    assert ids.acquire("b") == (1, True)  # the numbers skipped below 5 stay free
    assert ids.acquire("c", prefer=5) == (2, True)  # taken: the next free one
    ids.release("a")
    assert ids.acquire("d", prefer=5) == (3, True)  # released, but not before recycle()
    ids.recycle()
    assert ids.acquire("e", prefer=5) == (5, True)
    assert ids.acquire("f", prefer=500) == (4, True)  # out of range


def test_node_ports_listen_on_every_address_of_this_node() -> None:
    state = NodeState(NODE)
    state.set_node(NodeInfo("n2", "10.98.0.12", "10.244.2.0/24", ("198.51.100.2",)))
    state.set_node(NodeInfo(NODE, NODE_IP, "10.244.1.0/24", (NODE_IP, "198.51.100.1")))
    state.set_service(node_port_service())
    desired, _ = state.compute()
    listening = {k.address for k in desired.lb_services if k.port == 30080}
    assert listening == {NODE_IP, "198.51.100.1"}  # not another node's


def test_services_off_watches_neither_kind_and_empties_the_lb_maps() -> None:
    assert {"Service", "EndpointSlice"} <= set(watched_kinds(AgentConfig(node_name=NODE)))
    off = AgentConfig.from_dict({"node_name": NODE, "services": False})
    assert not {"Service", "EndpointSlice"} & set(watched_kinds(off))
    # An agent turned off after serving Services: what it left in the maps goes.
    left = MapContents(lb_services={fe(): ServiceEntry(1, (1,))},
                       lb_backends={1: BackendEntry("10.244.1.5", 8080)})
    state = NodeState(NODE)
    state.adopt(left)
    desired, scope = state.compute()
    assert [(type(op).__name__, op.map.value) for op in plan(left, desired, scope)] == [
        ("Delete", "lb_services"), ("Delete", "lb_backends")]


def resolved(maps: MapContents, svc: ServiceTable) -> dict[FrontendKey, tuple[Any, ...]]:
    """The maps with ids resolved to what they stand for: comparable across numberings."""
    return {key: (svc.service_name(e.service_id), tuple(backends(maps, key)),
                  e.affinity_timeout, e.keep_client_address, e.node_port)
            for key, e in maps.lb_services.items()}


EVENT = st.one_of(
    st.tuples(st.just("service"), st.integers(0, 2), st.booleans(), st.booleans(),
              st.sampled_from(["Cluster", "Local"])),
    st.tuples(st.just("slice"), st.integers(0, 2), st.integers(0, 1),
              st.lists(st.tuples(st.integers(1, 6), st.sampled_from(["n1", "n2"]),
                                 st.sampled_from(["ready", "terminating", "gone"])),
                       max_size=4),
              st.sampled_from([8080, 9090])),
    st.tuples(st.just("remove-service"), st.integers(0, 2)),
    st.tuples(st.just("remove-slice"), st.integers(0, 2), st.integers(0, 1)),
)


def event_objects(event: tuple[Any, ...]) -> tuple[str, Any]:
    kind, i = event[0], event[1]
    if kind == "service":
        _, _, node_port, affinity, policy = event
        obj = node_port_service(externalTrafficPolicy=policy) if node_port else service(
            internalTrafficPolicy=policy)
        obj["metadata"]["name"] = f"s{i}"
        obj["spec"]["clusterIP"] = obj["spec"]["clusterIPs"][0] = f"10.96.0.{i + 1}"
        if node_port:
            obj["spec"]["ports"][0]["nodePort"] = 30000 + i
        if affinity:
            obj["spec"]["sessionAffinity"] = "ClientIP"
        return "set_service", obj
    if kind == "slice":
        _, _, j, endpoints, port = event
        conditions = {"ready": {"ready": True}, "gone": {"ready": False, "serving": False},
                      "terminating": {"ready": False, "serving": True, "terminating": True}}
        return "set_endpoint_slice", slice_(f"s{i}-{j}", f"s{i}", ports=[
            {"name": "http", "port": port, "protocol": "TCP"}], endpoints=[
            {"addresses": [f"10.244.1.{n}"], "nodeName": node, "conditions": conditions[c]}
            for n, node, c in endpoints])
    if kind == "remove-service":
        return "remove_service", ("default", f"s{i}")
    return "remove_endpoint_slice", ("default", f"s{i}-{event[2]}")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(EVENT, min_size=1, max_size=4), min_size=1, max_size=6))
def test_incremental_computes_equal_a_fresh_one(batches: list[list[tuple[Any, ...]]]) -> None:
    svc, maps = table()
    installed = MapContents()
    latest: dict[tuple[str, str], tuple[str, Any]] = {}
    for batch in batches:
        for event in batch:
            method, arg = event_objects(event)
            if method.startswith("set_"):
                getattr(svc, method)(arg)
                key = (method[4:], arg["metadata"]["name"])
                latest[key] = (method, arg)
            else:
                getattr(svc, method)(*arg)
                latest.pop((method[7:], arg[1]), None)
        changes = svc.compute()
        ops = plan(installed, maps, Scope(set(), set(), set(), changes.services,
                                          changes.backends))
        apply_to(installed, ops)
        # What the scoped plan left behind is exactly the model: nothing outside the
        # scope changed, nothing inside it was missed.
        assert (installed.lb_services, installed.lb_backends) == (maps.lb_services,
                                                                  maps.lb_backends)
    fresh, fresh_maps = table()
    for method, arg in latest.values():
        getattr(fresh, method)(arg)
    fresh.compute()
    assert resolved(maps, svc) == resolved(fresh_maps, fresh)

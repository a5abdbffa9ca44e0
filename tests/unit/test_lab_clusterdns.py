"""Cluster DNS: the zone's rules, the resolver's search order, and the server answering real
DNS queries (UDP and TCP) from what the lab API server holds."""

# ruff: noqa: F811 - pytest fixtures imported from apiserver_fixtures are parameters here
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from apiserver_fixtures import api, core, kubeconfig, namespace, server  # noqa: F401
from kubernetes import client
from waiting import wait_for

from podwire.lab import clusterdns
from podwire.lab.dnsserver import ZoneKeeper, answer, serve
from podwire.lab.revisionfile import read_revision


def service(name: str, ns: str, ip: str | None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"clusterIP": ip}}


def slice_of(name: str, ns: str, endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": f"{name}-abc", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "endpoints": endpoints}


def test_zone_answers_cluster_ips_and_ready_headless_endpoints() -> None:
    zone = clusterdns.Zone.build(
        [service("web", "x", "10.96.1.1"), service("db", "x", "None"),
         {**service("out", "x", None), "spec": {"type": "ExternalName"}}],
        [slice_of("db", "x", [
            {"addresses": ["10.244.1.5"], "conditions": {"ready": True}, "hostname": "db-0"},
            {"addresses": ["10.244.2.5"], "conditions": {"ready": False}}]),
         slice_of("web", "x", [{"addresses": ["10.244.1.9"]}])])
    assert zone.lookup("web.x.svc.cluster.local") == ["10.96.1.1"]
    assert zone.lookup("WEB.x.svc.cluster.local.") == ["10.96.1.1"]
    assert zone.lookup("db.x.svc.cluster.local") == ["10.244.1.5"]
    assert zone.lookup("db-0.db.x.svc.cluster.local") == ["10.244.1.5"]
    assert zone.lookup("out.x.svc.cluster.local") is None
    assert zone.lookup("web.y.svc.cluster.local") is None


def test_resolv_conf_and_search_order() -> None:
    assert clusterdns.resolv_conf("10.96.0.10", "x") == (
        "search x.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\noptions ndots:5\n")
    search = clusterdns.search_path("x")
    assert clusterdns.candidates("web", search) == [
        "web.x.svc.cluster.local", "web.svc.cluster.local", "web.cluster.local", "web"]
    assert clusterdns.candidates("web.y", search)[0] == "web.y.x.svc.cluster.local"
    assert clusterdns.candidates("a.b.c.d.e.f", search)[0] == "a.b.c.d.e.f"
    assert clusterdns.candidates("web.x.svc.cluster.local.", search) == [
        "web.x.svc.cluster.local"]


def test_a_dual_stack_service_answers_a_and_aaaa_and_headless_slices_of_both_types() -> None:
    web = service("web", "x", "10.96.1.1")
    web["spec"]["clusterIPs"] = ["10.96.1.1", "fd00:10:96::1:1"]
    db6 = {**slice_of("db", "x", [{"addresses": ["fd00:10:244:1::5"], "hostname": "db-0"}]),
           "addressType": "IPv6"}
    db4 = {**slice_of("db", "x", [{"addresses": ["10.244.1.5"], "hostname": "db-0"}]),
           "addressType": "IPv4"}
    fqdn = {**slice_of("db", "x", [{"addresses": ["db.example.com"]}]), "addressType": "FQDN"}
    zone = clusterdns.Zone.build([web, service("db", "x", "None")], [db6, db4, fqdn])
    assert zone.lookup("web.x.svc.cluster.local", 4) == ["10.96.1.1"]
    assert zone.lookup("web.x.svc.cluster.local", 6) == ["fd00:10:96::1:1"]
    assert zone.lookup("db-0.db.x.svc.cluster.local", 6) == ["fd00:10:244:1::5"]
    assert zone.lookup("db.x.svc.cluster.local") == ["10.244.1.5", "fd00:10:244:1::5"]
    for rdtype, expected in (("A", [["10.96.1.1"]]), ("AAAA", [["fd00:10:96::1:1"]]),
                             ("ANY", [["10.96.1.1"], ["fd00:10:96::1:1"]])):
        reply = dns.message.from_wire(answer(zone, dns.message.make_query(
            "web.x.svc.cluster.local", rdtype).to_wire()) or b"")
        assert [[r.to_text() for r in rrset] for rrset in reply.answer] == expected, rdtype


def test_answers_are_dns_messages() -> None:
    zone = clusterdns.Zone.build([service("web", "x", "10.96.1.1")], [])
    query = dns.message.make_query("web.x.svc.cluster.local", "A")
    reply = dns.message.from_wire(answer(zone, query.to_wire()) or b"")
    assert reply.id == query.id and reply.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for r in reply.answer[0]] == ["10.96.1.1"]
    missing = dns.message.from_wire(answer(zone, dns.message.make_query(
        "nope.x.svc.cluster.local", "A").to_wire()) or b"")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    nodata = dns.message.from_wire(answer(zone, dns.message.make_query(
        "web.x.svc.cluster.local", "AAAA").to_wire()) or b"")
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    assert answer(zone, b"\x00garbage") is None


@pytest.fixture
def dns_port(api: client.ApiClient, tmp_path: Path) -> Iterator[int]:
    keeper = ZoneKeeper(api, tmp_path / "dns.revision")
    assert keeper.start()
    servers = serve(keeper, 0)
    try:
        yield servers[0].server_address[1]  # type: ignore[attr-defined, no-any-return]
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()
        keeper.stop()


def resolve(port: int, name: str, tcp: bool = False) -> tuple[int, list[str]]:
    query = dns.message.make_query(name, "A")
    ask = dns.query.tcp if tcp else dns.query.udp
    reply = ask(query, "127.0.0.1", timeout=2, port=port)
    return reply.rcode(), [r.to_text() for rrset in reply.answer for r in rrset]


def test_server_follows_services(core: client.CoreV1Api, dns_port: int, tmp_path: Path) -> None:
    core.create_namespace(namespace("x"))
    made = core.create_namespaced_service("x", {"metadata": {"name": "web"}, "spec": {
        "ports": [{"port": 80}]}})
    ip = made.spec.cluster_ip
    wait_for(lambda: resolve(dns_port, "web.x.svc.cluster.local") == (dns.rcode.NOERROR, [ip]),
             "the new Service's name")
    assert resolve(dns_port, "web.x.svc.cluster.local", tcp=True) == (dns.rcode.NOERROR, [ip])
    assert resolve(dns_port, "web.y.svc.cluster.local")[0] == dns.rcode.NXDOMAIN
    rv = int(core.list_namespace().metadata.resource_version)
    wait_for(lambda: (read_revision(tmp_path / "dns.revision") or 0) >= rv, "the DNS revision")
    core.delete_namespaced_service("web", "x")
    wait_for(lambda: resolve(dns_port, "web.x.svc.cluster.local")[0] == dns.rcode.NXDOMAIN,
             "the deleted Service's name gone")

"""Flow selection of `podwire observe`: each flag selects what it should, repeats OR,
different flags AND, and bad values fail with a message naming them."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from podwire import cli, observe
from podwire.common import flowfilter

NOW = datetime.datetime(2026, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


def flow(src: tuple[str | None, str | None, str, int], dst: tuple[str | None, str | None, str, int],
         *, verdict: str = "FORWARDED", type: str = "policy-verdict", protocol: str = "TCP",
         src_labels: dict[str, str] | None = None, dst_labels: dict[str, str] | None = None,
         age: float = 0.0, src_service: str | None = None,
         dst_service: str | None = None) -> dict[str, Any]:
    def end(spec: tuple[str | None, str | None, str, int], labels: dict[str, str] | None,
            service: str | None) -> dict[str, Any]:
        ns, pod, ip, port = spec
        return {"namespace": ns, "pod": pod, "ip": ip, "port": port, "identity": 256,
                "labels": labels or {}, "service": service}
    return {"time": (NOW - datetime.timedelta(seconds=age)).isoformat(), "node": "node1",
            "type": type, "verdict": verdict, "protocol": protocol,
            "source": end(src, src_labels, src_service),
            "destination": end(dst, dst_labels, dst_service)}


A = ("x", "alpha-1", "10.244.1.2", 40000)
B = ("x", "beta", "10.244.2.3", 80)
C = ("y", "alpha-2", "10.244.1.4", 53)
WORLD = (None, None, "10.98.0.250", 443)

FLOWS = {
    "a->b": flow(A, B, src_labels={"app": "alpha"}, dst_labels={"app": "beta", "tier": "web"},
                 dst_service="x/beta"),
    "c->b": flow(C, B, verdict="DROPPED", src_labels={"app": "alpha"},
                 dst_labels={"app": "beta", "tier": "web"}, age=600),
    "a->world": flow(A, WORLD, protocol="UDP", src_labels={"app": "alpha"}),
    "b->c": flow(B, C, type="drop", verdict="DROPPED", protocol="UDP",
                 src_labels={"app": "beta", "tier": "web"}, dst_labels={"app": "alpha"}, age=30,
                 src_service="x/beta"),
}


def selected(**flags: Any) -> set[str]:
    selection = flowfilter.build(now=NOW, **flags)
    return {name for name, record in FLOWS.items() if selection.matches(record)}


def test_no_flag_selects_everything() -> None:
    assert selected() == set(FLOWS)


@pytest.mark.parametrize(("flags", "want"), [
    ({"from_pod": ["x/alpha"]}, {"a->b", "a->world"}),
    ({"from_pod": ["x/"]}, {"a->b", "a->world", "b->c"}),
    ({"from_pod": ["alpha"]}, {"a->b", "a->world", "c->b"}),
    ({"to_pod": ["x/beta"]}, {"a->b", "c->b"}),
    ({"to_pod": ["x/beta-2"]}, set()),
    ({"pod": ["y/alpha-2"]}, {"c->b", "b->c"}),
    ({"namespace": ["y"]}, {"c->b", "b->c"}),
    ({"from_ip": ["10.244.1.0/24"]}, {"a->b", "a->world", "c->b"}),
    ({"to_ip": ["10.98.0.250"]}, {"a->world"}),
    ({"ip": ["10.244.2.3"]}, {"a->b", "c->b", "b->c"}),
    ({"port": ["53"]}, {"c->b", "b->c"}),
    ({"protocol": ["udp"]}, {"a->world", "b->c"}),
    ({"verdict": ["dropped"]}, {"c->b", "b->c"}),
    ({"type": ["drop"]}, {"b->c"}),
    ({"type": ["trace"]}, set()),
    ({"label": ["tier=web"]}, {"a->b", "c->b", "b->c"}),
    ({"label": ["app=alpha,tier!=web"]}, {"a->b", "c->b", "a->world", "b->c"}),
    ({"label": ["tier"]}, {"a->b", "c->b", "b->c"}),
    ({"label": ["!tier"]}, set(FLOWS)),
    ({"to_service": ["x/beta"]}, {"a->b"}),
    ({"to_service": ["x/beta", "y/other"]}, {"a->b"}),
    ({"from_service": ["x/beta"]}, {"b->c"}),
    ({"to_service": ["x/bet"]}, set()),
    ({"since": "5m"}, {"a->b", "a->world", "b->c"}),
    ({"since": "2026-05-01T11:59:45"}, {"a->b", "a->world"}),
])
def test_each_flag_selects_its_flows(flags: dict[str, Any], want: set[str]) -> None:
    assert selected(**flags) == want


def test_repeating_a_flag_ors_its_values() -> None:
    assert selected(to_pod=["x/beta"]) == {"a->b", "c->b"}
    assert selected(to_pod=["x/beta", "y/alpha"]) == {"a->b", "c->b", "b->c"}
    assert selected(protocol=["TCP", "UDP"]) == set(FLOWS)


def test_different_flags_and() -> None:
    assert selected(to_pod=["x/beta"], verdict=["DROPPED"]) == {"c->b"}
    assert selected(namespace=["x"], protocol=["UDP"], port=["443"]) == {"a->world"}
    assert selected(from_pod=["x/alpha"], to_pod=["y/"]) == set()


def test_addresses_that_are_no_pod_match_no_pod_filter() -> None:
    assert selected(to_pod=["x/"]) == {"a->b", "c->b"}  # a->world has no pod at its end


@pytest.mark.parametrize(("flags", "message"), [
    ({"from_ip": ["10.0.0.300"]}, "'10.0.0.300' is not an IP address or CIDR"),
    ({"port": ["http"]}, "port 'http' is not a number"),
    ({"port": ["70000"]}, "port '70000'"),
    ({"protocol": ["GRE"]}, "protocol 'GRE' is not one of TCP, UDP, ICMP, SCTP"),
    ({"verdict": ["ALLOWED"]}, "verdict 'ALLOWED' is not one of FORWARDED, DROPPED"),
    ({"type": ["l7"]}, "type 'l7'"),
    ({"label": ["=x"]}, "has no valid label key"),
    ({"since": "yesterday"}, "--since 'yesterday': expected a duration"),
    ({"pod": ["/a"]}, "expected NAMESPACE/NAME"),
    ({"namespace": [""]}, "namespace filter is empty"),
    ({"to_pod": [""]}, "pod filter is empty"),
    ({"to_service": ["beta"]}, "service 'beta': expected NAMESPACE/NAME"),
    ({"from_service": ["x/"]}, "service 'x/': expected NAMESPACE/NAME"),
])
def test_bad_values_name_what_was_wrong(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        flowfilter.build(now=NOW, **flags)
    assert message in str(caught.value)


def test_since_accepts_units_and_zoned_times() -> None:
    assert flowfilter.parse_since("90s", NOW) == NOW - datetime.timedelta(seconds=90)
    assert flowfilter.parse_since("1.5h", NOW) == NOW - datetime.timedelta(minutes=90)
    assert flowfilter.parse_since("2d", NOW) == NOW - datetime.timedelta(days=2)
    zoned = flowfilter.parse_since("2026-05-01T14:00:00+02:00", NOW)
    assert zoned == datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)


def test_merge_orders_nodes_by_time() -> None:
    node1 = [flow(A, B, age=30), flow(A, B, age=10)]
    node2 = [flow(C, B, age=20), flow(C, B, age=0)]
    merged = flowfilter.merge_by_time([node1, node2])
    assert [r["time"] for r in merged] == sorted(r["time"] for r in node1 + node2)
    assert [r["source"]["pod"] for r in merged] == ["alpha-1", "alpha-2", "alpha-1", "alpha-2"]


def test_observe_flags_reach_the_service_filters() -> None:
    args = cli.parser().parse_args(["observe", "--to-service", "x/beta", "--from-service",
                                    "y/other", "--to-service", "y/more"])
    selection = observe._filter_from(args)
    assert (selection.to_service, selection.from_service) == (["x/beta", "y/more"],
                                                              ["y/other"])

"""Service ClusterIPs per family (`ipFamilies`, `ipFamilyPolicy`, `clusterIPs`) as
kube-apiserver allocates and defaults them, on an IPv4-only and on a dual-stack service
range; and the EndpointSlice controller's slices per address family."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from podwire.lab import endpointslices
from podwire.lab.api.allocator import ServiceAllocator
from podwire.lab.api.errors import ApiError
from podwire.lab.api.resource import ServiceRanges, parse_service_cidrs
from podwire.lab.layout import NODE_PORT_RANGE, SERVICE_CIDR, SERVICE_CIDR6

V4_ONLY = ServiceRanges((SERVICE_CIDR,), NODE_PORT_RANGE)
DUAL = ServiceRanges((SERVICE_CIDR, SERVICE_CIDR6), NODE_PORT_RANGE)
V6_FIRST = ServiceRanges((SERVICE_CIDR6, SERVICE_CIDR), NODE_PORT_RANGE)


def service(name: str = "s", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "x"},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}}


def admitted(ranges: ServiceRanges, **spec: Any) -> dict[str, Any]:
    obj = service(**spec)
    ServiceAllocator(ranges).admit(obj, None)
    return dict(obj["spec"])


def refusal(ranges: ServiceRanges, **spec: Any) -> str:
    with pytest.raises(ApiError) as err:
        ServiceAllocator(ranges).admit(service(**spec), None)
    assert err.value.code == 422
    return err.value.message


def families_of(spec: dict[str, Any]) -> list[str]:
    return [f"IPv{ipaddress.ip_address(ip).version}" for ip in spec["clusterIPs"]]


@pytest.mark.parametrize(("ranges", "spec", "families", "policy"), [
    (V4_ONLY, {}, ["IPv4"], "SingleStack"),
    (V4_ONLY, {"ipFamilyPolicy": "PreferDualStack"}, ["IPv4"], "PreferDualStack"),
    (DUAL, {}, ["IPv4"], "SingleStack"),
    (DUAL, {"ipFamilies": ["IPv6"]}, ["IPv6"], "SingleStack"),
    (DUAL, {"ipFamilyPolicy": "PreferDualStack"}, ["IPv4", "IPv6"], "PreferDualStack"),
    (DUAL, {"ipFamilyPolicy": "RequireDualStack"}, ["IPv4", "IPv6"], "RequireDualStack"),
    (DUAL, {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6"]}, ["IPv6", "IPv4"],
     "RequireDualStack"),
    # Two families and no policy: the server infers RequireDualStack.
    (DUAL, {"ipFamilies": ["IPv6", "IPv4"]}, ["IPv6", "IPv4"], "RequireDualStack"),
    (V6_FIRST, {}, ["IPv6"], "SingleStack"),
    (V6_FIRST, {"ipFamilyPolicy": "PreferDualStack"}, ["IPv6", "IPv4"], "PreferDualStack"),
])
def test_families_and_cluster_ips_are_defaulted_as_the_apiserver_does(
        ranges: ServiceRanges, spec: dict[str, Any], families: list[str], policy: str) -> None:
    got = admitted(ranges, **spec)
    assert (got["ipFamilies"], got["ipFamilyPolicy"]) == (families, policy)
    assert families_of(got) == families
    assert got["clusterIP"] == got["clusterIPs"][0]
    for ip in got["clusterIPs"]:
        assert any(ipaddress.ip_address(ip) in cidr for cidr in ranges.cidrs)


def test_cluster_ips_asked_for_give_their_families_and_are_reserved() -> None:
    allocator = ServiceAllocator(DUAL)
    v6 = str(SERVICE_CIDR6[0x20])
    obj = service(clusterIPs=[v6, str(SERVICE_CIDR[20])])
    allocator.admit(obj, None)
    assert (obj["spec"]["ipFamilies"], obj["spec"]["ipFamilyPolicy"]) == (
        ["IPv6", "IPv4"], "RequireDualStack")
    assert obj["spec"]["clusterIP"] == v6
    with pytest.raises(ApiError, match="provided IP is already allocated"):
        allocator.admit(service("t", clusterIP=v6), None)
    allocator.release(obj)
    allocator.admit(service("t", clusterIP=v6), None)


def test_an_update_to_dual_stack_keeps_the_primary_and_adds_the_other_family() -> None:
    allocator = ServiceAllocator(DUAL)
    old = service()
    allocator.admit(old, None)
    new = service(clusterIP=old["spec"]["clusterIP"], clusterIPs=old["spec"]["clusterIPs"],
                  ipFamilyPolicy="RequireDualStack")
    allocator.admit(new, old)
    assert new["spec"]["clusterIPs"][0] == old["spec"]["clusterIP"]
    assert families_of(new["spec"]) == ["IPv4", "IPv6"]
    assert set(new["spec"]["clusterIPs"]) == allocator.allocated_ips


@pytest.mark.parametrize(("ranges", "spec", "message"), [
    (V4_ONLY, {"ipFamilyPolicy": "RequireDualStack"},
     ('spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured '
     "for dual-stack services")),
    (V4_ONLY, {"ipFamilies": ["IPv6"]},
     ('spec.ipFamilies[0]: Invalid value: []string{"IPv6"}: ipfamily IPv6 is not configured '
     "on cluster")),
    (V4_ONLY, {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"},
     "this cluster is not configured for dual-stack services"),
    (DUAL, {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "SingleStack"},
     ("must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are "
     "specified")),
    (DUAL, {"clusterIPs": ["10.96.0.50", "fd00:10:96::50"], "ipFamilyPolicy": "SingleStack"},
     "when multiple cluster IPs are specified"),
    (DUAL, {"clusterIPs": ["fd00:10:96::50"], "ipFamilies": ["IPv4"]},
     ("spec.ipFamilies[0]: Invalid value: []string{\"IPv4\"}: must be consistent with "
     "clusterIPs[0]")),
    (DUAL, {"clusterIPs": ["fd00:10:97::50"]}, ("the provided IP (fd00:10:97::50) is not in the "
     "valid range. The range of valid IPs is fd00:10:96::/112")),
])
def test_what_the_cluster_cannot_give_is_refused_as_the_apiserver_does(
        ranges: ServiceRanges, spec: dict[str, Any], message: str) -> None:
    assert message in refusal(ranges, **spec)


def test_service_ranges_take_one_cidr_per_family() -> None:
    assert parse_service_cidrs("10.96.0.0/16,fd00:10:96::/112") == (SERVICE_CIDR, SERVICE_CIDR6)
    with pytest.raises(ValueError, match="must be of different IP families"):
        ServiceRanges(parse_service_cidrs("10.96.0.0/16,10.97.0.0/16"), NODE_PORT_RANGE)
    with pytest.raises(ValueError, match="--service-cluster-ip-range '10.96.0.0/33'"):
        parse_service_cidrs("10.96.0.0/33")


def _pod(name: str, ips: list[str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "x", "uid": f"u-{name}",
                         "labels": {"app": "s"}},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def test_slices_are_written_per_address_family_of_the_service() -> None:
    dual_pod = _pod("a", ["10.244.1.5", "fd00:10:244:1::5"])
    v4_pod = _pod("b", ["10.244.1.6"])
    svc = service(ipFamilies=["IPv4", "IPv6"])
    svc["metadata"]["uid"] = "svc"
    plan = endpointslices.plan_service(svc, [dual_pod, v4_pod], [])
    by_type = {s["addressType"]: sorted(a for e in s["endpoints"] for a in e["addresses"])
               for s in plan.create}
    assert by_type == {"IPv4": ["10.244.1.5", "10.244.1.6"], "IPv6": ["fd00:10:244:1::5"]}
    # Back to IPv4 only: the IPv6 slice goes, the IPv4 one stays.
    existing = [dict(s, metadata=dict(s["metadata"], name=f"s-{s['addressType']}"))
                for s in plan.create]
    single = service(ipFamilies=["IPv4"])
    single["metadata"]["uid"] = "svc"
    again = endpointslices.plan_service(single, [dual_pod, v4_pod], existing)
    assert [s["addressType"] for s in again.delete] == ["IPv6"]
    assert not again.create and not again.update


def test_an_ipv6_service_without_ipv6_pods_keeps_one_empty_ipv6_slice() -> None:
    svc = service(ipFamilies=["IPv6"])
    svc["metadata"]["uid"] = "svc"
    plan = endpointslices.plan_service(svc, [_pod("b", ["10.244.1.6"])], [])
    assert [(s["addressType"], s["endpoints"]) for s in plan.create] == [("IPv6", [])]

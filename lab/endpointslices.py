"""What the EndpointSlice controller wants for one Service: pure, no I/O.

The rules of kubernetes' `endpointslice-controller` (pkg/controller/endpointslice and
staging/src/k8s.io/endpointslice): only Services with a selector; the pods of its
namespace that match it, have an IP and have not finished; per pod the Service's ports
resolved against that pod (a named targetPort is the pod's containerPort of that name
and protocol, so pods that number a name differently land in different slices; a port
a pod cannot resolve is left out for that pod); at most 100 endpoints a slice; every
slice labelled with the Service's name and the controller as its manager, owned by the
Service. Slices are per address family: one set of `addressType` IPv4 and one of IPv6 for
each family in the Service's `spec.ipFamilies`, each holding the pods' addresses of that
family. Endpoints stay in the slice they are in while they exist, so a change rewrites
only the slices it touches, and a Service without endpoints keeps one empty slice of each
family.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

Object = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
ADDRESS_TYPES = ("IPv4", "IPv6")
MAX_ENDPOINTS_PER_SLICE = 100


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def wants_slices(service: Object) -> bool:
    """Services without a selector (and ExternalName ones) are left to their owners."""
    spec = service.get("spec") or {}
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


def _pod_ready(pod: Object) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def address_types(service: Object) -> list[str]:
    """The slices' address types a Service gets: its spec.ipFamilies (the server fills
    them), else the family of its ClusterIP, as the real controller's
    getAddressTypesForService."""
    spec = service.get("spec") or {}
    families = [f for f in spec.get("ipFamilies") or [] if f in ADDRESS_TYPES]
    if families:
        return families
    ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ip != "None"]
    return [_family_of(ips[0])] if ips else ["IPv4"]


def _family_of(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


def pod_address(pod: Object, address_type: str) -> str | None:
    """The pod's address of `address_type` (IPv4 or IPv6): podIP or a podIPs entry."""
    status = pod.get("status") or {}
    candidates = [status.get("podIP"), *(e.get("ip") for e in status.get("podIPs") or [])]
    return next((ip for ip in candidates
                 if isinstance(ip, str) and ip and _family_of(ip) == address_type), None)


def in_endpoints(pod: Object, address_type: str = "IPv4") -> bool:
    """podutil.ShouldPodBeInEndpoints with terminating pods included: an IP of the slice's
    family, not finished."""
    status = pod.get("status") or {}
    return (pod_address(pod, address_type) is not None
            and status.get("phase") not in ("Succeeded", "Failed"))


def find_port(pod: Object, service_port: Object) -> int | None:
    """The number a Service port's targetPort means on `pod` (podutil.FindPort)."""
    target = service_port.get("targetPort", service_port["port"])
    if isinstance(target, int):
        return target
    target = str(target)
    if target.isdigit():
        return int(target)
    protocol = service_port.get("protocol", "TCP")
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                return int(port["containerPort"])
    return None


def endpoint_ports(service: Object, pod: Object) -> list[Object]:
    """The slice ports this pod's endpoint needs: every Service port it resolves."""
    ports = []
    for sp in service["spec"].get("ports") or []:
        number = find_port(pod, sp)
        if number is None:
            continue
        port: Object = {"name": sp.get("name", ""), "port": number,
                        "protocol": sp.get("protocol", "TCP")}
        if sp.get("appProtocol"):
            port["appProtocol"] = sp["appProtocol"]
        ports.append(port)
    return sorted(ports, key=lambda p: (p["name"], p["protocol"], p["port"]))


def pod_endpoint(service: Object, pod: Object, address_type: str = "IPv4") -> Object:
    meta = pod["metadata"]
    terminating = bool(meta.get("deletionTimestamp"))
    ready = _pod_ready(pod)
    publish = bool(service["spec"].get("publishNotReadyAddresses"))
    endpoint: Object = {
        "addresses": [pod_address(pod, address_type)],
        "conditions": {"ready": (ready or publish) and not terminating, "serving": ready,
                       "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                      "uid": meta["uid"]},
    }
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        endpoint["nodeName"] = node
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        endpoint["hostname"] = spec["hostname"]
    return endpoint


def ports_key(ports: list[Object] | None) -> str:
    return json.dumps(sorted(ports or [], key=lambda p: (p.get("name") or "", p.get("protocol"),
                                                         p.get("port"))), sort_keys=True)


def _uid_of(endpoint: Object) -> str:
    ref = endpoint.get("targetRef") or {}
    return str(ref.get("uid") or endpoint["addresses"][0])


def desired_endpoints(service: Object, pods: list[Object], address_type: str = "IPv4"
                      ) -> dict[str, dict[str, Object]]:
    """ports key -> {pod uid: endpoint} for every pod the Service selects that has an
    address of `address_type`."""
    ns = service["metadata"]["namespace"]
    selector = service["spec"]["selector"]
    groups: dict[str, dict[str, Object]] = {}
    for pod in pods:
        meta = pod["metadata"]
        if meta.get("namespace") != ns or not in_endpoints(pod, address_type):
            continue
        if not selects(selector, meta.get("labels") or {}):
            continue
        groups.setdefault(ports_key(endpoint_ports(service, pod)), {})[meta["uid"]] = (
            pod_endpoint(service, pod, address_type))
    return groups


def slice_labels(service: Object) -> dict[str, str]:
    """The Service's own labels, then the controller's (which win), as the real one sets."""
    labels = dict(service["metadata"].get("labels") or {})
    labels[SERVICE_NAME_LABEL] = service["metadata"]["name"]
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    if service["spec"].get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    else:
        labels.pop(HEADLESS_LABEL, None)
    return labels


def owner_reference(service: Object) -> Object:
    meta = service["metadata"]
    return {"apiVersion": "v1", "kind": "Service", "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def new_slice(service: Object, ports: list[Object], endpoints: list[Object],
              address_type: str = "IPv4") -> Object:
    name = service["metadata"]["name"]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"generateName": f"{name}-", "namespace": service["metadata"]["namespace"],
                         "labels": slice_labels(service),
                         "ownerReferences": [owner_reference(service)]},
            "addressType": address_type, "endpoints": endpoints, "ports": ports}


def is_managed(slice_: Object) -> bool:
    return (slice_["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == CONTROLLER_NAME


def service_of(slice_: Object) -> str | None:
    return (slice_["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)


@dataclass
class SlicePlan:
    """The writes that turn the existing slices of one Service into the wanted ones."""

    create: list[Object] = field(default_factory=list)
    update: list[Object] = field(default_factory=list)
    delete: list[Object] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.delete)


def _fill(service: Object, ports: list[Object], wanted: dict[str, Object],
          slices: list[Object], address_type: str, plan: SlicePlan) -> None:
    """Keep each wanted endpoint in the slice that holds it, put the rest where there is
    room, then in new slices; slices left with nothing are deleted."""
    placed: set[str] = set()
    kept: list[tuple[Object, list[Object]]] = []
    for existing in slices:
        endpoints = []
        for endpoint in existing.get("endpoints") or []:
            uid = _uid_of(endpoint)
            if uid in wanted and uid not in placed:
                endpoints.append(wanted[uid])
                placed.add(uid)
        kept.append((existing, endpoints))
    waiting = [wanted[uid] for uid in sorted(wanted) if uid not in placed]
    for existing, endpoints in kept:
        room = MAX_ENDPOINTS_PER_SLICE - len(endpoints)
        if room > 0 and waiting:
            endpoints += waiting[:room]
            waiting = waiting[room:]
    while waiting:
        plan.create.append(new_slice(service, ports, waiting[:MAX_ENDPOINTS_PER_SLICE],
                                     address_type))
        waiting = waiting[MAX_ENDPOINTS_PER_SLICE:]
    for existing, endpoints in kept:
        if not endpoints:
            plan.delete.append(existing)
            continue
        _update_if_changed(service, existing, ports, endpoints, plan)


def _update_if_changed(service: Object, existing: Object, ports: list[Object],
                       endpoints: list[Object], plan: SlicePlan) -> None:
    labels = slice_labels(service)
    if (existing.get("endpoints") == endpoints and existing.get("ports") == ports
            and existing["metadata"].get("labels") == labels
            and existing["metadata"].get("ownerReferences") == [owner_reference(service)]):
        return
    updated = copy.deepcopy(existing)
    updated["endpoints"] = endpoints
    updated["ports"] = ports
    updated["metadata"]["labels"] = labels
    updated["metadata"]["ownerReferences"] = [owner_reference(service)]
    plan.update.append(updated)


def plan_service(service: Object, pods: list[Object], slices: list[Object]) -> SlicePlan:
    """The creates, updates and deletes for `service`, given all pods and the slices this
    controller manages for it: those of each of its address types, and the removal of
    slices of a type it no longer has."""
    plan = SlicePlan()
    if not wants_slices(service):
        return plan
    uid = service["metadata"]["uid"]
    mine = [s for s in slices
            if any(o.get("uid") == uid for o in s["metadata"].get("ownerReferences") or [])]
    plan.delete += [s for s in slices if s not in mine]  # left by an earlier Service
    types = address_types(service)
    plan.delete += [s for s in mine if s.get("addressType", "IPv4") not in types]
    for address_type in types:
        _plan_address_type(service, pods, [s for s in mine
                                           if s.get("addressType", "IPv4") == address_type],
                           address_type, plan)
    return plan


def _plan_address_type(service: Object, pods: list[Object], mine: list[Object],
                       address_type: str, plan: SlicePlan) -> None:
    groups = desired_endpoints(service, pods, address_type)
    by_key: dict[str, list[Object]] = {}
    for existing in sorted(mine, key=lambda s: s["metadata"]["name"]):
        by_key.setdefault(ports_key(existing.get("ports")), []).append(existing)
    for key, wanted in sorted(groups.items()):
        _fill(service, json.loads(key), wanted, by_key.pop(key, []), address_type, plan)
    leftovers = [s for group in by_key.values() for s in group]
    if not groups:
        # As the real controller: a Service with no endpoints keeps one empty slice.
        if leftovers:
            _update_if_changed(service, leftovers[0], [], [], plan)
            plan.delete += leftovers[1:]
        else:
            plan.create.append(new_slice(service, [], [], address_type))
        return
    plan.delete += leftovers


def orphaned(slices: list[Object], services: dict[tuple[str, str], Object]) -> list[Object]:
    """Managed slices whose Service is gone (or became ExternalName): the lab has no
    garbage collector to follow owner references, so the controller removes them. A
    Service that lost its selector keeps its slices, as with the real controller."""
    gone = []
    for slice_ in slices:
        owner = services.get((slice_["metadata"]["namespace"], service_of(slice_) or ""))
        if owner is None or owner.get("spec", {}).get("type") == "ExternalName":
            gone.append(slice_)
    return gone

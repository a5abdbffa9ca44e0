"""The kinds the lab API server serves, each declared once with its server-side rules.

Router, store, validation and discovery read `RESOURCES` (through the store's catalog,
which adds the kinds of stored CustomResourceDefinitions); a new built-in kind is one more
`ResourceType` here (with its spec check in `validation.py` and any fields the server owns).
"""

from __future__ import annotations

import copy

from podwire.lab.api import customresources
from podwire.lab.api.allocator import NODE_PORT_TYPES, ServiceAllocator
from podwire.lab.api.errors import field_invalid
from podwire.lab.api.resource import Object, ResourceType
from podwire.lab.api.validation import (
    check_endpoint_slice,
    check_pod_spec,
    check_policy_spec,
    check_service_spec,
)

NAMESPACE_LABEL = "kubernetes.io/metadata.name"


def _new_namespace(obj: Object) -> None:
    obj["metadata"].setdefault("labels", {})[NAMESPACE_LABEL] = obj["metadata"]["name"]
    obj["spec"] = {"finalizers": ["kubernetes"]}
    obj["status"] = {"phase": "Active"}


def _updated_namespace(new: Object, old: Object) -> None:
    # The name label and the finalizers are the server's; a client cannot change them.
    new["metadata"].setdefault("labels", {})[NAMESPACE_LABEL] = old["metadata"]["name"]
    new["spec"] = copy.deepcopy(old.get("spec", {}))


def _new_pod(obj: Object) -> None:
    # As the real server: a new pod's status is the server's, not the client's.
    obj["status"] = {"phase": "Pending"}


def _service_defaults(obj: Object) -> None:
    """The fields the real server fills in a Service it stores (pkg/apis/core/v1/defaults.go
    and the registry's strategy); the ClusterIPs, their families and node ports come from
    the allocator."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        config = spec.setdefault("sessionAffinityConfig", {}).setdefault("clientIP", {})
        config.setdefault("timeoutSeconds", 10800)
    if spec["type"] == "ExternalName":
        return
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in NODE_PORT_TYPES:
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port["port"])


def _new_service(obj: Object) -> None:
    _service_defaults(obj)
    obj["status"] = {"loadBalancer": {}}


def _updated_service(new: Object, old: Object) -> None:
    _service_defaults(new)
    # As the real server's PatchAllocatedValues: an update that leaves the allocated
    # values out keeps them (the allocator then refuses a change).
    spec, old_spec = new["spec"], old.get("spec") or {}
    if not spec.get("clusterIP") and old_spec.get("clusterIP"):
        spec["clusterIP"] = old_spec["clusterIP"]
        spec["clusterIPs"] = list(old_spec.get("clusterIPs") or [old_spec["clusterIP"]])
        # ...and the families they were given, so a PreferDualStack Service stays one.
        for field in ("ipFamilies", "ipFamilyPolicy"):
            if field not in spec and field in old_spec:
                spec[field] = copy.deepcopy(old_spec[field])


def _updated_slice(new: Object, old: Object) -> None:
    if new.get("addressType") != old.get("addressType"):
        raise field_invalid("EndpointSlice", new["metadata"]["name"], "addressType",
                            "FieldValueInvalid", new.get("addressType"), "field is immutable")


NAMESPACES = ResourceType("namespaces", "Namespace", "", "v1", False, ("ns",),
                          ("status.phase",), has_status=True, name_format="dns-label",
                          prepare_create=_new_namespace, prepare_update=_updated_namespace)
NODES = ResourceType("nodes", "Node", "", "v1", False, ("no",), (), has_status=True)
PODS = ResourceType("pods", "Pod", "", "v1", True, ("po",),
                    ("spec.nodeName", "status.phase"), has_status=True,
                    check_spec=check_pod_spec, prepare_create=_new_pod,
                    delete_returns_object=True)
NETWORK_POLICIES = ResourceType("networkpolicies", "NetworkPolicy", "networking.k8s.io", "v1",
                                True, ("netpol",), check_spec=check_policy_spec)

SERVICES = ResourceType("services", "Service", "", "v1", True, ("svc",), has_status=True,
                        check_spec=check_service_spec, prepare_create=_new_service,
                        prepare_update=_updated_service, allocator=ServiceAllocator,
                        delete_returns_object=True)
ENDPOINT_SLICES = ResourceType("endpointslices", "EndpointSlice", "discovery.k8s.io", "v1", True,
                               (), check_fields=check_endpoint_slice,
                               prepare_update=_updated_slice)

CUSTOM_RESOURCE_DEFINITIONS = ResourceType(
    "customresourcedefinitions", customresources.KIND, customresources.GROUP, "v1", False,
    ("crd", "crds"), has_status=True, check_fields=customresources.check_definition,
    prepare_create=customresources.new_definition,
    prepare_update=customresources.updated_definition)

# The built-in kinds; those of CustomResourceDefinitions join them in the store's catalog.
RESOURCES: tuple[ResourceType, ...] = (NAMESPACES, NODES, PODS, NETWORK_POLICIES, SERVICES,
                                       ENDPOINT_SLICES, CUSTOM_RESOURCE_DEFINITIONS)


def find_resource(group: str, version: str, plural: str) -> ResourceType | None:
    """The built-in kind at `/api[s]/<group>/<version>/<plural>`, or None."""
    for res in RESOURCES:
        if (res.group, res.version, res.plural) == (group, version, plural):
            return res
    return None

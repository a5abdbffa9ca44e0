"""What the lab API server refuses before storing: structure and names, as the real one does.

The checks every kind shares are here, with the spec checks kinds name in `kinds.py`.

NetworkPolicy checks stop at structure on purpose: the real API server accepts policies that
podwire's own validator rejects, and the agent must meet those too.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from podwire.lab.api.errors import bad_request, field_invalid, invalid
from podwire.lab.api.resource import ResourceType

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PROTOCOLS = ("TCP", "UDP", "SCTP")
_LABEL_MSG = ("must be 63 characters or less and consist of alphanumeric characters, '-', "
              "'_' or '.', starting and ending with an alphanumeric character")


def check_kind(res: ResourceType, obj: Any) -> None:
    """The body must be an object of the URL's kind; missing apiVersion/kind default from the URL
    (the real server decodes with the request's kind as default)."""
    if not isinstance(obj, dict):
        raise bad_request(f"the body must be a JSON object holding a {res.kind}")
    version, kind = obj.get("apiVersion"), obj.get("kind")
    if version not in (None, "", res.api_version):
        raise bad_request(f"the API version in the data ({version}) does not match the expected "
                          f"API version ({res.api_version})")
    if kind not in (None, "", res.kind):
        raise bad_request(f"{kind} in version \"{res.version}\" cannot be handled as a {res.kind}")
    if not isinstance(obj.get("metadata", {}), dict):
        raise bad_request("metadata must be an object")


def check_name(res: ResourceType, name: Any) -> None:
    if not isinstance(name, str):
        raise invalid(res.kind, str(name), "metadata.name", name, "must be a string")
    if res.name_format == "dns-label":
        ok, why = len(name) <= 63 and bool(_DNS_LABEL.match(name)), (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
            "'-', and must start and end with an alphanumeric character")
    else:
        ok, why = len(name) <= 253 and bool(_DNS_SUBDOMAIN.match(name)), (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character")
    if not ok:
        raise invalid(res.kind, name, "metadata.name", name, why)


def _check_labels(res: ResourceType, name: str, labels: Any) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        raise invalid(res.kind, name, "metadata.labels", labels, "must be a map of strings")
    for key, value in labels.items():
        prefix, _, base = key.rpartition("/")
        if (not _LABEL_NAME.match(base) or len(base) > 63
                or (prefix and not _DNS_SUBDOMAIN.match(prefix))):
            raise invalid(res.kind, name, "metadata.labels", key, "name part " + _LABEL_MSG)
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            raise invalid(res.kind, name, f"metadata.labels.{key}", value, _LABEL_MSG)


def check_pod_spec(name: str, spec: dict[str, Any]) -> None:
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise invalid("Pod", name, "spec.containers", None, "at least one container")
    for i, container in enumerate(containers):
        where = f"spec.containers[{i}]"
        if not isinstance(container, dict):
            raise invalid("Pod", name, where, container, "must be an object")
        cname = container.get("name")
        if not isinstance(cname, str) or not _DNS_LABEL.match(cname):
            raise invalid("Pod", name, f"{where}.name", cname, "must be a DNS label")
        if not isinstance(container.get("image"), str) or not container["image"]:
            raise invalid("Pod", name, f"{where}.image", None, "an image is required")
        for j, port in enumerate(container.get("ports") or []):
            _check_container_port(name, f"{where}.ports[{j}]", port)


def _check_container_port(name: str, where: str, port: Any) -> None:
    if not isinstance(port, dict):
        raise invalid("Pod", name, where, port, "must be an object")
    number = port.get("containerPort")
    if not isinstance(number, int) or not 1 <= number <= 65535:
        raise invalid("Pod", name, f"{where}.containerPort", number, "must be 1-65535")
    pname = port.get("name")
    if pname is not None and (not isinstance(pname, str) or len(pname) > 15
                              or not _PORT_NAME.match(pname)):
        raise invalid("Pod", name, f"{where}.name", pname, "must be an IANA_SVC_NAME")
    if port.get("protocol", "TCP") not in _PROTOCOLS:
        raise invalid("Pod", name, f"{where}.protocol", port.get("protocol"),
                      "supported values: TCP, UDP, SCTP")


def _check_list_of_objects(name: str, where: str, value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise invalid("NetworkPolicy", name, where, value, "must be a list of objects")
    return value


def check_policy_spec(name: str, spec: dict[str, Any]) -> None:
    if not isinstance(spec.get("podSelector", {}), dict):
        raise invalid("NetworkPolicy", name, "spec.podSelector", spec["podSelector"],
                      "must be a label selector object")
    types = spec.get("policyTypes") or []
    if not isinstance(types, list) or any(t not in ("Ingress", "Egress") for t in types):
        raise invalid("NetworkPolicy", name, "spec.policyTypes", types,
                      'supported values: "Ingress", "Egress"')
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(_check_list_of_objects(name, f"spec.{direction}",
                                                        spec.get(direction))):
            where = f"spec.{direction}[{i}]"
            _check_list_of_objects(name, f"{where}.{peers_key}", rule.get(peers_key))
            for j, port in enumerate(_check_list_of_objects(name, f"{where}.ports",
                                                            rule.get("ports"))):
                if port.get("protocol", "TCP") not in _PROTOCOLS:
                    raise invalid("NetworkPolicy", name, f"{where}.ports[{j}].protocol",
                                  port.get("protocol"), "supported values: TCP, UDP, SCTP")
                if not isinstance(port.get("port", 0), int | str):
                    raise invalid("NetworkPolicy", name, f"{where}.ports[{j}].port",
                                  port.get("port"), "must be a number or a port name")


def check_object(res: ResourceType, obj: dict[str, Any]) -> None:
    """Refuse with 422 Invalid what the real server would refuse on these fields."""
    meta = obj["metadata"]
    name = meta["name"]
    check_name(res, name)
    _check_labels(res, name, meta.get("labels"))
    annotations = meta.get("annotations")
    if annotations is not None and (not isinstance(annotations, dict) or not all(
            isinstance(v, str) for v in annotations.values())):
        raise invalid(res.kind, name, "metadata.annotations", annotations,
                      "must be a map of strings")
    spec = obj.get("spec", {})
    if not isinstance(spec, dict):
        raise invalid(res.kind, name, "spec", spec, "must be an object")
    if res.check_spec is not None:
        res.check_spec(name, spec)
    if res.check_fields is not None:
        res.check_fields(name, obj)



# ---- Services and EndpointSlices (pkg/apis/core/validation, pkg/apis/discovery/validation) --

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_PORT_RANGE_MSG = "must be between 1 and 65535, inclusive"
_PROTOCOL_VALUES = '"SCTP", "TCP", "UDP"'
_DNS_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                  "characters or '-', and must start and end with an alphanumeric character")


def _one_of(kind: str, name: str, where: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise field_invalid(kind, name, where, "FieldValueNotSupported", value,
                            ", ".join(f'"{v}"' for v in sorted(allowed)))


def _port_number(kind: str, name: str, where: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise field_invalid(kind, name, where, "FieldValueInvalid", value, _PORT_RANGE_MSG)


def _check_service_port(name: str, where: str, port: Any, several: bool) -> None:
    if not isinstance(port, dict):
        raise field_invalid("Service", name, where, "FieldValueInvalid", port,
                            "must be an object")
    pname = port.get("name")
    if several and not pname:
        raise field_invalid("Service", name, f"{where}.name", "FieldValueRequired")
    if pname and (not isinstance(pname, str) or len(pname) > 63 or not _DNS_LABEL.match(pname)):
        raise field_invalid("Service", name, f"{where}.name", "FieldValueInvalid", pname,
                            _DNS_LABEL_MSG)
    _port_number("Service", name, f"{where}.port", port.get("port"))
    if port.get("protocol") not in (None, *_PROTOCOLS):
        raise field_invalid("Service", name, f"{where}.protocol", "FieldValueNotSupported",
                            port.get("protocol"), _PROTOCOL_VALUES)
    target = port.get("targetPort")
    if isinstance(target, str):
        if not target or len(target) > 15 or not _PORT_NAME.match(target) or target.isdigit():
            raise field_invalid("Service", name, f"{where}.targetPort", "FieldValueInvalid",
                                target, "must contain at least one letter (a-z) and be an "
                                        "IANA_SVC_NAME of at most 15 characters")
    elif target is not None:
        _port_number("Service", name, f"{where}.targetPort", target)
    node_port = port.get("nodePort")
    if node_port is not None and (not isinstance(node_port, int) or not 0 <= node_port <= 65535):
        raise field_invalid("Service", name, f"{where}.nodePort", "FieldValueInvalid",
                            node_port, _PORT_RANGE_MSG)


def _check_service_ports(name: str, spec: dict[str, Any]) -> None:
    ports = spec.get("ports")
    headless = spec.get("clusterIP") == "None"
    if ports is None or ports == []:
        if not headless and spec.get("type") != "ExternalName":
            raise field_invalid("Service", name, "spec.ports", "FieldValueRequired")
        return
    if not isinstance(ports, list):
        raise field_invalid("Service", name, "spec.ports", "FieldValueInvalid", ports,
                            "must be a list of ports")
    names: set[str] = set()
    numbers: set[tuple[int, str]] = set()
    for i, port in enumerate(ports):
        where = f"spec.ports[{i}]"
        _check_service_port(name, where, port, len(ports) > 1)
        if port.get("name") in names:
            raise field_invalid("Service", name, f"{where}.name", "FieldValueDuplicate",
                                port["name"])
        names.add(port.get("name") or "")
        key = (port["port"], port.get("protocol") or "TCP")
        if key in numbers:
            raise field_invalid("Service", name, where, "FieldValueDuplicate",
                                f"{key[0]}/{key[1]}")
        numbers.add(key)


def check_service_spec(name: str, spec: dict[str, Any]) -> None:
    kind_of = spec.get("type", "ClusterIP")
    _one_of("Service", name, "spec.type", kind_of, SERVICE_TYPES)
    if kind_of == "ExternalName" and not spec.get("externalName"):
        raise field_invalid("Service", name, "spec.externalName", "FieldValueRequired")
    _check_service_ports(name, spec)
    selector = spec.get("selector")
    if selector is not None and (not isinstance(selector, dict) or not all(
            isinstance(v, str) and len(v) <= 63 and _LABEL_VALUE.match(v)
            for v in selector.values())):
        raise field_invalid("Service", name, "spec.selector", "FieldValueInvalid", selector,
                            _LABEL_MSG)
    _one_of("Service", name, "spec.sessionAffinity", spec.get("sessionAffinity"),
            ("None", "ClientIP"))
    _one_of("Service", name, "spec.internalTrafficPolicy", spec.get("internalTrafficPolicy"),
            ("Cluster", "Local"))
    _one_of("Service", name, "spec.externalTrafficPolicy", spec.get("externalTrafficPolicy"),
            ("Cluster", "Local"))
    if spec.get("externalTrafficPolicy") and kind_of not in ("NodePort", "LoadBalancer"):
        raise field_invalid("Service", name, "spec.externalTrafficPolicy", "FieldValueInvalid",
                            spec["externalTrafficPolicy"],
                            "may only be set when `type` is 'NodePort' or 'LoadBalancer'")
    if spec.get("clusterIP") == "None" and kind_of in ("NodePort", "LoadBalancer"):
        raise field_invalid("Service", name, "spec.clusterIPs[0]", "FieldValueInvalid", "None",
                            f"may not be set to 'None' for {kind_of} services")
    families = spec.get("ipFamilies") or []
    if len(families) > 2:
        raise field_invalid("Service", name, "spec.ipFamilies", "FieldValueTooMany",
                            len(families), "must have at most 2 items")
    for i, family in enumerate(families):
        _one_of("Service", name, f"spec.ipFamilies[{i}]", family, ("IPv4", "IPv6"))
        if family in families[:i]:
            raise field_invalid("Service", name, f"spec.ipFamilies[{i}]",
                                "FieldValueDuplicate", family)
    if len(spec.get("clusterIPs") or []) > 2:
        raise field_invalid("Service", name, "spec.clusterIPs", "FieldValueTooMany",
                            len(spec["clusterIPs"]), "must have at most 2 items")
    # Whether the cluster has the families asked for is the allocator's to say.
    _one_of("Service", name, "spec.ipFamilyPolicy", spec.get("ipFamilyPolicy"),
            ("SingleStack", "PreferDualStack", "RequireDualStack"))


ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
MAX_SLICE_ENDPOINTS = 1000
MAX_SLICE_PORTS = 100
MAX_ENDPOINT_ADDRESSES = 100


def _check_address(name: str, where: str, address_type: str, value: Any) -> None:
    try:
        parsed = ipaddress.ip_address(value) if address_type != "FQDN" else None
    except ValueError:
        parsed = None
    if address_type == "FQDN":
        ok = isinstance(value, str) and bool(_DNS_SUBDOMAIN.match(value))
    else:
        ok = parsed is not None and parsed.version == (4 if address_type == "IPv4" else 6)
    if not ok:
        raise field_invalid("EndpointSlice", name, where, "FieldValueInvalid", value,
                            f"must be a valid {address_type} address")


def _check_endpoint(name: str, where: str, address_type: str, endpoint: Any) -> None:
    if not isinstance(endpoint, dict):
        raise field_invalid("EndpointSlice", name, where, "FieldValueInvalid", endpoint,
                            "must be an object")
    addresses = endpoint.get("addresses")
    if not isinstance(addresses, list) or not addresses:
        raise field_invalid("EndpointSlice", name, f"{where}.addresses", "FieldValueRequired",
                            why="must contain at least 1 address")
    if len(addresses) > MAX_ENDPOINT_ADDRESSES:
        raise field_invalid("EndpointSlice", name, f"{where}.addresses", "FieldValueTooMany",
                            len(addresses), f"must have at most {MAX_ENDPOINT_ADDRESSES} items")
    for j, address in enumerate(addresses):
        _check_address(name, f"{where}.addresses[{j}]", address_type, address)
    conditions = endpoint.get("conditions") or {}
    if not isinstance(conditions, dict):
        raise field_invalid("EndpointSlice", name, f"{where}.conditions", "FieldValueInvalid",
                            conditions, "must be an object")
    for key, value in conditions.items():
        if value is not None and not isinstance(value, bool):
            raise field_invalid("EndpointSlice", name, f"{where}.conditions.{key}",
                                "FieldValueInvalid", value, "must be a boolean")
    node = endpoint.get("nodeName")
    if node is not None and (not isinstance(node, str) or not _DNS_SUBDOMAIN.match(node)):
        raise field_invalid("EndpointSlice", name, f"{where}.nodeName", "FieldValueInvalid",
                            node, "a lowercase RFC 1123 subdomain")


def _check_slice_ports(name: str, ports: Any) -> None:
    if not isinstance(ports, list):
        raise field_invalid("EndpointSlice", name, "ports", "FieldValueInvalid", ports,
                            "must be a list of ports")
    if len(ports) > MAX_SLICE_PORTS:
        raise field_invalid("EndpointSlice", name, "ports", "FieldValueTooMany", len(ports),
                            f"must have at most {MAX_SLICE_PORTS} items")
    names: set[str] = set()
    for i, port in enumerate(ports):
        where = f"ports[{i}]"
        if not isinstance(port, dict):
            raise field_invalid("EndpointSlice", name, where, "FieldValueInvalid", port,
                                "must be an object")
        pname = port.get("name") or ""
        if pname and (not isinstance(pname, str) or len(pname) > 63
                      or not _DNS_LABEL.match(pname)):
            raise field_invalid("EndpointSlice", name, f"{where}.name", "FieldValueInvalid",
                                pname, _DNS_LABEL_MSG)
        if pname in names:
            raise field_invalid("EndpointSlice", name, f"{where}.name", "FieldValueDuplicate",
                                pname)
        names.add(pname)
        if port.get("protocol") not in (None, *_PROTOCOLS):
            raise field_invalid("EndpointSlice", name, f"{where}.protocol",
                                "FieldValueNotSupported", port.get("protocol"), _PROTOCOL_VALUES)
        if port.get("port") is not None:
            _port_number("EndpointSlice", name, f"{where}.port", port["port"])


def check_endpoint_slice(name: str, obj: dict[str, Any]) -> None:
    address_type = obj.get("addressType")
    if not address_type:
        raise field_invalid("EndpointSlice", name, "addressType", "FieldValueRequired")
    _one_of("EndpointSlice", name, "addressType", address_type, ADDRESS_TYPES)
    endpoints = obj.get("endpoints") or []
    if not isinstance(endpoints, list):
        raise field_invalid("EndpointSlice", name, "endpoints", "FieldValueInvalid", endpoints,
                            "must be a list of endpoints")
    if len(endpoints) > MAX_SLICE_ENDPOINTS:
        raise field_invalid("EndpointSlice", name, "endpoints", "FieldValueTooMany",
                            len(endpoints), f"must have at most {MAX_SLICE_ENDPOINTS} items")
    for i, endpoint in enumerate(endpoints):
        _check_endpoint(name, f"endpoints[{i}]", address_type, endpoint)
    _check_slice_ports(name, obj.get("ports") or [])

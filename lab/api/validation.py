"""What the lab API server refuses before storing: structure and names, as the real one does.

The checks every kind shares are here, with the spec checks kinds name in `kinds.py`.

NetworkPolicy checks stop at structure on purpose: the real API server accepts policies that
podwire's own validator rejects, and the agent must meet those too.
"""

from __future__ import annotations

import re
from typing import Any

from podwire.lab.api.errors import bad_request, invalid
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


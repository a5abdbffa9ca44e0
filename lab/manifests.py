"""Reading lab manifests: multi-document YAML of Namespace, Pod, NetworkPolicy, Service and
the cluster policy kinds (ClusterNetworkPolicy, AdminNetworkPolicy,
BaselineAdminNetworkPolicy).

Everything is checked before anything is sent, so a bad file changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from podwire.lab.api.errors import ApiError
from podwire.lab.api.kinds import SERVICES
from podwire.lab.api.validation import check_object
from podwire.lab.echo import PROTOCOLS
from podwire.policy import NetworkPolicy, PolicyError
from podwire.policy.admin import KINDS as CLUSTER_POLICY_KINDS
from podwire.policy.admin import AdminPolicy

KINDS = {
    # kind: (apiVersion, namespaced)
    "Namespace": ("v1", False),
    "Pod": ("v1", True),
    "NetworkPolicy": ("networking.k8s.io/v1", True),
    "Service": ("v1", True),
    **{kind: (spec.api_version, False) for kind, spec in CLUSTER_POLICY_KINDS.items()},
}
# Applied in this order so namespaces exist before what lives in them, and policies before
# the pods they select (a pod then starts under its policies).
APPLY_ORDER = ("Namespace", "NetworkPolicy", *CLUSTER_POLICY_KINDS, "Service", "Pod")
KIND_ALIASES = {
    "namespace": "Namespace", "namespaces": "Namespace", "ns": "Namespace",
    "pod": "Pod", "pods": "Pod", "po": "Pod",
    "networkpolicy": "NetworkPolicy", "networkpolicies": "NetworkPolicy", "netpol": "NetworkPolicy",
    "service": "Service", "services": "Service", "svc": "Service",
    **{alias: kind for kind, spec in CLUSTER_POLICY_KINDS.items()
       for alias in (kind.lower(), spec.plural, spec.short_name)},
}


class ManifestError(ValueError):
    """A manifest that cannot be applied; the message names the object and the problem."""


@dataclass(frozen=True)
class Manifest:
    kind: str
    name: str
    namespace: str | None
    body: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else (
            f"{self.kind}/{self.name}")


def kind_from_cli(text: str) -> str:
    """`pod`, `pods`, `netpol`, `NetworkPolicy`... to the canonical kind."""
    kind = KIND_ALIASES.get(text.lower())
    if kind is None:
        raise ManifestError(f"unknown kind {text!r}: expected one of {', '.join(KINDS)}")
    return kind


def parse(text: str, source: str = "<input>") -> list[Manifest]:
    """All documents of `text`, checked; empty documents are skipped."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML: {exc}") from exc
    manifests = []
    for number, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        manifests.extend(_expand(doc, f"{source} document {number}"))
    return manifests


def _expand(doc: Any, where: str) -> list[Manifest]:
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: expected a mapping with kind and metadata")
    if doc.get("kind") == "List" or str(doc.get("kind", "")).endswith("List"):
        items = doc.get("items")
        if not isinstance(items, list):
            raise ManifestError(f"{where}: a List needs items")
        return [m for i, item in enumerate(items) for m in _expand(item, f"{where} item {i}")]
    return [check(doc, where)]


def check(doc: dict[str, Any], where: str) -> Manifest:
    """One object: a known kind and apiVersion, a name, a namespace when namespaced."""
    kind = doc.get("kind")
    if kind not in KINDS:
        raise ManifestError(
            f"{where}: unknown kind {kind!r}: the lab takes {', '.join(KINDS)}")
    api_version, namespaced = KINDS[kind]
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{where}: {kind} without metadata.name")
    label = f"{kind} {name!r}"
    if doc.get("apiVersion") != api_version:
        raise ManifestError(
            f"{where}: {label} has apiVersion {doc.get('apiVersion')!r}, expected {api_version}")
    body = dict(doc)
    body["metadata"] = dict(metadata)  # type: ignore[arg-type]
    namespace: str | None = None
    if namespaced:
        namespace = body["metadata"].setdefault("namespace", "default")
        if not isinstance(namespace, str) or not namespace:
            raise ManifestError(f"{where}: {label} has a bad metadata.namespace")
    labels = body["metadata"].get("labels", {})
    if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ManifestError(f"{where}: {label} labels must map strings to strings")
    _check_kind(kind, body, f"{where}: {kind} {namespace}/{name}" if namespace else (
        f"{where}: {label}"))
    return Manifest(kind, name, namespace, body)


def _check_kind(kind: str, body: dict[str, Any], label: str) -> None:
    """What the kind itself requires, checked by the code that will read it."""
    if kind == "Pod":
        _check_pod(body, label)
    elif kind == "Service":
        _check_service(body, label)
    elif kind == "NetworkPolicy" or kind in CLUSTER_POLICY_KINDS:
        # The parsers the agent and the evaluators use: what passes here they accept.
        try:
            if kind == "NetworkPolicy":
                NetworkPolicy.from_api(body)
            else:
                AdminPolicy.from_api(body)
        except PolicyError as exc:
            raise ManifestError(f"{label}: {exc}") from None


def _check_pod(body: dict[str, Any], label: str) -> None:
    spec = body.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or not (
            spec["containers"]):
        raise ManifestError(f"{label}: spec.containers must list at least one container")
    for container in spec["containers"]:
        if not isinstance(container, dict):
            raise ManifestError(f"{label}: a container must be a mapping")
        for port in container.get("ports") or []:
            number = port.get("containerPort") if isinstance(port, dict) else None
            if not isinstance(number, int) or not 0 < number < 65536:
                raise ManifestError(f"{label}: bad containerPort {number!r}")
            if port.get("protocol", "TCP") not in PROTOCOLS:
                raise ManifestError(
                    f"{label}: port {number} protocol {port.get('protocol')!r} "
                    f"(the lab serves {', '.join(PROTOCOLS)})")
    if not isinstance(spec.get("hostNetwork", False), bool):
        raise ManifestError(f"{label}: spec.hostNetwork must be true or false")


def _check_service(body: dict[str, Any], label: str) -> None:
    """The API server's own checks, before anything is written (allocation conflicts, a
    ClusterIP already taken, only the server can tell)."""
    try:
        check_object(SERVICES, body)
    except ApiError as exc:
        raise ManifestError(f"{label}: {exc.message}") from None


def ordered(manifests: list[Manifest], reverse: bool = False) -> list[Manifest]:
    """Creation order (namespaces first); `reverse` for deletion."""
    rank = {kind: i for i, kind in enumerate(APPLY_ORDER)}
    return sorted(manifests, key=lambda m: rank[m.kind], reverse=reverse)

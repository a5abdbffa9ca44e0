"""What each watched kind's events do to the node's model: one pair of handlers per kind.

Like kopf's registry of handlers per resource (`_core/intents/registries.py`), kept apart
from the streams that feed it (`agent/watch.py`), and like client-go's
ResourceEventHandler: a kind's `upsert` takes an object that is there (added, or
modified: the model replaces what it had), its `remove` the name of one that went.
Supporting a new kind is one entry in `HANDLERS` (and its informer in the WatchSet).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from podwire.agent.desired import NodeState
from podwire.agent.nodes import NodeInfo
from podwire.agent.watch import EventType, WatchEvent
from podwire.policy import Namespace, NetworkPolicy, Pod, PolicyError
from podwire.policy.admin import KINDS as ADMIN_KINDS
from podwire.policy.admin import AdminPolicy

log = logging.getLogger("podwire.agent")

ApiObject = dict[str, Any]


@dataclass(frozen=True)
class KindHandlers:
    upsert: Callable[[NodeState, ApiObject], None]
    remove: Callable[[NodeState, str, str], None]  # (namespace or "", name)


def apply_event(state: NodeState, event: WatchEvent) -> None:
    """Hand one event to its kind's handler; the caller holds the model's lock.

    An object the model cannot take (a malformed pod, say) is logged and left out.
    """
    handlers = HANDLERS.get(event.kind)
    if handlers is None or event.type is EventType.BOOKMARK:
        return
    meta = event.object.get("metadata") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    try:
        if event.type is EventType.DELETED:
            handlers.remove(state, namespace, name)
        else:
            handlers.upsert(state, event.object)
    except PolicyError as err:
        log.warning("event=object_rejected kind=%s name=%s/%s error=%r", event.kind,
                    namespace, name, err.describe())


NODE_ADDRESS_TYPES = ("InternalIP", "ExternalIP")


def node_info(obj: ApiObject) -> NodeInfo:
    """A Node's name, InternalIP, spec.podCIDR (either may be missing yet), every
    Internal and External address, and spec.podCIDRs (one per family)."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    reported = status.get("addresses") or []
    address = next((a.get("address") for a in reported if a.get("type") == "InternalIP"),
                   None)
    addresses = tuple(str(a["address"]) for a in reported
                      if a.get("type") in NODE_ADDRESS_TYPES and a.get("address"))
    labels = tuple(sorted((obj["metadata"].get("labels") or {}).items()))
    cidrs = tuple(str(c) for c in spec.get("podCIDRs") or [] if c)
    return NodeInfo(obj["metadata"]["name"], address,
                    spec.get("podCIDR") or next(iter(cidrs), None), addresses,
                    labels=labels, pod_cidrs=cidrs)


# Audit mode: on a NetworkPolicy, a cluster policy, or a Namespace (all its policies).
ENFORCEMENT_ANNOTATION = "podwire.io/enforcement"
AUDIT = "audit"


def audited(obj: ApiObject) -> bool:
    """Whether an object carries `podwire.io/enforcement: audit`. Any other value (or
    none) is enforce; a value the agent does not know is logged, and enforced."""
    meta = obj.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(ENFORCEMENT_ANNOTATION)
    if value is not None and value not in (AUDIT, "enforce"):
        log.warning("event=unknown_enforcement kind=%s name=%s value=%r expected=audit|enforce",
                    obj.get("kind"), meta.get("name"), value)
    return value == AUDIT


def _set_policy(state: NodeState, obj: ApiObject) -> None:
    """A policy the model rejects is kept as a problem, reported by `/status`."""
    try:
        state.set_policy(NetworkPolicy.from_api(obj), audited(obj))
    except PolicyError as err:
        meta = obj.get("metadata") or {}
        state.reject_policy(f"{meta.get('namespace', '')}/{meta.get('name', '')}",
                            meta.get("resourceVersion", ""), err)


def _set_cluster_policy(state: NodeState, obj: ApiObject) -> None:
    """A cluster policy the model rejects is kept as a problem (the last good one stays)."""
    try:
        state.set_cluster_policy(AdminPolicy.from_api(obj), audited(obj))
    except PolicyError as err:
        meta = obj.get("metadata") or {}
        state.reject_policy(f"{obj.get('kind')}/{meta.get('name', '')}",
                            meta.get("resourceVersion", ""), err)


def _cluster_policy_handlers(kind: str) -> KindHandlers:
    return KindHandlers(
        upsert=_set_cluster_policy,
        remove=lambda state, _, name: state.remove_cluster_policy(f"{kind}/{name}"))


HANDLERS: dict[str, KindHandlers] = {
    "Namespace": KindHandlers(
        upsert=lambda state, obj: state.set_namespace(Namespace.from_api(obj), audited(obj)),
        remove=lambda state, _, name: state.remove_namespace(name)),
    "Pod": KindHandlers(
        upsert=lambda state, obj: state.set_pod(Pod.from_api(obj)),
        remove=lambda state, namespace, name: state.remove_pod(namespace, name)),
    "NetworkPolicy": KindHandlers(
        upsert=_set_policy,
        remove=lambda state, namespace, name: state.remove_policy(namespace, name)),
    "Node": KindHandlers(
        upsert=lambda state, obj: state.set_node(node_info(obj)),
        remove=lambda state, _, name: state.remove_node(name)),
    # The model parses these itself: what it cannot use it records as a problem.
    "Service": KindHandlers(
        upsert=lambda state, obj: state.set_service(obj),
        remove=lambda state, namespace, name: state.remove_service(namespace, name)),
    "EndpointSlice": KindHandlers(
        upsert=lambda state, obj: state.set_endpoint_slice(obj),
        remove=lambda state, namespace, name: state.remove_endpoint_slice(namespace, name)),
    **{kind: _cluster_policy_handlers(kind) for kind in ADMIN_KINDS},
}

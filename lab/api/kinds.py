"""The kinds the lab API server serves, each declared once with its server-side rules.

Router, store, validation and discovery read `RESOURCES`; a new kind is one more
`ResourceType` here (with its spec check in `validation.py` and any fields the server owns).
"""

from __future__ import annotations

import copy

from podwire.lab.api.resource import Object, ResourceType
from podwire.lab.api.validation import check_pod_spec, check_policy_spec

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

RESOURCES: tuple[ResourceType, ...] = (NAMESPACES, NODES, PODS, NETWORK_POLICIES)


def find_resource(group: str, version: str, plural: str) -> ResourceType | None:
    """The served kind at `/api[s]/<group>/<version>/<plural>`, or None."""
    for res in RESOURCES:
        if (res.group, res.version, res.plural) == (group, version, plural):
            return res
    return None

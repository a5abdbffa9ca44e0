"""Applying and deleting workload objects, and waiting until the lab has caught up.

"Caught up" is the contract `podwire lab apply` gives its callers: the pods it created
run with an IP, and every node's agent reports a `revision` at least the API's
resourceVersion after those writes, so the datapath already enforces what was applied.
Every object is checked (and every conflict found) before the first write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from podwire.common import agentapi
from podwire.lab import hostports, netns
from podwire.lab.cluster import LabError, LabState
from podwire.lab.kube import Kube
from podwire.lab.manifests import Manifest, ManifestError, ordered
from podwire.lab.revisionfile import read_revision
from podwire.policy.admin import KINDS as CLUSTER_POLICY_KINDS

log = logging.getLogger("podwire.lab.workload")

# Kinds an apply writes whole (PUT): their rules are lists a merge patch could not shrink.
REPLACED_WHOLE = ("NetworkPolicy", "Service", *CLUSTER_POLICY_KINDS)

DEFAULT_TIMEOUT = 60.0


class LabTimeout(LabError):
    """The lab did not reach the wanted state in time; the message says what was missing."""


@dataclass(frozen=True)
class _Step:
    manifest: Manifest
    existing: dict[str, Any] | None


def _labels_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch turning `old` labels into `new` ones (null removes a label)."""
    old_labels = old["metadata"].get("labels") or {}
    new_labels = new["metadata"].get("labels") or {}
    patch: dict[str, Any] = {k: v for k, v in new_labels.items() if old_labels.get(k) != v}
    patch.update({k: None for k in old_labels if k not in new_labels
                  and k != "kubernetes.io/metadata.name"})
    return patch


def _pod_spec_view(spec: dict[str, Any]) -> Any:
    """The parts of a pod spec the lab acts on; they cannot change on a live pod."""
    return [bool(spec.get("hostNetwork"))] + [
        (c.get("name"), sorted((p.get("containerPort"), p.get("protocol", "TCP"),
                                p.get("name") or "") for p in c.get("ports") or []))
        for c in spec.get("containers", [])]


def _node_ports_free(m: Manifest, node: str | None, placed: list[dict[str, Any]]) -> None:
    """Refuse a hostNetwork pod bound to a node where another holds one of its ports."""
    if node is None or not hostports.host_network(m.body):
        return
    on_node = [p for p in placed if p["spec"].get("nodeName") == node
               and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
    why = hostports.conflict(m.body, on_node)
    if why is not None:
        raise ManifestError(f"{m.ref}: {why} on {node}")


def plan(kube: Kube, state: LabState, manifests: list[Manifest]) -> list[_Step]:
    """Read what exists and refuse anything the lab cannot do, before any write."""
    nodes = {n.name for n in state.node_layouts()}
    file_namespaces = {m.name for m in manifests if m.kind == "Namespace"}
    known_namespaces = {ns["metadata"]["name"] for ns in kube.list_namespaces()["items"]}
    steps = []
    placed: list[dict[str, Any]] | None = None
    for m in ordered(manifests):
        if m.namespace and m.namespace not in file_namespaces | known_namespaces:
            raise ManifestError(f"{m.ref}: namespace {m.namespace!r} does not exist")
        existing = kube.read(m.kind, m.name, m.namespace)
        if m.kind == "Pod":
            node = m.body["spec"].get("nodeName")
            if node is not None and node not in nodes:
                raise ManifestError(f"{m.ref}: node {node!r} does not exist "
                                    f"(lab nodes: {', '.join(sorted(nodes))})")
            if existing is not None and (
                    _pod_spec_view(existing["spec"]) != _pod_spec_view(m.body["spec"])
                    or node not in (None, existing["spec"].get("nodeName"))):
                raise ManifestError(f"{m.ref}: a running pod's containers, ports, node "
                                    "and hostNetwork cannot change; delete it first")
            if hostports.host_network(m.body):
                placed = placed if placed is not None else kube.list_pods()["items"]
                _node_ports_free(m, node, placed)
                placed.append(m.body)
        steps.append(_Step(m, existing))
    return steps


def apply(kube: Kube, state: LabState, manifests: list[Manifest],
          timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Create or update each object, then wait until pods run and agents caught up."""
    steps = plan(kube, state, manifests)
    done, created_pods = [], []
    for step in steps:
        m = step.manifest
        if step.existing is None:
            obj = kube.create(m.kind, m.body, m.namespace)
            verb = "created"
            if m.kind == "Pod":
                created_pods.append((m.namespace or "default", m.name))
        elif m.kind in REPLACED_WHOLE:
            body = dict(m.body)
            body["metadata"] = dict(m.body["metadata"],
                                    resourceVersion=step.existing["metadata"]["resourceVersion"])
            if m.kind in CLUSTER_POLICY_KINDS:
                obj = kube.replace_cluster_policy(m.kind, m.name, body)
            else:
                replace = (kube.replace_policy if m.kind == "NetworkPolicy"
                           else kube.replace_service)
                obj = replace(m.name, m.namespace or "default", body)
            verb = "configured" if obj["metadata"]["resourceVersion"] != (
                step.existing["metadata"]["resourceVersion"]) else "unchanged"
        else:
            labels = _labels_patch(step.existing, m.body)
            obj = (kube.patch(m.kind, m.name, m.namespace, {"metadata": {"labels": labels}})
                   if labels else step.existing)
            verb = "configured" if labels else "unchanged"
        log.info("event=applied ref=%s verb=%s rv=%s", m.ref, verb,
                 obj["metadata"].get("resourceVersion"))
        done.append(f"{m.ref} {verb}")
    wait_pods_running(kube, created_pods, timeout)
    # The cluster DNS answers from Services (and their slices): waited for when they change.
    wait_control_plane(kube, state, timeout,
                       dns=state.cluster_dns and any(m.kind == "Service" for m in manifests))
    wait_agents(kube, state, timeout)
    return done


def delete(kube: Kube, state: LabState, targets: list[tuple[str, str, str | None]],
           timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Delete (kind, name, namespace) objects; wait for their pods' teardown and agents."""
    pods = kube.list_pods()["items"]
    doomed_uids: list[str] = []
    done = []
    for kind, name, namespace in targets:
        if kind == "Pod":
            doomed_uids += [p["metadata"]["uid"] for p in pods
                            if (p["metadata"]["namespace"], p["metadata"]["name"])
                            == (namespace, name)]
        elif kind == "Namespace":
            doomed_uids += [p["metadata"]["uid"] for p in pods
                            if p["metadata"]["namespace"] == name]
        found = kube.delete(kind, name, namespace)
        ref = f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"
        done.append(f"{ref} {'deleted' if found else 'not found'}")
    layout = state.layout
    _wait("pod sandboxes to be torn down", timeout,
          lambda: [u for u in doomed_uids if netns.exists(layout.pod_netns(u))])
    wait_control_plane(kube, state, timeout,
                       dns=state.cluster_dns
                       and any(kind in ("Service", "Namespace") for kind, _, _ in targets))
    wait_agents(kube, state, timeout)
    return done


def wait_pods_running(kube: Kube, pods: list[tuple[str, str]], timeout: float) -> None:
    def not_running() -> list[str]:
        missing = []
        for namespace, name in pods:
            pod = kube.read("Pod", name, namespace)
            status = (pod or {}).get("status", {})
            if pod is None:
                missing.append(f"{namespace}/{name} (gone)")
            elif status.get("phase") == "Failed":
                raise LabError(f"pod {namespace}/{name} failed ({status.get('reason')}): "
                               f"{status.get('message')}")
            elif status.get("phase") != "Running" or not status.get("podIP"):
                why = status.get("message") or status.get("phase", "Pending")
                missing.append(f"{namespace}/{name} ({why})")
        return missing

    _wait("pods to run with an IP", timeout, not_running)


# The lab's control-plane processes that act on what is applied, and report how far.
CONTROL_PLANE = (("the EndpointSlice controller", "slicecontroller"), ("the cluster DNS", "dns"))


def wait_control_plane(kube: Kube, state: LabState, timeout: float, dns: bool = True) -> None:
    """The EndpointSlice controller has written the slices for what the API holds now, and
    (with `dns`) the cluster DNS answers from it (the agents' wait then covers those slices
    too)."""
    wanted = kube.current_revision()
    parts = [p for p in CONTROL_PLANE if dns or p[1] != "dns"]

    def behind() -> list[str]:
        late = []
        for what, process in parts:
            rev = read_revision(state.layout.revision_file(process))
            if rev is None or rev < wanted:
                late.append(f"{what} (revision {rev}, want {wanted})")
        return late

    _wait(f"the control plane to reach revision {wanted}", timeout, behind)


def wait_agents(kube: Kube, state: LabState, timeout: float) -> None:
    """Every node's agent has applied the API's state as of now (a lab without agents,
    the bridge network, has nothing to wait for)."""
    if state.network != "podwire":
        return
    wanted = kube.current_revision()

    def behind() -> list[str]:
        late = []
        for node in state.node_layouts():
            rev = agentapi.revision(node.socket_path)
            if rev is None or rev < wanted:
                late.append(f"{node.name} (revision {rev}, want {wanted})")
        return late

    _wait(f"agents to reach revision {wanted}", timeout, behind)


def _wait(what: str, timeout: float, pending: Callable[[], list[str]],
          interval: float = 0.1) -> None:
    """Poll `pending` (what is still missing) until empty, or raise LabTimeout naming it."""
    deadline = time.monotonic() + timeout
    while True:
        missing = pending()
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise LabTimeout(f"timed out after {timeout:.0f}s waiting for {what}: "
                             f"{'; '.join(missing)}")
        time.sleep(interval)

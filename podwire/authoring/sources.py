"""Where the authoring commands get their inputs: files, the lab's API, agents' flow history.

This is the only I/O of `podwire policy`; everything it reads is handed to the pure
logic in `podwire.policy` as plain objects. Failures become `InputError` with a message
naming the file, socket or lab, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from podwire.lab.layout import LabLayout
from podwire.policy import NetworkPolicy, PolicyError, PolicyErrors
from podwire.policy.admin import AdminPolicy
from podwire.policy.context import ClusterContext, add_objects, parse_context, split_policies
from podwire.policy.observed import parse_records

log = logging.getLogger("podwire.authoring")
# More than an agent's history holds, so "everything it has" is one request.
ALL_FLOWS = 1_000_000


class InputError(Exception):
    """An input could not be read or understood; the message says which and why."""


def read_text(path: str) -> str:
    """A file's text, `-` for stdin."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as problem:
        reason = getattr(problem, "strerror", None) or str(problem)
        raise InputError(f"cannot read {path}: {reason}") from None


def cluster_from_files(paths: Sequence[str]) -> ClusterContext:
    """Namespaces, pods, policies and nodes from YAML/JSON files."""
    try:
        return parse_context([(path, read_text(path)) for path in paths])
    except PolicyErrors as problem:
        raise InputError(f"bad cluster file:\n{problem.describe()}") from None


def policies_from_files(paths: Sequence[str], default_namespace: str) -> list[NetworkPolicy]:
    """Every NetworkPolicy of the files; any invalid one is an InputError naming its fields.

    Cluster policies among them are passed over (`tiered_from_files` reads both).
    """
    return tiered_from_files(paths, default_namespace)[0]


def tiered_from_files(
    paths: Sequence[str], default_namespace: str
) -> tuple[list[NetworkPolicy], list[AdminPolicy]]:
    """The NetworkPolicies and the cluster policies of the files; any invalid one is an
    InputError naming its fields."""
    policies: list[NetworkPolicy] = []
    cluster_policies: list[AdminPolicy] = []
    for path in paths:
        try:
            found, tiered = split_policies(read_text(path), default_namespace)
        except PolicyErrors as problem:
            raise InputError(f"{path}: invalid policy (run `podwire policy lint {path}`):\n"
                             f"{problem.describe()}") from None
        policies += found
        cluster_policies += tiered
    return policies, cluster_policies


def cluster_from_lab(prefix: str) -> ClusterContext:
    """The lab's namespaces, running pods with addresses, policies and nodes, read now."""
    from kubernetes.client.exceptions import ApiException

    from podwire.lab import cluster as lab_cluster
    from podwire.lab.kube import Kube

    try:
        state = lab_cluster.load(_layout(prefix))
        kube = Kube(Path(state.kubeconfig))
        listings = [("Namespace", kube.list_namespaces()), ("Node", kube.list_nodes()),
                    ("Pod", kube.list_pods()), ("NetworkPolicy", kube.list_policies())]
        listings += _cluster_policy_listings(kube)
    except lab_cluster.LabError as problem:
        raise InputError(f"lab {prefix}: {problem}") from None
    except (ApiException, OSError) as problem:
        raise InputError(f"lab {prefix}: its API server did not answer: {problem}") from None
    objects: list[object] = []
    for kind, listing in listings:
        for obj in listing.get("items", []):
            if kind == "Pod" and not obj.get("status", {}).get("podIP"):
                continue  # not wired yet: no address, no traffic
            objects.append({**obj, "kind": kind})
    context = ClusterContext()
    try:
        add_objects(context, objects, f"lab {prefix}")
    except PolicyErrors as problem:
        raise InputError(problem.describe()) from None
    log.info("event=lab_read prefix=%s pods=%d policies=%d cluster_policies=%d", prefix,
             sum(1 for _ in context.cluster.pods()), sum(1 for _ in context.cluster.policies()),
             len(context.cluster_policies))
    return context


def _cluster_policy_listings(kube: Any) -> list[tuple[str, dict[str, Any]]]:
    """The cluster policies the lab holds, of each kind its API serves (a kind whose CRD
    is not installed has none)."""
    from kubernetes.client.exceptions import ApiException

    from podwire.policy.admin import KINDS

    listings = []
    for kind in KINDS:
        try:
            listings.append((kind, kube.list_cluster_policies(kind)))
        except ApiException as problem:
            if problem.status != 404:
                raise
    return listings


def _layout(prefix: str) -> LabLayout:
    try:
        return LabLayout(prefix)
    except ValueError as problem:
        raise InputError(f"--lab-prefix: {problem}") from None


def flows_from_file(path: str) -> list[dict[str, object]]:
    """Records saved from `podwire observe -o json`."""
    try:
        return parse_records(read_text(path))
    except PolicyError as problem:
        raise InputError(f"{path}: {problem.describe()}") from None


def flows_from_sockets(sockets: Sequence[Path]) -> list[dict[str, object]]:
    """The whole flow history of each agent behind `sockets`."""
    from podwire.common.agentapi import AgentError, recent_flows

    records: list[dict[str, object]] = []
    for socket_path in sockets:
        try:
            records += recent_flows(socket_path, last=ALL_FLOWS)
        except AgentError as problem:
            raise InputError(str(problem)) from None
        log.info("event=flows_read socket=%s total=%d", socket_path, len(records))
    return records


def lab_sockets(prefix: str) -> list[Path]:
    """The agent sockets of the lab's nodes."""
    from podwire.lab import cluster as lab_cluster

    try:
        state = lab_cluster.load(_layout(prefix))
    except lab_cluster.LabError as problem:
        raise InputError(f"lab {prefix}: {problem}") from None
    if state.network != "podwire":
        raise InputError(f"lab {prefix} runs the {state.network} network: no agents, no flows")
    return [node.socket_path for node in state.node_layouts()]

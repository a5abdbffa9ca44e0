"""The lab's side of the Kubernetes API: typed clients, raw JSON in and out.

Responses are read as plain dicts (`_preload_content=False`): the lab passes objects
on as they are and never needs the client's model classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from podwire.policy.admin import GROUP as CLUSTER_POLICY_GROUP
from podwire.policy.admin import KINDS as CLUSTER_POLICY_KINDS

MERGE_PATCH = "application/merge-patch+json"


class Kube:
    """Core and networking APIs of one cluster, reached through a kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        # Typed as Any: every call passes dicts and reads raw JSON, not the typed models.
        self.core: Any = client.CoreV1Api(api_client)
        self.net: Any = client.NetworkingV1Api(api_client)
        self.discovery: Any = client.DiscoveryV1Api(api_client)
        self.extensions: Any = client.ApiextensionsV1Api(api_client)
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.api_client = api_client

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        return json.loads(response.data)  # type: ignore[no-any-return]

    # Generic verbs by kind, so manifests of any served kind go through one path.

    @staticmethod
    def _cluster_policy(kind: str) -> tuple[str, str, str]:
        """(group, version, plural) of a cluster policy kind, for CustomObjectsApi."""
        spec = CLUSTER_POLICY_KINDS[kind]
        return CLUSTER_POLICY_GROUP, spec.version, spec.plural

    def read(self, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        try:
            if kind in CLUSTER_POLICY_KINDS:
                r = self.custom.get_cluster_custom_object(*self._cluster_policy(kind), name,
                                                          _preload_content=False)
            elif kind == "Namespace":
                r = self.core.read_namespace(name, _preload_content=False)
            elif kind == "Pod":
                r = self.core.read_namespaced_pod(name, namespace, _preload_content=False)
            elif kind == "Service":
                r = self.core.read_namespaced_service(name, namespace, _preload_content=False)
            else:
                r = self.net.read_namespaced_network_policy(name, namespace,
                                                            _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._json(r)

    def create(self, kind: str, body: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        if kind in CLUSTER_POLICY_KINDS:
            r = self.custom.create_cluster_custom_object(*self._cluster_policy(kind), body,
                                                         _preload_content=False)
        elif kind == "Namespace":
            r = self.core.create_namespace(body, _preload_content=False)
        elif kind == "Pod":
            r = self.core.create_namespaced_pod(namespace, body, _preload_content=False)
        elif kind == "Service":
            r = self.core.create_namespaced_service(namespace, body, _preload_content=False)
        else:
            r = self.net.create_namespaced_network_policy(namespace, body,
                                                          _preload_content=False)
        return self._json(r)

    def patch(self, kind: str, name: str, namespace: str | None, patch: dict[str, Any],
              ) -> dict[str, Any]:
        kw: dict[str, Any] = {"_preload_content": False, "_content_type": MERGE_PATCH}
        if kind in CLUSTER_POLICY_KINDS:
            r = self.custom.patch_cluster_custom_object(*self._cluster_policy(kind), name, patch,
                                                        **kw)
        elif kind == "Namespace":
            r = self.core.patch_namespace(name, patch, **kw)
        elif kind == "Pod":
            r = self.core.patch_namespaced_pod(name, namespace, patch, **kw)
        elif kind == "Service":
            r = self.core.patch_namespaced_service(name, namespace, patch, **kw)
        else:
            r = self.net.patch_namespaced_network_policy(name, namespace, patch, **kw)
        return self._json(r)

    def replace_policy(self, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT a NetworkPolicy whole: a merge patch could not drop nested rules."""
        return self._json(self.net.replace_namespaced_network_policy(
            name, namespace, body, _preload_content=False))

    def replace_service(self, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT a Service whole (its allocated ClusterIP and node ports are kept by the server
        when the body leaves them out)."""
        return self._json(self.core.replace_namespaced_service(
            name, namespace, body, _preload_content=False))

    def replace_cluster_policy(self, kind: str, name: str, body: dict[str, Any],
                               ) -> dict[str, Any]:
        """PUT a cluster policy whole, as a NetworkPolicy (rules are lists)."""
        return self._json(self.custom.replace_cluster_custom_object(
            *self._cluster_policy(kind), name, body, _preload_content=False))

    def install_definitions(self, definitions: list[dict[str, Any]]) -> list[str]:
        """Create the CustomResourceDefinitions that do not exist yet; their names."""
        made = []
        existing = {d["metadata"]["name"] for d in self._json(
            self.extensions.list_custom_resource_definition(_preload_content=False))["items"]}
        for definition in definitions:
            if definition["metadata"]["name"] not in existing:
                self.extensions.create_custom_resource_definition(definition,
                                                                  _preload_content=False)
                made.append(definition["metadata"]["name"])
        return made

    def list_cluster_policies(self, kind: str) -> dict[str, Any]:
        return self._json(self.custom.list_cluster_custom_object(
            *self._cluster_policy(kind), _preload_content=False))

    def delete(self, kind: str, name: str, namespace: str | None) -> bool:
        """Delete now (no grace period); False when it did not exist."""
        kw: dict[str, Any] = {"_preload_content": False, "grace_period_seconds": 0}
        try:
            if kind in CLUSTER_POLICY_KINDS:
                self.custom.delete_cluster_custom_object(*self._cluster_policy(kind), name, **kw)
            elif kind == "Namespace":
                self.core.delete_namespace(name, **kw)
            elif kind == "Pod":
                self.core.delete_namespaced_pod(name, namespace, **kw)
            elif kind == "Service":
                self.core.delete_namespaced_service(name, namespace, **kw)
            else:
                self.net.delete_namespaced_network_policy(name, namespace, **kw)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def list_pods(self) -> dict[str, Any]:
        return self._json(self.core.list_pod_for_all_namespaces(_preload_content=False))

    def list_nodes(self) -> dict[str, Any]:
        return self._json(self.core.list_node(_preload_content=False))

    def list_namespaces(self) -> dict[str, Any]:
        return self._json(self.core.list_namespace(_preload_content=False))

    def list_services(self) -> dict[str, Any]:
        return self._json(self.core.list_service_for_all_namespaces(_preload_content=False))

    def list_endpoint_slices(self) -> dict[str, Any]:
        return self._json(self.discovery.list_endpoint_slice_for_all_namespaces(
            _preload_content=False))

    def list_policies(self) -> dict[str, Any]:
        return self._json(self.net.list_network_policy_for_all_namespaces(
            _preload_content=False))

    def current_revision(self) -> int:
        """The API's resourceVersion now: every write so far is at or below it."""
        return int(self.list_nodes()["metadata"]["resourceVersion"])


def api_error_message(exc: ApiException) -> str:
    """The API's own message (a Status body) rather than the client's dump of headers."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    return str(body.get("message") or exc.reason or exc)

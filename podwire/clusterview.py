"""One view of a cluster: every node's agent, reached through the API server.

From a workstation with a kubeconfig, `podwire observe`, `status` and `trace` list the
agent pods (the DaemonSet's, in podwire-system) and open each one's observe API
(agent/localapi.py ObserveApi, on the node's loopback) with pods/portforward, as
`kubectl port-forward` does: the caller's own credentials and RBAC decide, and the
agents' endpoint is open to nobody on the network (deploy/README.md says why this way).
The lab is reached the same way, through its API server stand-in (lab/api/portforward.py).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

from podwire.common.agentapi import OBSERVE_PORT, AgentError

DEFAULT_NAMESPACE = "podwire-system"
AGENT_SELECTOR = "app.kubernetes.io/name=podwire,app.kubernetes.io/component=agent"
RBAC_HINT = ("the caller needs list on pods and create on pods/portforward there "
             "(deploy/15-observer-rbac.yaml: Role podwire-observer)")
# kubernetes.stream swaps the client's request function while it opens a WebSocket:
# one opening at a time per process.
_OPENING = threading.Lock()


@dataclass(frozen=True, eq=False)
class PortForwardEndpoint:
    """One agent pod's observe port, opened anew for each request (agentapi.Endpoint)."""

    core: Any  # kubernetes.client.CoreV1Api
    namespace: str
    pod: str
    node: str
    port: int = OBSERVE_PORT

    def connect(self, timeout: float | None) -> socket.socket:
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import portforward

        try:
            with _OPENING:
                forward = portforward(self.core.connect_get_namespaced_pod_portforward,
                                      self.pod, self.namespace, ports=str(self.port))
        except ApiException as err:
            raise OSError(f"pods/portforward refused: {err.reason or err.status}") from None
        sock: socket.socket = forward.socket(self.port)
        sock.settimeout(timeout)
        return sock

    def __str__(self) -> str:
        return f"{self.namespace}/{self.pod} on {self.node} (port-forward)"


def api_client(kubeconfig: str | None, context: str | None) -> Any:
    """A CoreV1Api from a kubeconfig (None: $KUBECONFIG or ~/.kube/config)."""
    from kubernetes import client, config

    try:
        loaded = config.new_client_from_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, OSError, ValueError) as err:
        where = kubeconfig or "the default kubeconfig"
        raise AgentError(f"cannot load {where}: {err}") from None
    return client.CoreV1Api(loaded)


def agent_pods(core: Any, namespace: str) -> list[PortForwardEndpoint]:
    """Every running agent pod in `namespace`, by node name."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        listed = core.list_namespaced_pod(namespace, label_selector=AGENT_SELECTOR)
    except ApiException as err:
        if err.status in (401, 403):
            raise AgentError(f"listing the agent pods in {namespace} was refused "
                             f"({err.status} {err.reason}): {RBAC_HINT}") from None
        raise AgentError(f"listing the agent pods in {namespace}: {err.status} "
                         f"{err.reason}") from None
    except HTTPError as err:
        raise AgentError(f"the API server did not answer: {err}") from None
    endpoints = [PortForwardEndpoint(core, namespace, pod.metadata.name, pod.spec.node_name)
                 for pod in listed.items
                 if pod.spec.node_name and (pod.status and pod.status.phase) == "Running"]
    if not endpoints:
        raise AgentError(f"no running podwire agent pod in {namespace} "
                         f"(label {AGENT_SELECTOR})")
    return sorted(endpoints, key=lambda e: e.node)

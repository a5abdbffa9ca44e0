"""Names for flow records, read from the node's model: which pod an address is, and
which policies isolate it. The flow enricher (`agent/flows.py`) asks through these
(and caches the answers); the caller holds the model's lock while it asks."""

from __future__ import annotations

from podwire.agent.desired import NodeState
from podwire.agent.entries import policy_direction
from podwire.agent.flows import PeerNames
from podwire.bpf.constants import Direction
from podwire.policy import policies_selecting


class ModelNames:
    def __init__(self, state: NodeState) -> None:
        self.state = state

    def pod(self, ip: str) -> PeerNames:
        """The pod with this address: a local endpoint first, else any pod of the cluster."""
        for endpoint in self.state.endpoints.values():
            if ip == endpoint.ip or ip in endpoint.ips:
                pod = self.state.cluster.pod(endpoint.namespace, endpoint.name)
                return PeerNames(endpoint.namespace, endpoint.name,
                                 pod.labels if pod is not None else {})
        pods = self.state.cluster.pods_with_ip(ip)
        if pods:
            return PeerNames(pods[0].namespace, pods[0].name, pods[0].labels)
        return PeerNames(None, None)

    def at(self, ip: str, when_ns: int) -> PeerNames | None:
        """Who had `ip` at `when_ns` if not the pod that has it now (agent/namejournal.py)."""
        return self.state.names.at(ip, when_ns)

    def isolating(self, ip: str, direction: str) -> list[str]:
        """The policies isolating the pod at `ip` in `direction` (`ingress`, `egress`)."""
        names = self.pod(ip)
        if names.pod is None or names.namespace is None:
            return []
        pod = self.state.cluster.pod(names.namespace, names.pod)
        if pod is None:
            return []
        selecting = policies_selecting(self.state.cluster, pod,
                                       policy_direction(Direction.from_label(direction)))
        return [p.key for p in selecting]

"""The flow record: what the agent makes of one datapath event, and what everyone reads.

The agent builds it (`agent/flows.py`), streams it from `GET /flows` one JSON object a
line, `podwire observe -o json` prints it as it came, and the CLI, the lab demo and the
metrics read it. The fields are a stable interface, extended but never renamed:

- `seq`: the agent's sequence number of the record, counting up from 0 when the agent
  starts; with `node` it names one record (`podwire observe` prints each once by it).
- `time`: ISO 8601 UTC with microseconds; `node`: the agent's node name.
- `type`: `policy-verdict` (a new connection allowed, or denied by policy) or `drop`
  (any other drop); `verdict`: `FORWARDED` or `DROPPED`; `drop_reason`: the name from
  bpf/lib/drop.h (`POLICY_DENIED`, `INVALID_SOURCE`, ...) or null when forwarded.
- `direction`: `ingress` or `egress`, the side the verdict is about; `hook`: the program
  that saw it (`from-pod`, `to-pod`, `from-overlay`).
- `protocol` (`TCP`, `UDP`, `ICMP`, `SCTP` or the number), `tcp_flags` (names), `length`.
- `source`, `destination`: `{ip, port, identity, namespace, pod, labels, service}`;
  namespace, pod are null and labels empty for addresses that are no pod. `service` is
  the Service (`namespace/name`) the end stands for when the packet went through one of
  its frontends: the destination of a packet sent to a frontend (its `ip`/`port` are
  then the backend it was translated to), the source of a reply given the frontend's
  address; null otherwise.
- `frontend`: `{ip, port}` of the Service frontend (ClusterIP or node address and
  port or nodePort) the packet was addressed to or answered from, or null when it went
  through no Service.
- `evaluated`: the directions whose policy this node checked for the verdict (egress on
  the sender's node, ingress on the receiver's; the node itself reaches its pods unchecked).
- `allowed_by`: `{direction: "namespace/policy"}` for each evaluated direction a policy
  allowed; an evaluated direction missing here had no policy isolating the pod.
- `isolated_by`: for a policy drop, the policies isolating the pod in that direction.
- `count`: how many packets (a drop) or connections (a verdict under aggregation `max`)
  the record stands for: 1 for an event reported alone; for a flow the datapath counted
  (aggregation `connection` or `max`) the exact number since its previous record.
  `bytes`: their total length. `time` is the first of them, `last_time` the last (equal
  to `time` for one). Under `max` a counted flow's source port is 0 (any).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, cast


class FlowEnd(TypedDict):
    """One end of a flow; `namespace`/`pod` are None and `labels` empty for no pod."""

    ip: str
    port: int
    identity: int
    namespace: str | None
    pod: str | None
    labels: Mapping[str, str]
    service: str | None


class Frontend(TypedDict):
    """The Service frontend a flow went through."""

    ip: str
    port: int


class FlowRecord(TypedDict):
    seq: int
    time: str
    node: str
    type: str
    verdict: str
    drop_reason: str | None
    direction: str
    hook: str
    protocol: str
    source: FlowEnd
    destination: FlowEnd
    frontend: Frontend | None
    tcp_flags: list[str]
    length: int
    evaluated: list[str]
    allowed_by: dict[str, str]
    isolated_by: list[str]
    count: int
    bytes: int
    last_time: str


def from_json(value: Mapping[str, Any]) -> FlowRecord:
    """A record as decoded from an agent's JSON: the agent writes every field."""
    return cast(FlowRecord, value)

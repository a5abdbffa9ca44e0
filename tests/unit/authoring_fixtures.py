"""A small cluster and helpers shared by the `podwire policy` unit tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from podwire.policy.context import ClusterContext, parse_context

CLUSTER_YAML = """\
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: red}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {team: blue}}
---
apiVersion: v1
kind: Node
metadata: {name: node1}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: web}}
spec:
  containers:
  - name: c
    ports: [{containerPort: 8080, name: http}]
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: web}}
spec:
  containers:
  - name: c
    ports: [{containerPort: 8080, name: http}]
status: {podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {app: db}}
spec:
  containers:
  - name: c
    ports: [{containerPort: 5432, name: pg}]
status: {podIP: 10.244.1.12}
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: y, labels: {role: client}}
status: {podIP: 10.244.1.20}
---
apiVersion: v1
kind: Pod
metadata: {name: e, namespace: y, labels: {role: client, tier: canary}}
status: {podIP: 10.244.1.21}
"""

PODS = ["x/a", "x/b", "x/c", "y/d", "y/e"]
IPS = {"x/a": "10.244.1.10", "x/b": "10.244.1.11", "x/c": "10.244.1.12",
       "y/d": "10.244.1.20", "y/e": "10.244.1.21"}


def context() -> ClusterContext:
    return parse_context([("cluster.yaml", CLUSTER_YAML)])


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def record(src: str, dst: str, port: int, protocol: str = "TCP", verdict: str = "FORWARDED",
           sport: int = 40000, node: str = "node1", hook: str = "from-pod",
           time: str = "2026-11-22T10:00:00.000000+00:00",
           kind: str = "policy-verdict", src_identity: int = 300) -> dict[str, Any]:
    """A flow record as the agent's /flows and `podwire observe -o json` print it."""

    def side(ref: str, port_number: int, identity: int) -> dict[str, Any]:
        if "/" in ref:
            namespace, name = ref.split("/")
            return {"ip": IPS[ref], "port": port_number, "identity": identity,
                    "namespace": namespace, "pod": name}
        return {"ip": ref, "port": port_number, "identity": 2, "namespace": None, "pod": None}

    return {
        "time": time, "node": node, "type": kind, "verdict": verdict,
        "drop_reason": "POLICY_DENIED" if verdict == "DROPPED" else None,
        "direction": "egress", "hook": hook, "protocol": protocol,
        "source": side(src, sport, src_identity), "destination": side(dst, port, 301),
        "tcp_flags": ["SYN"] if protocol == "TCP" else [], "length": 60,
        "allowed_by": {}, "isolated_by": [], "decided_by": {},
    }


def ndjson(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)

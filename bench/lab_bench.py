"""Time a lab's lifecycle: up, applying the x/y/z grid, a probe matrix, a policy, down.

Run as root: `.venv/bin/python -m podwire.bench.lab_bench [--network podwire|bridge]`.
Prints one key=value line per phase (seconds, wall clock); one run, so read it as an
order of magnitude on a shared machine, not a benchmark of record.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from podwire.bench import tools
from podwire.bench.figures import Figures
from podwire.lab import cluster, manifests, probes, samples, workload
from podwire.lab.kube import Kube
from podwire.lab.layout import LabLayout

# The programs it runs (checked before it starts: bench/tools.py).
TOOLS = ("nsenter",)

POLICY = samples.to_yaml([{
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "x-from-y", "namespace": "x"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
             "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]},
}])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--network", choices=cluster.NETWORKS, default="podwire")
    parser.add_argument("--prefix", default="pwbench")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    tools.require(TOOLS)
    layout = LabLayout(args.prefix)
    cluster.down(layout)
    timings: dict[str, float] = {}

    def phase(name: str, start: float) -> None:
        timings[name] = round(time.monotonic() - start, 2)

    try:
        t = time.monotonic()
        state = cluster.up(layout, 2, args.network)
        phase("up", t)
        kube = Kube(Path(state.kubeconfig))
        t = time.monotonic()
        workload.apply(kube, state, manifests.parse(samples.to_yaml(samples.grid())))
        phase("apply_9_pods", t)
        t = time.monotonic()
        probes.pod_matrix(kube, layout, 80, "TCP", 2.0)
        phase("matrix_81_allowed", t)
        t = time.monotonic()
        workload.apply(kube, state, manifests.parse(POLICY))
        phase("apply_policy", t)
        t = time.monotonic()
        probes.pod_matrix(kube, layout, 80, "TCP", 2.0)
        phase("matrix_with_blocks_2s_timeout", t)
    finally:
        t = time.monotonic()
        cluster.down(layout)
        phase("down", t)
    print(f"network={args.network} " + " ".join(f"{k}={v}" for k, v in timings.items()))
    if args.json:
        Figures(scalars={f"{args.network} {k}_s": v for k, v in timings.items()}).write(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

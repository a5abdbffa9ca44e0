"""How fast policy resolution is at the size the agent must handle: 10k pods, 1k policies.

Run: .venv/bin/python -m podwire.bench.bench_policy [--pods N] [--policies N]
Prints one key=value line per measurement (seconds).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from podwire.policy import (
    Cluster,
    ContainerPort,
    Direction,
    Namespace,
    NetworkPolicy,
    Peer,
    Pod,
    evaluate,
    pods_matching_peer,
    policies_selecting,
)


def build(pods: int, policies: int, namespaces: int, seed: int = 1) -> Cluster:
    """A synthetic cluster with a realistic mix of selectors, peers and ports."""
    rng = random.Random(seed)
    cluster = Cluster(Namespace(f"ns{n}", {"team": f"t{n % 7}"}) for n in range(namespaces))
    for index in range(pods):
        labels = {"app": f"app{rng.randrange(50)}", "tier": rng.choice(["web", "api", "db"])}
        cluster.set_pod(
            Pod(
                f"ns{index % namespaces}",
                f"pod{index}",
                labels,
                f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}",
                "node",
                (ContainerPort("http", 8000 + rng.randrange(3)),),
            )
        )
    for index in range(policies):
        spec = {
            "podSelector": {"matchLabels": {"app": f"app{rng.randrange(50)}"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"tier": "web"}}},
                        {
                            "namespaceSelector": {"matchLabels": {"team": f"t{rng.randrange(7)}"}},
                            "podSelector": {
                                "matchExpressions": [
                                    {"key": "tier", "operator": "In", "values": ["api"]}
                                ]
                            },
                        },
                    ],
                    "ports": [{"port": "http"}, {"port": 443}],
                }
            ],
            # Mostly world prefixes; one policy in ten names a /24 of pod addresses.
            "egress": [
                {
                    "to": [
                        {
                            "ipBlock": {
                                "cidr": rng.choice(["192.168.0.0/16"] * 9 + ["10.0.3.0/24"]),
                                "except": [],
                            }
                        }
                    ]
                }
            ],
        }
        cluster.set_policy(
            NetworkPolicy.from_api(
                {
                    "kind": "NetworkPolicy",
                    "metadata": {"name": f"pol{index}", "namespace": f"ns{index % namespaces}"},
                    "spec": spec,
                }
            )
        )
    return cluster


def _kind(peer: Peer) -> str:
    if peer.ip_block is not None:
        return "ipBlock"
    return "namespaceSelector" if peer.namespace_selector is not None else "podSelector"


def timed(label: str, action: Callable[[], object]) -> None:
    start = time.perf_counter()
    action()
    print(f"measure={label} seconds={time.perf_counter() - start:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=1_000)
    parser.add_argument("--namespaces", type=int, default=100)
    args = parser.parse_args()
    holder: list[Cluster] = []
    timed(
        f"build_cluster pods={args.pods} policies={args.policies}",
        lambda: holder.append(build(args.pods, args.policies, args.namespaces)),
    )
    cluster = holder[0]
    pods = list(cluster.pods())
    timed(
        "policies_selecting_every_pod_both_directions",
        lambda: [policies_selecting(cluster, pod, d) for pod in pods for d in Direction],
    )
    peers = [
        (policy, peer)
        for policy in cluster.policies()
        for rule in policy.ingress + policy.egress
        for peer in rule.peers
    ]
    for kind in ("podSelector", "namespaceSelector", "ipBlock"):
        chosen = [(policy, peer) for policy, peer in peers if _kind(peer) == kind]
        found: list[int] = []

        def match(
            chosen: list[tuple[NetworkPolicy, Peer]] = chosen, found: list[int] = found
        ) -> None:
            found.extend(
                sum(1 for _ in pods_matching_peer(cluster, pol, peer)) for pol, peer in chosen
            )

        timed(f"pods_matching_peer kind={kind} peers={len(chosen)}", match)
        print(f"measure=pods_matched kind={kind} total={sum(found)}")
    rng = random.Random(2)
    pairs = [(rng.choice(pods), rng.choice(pods)) for _ in range(10_000)]
    timed("evaluate_10k_random_pairs", lambda: [evaluate(cluster, s, d, 8000) for s, d in pairs])


if __name__ == "__main__":
    main()

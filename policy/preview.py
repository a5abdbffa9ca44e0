"""What a policy change would do to real traffic: observed connections, judged twice.

Each connection seen recently is decided by the reference evaluator on the cluster as it
is and on the cluster with the proposed policies applied (added, or replacing the
policies of the same namespace/name; cluster policies replace those of the same
kind/name). The ones whose verdict flips are the preview; the newly denied come first,
since those are the ones that break something. When cluster policies are in play, before
or after, both sides are decided through the tiers (`tiers.evaluate_tiers`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .admin import AdminPolicy
from .cluster import Cluster
from .context import cluster_with
from .evaluate import Verdict, evaluate
from .model import NetworkPolicy
from .observed import ObservedFlow
from .tiers import TieredVerdict, Tiers, evaluate_tiers

AnyVerdict = Verdict | TieredVerdict


@dataclass(frozen=True)
class VerdictChange:
    """An observed connection whose verdict the proposal flips."""

    flow: ObservedFlow
    before: AnyVerdict
    after: AnyVerdict

    @property
    def newly_denied(self) -> bool:
        return self.before.allowed and not self.after.allowed

    def as_json(self) -> dict[str, object]:
        connection = self.flow.connection
        return {
            "connection": connection.describe(),
            "change": "newly-denied" if self.newly_denied else "newly-allowed",
            "before": self.before.explain(),
            "after": self.after.explain(),
            "connections_seen": self.flow.connections,
            "last_seen": self.flow.last,
        }


def with_cluster_policies(tiers: Tiers, proposed: Iterable[AdminPolicy]) -> Tiers:
    """`tiers` with `proposed` added, or replacing the policies of the same kind/name."""
    by_key = {policy.key: policy for policy in (*tiers.admin, *tiers.baseline)}
    by_key.update((policy.key, policy) for policy in proposed)
    return Tiers.of(by_key.values(), tiers.nodes)


def preview(
    cluster: Cluster,
    proposed: Sequence[NetworkPolicy],
    flows: Iterable[ObservedFlow],
    tiers: Tiers | None = None,
    proposed_cluster_policies: Sequence[AdminPolicy] = (),
) -> list[VerdictChange]:
    """Observed connections whose verdict changes under `proposed` (and the proposed
    cluster policies, over the cluster's `tiers`), newly denied first."""
    after_cluster = cluster_with(cluster, proposed)
    before_tiers = tiers or Tiers()
    after_tiers = with_cluster_policies(before_tiers, proposed_cluster_policies)
    tiered = bool(after_tiers.admin or after_tiers.baseline or before_tiers.admin
                  or before_tiers.baseline)
    changes = []
    for flow in flows:
        connection = flow.connection
        args = (connection.source, connection.destination, connection.port, connection.protocol)
        before: AnyVerdict
        after: AnyVerdict
        if tiered:
            before = evaluate_tiers(cluster, before_tiers, *args)
            after = evaluate_tiers(after_cluster, after_tiers, *args)
        else:
            before = evaluate(cluster, *args)
            after = evaluate(after_cluster, *args)
        if before.allowed != after.allowed:
            changes.append(VerdictChange(flow, before, after))
    return sorted(changes, key=lambda c: (not c.newly_denied, c.flow.connection.sort_key()))

"""What a policy change would do to real traffic: observed connections, judged twice.

Each connection seen recently is decided by the reference evaluator on the cluster as it
is and on the cluster with the proposed policies applied (added, or replacing the
policies of the same namespace/name). The ones whose verdict flips are the preview; the
newly denied come first, since those are the ones that break something.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .cluster import Cluster
from .context import cluster_with
from .evaluate import Verdict, evaluate
from .model import NetworkPolicy
from .observed import ObservedFlow


@dataclass(frozen=True)
class VerdictChange:
    """An observed connection whose verdict the proposal flips."""

    flow: ObservedFlow
    before: Verdict
    after: Verdict

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


def preview(
    cluster: Cluster, proposed: Sequence[NetworkPolicy], flows: Iterable[ObservedFlow]
) -> list[VerdictChange]:
    """Observed connections whose verdict changes under `proposed`, newly denied first."""
    after_cluster = cluster_with(cluster, proposed)
    changes = []
    for flow in flows:
        connection = flow.connection
        args = (connection.source, connection.destination, connection.port, connection.protocol)
        before = evaluate(cluster, *args)
        after = evaluate(after_cluster, *args)
        if before.allowed != after.allowed:
            changes.append(VerdictChange(flow, before, after))
    return sorted(changes, key=lambda c: (not c.newly_denied, c.flow.connection.sort_key()))

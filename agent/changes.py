"""What the model must redo since it last computed, and so what the reconcile diff compares.

Events mark what they touch; `NodeState.compute` takes the set, recomputes only that,
and hands `reconcile.plan` the scope of keys that may differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from podwire.agent.addresses import IPNet
from podwire.agent.reconcile import Scope


@dataclass
class ChangeSet:
    endpoints: set[str] = field(default_factory=set)  # local endpoint IPs, redone whole
    # Local endpoint IPs whose cluster policy rules alone may differ: their NetworkPolicy
    # part (isolation, audit, entries) is reused as it was computed.
    tiers: set[str] = field(default_factory=set)
    ipcache: set[IPNet] = field(default_factory=set)
    all_endpoints: bool = False
    all_ipcache: bool = False

    @classmethod
    def everything(cls) -> ChangeSet:
        return cls(all_endpoints=True, all_ipcache=True)

    def redo_everything(self) -> None:
        # Used when the ipBlock prefixes move: every address may resolve differently, and
        # every ipBlock rule may name a different set of CIDR identities.
        self.all_endpoints = self.all_ipcache = True

    def endpoints_to_redo(self, known: set[str]) -> set[str]:
        """Of the endpoints the model or the maps know, those to recompute."""
        return known if self.all_endpoints else known & (self.endpoints | self.tiers)

    def netpol_changed(self, endpoint: str) -> bool:
        """Whether an endpoint's NetworkPolicy part may differ (not only its tiers)."""
        return self.all_endpoints or endpoint in self.endpoints

    def scope(self) -> Scope:
        """The keys the plan compares; policy keys are added as endpoints are redone."""
        return Scope(endpoints=None if self.all_endpoints else self.endpoints | self.tiers,
                     ipcache=None if self.all_ipcache else self.ipcache,
                     policy=None if self.all_endpoints else set())

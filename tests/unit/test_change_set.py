"""The change set: what compute redoes, and the scope the reconcile plan compares."""

from __future__ import annotations

import ipaddress

from podwire.agent.changes import ChangeSet


def test_a_change_set_scopes_the_plan_to_what_it_touched() -> None:
    change = ChangeSet()
    change.endpoints.add("10.0.0.1")
    change.ipcache.add(ipaddress.IPv4Network("10.0.0.1/32"))
    scope = change.scope()
    assert scope.endpoints == {"10.0.0.1"}
    assert scope.ipcache == {ipaddress.IPv4Network("10.0.0.1/32")}
    assert scope.policy == set()  # filled in as endpoints are redone
    assert change.endpoints_to_redo({"10.0.0.1", "10.0.0.2"}) == {"10.0.0.1"}


def test_everything_means_every_key() -> None:
    for change in (ChangeSet.everything(), ChangeSet()):
        change.redo_everything()
        scope = change.scope()
        assert scope.endpoints is None and scope.ipcache is None and scope.policy is None
        assert change.endpoints_to_redo({"10.0.0.1", "10.0.0.2"}) == {"10.0.0.1", "10.0.0.2"}


def test_all_ipcache_alone_keeps_endpoints_scoped() -> None:
    change = ChangeSet(all_ipcache=True)
    scope = change.scope()
    assert scope.ipcache is None and scope.endpoints == set() and scope.policy == set()

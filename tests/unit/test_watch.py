# ruff: noqa: F811 - pytest fixtures imported from apiserver_fixtures are parameters here
"""The agent's informers against the lab API server: convergence, and exactly the right
events after dropped connections, a compaction (410) and API server restarts."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apiserver_fixtures import (  # noqa: F401 - fixtures
    api,
    kubeconfig,
    namespace,
    pod,
    policy,
    server,
)
from kubernetes import client
from waiting import wait_for

from podwire.agent.watch import (
    Backoff,
    Informer,
    WatchEvent,
    WatchSet,
    WatchSettings,
    api_client,
)
from podwire.lab.api.kinds import NAMESPACES, NETWORK_POLICIES, NODES, PODS
from podwire.lab.api.selectors import Selector
from podwire.lab.api.server import LabApiServer
from podwire.lab.api.store import save_state

FAST = WatchSettings(watch_timeout=30, read_timeout=20,
                     backoff=Backoff(initial=0.02, factor=2.0, cap=0.2))


class Recorder:
    """A handler that keeps what it was told, thread-safely."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str | None, str]] = []

    def __call__(self, event: WatchEvent) -> None:
        meta = event.object["metadata"]
        with self.lock:
            self.events.append((event.type, meta.get("name"), meta["resourceVersion"]))

    def changes(self) -> list[tuple[str, str | None]]:
        with self.lock:
            return [(t, n) for t, n, _ in self.events if t != "BOOKMARK"]

    def take(self) -> list[tuple[str, str | None]]:
        with self.lock:
            out = [(t, n) for t, n, _ in self.events if t != "BOOKMARK"]
            self.events.clear()
            return out


@pytest.fixture
def informers() -> Iterator[list[Informer]]:
    started: list[Informer] = []
    try:
        yield started
    finally:
        for inf in started:
            inf.stop()


def start(informers: list[Informer], api: client.ApiClient, kind: str, **kwargs: Any
          ) -> tuple[Informer, Recorder]:
    recorder = Recorder()
    inf = Informer(api, kind, recorder, FAST, seed=1, **kwargs)
    informers.append(inf)
    inf.start()
    wait_for(lambda: inf.has_synced, f"{kind} informer sync")
    return inf, recorder


def caught_up(inf: Informer, srv: LabApiServer) -> bool:
    return inf.last_resource_version >= srv.store.resource_version


def cache_names(inf: Informer) -> dict[str, str]:
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in inf.items()}


def server_names(srv: LabApiServer, res: Any) -> dict[str, str]:
    _, items = srv.store.list_encoded(res, None, Selector())
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"]
            for o in map(json.loads, items)}


def test_informer_lists_then_watches(server: LabApiServer, api: client.ApiClient,
                                     informers: list[Informer]) -> None:
    store = server.store
    store.create(NAMESPACES, "", namespace("a"))
    store.create(PODS, "a", pod("early"))
    inf, rec = start(informers, api, "Pod")
    assert rec.events[-1] == ("BOOKMARK", None, str(store.resource_version))
    assert rec.take() == [("ADDED", "early")]
    assert inf.last_resource_version == store.resource_version
    store.create(PODS, "a", pod("late"))
    store.patch(PODS, "a", "early", "application/merge-patch+json",
                {"metadata": {"labels": {"x": "y"}}})
    store.delete(PODS, "a", "late")
    wait_for(lambda: caught_up(inf, server), "the informer to reach the server's RV")
    assert rec.take() == [("ADDED", "late"), ("MODIFIED", "early"), ("DELETED", "late")]
    assert cache_names(inf) == server_names(server, PODS)
    assert inf.get("a", "early")["metadata"]["labels"] == {"x": "y"}
    assert inf.get("a", "early")["kind"] == "Pod"


def test_bookmarks_advance_the_resource_version(server: LabApiServer, api: client.ApiClient,
                                                informers: list[Informer]) -> None:
    inf, rec = start(informers, api, "Pod")
    rv = server.store.create(NAMESPACES, "", namespace("other"))["metadata"]["resourceVersion"]
    wait_for(lambda: inf.last_resource_version == int(rv), "a bookmark at the namespace's RV")
    assert rec.changes() == []
    assert rec.events[-1] == ("BOOKMARK", None, rv)


def test_dropped_connections_resume_without_loss(server: LabApiServer, api: client.ApiClient,
                                                 informers: list[Informer]) -> None:
    store = server.store
    store.create(NAMESPACES, "", namespace("a"))
    inf, rec = start(informers, api, "Pod")
    rec.take()
    expected = []
    for i in range(5):
        store.create(PODS, "a", pod(f"p{i}"))
        expected.append(("ADDED", f"p{i}"))
        wait_for(lambda: caught_up(inf, server), "catch up before the drop")
        dropped = wait_for(server.drop_watches, "a watch to drop")
        assert dropped == 1
        # Written while the informer is disconnected or reconnecting.
        store.delete(PODS, "a", f"p{i}")
        expected.append(("DELETED", f"p{i}"))
    wait_for(lambda: caught_up(inf, server), "the informer to reach the server's RV")
    assert rec.take() == expected
    assert inf.reconnects >= 5 and inf.relists == 1
    assert cache_names(inf) == server_names(server, PODS) == {}


@pytest.mark.parametrize("keep_objects", [True, False])
def test_compaction_relists_and_synthesises_the_difference(
        server: LabApiServer, api: client.ApiClient, informers: list[Informer],
        keep_objects: bool) -> None:
    """Also with a cache of stubs (the agent's: its model keeps the objects)."""
    store = server.store
    store.create(NAMESPACES, "", namespace("a"))
    for name in ("keep", "change", "remove"):
        store.create(PODS, "a", pod(name))
    inf, rec = start(informers, api, "Pod", keep_objects=keep_objects)
    rec.take()
    server.stop()
    # While the server is down the history moves on and is compacted away.
    store.create(PODS, "a", pod("new"))
    store.patch(PODS, "a", "change", "application/merge-patch+json",
                {"metadata": {"labels": {"v": "2"}}})
    store.delete(PODS, "a", "remove")
    store.create(PODS, "a", pod("transient"))
    store.delete(PODS, "a", "transient")
    server.compact()
    server.start()
    wait_for(lambda: caught_up(inf, server), "the informer to relist")
    assert sorted(rec.take()) == [("ADDED", "new"), ("DELETED", "remove"),
                                  ("MODIFIED", "change")]
    assert inf.relists == 2
    assert cache_names(inf) == server_names(server, PODS)
    kept = inf.get("a", "change")
    assert kept is not None
    if keep_objects:
        assert kept["metadata"]["labels"] == {"v": "2"}
    else:
        assert kept == {"kind": "Pod", "apiVersion": "v1", "metadata": {
            "name": "change", "namespace": "a",
            "resourceVersion": server_names(server, PODS)["change"]}}


def test_a_relist_comes_a_page_at_a_time(server: LabApiServer, api: client.ApiClient,
                                         informers: list[Informer]) -> None:
    """Pages of two objects: every object is listed once, a relist after a compaction
    hands over exactly the difference, and the cache is the server's."""
    store = server.store
    store.create(NAMESPACES, "", namespace("a"))
    for i in range(7):
        store.create(PODS, "a", pod(f"p{i}"))
    rec = Recorder()
    inf = Informer(api, "Pod", rec, dataclasses.replace(FAST, list_page=2), seed=1,
                   keep_objects=False)
    informers.append(inf)
    inf.start()
    wait_for(lambda: inf.has_synced, "Pod informer sync")
    assert rec.events[-1] == ("BOOKMARK", None, str(store.resource_version))
    assert sorted(rec.take()) == [("ADDED", f"p{i}") for i in range(7)]
    server.stop()
    store.delete(PODS, "a", "p0")
    store.delete(PODS, "a", "p6")
    store.patch(PODS, "a", "p3", "application/merge-patch+json",
                {"metadata": {"labels": {"v": "2"}}})
    store.create(PODS, "a", pod("p7"))
    server.compact()
    server.start()
    wait_for(lambda: caught_up(inf, server), "the informer to relist")
    assert sorted(rec.take()) == [("ADDED", "p7"), ("DELETED", "p0"), ("DELETED", "p6"),
                                  ("MODIFIED", "p3")]
    assert inf.relists == 2
    assert cache_names(inf) == server_names(server, PODS)


def test_restart_resumes_from_history(server: LabApiServer, api: client.ApiClient,
                                      informers: list[Informer]) -> None:
    store = server.store
    store.create(NAMESPACES, "", namespace("a"))
    inf, rec = start(informers, api, "Pod")
    server.stop()
    store.create(PODS, "a", pod("p1"))
    store.patch(PODS, "a", "p1", "application/json-patch+json",
                [{"op": "add", "path": "/metadata/labels", "value": {"k": "v"}}])
    server.start()
    wait_for(lambda: caught_up(inf, server), "the informer to resume")
    assert rec.take() == [("ADDED", "p1"), ("MODIFIED", "p1")]
    assert inf.relists == 1


def test_restart_from_state_file(tmp_path: Path, informers: list[Informer]) -> None:
    """A new server process from the saved state keeps RVs but has no history: the informer
    gets 410, relists, and sees exactly what changed."""
    state = tmp_path / "state.json"
    first = LabApiServer(state_path=state, bookmark_delay=0.01)
    host, port = first.add_listener("127.0.0.1", 0)
    first.start()
    second: LabApiServer | None = None
    try:
        first.store.create(NAMESPACES, "", namespace("a"))
        first.store.create(PODS, "a", pod("old"))
        kc = str(first.write_kubeconfig(tmp_path / "kc"))
        with api_client(kc) as api:
            inf, rec = start(informers, api, "Pod")
            rec.take()
            first.stop()
            # Written after the last save of a server that "crashed": the new process
            # starts from this state, with no history before it.
            first.store.create(PODS, "a", pod("new"))
            first.store.delete(PODS, "a", "old")
            save_state(first.store, state)
            second = LabApiServer(state_path=state, bookmark_delay=0.01)
            second.add_listener(host, port)
            second.start()
            wait_for(lambda: caught_up(inf, second), "the informer against the new server")
            assert rec.take() == [("ADDED", "new"), ("DELETED", "old")]
            assert cache_names(inf) == server_names(second, PODS)
            assert inf.relists == 2
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_selector_informer_sees_objects_leave(server: LabApiServer, api: client.ApiClient,
                                              informers: list[Informer]) -> None:
    store = server.store
    store.create(NAMESPACES, "", namespace("a"))
    store.create(PODS, "a", pod("web", {"app": "web"}))
    store.create(PODS, "a", pod("db", {"app": "db"}))
    inf, rec = start(informers, api, "Pod", label_selector="app=web")
    assert rec.take() == [("ADDED", "web")]
    store.patch(PODS, "a", "web", "application/merge-patch+json",
                {"metadata": {"labels": {"app": "none"}}})
    wait_for(lambda: caught_up(inf, server), "the informer to see the relabel")
    assert rec.take() == [("DELETED", "web")]
    assert inf.items() == []


def test_handler_errors_do_not_stop_the_stream(server: LabApiServer, api: client.ApiClient,
                                               informers: list[Informer]) -> None:
    seen: list[str] = []

    def flaky(event: WatchEvent) -> None:
        seen.append(event.type)
        if event.type == "ADDED":
            raise RuntimeError("handler bug")

    inf = Informer(api, "Namespace", flaky, FAST)
    informers.append(inf)
    inf.start()
    wait_for(lambda: inf.has_synced, "sync")
    server.store.create(NAMESPACES, "", namespace("a"))
    server.store.delete(NAMESPACES, "", "a")
    wait_for(lambda: caught_up(inf, server), "the informer to go on after the error")
    assert [t for t in seen if t != "BOOKMARK"] == ["ADDED", "MODIFIED", "DELETED"]


def test_stop_ends_promptly(server: LabApiServer, api: client.ApiClient) -> None:
    inf = Informer(api, "Node", lambda *_: None, WatchSettings(read_timeout=600))
    thread = inf.start()
    try:
        wait_for(lambda: inf.has_synced, "sync")
        wait_for(lambda: len(server.store._subs) == 1, "the watch to be open")
    finally:
        inf.stop(timeout=5)
    assert not thread.is_alive()


def test_watchset_revision(server: LabApiServer, api: client.ApiClient) -> None:
    store = server.store
    store.create(NAMESPACES, "", namespace("a"))
    ws = WatchSet(api, FAST)
    assert ws.revision() == 0
    ws.start()
    try:
        wait_for(ws.has_synced, "all four kinds listed")
        wait_for(lambda: ws.revision() == store.resource_version, "the initial revision")
        store.create(NODES, "", {"metadata": {"name": "n1"}})
        store.create(PODS, "a", pod("p"))
        last = store.create(NETWORK_POLICIES, "a", policy("np"))["metadata"]["resourceVersion"]
        wait_for(lambda: ws.revision() == int(last), "the revision to reach the last write")
        events = list(ws.events())
    finally:
        ws.stop()
    revisions = [e.revision for e in events]
    assert revisions == sorted(revisions) and revisions[-1] == int(last)
    changes = [(e.kind, e.type, e.object["metadata"]["name"]) for e in events
               if e.type != "BOOKMARK"]
    # Streams run on their own threads: the order across kinds is not fixed.
    assert sorted(changes) == [("Namespace", "ADDED", "a"), ("NetworkPolicy", "ADDED", "np"),
                               ("Node", "ADDED", "n1"), ("Pod", "ADDED", "p")]
    # Once the consumer has handled an event it has seen every change up to its revision.
    for i, event in enumerate(events):
        if event.type != "BOOKMARK":
            rv = int(event.object["metadata"]["resourceVersion"])
            assert all(e.revision < rv for e in events[:i])


def test_bad_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot load Kubernetes client configuration"):
        api_client(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="unknown kind 'ReplicaSet'"):
        Informer(client.ApiClient(), "ReplicaSet", lambda *_: None)


@pytest.mark.parametrize(("api_server", "host"), [
    ("10.0.0.1:6443", "https://10.0.0.1:6443"),
    ("https://api.example:8443", "https://api.example:8443"),
    ("10.0.0.1", "https://10.0.0.1:443"),
])
def test_in_cluster_client_dials_the_configured_api_server(tmp_path: Path, api_server: str,
                                                           host: str) -> None:
    (tmp_path / "token").write_text("t0ken")
    (tmp_path / "ca.crt").write_text("not checked until a request is made")
    with api_client(None, tmp_path, api_server) as api:
        assert api.configuration.host == host


def test_a_bad_api_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="api_server 'http://x:1' is not host:port"):
        api_client(None, tmp_path, "http://x:1")

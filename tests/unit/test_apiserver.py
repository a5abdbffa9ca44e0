# ruff: noqa: F811 - pytest fixtures imported from apiserver_fixtures are parameters here
"""The lab API server through the real `kubernetes` client and raw HTTP: CRUD, errors as
Status objects, resourceVersion semantics, selectors, watch, bookmarks, 410 and faults."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from apiserver_fixtures import (  # noqa: F401 - fixtures
    api,
    core,
    kubeconfig,
    namespace,
    net,
    pod,
    policy,
    server,
)
from kubernetes import client, watch
from waiting import wait_for

from podwire.lab.api.kinds import NAMESPACES, PODS
from podwire.lab.api.server import LabApiServer


def raw(srv: LabApiServer, method: str, path: str, body: Any = None,
        content_type: str = "application/json") -> tuple[int, Any]:
    host, port = srv.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        data = body if isinstance(body, bytes) else (
            None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


class Stream:
    """A raw watch connection read one JSON line at a time."""

    def __init__(self, srv: LabApiServer, path: str) -> None:
        host, port = srv.url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.conn.request("GET", path)
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()

    def next(self) -> dict[str, Any]:
        line = self.resp.readline()
        if not line:
            raise EOFError("watch ended")
        return json.loads(line)

    def summary(self) -> tuple[str, str | None, str]:
        event = self.next()
        meta = event["object"]["metadata"]
        return event["type"], meta.get("name"), meta["resourceVersion"]


@contextmanager
def stream(srv: LabApiServer, path: str) -> Iterator[Stream]:
    s = Stream(srv, path)
    try:
        yield s
    finally:
        s.conn.close()


def setup_ns(core: client.CoreV1Api, name: str = "a") -> None:
    core.create_namespace(namespace(name))


# ---- discovery ------------------------------------------------------------------------


def test_discovery_documents(server: LabApiServer) -> None:
    assert raw(server, "GET", "/version")[1]["major"] == "1"
    assert raw(server, "GET", "/api")[1]["versions"] == ["v1"]
    groups = raw(server, "GET", "/apis")[1]["groups"]
    assert [g["name"] for g in groups] == ["apiextensions.k8s.io", "discovery.k8s.io",
                                          "networking.k8s.io"]
    core_list = raw(server, "GET", "/api/v1")[1]
    by_name = {r["name"]: r for r in core_list["resources"]}
    assert set(by_name) == {"namespaces", "namespaces/status", "nodes", "nodes/status",
                            "pods", "pods/status", "services", "services/status"}
    assert by_name["pods"]["namespaced"] and "watch" in by_name["pods"]["verbs"]
    assert not by_name["nodes"]["namespaced"]
    netv1 = raw(server, "GET", "/apis/networking.k8s.io/v1")[1]
    assert [r["name"] for r in netv1["resources"]] == ["networkpolicies"]
    slices = raw(server, "GET", "/apis/discovery.k8s.io/v1")[1]
    assert [r["name"] for r in slices["resources"]] == ["endpointslices"]
    assert raw(server, "GET", "/apis/networking.k8s.io")[1]["preferredVersion"]["version"] == "v1"
    code, body = raw(server, "GET", "/apis/apps/v1/deployments")
    assert (code, body["reason"]) == (404, "NotFound")


# ---- create, get, update, patch, delete -------------------------------------------------


def test_create_sets_server_metadata(core: client.CoreV1Api) -> None:
    ns = core.create_namespace(namespace("a", {"team": "x"}))
    assert ns.metadata.labels == {"team": "x", "kubernetes.io/metadata.name": "a"}
    assert ns.status.phase == "Active"
    created = core.create_namespaced_pod("a", pod("p", {"app": "web"}))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.metadata.generation == 1
    assert created.status.phase == "Pending"
    assert int(created.metadata.resource_version) > int(ns.metadata.resource_version)
    fetched = core.read_namespaced_pod("p", "a")
    assert fetched.metadata.uid == created.metadata.uid
    assert fetched.metadata.resource_version == created.metadata.resource_version


def test_errors_are_status_objects(core: client.CoreV1Api, server: LabApiServer) -> None:
    setup_ns(core)
    core.create_namespaced_pod("a", pod("p"))
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod("a", pod("p"))
    body = json.loads(err.value.body)
    assert (err.value.status, body["kind"], body["reason"]) == (409, "Status", "AlreadyExists")
    assert body["message"] == 'pods "p" already exists'
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_pod("missing", "a")
    assert (err.value.status, json.loads(err.value.body)["reason"]) == (404, "NotFound")
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod("nowhere", pod("q"))
    assert json.loads(err.value.body)["message"] == 'namespaces "nowhere" not found'

    code, body = raw(server, "POST", "/api/v1/namespaces/a/pods", pod("Bad_Name"))
    assert (code, body["reason"]) == (422, "Invalid")
    assert "metadata.name" in body["message"]
    code, body = raw(server, "POST", "/api/v1/namespaces/a/pods", namespace("b"))
    assert (code, body["reason"]) == (400, "BadRequest")
    code, body = raw(server, "POST", "/api/v1/namespaces/a/pods", b"{not json")
    assert (code, body["reason"]) == (400, "BadRequest")
    code, body = raw(server, "POST", "/api/v1/namespaces/a/pods",
                     {"metadata": {"name": "nocontainers"}, "spec": {}})
    assert (code, body["reason"]) == (422, "Invalid")
    code, body = raw(server, "POST", "/api/v1/namespaces/a/pods", b"\x00k8s",
                     content_type="application/vnd.kubernetes.protobuf")
    assert (code, body["reason"]) == (415, "UnsupportedMediaType")
    bad_policy = policy("bad", {"podSelector": {}, "ingress": "everything"})
    code, body = raw(server, "POST", "/apis/networking.k8s.io/v1/namespaces/a/networkpolicies",
                     bad_policy)
    assert (code, body["reason"]) == (422, "Invalid")
    assert "spec.ingress" in body["message"]


def test_malformed_requests_get_clear_errors(core: client.CoreV1Api,
                                             server: LabApiServer) -> None:
    setup_ns(core)
    code, body = raw(server, "POST", "/api/v1/namespaces/a/pods",
                     {"metadata": {"name": 5}, "spec": {}})
    assert (code, body["reason"]) == (422, "Invalid")
    code, body = raw(server, "DELETE", "/api/v1/namespaces/a", ["not", "options"])
    assert (code, body["reason"]) == (400, "BadRequest")
    code, body = raw(server, "PUT", "/api/v1/namespaces/a", None)
    assert (code, body["reason"]) == (400, "BadRequest")
    code, body = raw(server, "PATCH", "/api/v1/namespaces/a", {"metadata": {"labels": "x"}},
                     "application/merge-patch+json")
    assert (code, body["reason"]) == (422, "Invalid")
    code, body = raw(server, "GET", "/api/v1/pods/p")
    assert (code, body["reason"]) == (404, "NotFound")
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: lots\r\n\r\n")
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 400 and b"invalid Content-Length" in answer.read()


def test_update_checks_resource_version(core: client.CoreV1Api) -> None:
    setup_ns(core)
    first = core.create_namespaced_pod("a", pod("p")).to_dict()
    body = core.read_namespaced_pod("p", "a")
    body.metadata.labels = {"v": "1"}
    second = core.replace_namespaced_pod("p", "a", body)
    assert int(second.metadata.resource_version) > int(first["metadata"]["resource_version"])
    stale = core.read_namespaced_pod("p", "a")
    stale.metadata.resource_version = first["metadata"]["resource_version"]
    stale.metadata.labels = {"v": "2"}
    with pytest.raises(client.ApiException) as err:
        core.replace_namespaced_pod("p", "a", stale)
    body = json.loads(err.value.body)
    assert (err.value.status, body["reason"]) == (409, "Conflict")
    assert core.read_namespaced_pod("p", "a").metadata.labels == {"v": "1"}
    with pytest.raises(client.ApiException) as err:
        core.replace_namespaced_pod("missing", "a", pod("missing"))
    assert err.value.status == 404


def test_status_subresource_and_generation(core: client.CoreV1Api,
                                           net: client.NetworkingV1Api) -> None:
    setup_ns(core)
    core.create_namespaced_pod("a", pod("p"))
    after_status = core.patch_namespaced_pod_status(
        "p", "a", {"status": {"phase": "Running", "podIP": "10.244.1.5"},
                   "metadata": {"labels": {"ignored": "yes"}}})
    assert after_status.status.pod_ip == "10.244.1.5"
    assert not after_status.metadata.labels
    main = core.patch_namespaced_pod("p", "a", {"metadata": {"labels": {"x": "y"}},
                                                "status": {"phase": "Failed"}})
    assert main.status.phase == "Running" and main.metadata.labels == {"x": "y"}

    created = net.create_namespaced_network_policy("a", policy("np"))
    assert created.metadata.generation == 1
    relabeled = net.patch_namespaced_network_policy("np", "a", {"metadata": {"labels": {"a": "b"}}})
    assert relabeled.metadata.generation == 1
    respec = net.patch_namespaced_network_policy(
        "np", "a", {"spec": {"podSelector": {"matchLabels": {"app": "web"}}}})
    assert respec.metadata.generation == 2


def test_patch_kinds(server: LabApiServer, core: client.CoreV1Api) -> None:
    setup_ns(core)
    core.create_namespaced_pod("a", pod("p", {"keep": "1", "drop": "1"}))
    path = "/api/v1/namespaces/a/pods/p"
    code, body = raw(server, "PATCH", path, {"metadata": {"labels": {"drop": None, "new": "2"}}},
                     "application/merge-patch+json")
    assert code == 200 and body["metadata"]["labels"] == {"keep": "1", "new": "2"}
    ops = [{"op": "add", "path": "/metadata/labels/j", "value": "3"},
           {"op": "remove", "path": "/metadata/labels/keep"},
           {"op": "test", "path": "/metadata/labels/new", "value": "2"}]
    code, body = raw(server, "PATCH", path, ops, "application/json-patch+json")
    assert code == 200 and body["metadata"]["labels"] == {"new": "2", "j": "3"}
    code, body = raw(server, "PATCH", path, [{"op": "test", "path": "/metadata/labels/new",
                                              "value": "nope"}], "application/json-patch+json")
    assert (code, body["reason"]) == (422, "Invalid")
    rv = body_rv = core.read_namespaced_pod("p", "a").metadata.resource_version
    code, body = raw(server, "PATCH", path, {"metadata": {"labels": {"new": "2"}}},
                     "application/merge-patch+json")
    assert body["metadata"]["resourceVersion"] == rv == body_rv  # a no-op write keeps the RV
    code, body = raw(server, "PATCH", path,
                     {"metadata": {"resourceVersion": "1", "labels": {"z": "z"}}},
                     "application/merge-patch+json")
    assert (code, body["reason"]) == (409, "Conflict")


def test_delete_and_namespace_cascade(server: LabApiServer, core: client.CoreV1Api,
                                      net: client.NetworkingV1Api) -> None:
    setup_ns(core)
    setup_ns(core, "other")
    core.create_namespaced_pod("a", pod("p1"))
    core.create_namespaced_pod("a", pod("p2"))
    core.create_namespaced_pod("other", pod("p3"))
    net.create_namespaced_network_policy("a", policy("np"))
    gone = core.delete_namespaced_pod("p1", "a")
    assert gone.metadata.name == "p1"
    rv = server.store.resource_version
    with stream(server, f"/api/v1/pods?watch=true&resourceVersion={rv}") as pods, \
            stream(server, "/apis/networking.k8s.io/v1/networkpolicies?watch=true"
                           f"&resourceVersion={rv}") as pols:
        status = core.delete_namespace("a")
        assert status["status"] == "Success"
        assert pods.summary()[:2] == ("DELETED", "p2")
        assert pols.summary()[:2] == ("DELETED", "np")
    assert [p.metadata.name for p in core.list_pod_for_all_namespaces().items] == ["p3"]
    assert net.list_network_policy_for_all_namespaces().items == []
    with pytest.raises(client.ApiException) as err:
        core.read_namespace("a")
    assert err.value.status == 404


# ---- list and selectors ---------------------------------------------------------------


def test_list_and_selectors(core: client.CoreV1Api, server: LabApiServer) -> None:
    setup_ns(core)
    setup_ns(core, "b")
    core.create_namespaced_pod("a", pod("web1", {"app": "web", "tier": "front"}, node="n1"))
    core.create_namespaced_pod("a", pod("web2", {"app": "web"}, node="n2"))
    core.create_namespaced_pod("b", pod("db", {"app": "db", "tier": "back"}, node="n1"))
    core.patch_namespaced_pod_status("db", "b", {"status": {"phase": "Running"}})

    def names(**kwargs: Any) -> list[str]:
        return [p.metadata.name for p in core.list_pod_for_all_namespaces(**kwargs).items]

    listed = core.list_pod_for_all_namespaces()
    assert listed.metadata.resource_version == str(server.store.resource_version)
    assert names() == ["web1", "web2", "db"]
    assert [p.metadata.name for p in core.list_namespaced_pod("b").items] == ["db"]
    assert names(label_selector="app=web") == ["web1", "web2"]
    assert names(label_selector="app==web,tier") == ["web1"]
    assert names(label_selector="app!=web") == ["db"]
    assert names(label_selector="app in (db, web),!tier") == ["web2"]
    assert names(label_selector="tier notin (front)") == ["web2", "db"]
    assert names(field_selector="spec.nodeName=n1") == ["web1", "db"]
    assert names(field_selector="status.phase=Running") == ["db"]
    assert names(field_selector="metadata.namespace!=a,metadata.name=db") == ["db"]
    code, body = raw(server, "GET", "/api/v1/pods?labelSelector=app%20in%20(web")
    assert (code, body["reason"]) == (400, "BadRequest")
    code, body = raw(server, "GET", "/api/v1/pods?fieldSelector=spec.hostname%3Dx")
    assert (code, body["reason"]) == (400, "BadRequest")
    assert "field label not supported" in body["message"]
    assert raw(server, "GET", "/api/v1/pods")[1]["kind"] == "PodList"


def test_list_in_pages(core: client.CoreV1Api, server: LabApiServer) -> None:
    """limit and continue: pages in order, each at the first page's resourceVersion, the
    last without a continuation; a selector applies before the limit."""
    setup_ns(core)
    for i in range(5):
        core.create_namespaced_pod("a", pod(f"p{i}", {"app": "web" if i % 2 else "db"}))
    first_rv = str(server.store.resource_version)
    pages, token = [], None
    while True:
        listed = core.list_namespaced_pod("a", limit=2, **({"_continue": token} if token else {}))
        pages.append([p.metadata.name for p in listed.items])
        assert listed.metadata.resource_version == first_rv
        token = listed.metadata._continue
        if not token:
            break
        # Made after a page, past its last key: a later page has them.
        core.create_namespaced_pod("a", pod(f"z{len(pages)}"))
    assert pages == [["p0", "p1"], ["p2", "p3"], ["p4", "z1"], ["z2", "z3"]]
    web = core.list_namespaced_pod("a", label_selector="app=web", limit=1)
    assert [p.metadata.name for p in web.items] == ["p1"]
    rest = core.list_namespaced_pod("a", label_selector="app=web", limit=5,
                                    _continue=web.metadata._continue)
    assert ([p.metadata.name for p in rest.items], rest.metadata._continue) == (["p3"], None)
    for query, word in (("limit=-1", "limit"), ("limit=x", "limit"),
                        ("continue=garbage", "continue")):
        code, body = raw(server, "GET", f"/api/v1/namespaces/a/pods?{query}")
        assert (code, body["reason"]) == (400, "BadRequest")
        assert body["message"].startswith(f"{word}: ")


# ---- watch ----------------------------------------------------------------------------


def test_watch_from_resource_version(server: LabApiServer, core: client.CoreV1Api) -> None:
    setup_ns(core)
    core.create_namespaced_pod("a", pod("before"))
    start = server.store.resource_version
    core.create_namespaced_pod("a", pod("p1"))
    core.patch_namespaced_pod("p1", "a", {"metadata": {"labels": {"x": "1"}}})
    with stream(server, f"/api/v1/namespaces/a/pods?watch=true&resourceVersion={start}") as s:
        core.delete_namespaced_pod("p1", "a")
        seen = [s.summary() for _ in range(3)]
    assert [(t, n) for t, n, _ in seen] == [("ADDED", "p1"), ("MODIFIED", "p1"),
                                           ("DELETED", "p1")]
    rvs = [int(rv) for _, _, rv in seen]
    assert rvs == sorted(rvs) and rvs[0] > start


def test_watch_without_version_starts_with_state(server: LabApiServer,
                                                 core: client.CoreV1Api) -> None:
    setup_ns(core)
    core.create_namespaced_pod("a", pod("p1"))
    core.create_namespaced_pod("a", pod("p2"))
    for rv in ("0", ""):
        with stream(server, f"/api/v1/pods?watch=1&resourceVersion={rv}") as s:
            assert [s.summary()[:2] for _ in range(2)] == [("ADDED", "p1"), ("ADDED", "p2")]


def test_watch_too_old_gets_410(server: LabApiServer, core: client.CoreV1Api) -> None:
    setup_ns(core)
    old = server.store.resource_version
    core.create_namespaced_pod("a", pod("p1"))
    now = server.compact()
    with stream(server, f"/api/v1/pods?watch=true&resourceVersion={old}") as s:
        event = s.next()
        assert event["type"] == "ERROR"
        assert event["object"]["code"] == 410 and event["object"]["kind"] == "Status"
        assert event["object"]["message"] == f"too old resource version: {old} ({now})"
    with stream(server, f"/api/v1/pods?watch=true&resourceVersion={now}") as s:
        core.create_namespaced_pod("a", pod("p2"))
        assert s.summary()[:2] == ("ADDED", "p2")


def test_bookmarks_follow_writes_of_other_kinds(server: LabApiServer,
                                               core: client.CoreV1Api) -> None:
    setup_ns(core)
    start = server.store.resource_version
    missed = core.create_namespace(namespace("b")).metadata.resource_version
    with stream(server, "/api/v1/pods?watch=true&allowWatchBookmarks=true"
                        f"&resourceVersion={start}") as s:
        # Nothing for pods since `start`, but the server says the stream is current.
        first = s.next()
        assert first["type"] == "BOOKMARK"
        assert first["object"]["metadata"]["resourceVersion"] == missed
        ns = core.create_namespace(namespace("c"))
        event = s.next()
        assert event["type"] == "BOOKMARK" and event["object"]["kind"] == "Pod"
        assert event["object"]["metadata"]["resourceVersion"] == ns.metadata.resource_version
        core.create_namespaced_pod("a", pod("p"))
        assert s.summary()[0] == "ADDED"
    with stream(server, f"/api/v1/pods?watch=true&resourceVersion={start}") as s:
        core.create_namespace(namespace("d"))
        core.create_namespaced_pod("a", pod("q"))
        # Without allowWatchBookmarks, no bookmark precedes the next pod event.
        assert s.summary()[:2] == ("ADDED", "p")
        assert s.summary()[:2] == ("ADDED", "q")


def test_watch_selector_transitions(server: LabApiServer, core: client.CoreV1Api) -> None:
    setup_ns(core)
    core.create_namespaced_pod("a", pod("p", {"app": "web"}))
    rv = server.store.resource_version
    with stream(server, f"/api/v1/pods?watch=true&labelSelector=app%3Dweb"
                        f"&resourceVersion={rv}") as s:
        core.patch_namespaced_pod("p", "a", {"metadata": {"labels": {"app": "db"}}})
        assert s.summary()[:2] == ("DELETED", "p")
        core.patch_namespaced_pod("p", "a", {"metadata": {"labels": {"app": "web"}}})
        assert s.summary()[:2] == ("ADDED", "p")


def test_watch_ends_at_timeout(server: LabApiServer, core: client.CoreV1Api) -> None:
    rv = server.store.resource_version
    with stream(server, f"/api/v1/pods?watch=true&resourceVersion={rv}&timeoutSeconds=1") as s:
        with pytest.raises(EOFError):
            s.next()
        assert s.resp.isclosed() or s.resp.read() == b""


def test_kubernetes_watch_helper(server: LabApiServer, core: client.CoreV1Api) -> None:
    setup_ns(core)
    rv = server.store.resource_version
    core.create_namespaced_pod("a", pod("p1"))
    events = watch.Watch().stream(core.list_namespaced_pod, "a", resource_version=str(rv),
                                  timeout_seconds=5)
    event = next(events)
    assert event["type"] == "ADDED" and event["object"].metadata.name == "p1"
    events.close()


# ---- faults, restart and persistence --------------------------------------------------


def test_drop_watches_cuts_streams(server: LabApiServer) -> None:
    rv = server.store.resource_version
    with stream(server, f"/api/v1/pods?watch=true&resourceVersion={rv}") as s:
        wait_for(lambda: len(server.store._subs) == 1, "the watch to register")
        code, body = raw(server, "POST", "/podwire-admin/drop-watches")
        assert (code, body) == (200, {"dropped": 1})
        with pytest.raises((http.client.IncompleteRead, EOFError, ConnectionError)):
            s.next()
    assert raw(server, "POST", "/podwire-admin/compact")[1] == {"resourceVersion": str(rv)}


def test_restart_keeps_state_and_port(server: LabApiServer, core: client.CoreV1Api) -> None:
    setup_ns(core)
    url = server.url
    before = server.store.resource_version
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(tuple(url.removeprefix("http://").rsplit(":", 1)), timeout=2)
    server.start()
    assert server.url == url
    assert core.read_namespace("a").metadata.name == "a"
    created = core.create_namespaced_pod("a", pod("p"))
    assert int(created.metadata.resource_version) == before + 1


def test_state_file_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = LabApiServer(state_path=state)
    first.store.create(NAMESPACES, "", namespace("a"))
    first.store.create(PODS, "a", pod("p"))
    rv = first.store.resource_version
    first.add_listener("127.0.0.1", 0)
    first.start()
    first.stop()
    second = LabApiServer(state_path=state)
    assert second.store.resource_version == rv
    assert second.store.get(PODS, "a", "p")["metadata"]["resourceVersion"] == str(rv)
    assert second.store.create(PODS, "a", pod("q"))["metadata"]["resourceVersion"] == str(rv + 1)


def test_cli_serves_writes_kubeconfig_and_saves(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kc, state = tmp_path / "kc", tmp_path / "state.json"
    proc = subprocess.Popen([sys.executable, "-m", "podwire.lab.api", "--listen",
                             f"127.0.0.1:{port}", "--state", str(state), "--kubeconfig", str(kc)],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(kc.exists, "the kubeconfig")
        from podwire.agent.watch import api_client
        with api_client(str(kc)) as api:
            client.CoreV1Api(api).create_namespace(namespace("cli"))
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    saved = json.loads(state.read_text())
    assert [n["metadata"]["name"] for n in saved["objects"]["namespaces"]] == ["cli"]


def test_cli_bad_address_is_a_clear_error() -> None:
    result = subprocess.run([sys.executable, "-m", "podwire.lab.api", "--listen", "nope"],
                            check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "listen address 'nope' is not HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr

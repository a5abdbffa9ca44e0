"""The lab API server's pure parts: selector parsing and matching, patches, URL routing, the
typed items the store queues for a watch and how a watch connection relays them."""

from __future__ import annotations

import io
import json

import pytest

from podwire.lab.api.errors import ApiError
from podwire.lab.api.kinds import NAMESPACES, NETWORK_POLICIES, PODS
from podwire.lab.api.patch import apply_patch, json_patch, merge_patch
from podwire.lab.api.routes import parse_route
from podwire.lab.api.selectors import (
    Selector,
    parse_field_selector,
    parse_label_selector,
    parse_selector,
)
from podwire.lab.api.store import ApiStore
from podwire.lab.api.watch import Change, Drop, Event, History, Mark, QueueItem, Subscription
from podwire.lab.api.watchstream import BookmarkTiming, WatchRelay


def labels_match(selector: str, labels: dict[str, str]) -> bool:
    return all(req.matches(labels) for req in parse_label_selector(selector))


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("a=b", {"a": "b"}, True),
    ("a==b", {"a": "c"}, False),
    ("a!=b", {}, True),
    ("a!=b", {"a": "b"}, False),
    ("a in (b, c)", {"a": "c"}, True),
    ("a in (b,c)", {}, False),
    ("a notin (b)", {}, True),
    ("a notin (b)", {"a": "b"}, False),
    ("a", {"a": ""}, True),
    ("!a", {"a": "x"}, False),
    ("example.com/role=db,tier in (x),!gone", {"example.com/role": "db", "tier": "x"}, True),
    ("", {"anything": "goes"}, True),
])
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert labels_match(selector, labels) is expected


@pytest.mark.parametrize("bad", ["a in (b", "a=b=c", "!a in (b)", "a b", "-a=b", "a=-b-"])
def test_bad_label_selectors_are_400(bad: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_label_selector(bad)
    assert err.value.code == 400 and err.value.reason == "BadRequest"


def test_field_selectors() -> None:
    pod = {"metadata": {"name": "p", "namespace": "a"}, "spec": {"nodeName": "n1"},
           "status": {"phase": "Running"}}
    sel = parse_selector(None, "spec.nodeName=n1,status.phase!=Pending", PODS)
    assert sel.matches(pod)
    assert not parse_selector(None, "metadata.namespace=b", PODS).matches(pod)
    with pytest.raises(ApiError, match="field label not supported"):
        parse_field_selector("spec.nodeName=n1", NETWORK_POLICIES)


def test_merge_patch_rfc7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3}, "l": [3]}
    assert target == {"a": {"b": 1, "c": 2}, "l": [1, 2]}


def test_json_patch_rfc6902() -> None:
    doc = {"m": {"a/b": 1}, "l": [1, 2]}
    out = json_patch(doc, [{"op": "add", "path": "/l/1", "value": 9},
                           {"op": "add", "path": "/l/-", "value": 3},
                           {"op": "move", "from": "/m/a~1b", "path": "/moved"},
                           {"op": "copy", "from": "/moved", "path": "/copied"},
                           {"op": "replace", "path": "/l/0", "value": 0}])
    assert out == {"m": {}, "l": [0, 9, 2, 3], "moved": 1, "copied": 1}
    with pytest.raises(ApiError):
        json_patch(doc, [{"op": "remove", "path": "/missing"}])
    with pytest.raises(ApiError):
        json_patch(doc, [{"op": "frobnicate", "path": "/m"}])


def test_unknown_patch_type_is_415() -> None:
    with pytest.raises(ApiError) as err:
        apply_patch({}, "application/apply-patch+yaml", {})
    assert err.value.code == 415


def test_routes() -> None:
    route = parse_route("/api/v1/namespaces/a/pods/p/status")
    assert route is not None
    assert (route.res, route.namespace, route.name, route.subresource) == (PODS, "a", "p",
                                                                           "status")
    ns_status = parse_route("/api/v1/namespaces/a/status")
    assert ns_status is not None and (ns_status.name, ns_status.subresource) == ("a", "status")
    watch = parse_route("/apis/networking.k8s.io/v1/watch/namespaces/a/networkpolicies")
    assert watch is not None and watch.watch_path and watch.res is NETWORK_POLICIES
    assert parse_route("/api/v1/pods") is not None
    assert parse_route("/api/v1/services") is not None
    assert parse_route("/api/v1/endpoints") is None
    assert parse_route("/apis/networking.k8s.io/v1/networkpolicies/x/status") is None


def drain(sub: Subscription) -> list[QueueItem]:
    items = []
    while not sub.items.empty():
        items.append(sub.items.get_nowait())
    return items


def test_store_queues_changes_marks_and_drops() -> None:
    store = ApiStore()
    store.create(NAMESPACES, "", {"metadata": {"name": "a"}})
    store.create(PODS, "a", {"metadata": {"name": "p"},
                             "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    sub = store.watch(PODS, "a", Selector(), None, bookmarks=True)
    backlog = drain(sub)
    assert [type(item) for item in backlog] == [Change, Mark]
    assert isinstance(backlog[0], Change) and json.loads(backlog[0].line)["type"] == "ADDED"
    assert backlog[1] == Mark(store.resource_version)
    store.create(NAMESPACES, "", {"metadata": {"name": "b"}})  # a write this watch does not see
    unseen = drain(sub)
    assert [type(item) for item in unseen] == [Mark] and unseen[0].rv == store.resource_version
    store.drop_watches()
    assert [type(item) for item in drain(sub)] == [Drop]


def test_history_forgets_the_oldest_events() -> None:
    history = History(max_events=2, oldest=1)
    for rv in (2, 3, 4):
        history.append(Event(rv, PODS, "ADDED", {}, b"{}", None))
    with pytest.raises(ApiError) as err:
        history.since(1)
    assert err.value.code == 410
    assert [event.rv for event in history.since(2)] == [3, 4]
    history.compact(4)
    assert list(history.since(4)) == []


def chunks(body: bytes) -> list[bytes]:
    """The chunks of a chunked HTTP body, without the framing."""
    out = []
    while body:
        size, _, body = body.partition(b"\r\n")
        out.append(body[:int(size, 16)])
        body = body[int(size, 16) + 2:]
    return out


def relay(items: list[QueueItem], told: int) -> tuple[bool, list[bytes]]:
    sub = Subscription(PODS, None, Selector(), bookmarks=True)
    for item in items:
        sub.items.put(item)
    out = io.BytesIO()
    clean = WatchRelay(sub, PODS, out, BookmarkTiming(delay=0.0, idle_interval=60.0),
                       told).run(timeout=0.05)
    return clean, chunks(out.getvalue())


def test_relay_answers_unseen_writes_with_one_bookmark() -> None:
    clean, sent = relay([Change(5, b'{"e":5}\n'), Mark(6), Mark(7)], told=4)
    assert clean
    assert sent[0] == b'{"e":5}\n'
    assert [json.loads(line) for line in sent[1:]] == [{"type": "BOOKMARK", "object": {
        "kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "7"}}}]


def test_relay_ends_abruptly_on_a_drop() -> None:
    assert relay([Change(5, b'{"e":5}\n'), Drop()], told=4) == (False, [])

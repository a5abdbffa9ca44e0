"""The lab API server's CustomResourceDefinitions and custom resources, as the real server
treats them: the network-policy-api CRDs of deploy/ are accepted and served (discovery,
every verb, resourceVersions, watches with bookmarks) only while they exist; writes are
pruned, defaulted and validated against the CRD's schema and CEL rules, a refused one is a
422 naming each field path and stores nothing."""

from __future__ import annotations

import copy
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from apiserver_fixtures import api, kubeconfig, server  # noqa: F401
from kubernetes import client

from podwire.lab.api.kinds import NAMESPACES
from podwire.lab.api.server import LabApiServer
from podwire.lab.api.store import ApiStore

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "05-network-policy-api.yaml"
GROUP = "policy.networking.k8s.io"
CNP = ("v1alpha2", "clusternetworkpolicies")
ANP = ("v1alpha1", "adminnetworkpolicies")
BANP = ("v1alpha1", "baselineadminnetworkpolicies")


_DEFINITIONS = list(yaml.safe_load_all(DEPLOY.read_text()))


def definitions() -> list[dict[str, Any]]:
    """The CRDs of deploy/, a fresh copy each time (parsed once: the file is long)."""
    return copy.deepcopy(_DEFINITIONS)


def cnp(name: str = "deny-x", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tier": "Admin", "priority": 10, "subject": {"namespaces": {}},
        "ingress": [{"action": "Deny", "name": "from-x",
                     "from": [{"namespaces": {"matchLabels": {"team": "x"}}}]}]}
    body.update(spec)
    return {"apiVersion": f"{GROUP}/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name}, "spec": body}


def anp(name: str = "a", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "priority": 3, "subject": {"namespaces": {}},
        "egress": [{"action": "Allow", "to": [{"networks": ["10.0.0.0/8"]}],
                    "ports": [{"portNumber": {"port": 53}}]}]}
    body.update(spec)
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": "AdminNetworkPolicy",
            "metadata": {"name": name}, "spec": body}


@pytest.fixture
def ext(api: client.ApiClient) -> client.ApiextensionsV1Api:  # noqa: F811
    return client.ApiextensionsV1Api(api)


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:  # noqa: F811
    return client.CustomObjectsApi(api)


@pytest.fixture
def installed(ext: client.ApiextensionsV1Api) -> list[str]:
    return [ext.create_custom_resource_definition(d).metadata.name for d in definitions()]


def create(custom: client.CustomObjectsApi, kind: tuple[str, str],
           body: dict[str, Any]) -> dict[str, Any]:
    return custom.create_cluster_custom_object(GROUP, *kind, body)  # type: ignore[no-any-return]


def refused(custom: client.CustomObjectsApi, kind: tuple[str, str], body: dict[str, Any],
            code: int = 422) -> dict[str, Any]:
    with pytest.raises(client.ApiException) as err:
        create(custom, kind, body)
    assert err.value.status == code, err.value.body
    return json.loads(err.value.body)  # type: ignore[no-any-return]


def names(custom: client.CustomObjectsApi, kind: tuple[str, str]) -> list[str]:
    listed = custom.list_cluster_custom_object(GROUP, *kind)
    return [item["metadata"]["name"] for item in listed["items"]]


def request(server: LabApiServer, method: str, path: str,  # noqa: F811
            body: Any = None) -> tuple[int, Any]:
    """A plain HTTP request: the status code and the decoded answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get_json(server: LabApiServer, path: str) -> tuple[int, Any]:  # noqa: F811
    return request(server, "GET", path)


# ---- the definitions ----------------------------------------------------------------------


def test_the_deploy_crds_are_accepted_listed_and_established(
        ext: client.ApiextensionsV1Api, installed: list[str]) -> None:
    assert installed == [f"{kind[1]}.{GROUP}" for kind in (ANP, BANP, CNP)]
    listed = ext.list_custom_resource_definition()
    assert sorted(d.metadata.name for d in listed.items) == sorted(installed)
    crd = ext.read_custom_resource_definition(f"clusternetworkpolicies.{GROUP}")
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd.status.stored_versions == ["v1alpha2"]
    assert crd.status.accepted_names.short_names == ["cnp"]


def test_discovery_serves_the_group_only_while_its_crds_exist(
        server: LabApiServer, ext: client.ApiextensionsV1Api) -> None:  # noqa: F811
    groups = [g["name"] for g in get_json(server, "/apis")[1]["groups"]]
    assert GROUP not in groups
    assert get_json(server, f"/apis/{GROUP}/v1alpha2/clusternetworkpolicies")[0] == 404
    for d in definitions():
        ext.create_custom_resource_definition(d)
    group = next(g for g in get_json(server, "/apis")[1]["groups"] if g["name"] == GROUP)
    assert [v["version"] for v in group["versions"]] == ["v1alpha1", "v1alpha2"]
    v2 = get_json(server, f"/apis/{GROUP}/v1alpha2")[1]
    entry = next(r for r in v2["resources"] if r["name"] == "clusternetworkpolicies")
    assert (entry["kind"], entry["namespaced"], entry["shortNames"]) == (
        "ClusterNetworkPolicy", False, ["cnp"])
    assert "clusternetworkpolicies/status" in {r["name"] for r in v2["resources"]}
    for d in definitions():
        ext.delete_custom_resource_definition(d["metadata"]["name"])
    assert GROUP not in [g["name"] for g in get_json(server, "/apis")[1]["groups"]]


def test_openapi_v3_says_the_server_validates_fields(
        server: LabApiServer, installed: list[str]) -> None:  # noqa: F811
    """kubectl's apply looks for `fieldValidation` on the kind's operations, then sends
    fieldValidation=Strict and leaves validation to the server."""
    code, index = get_json(server, "/openapi/v3")
    assert code == 200
    assert index["paths"][f"apis/{GROUP}/v1alpha2"] == {
        "serverRelativeURL": f"/openapi/v3/apis/{GROUP}/v1alpha2"}
    assert "api/v1" in index["paths"] and "apis/apiextensions.k8s.io/v1" in index["paths"]
    code, doc = get_json(server, f"/openapi/v3/apis/{GROUP}/v1alpha2")
    assert code == 200
    patch = doc["paths"][f"/apis/{GROUP}/v1alpha2/clusternetworkpolicies/{{name}}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": GROUP, "version": "v1alpha2", "kind": "ClusterNetworkPolicy"}
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert get_json(server, "/openapi/v3/apis/nothing.example/v1")[0] == 404


@pytest.mark.parametrize(("change", "path"), [
    (lambda d: d["metadata"].update(name="wrong.policy.networking.k8s.io"), "metadata.name"),
    (lambda d: d["spec"].update(scope="Everywhere"), "spec.scope"),
    (lambda d: d["spec"].update(group="nodots"), "spec.group"),
    (lambda d: d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
     .update({"x-kubernetes-validations": [{"rule": "self.priority >"}]}),
     "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"),
    (lambda d: d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
     .update({"x-kubernetes-validations": [{"rule": "noSuchFunction(self)"}]}),
     "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"),
    (lambda d: d["spec"]["versions"].append(dict(d["spec"]["versions"][0], name="v1beta1",
                                                 storage=False)), "spec.versions"),
])
def test_a_bad_crd_is_refused_naming_the_field(ext: client.ApiextensionsV1Api,
                                               change: Any, path: str) -> None:
    crd = copy.deepcopy(definitions()[2])
    change(crd)
    with pytest.raises(client.ApiException) as err:
        ext.create_custom_resource_definition(crd)
    status = json.loads(err.value.body)
    assert (err.value.status, status["reason"]) == (422, "Invalid"), status
    assert path in [c["field"] for c in status["details"]["causes"]], status
    assert ext.list_custom_resource_definition().items == []


def test_a_crd_cannot_change_its_group_or_kind(ext: client.ApiextensionsV1Api,
                                               installed: list[str]) -> None:
    crd = ext.api_client.sanitize_for_serialization(
        ext.read_custom_resource_definition(installed[2]))
    crd["spec"]["names"]["kind"] = "OtherPolicy"
    with pytest.raises(client.ApiException) as err:
        ext.replace_custom_resource_definition(installed[2], crd)
    assert err.value.status == 422 and "spec.names.kind" in err.value.body


# ---- the custom resources -----------------------------------------------------------------


def test_every_verb_with_resource_versions(custom: client.CustomObjectsApi,
                                           installed: list[str]) -> None:
    made = create(custom, CNP, cnp())
    rv = int(made["metadata"]["resourceVersion"])
    assert (made["metadata"]["generation"], made["kind"]) == (1, "ClusterNetworkPolicy")
    got = custom.get_cluster_custom_object(GROUP, *CNP, "deny-x")
    assert got == made
    got["spec"]["priority"] = 20
    replaced = custom.replace_cluster_custom_object(GROUP, *CNP, "deny-x", got)
    assert int(replaced["metadata"]["resourceVersion"]) > rv
    assert replaced["metadata"]["generation"] == 2
    patched = custom.patch_cluster_custom_object(GROUP, *CNP, "deny-x",
                                                 {"metadata": {"labels": {"a": "b"}}})
    assert patched["metadata"]["labels"] == {"a": "b"} and patched["spec"]["priority"] == 20
    got["spec"]["priority"] = 30  # a write from the older resourceVersion
    with pytest.raises(client.ApiException) as err:
        custom.replace_cluster_custom_object(GROUP, *CNP, "deny-x", got)
    assert err.value.status == 409
    assert names(custom, CNP) == ["deny-x"]
    custom.delete_cluster_custom_object(GROUP, *CNP, "deny-x")
    assert names(custom, CNP) == []


def test_the_status_subresource_keeps_the_spec(custom: client.CustomObjectsApi,
                                               installed: list[str]) -> None:
    made = create(custom, CNP, cnp())
    status = custom.patch_cluster_custom_object_status(
        GROUP, *CNP, "deny-x", {"status": {"conditions": [{"type": "Ready"}]}})
    assert status["status"] == {"conditions": [{"type": "Ready"}]}
    assert status["spec"] == made["spec"]
    spec_write = dict(status, spec=dict(status["spec"], priority=11))
    spec_write.pop("status")
    kept = custom.replace_cluster_custom_object(GROUP, *CNP, "deny-x", spec_write)
    assert kept["status"] == {"conditions": [{"type": "Ready"}]}


def test_unknown_fields_are_pruned_defaults_filled_and_refused_when_strict(
        server: LabApiServer, custom: client.CustomObjectsApi,  # noqa: F811
        installed: list[str]) -> None:
    body = cnp(junk=1)
    body["spec"]["egress"] = [{"action": "Accept", "to": [{"networks": ["10.0.0.0/8"]}],
                               "protocols": [{"tcp": {"destinationPort": {"number": 53}}}],
                               "extra": True}]
    stored = create(custom, CNP, body)
    assert "junk" not in stored["spec"] and "extra" not in stored["spec"]["egress"][0]
    body = anp(egress=[{"action": "Allow", "to": [{"networks": ["10.0.0.0/8"]}],
                        "ports": [{"portNumber": {"port": 53}}]}])
    assert create(custom, ANP, body)["spec"]["egress"][0]["ports"][0]["portNumber"] == {
        "protocol": "TCP", "port": 53}
    code, status = request(server, "POST", f"/apis/{GROUP}/v1alpha2/clusternetworkpolicies"
                           "?fieldValidation=Strict", cnp("strict", junk=1))
    assert code == 400 and 'unknown field "spec.junk"' in status["message"]
    assert "strict" not in names(custom, CNP)


@pytest.mark.parametrize(("kind", "body", "paths"), [
    (CNP, cnp(priority=1001), ["spec.priority"]),
    (CNP, cnp(priority="high"), ["spec.priority"]),
    (CNP, cnp(tier="Middle"), ["spec.tier"]),
    (CNP, {**cnp(), "spec": {"tier": "Admin", "priority": 1}}, ["spec.subject"]),
    (CNP, cnp(subject={"namespaces": {}, "pods": {"podSelector": {}}}), ["spec.subject"]),
    (CNP, cnp(ingress=[{"action": "Allow", "from": [{"namespaces": {}}]}]),
     ["spec.ingress[0].action"]),
    (CNP, cnp(ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}] * 26),
     ["spec.ingress"]),
    (CNP, cnp(ingress=[{"action": "Deny", "from": []}]), ["spec.ingress[0].from"]),
    (CNP, cnp(egress=[{"action": "Deny", "to": [{"networks": ["10.0.0.300/8"]}]}]),
     ["spec.egress[0].to[0].networks[0]"]),
    (CNP, cnp(egress=[{"action": "Deny", "to": [{"networks": ["10.0.0.0/8", "10.0.0.0/8"]}]}]),
     ["spec.egress[0].to[0].networks[1]"]),
    (CNP, cnp(egress=[{"action": "Deny", "to": [{"nodes": {}}],
                       "protocols": [{"destinationNamedPort": "http"}]}]),
     ["spec.egress[0]"]),
    (CNP, cnp(ingress=[{"action": "Deny", "from": [{"namespaces": {}}], "protocols": [
        {"udp": {"destinationPort": {"range": {"start": 90, "end": 80}}}}]}]),
     ["spec.ingress[0].protocols[0].udp.destinationPort.range"]),
    (CNP, cnp(ingress=[{"action": "Deny", "name": "n" * 101, "from": [{"namespaces": {}}]}]),
     ["spec.ingress[0].name"]),
    (CNP, cnp(priority=-1, tier="Nowhere"), ["spec.tier", "spec.priority"]),
    (ANP, anp(priority=None), ["spec.priority"]),
    (ANP, anp(egress=[{"action": "Accept", "to": [{"domainNames": ["a.example"]}]}]),
     ["spec.egress[0].action", "spec.egress[0].to[0]"]),
    (BANP, {"apiVersion": f"{GROUP}/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
            "metadata": {"name": "other"}, "spec": {"subject": {"namespaces": {}}}},
     ["<nil>"]),
])
def test_bad_policies_are_invalid_with_every_field_path(
        custom: client.CustomObjectsApi, installed: list[str], kind: tuple[str, str],
        body: dict[str, Any], paths: list[str]) -> None:
    status = refused(custom, kind, body)
    assert status["reason"] == "Invalid"
    assert [c["field"] for c in status["details"]["causes"]] == paths, status
    assert all(path in status["message"] for path in paths)
    assert names(custom, kind) == []


def test_the_baseline_singleton_and_a_good_baseline(custom: client.CustomObjectsApi,
                                                    installed: list[str]) -> None:
    body = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
            "metadata": {"name": "other"}, "spec": {"subject": {"namespaces": {}}}}
    status = refused(custom, BANP, body)
    assert "Only one baseline admin network policy" in status["message"]
    body["metadata"]["name"] = "default"
    assert create(custom, BANP, body)["metadata"]["name"] == "default"


def test_an_invalid_update_keeps_the_stored_object(custom: client.CustomObjectsApi,
                                                   installed: list[str]) -> None:
    made = create(custom, CNP, cnp())
    with pytest.raises(client.ApiException) as err:
        custom.patch_cluster_custom_object(GROUP, *CNP, "deny-x", {"spec": {"priority": 5000}})
    assert err.value.status == 422 and "spec.priority" in err.value.body
    assert custom.get_cluster_custom_object(GROUP, *CNP, "deny-x") == made


# ---- watches and the definition's lifetime ------------------------------------------------


class Watching:
    """A watch opened now (the server holds the subscription once the answer's headers are
    in), read in a thread until `stop_after` events or the stream ends."""

    def __init__(self, custom: client.CustomObjectsApi, rv: str, stop_after: int) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.answer = custom.list_cluster_custom_object(
            GROUP, *CNP, watch=True, resource_version=rv, allow_watch_bookmarks=True,
            timeout_seconds=10, _preload_content=False)
        self.stop_after = stop_after
        self.thread = threading.Thread(target=self._read)
        self.thread.start()

    def _read(self) -> None:
        for line in self.answer:
            event = json.loads(line)
            meta = event["object"]["metadata"]
            self.events.append((event["type"], meta.get("name", ""), meta["resourceVersion"]))
            if len(self.events) >= self.stop_after:
                break
        self.answer.release_conn()

    def changes(self) -> list[tuple[str, str]]:
        return [(t, n) for t, n, _ in self.events if t != "BOOKMARK"]


def test_a_watch_sees_changes_and_bookmarks(server: LabApiServer,  # noqa: F811
                                            custom: client.CustomObjectsApi,
                                            installed: list[str]) -> None:
    start = custom.list_cluster_custom_object(GROUP, *CNP)["metadata"]["resourceVersion"]
    watching = Watching(custom, start, 4)
    made = create(custom, CNP, cnp())
    custom.patch_cluster_custom_object(GROUP, *CNP, "deny-x", {"spec": {"priority": 12}})
    custom.delete_cluster_custom_object(GROUP, *CNP, "deny-x")
    # A write this watch does not see moves it on by a bookmark.
    other = server.store.create(NAMESPACES, "", {"metadata": {"name": "elsewhere"}})
    watching.thread.join(15)
    assert watching.changes() == [("ADDED", "deny-x"), ("MODIFIED", "deny-x"),
                                  ("DELETED", "deny-x")]
    assert watching.events[-1] == ("BOOKMARK", "", other["metadata"]["resourceVersion"])
    rvs = [int(rv) for t, _, rv in watching.events if t != "BOOKMARK"]
    assert rvs == sorted(rvs) and rvs[0] == int(made["metadata"]["resourceVersion"])


def test_deleting_the_crd_deletes_its_objects_and_ends_its_watches(
        ext: client.ApiextensionsV1Api, custom: client.CustomObjectsApi,
        installed: list[str]) -> None:
    create(custom, CNP, cnp("one"))
    create(custom, CNP, cnp("two"))
    start = custom.list_cluster_custom_object(GROUP, *CNP)["metadata"]["resourceVersion"]
    watching = Watching(custom, start, 99)
    ext.delete_custom_resource_definition(f"clusternetworkpolicies.{GROUP}")
    watching.thread.join(15)
    assert not watching.thread.is_alive(), "the watch outlived its kind"
    assert watching.changes() == [("DELETED", "one"), ("DELETED", "two")]
    with pytest.raises(client.ApiException) as err:
        custom.list_cluster_custom_object(GROUP, *CNP)
    assert err.value.status == 404
    ext.create_custom_resource_definition(definitions()[2])
    assert names(custom, CNP) == []  # a new definition starts empty


def test_a_saved_state_keeps_definitions_and_objects(tmp_path: Path) -> None:
    from podwire.lab.api.kinds import CUSTOM_RESOURCE_DEFINITIONS

    store = ApiStore()
    for d in definitions():
        store.create(CUSTOM_RESOURCE_DEFINITIONS, "", d)
    kind = store.catalog.find(GROUP, *CNP)
    assert kind is not None
    store.create(kind, "", cnp())
    restored = ApiStore.from_snapshot(json.loads(store.snapshot()))
    again = restored.catalog.find(GROUP, *CNP)
    assert again is not None
    assert restored.get(again, "", "deny-x")["spec"]["priority"] == 10
    with pytest.raises(Exception, match="spec.priority"):
        restored.create(again, "", cnp("bad", priority=5000))


# ---- server-side printing -----------------------------------------------------------------

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def test_kubectl_get_is_answered_with_the_crds_printer_columns(
        server: LabApiServer, custom: client.CustomObjectsApi,  # noqa: F811
        installed: list[str]) -> None:
    create(custom, CNP, cnp())
    path = f"/apis/{GROUP}/v1alpha2/clusternetworkpolicies"
    for url in (path, f"{path}/deny-x"):
        req = urllib.request.Request(server.url + url, headers={"Accept": TABLE})
        with urllib.request.urlopen(req) as answer:
            got = json.loads(answer.read())
        assert (got["kind"], got["apiVersion"]) == ("Table", "meta.k8s.io/v1")
        assert [c["name"] for c in got["columnDefinitions"]] == ["Name", "Tier", "Priority",
                                                                 "Age"]
        (row,) = got["rows"]
        assert row["cells"][:3] == ["deny-x", "Admin", 10]
        assert row["cells"][3].endswith("s")
        assert row["object"]["metadata"]["name"] == "deny-x"
    assert get_json(server, path)[1]["kind"] == "ClusterNetworkPolicyList"  # no Table asked


def test_a_table_is_paged_by_limit_and_continue_as_kubectl_get_asks(
        server: LabApiServer, custom: client.CustomObjectsApi,  # noqa: F811
        installed: list[str]) -> None:
    for n in range(5):
        create(custom, CNP, cnp(f"deny-{n}", priority=n + 1))
    path = f"/apis/{GROUP}/v1alpha2/clusternetworkpolicies?limit=2"
    names: list[str] = []
    pages = 0
    token = ""
    while True:
        req = urllib.request.Request(server.url + path + token, headers={"Accept": TABLE})
        with urllib.request.urlopen(req) as answer:
            got = json.loads(answer.read())
        pages += 1
        assert got["kind"] == "Table" and len(got["rows"]) <= 2
        names += [row["cells"][0] for row in got["rows"]]
        if not got["metadata"].get("continue"):
            break
        token = "&continue=" + got["metadata"]["continue"]
    assert names == [f"deny-{n}" for n in range(5)] and pages == 3


@pytest.mark.parametrize(("seconds", "shown"), [
    (5, "5s"), (119, "119s"), (200, "3m20s"), (600, "10m"), (3 * 3600 + 120, "3h2m"),
    (30 * 3600, "30h"), (3 * 86400 + 4 * 3600, "3d4h"), (40 * 86400, "40d"),
    (800 * 86400, "2y70d"), (-5, "<invalid>")])
def test_ages_read_as_kubectl_prints_them(seconds: int, shown: str) -> None:
    from podwire.lab.api.tables import human_duration

    assert human_duration(seconds) == shown


def test_printer_column_paths() -> None:
    from podwire.lab.api.tables import json_path, wants_table

    obj = {"spec": {"priority": 3, "ports": [{"port": 80}]}}
    assert json_path(obj, ".spec.priority") == 3
    assert json_path(obj, ".spec.ports[0].port") == 80
    assert json_path(obj, ".spec.ports[1].port") is None
    assert json_path(obj, ".spec.missing.deeper") is None
    assert wants_table(TABLE) and not wants_table("application/json")

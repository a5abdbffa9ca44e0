"""Shared pieces for the lab API server and informer tests: a server on a free loopback port,
clients built from the kubeconfig it writes, and waiting on state with a deadline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from podwire.agent.watch import api_client
from podwire.lab.api.server import LabApiServer

POD_SPEC = {"containers": [{"name": "c", "image": "busybox"}]}




def pod(name: str, labels: dict[str, str] | None = None, node: str | None = None) -> dict:
    spec: dict[str, Any] = dict(POD_SPEC)
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def namespace(name: str, labels: dict[str, str] | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {}}}


def policy(name: str, spec: dict | None = None) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name}, "spec": spec or {"podSelector": {}}}


@pytest.fixture
def server() -> Iterator[LabApiServer]:
    srv = LabApiServer(bookmark_delay=0.01)
    srv.add_listener("127.0.0.1", 0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def kubeconfig(server: LabApiServer, tmp_path: Path) -> str:
    return str(server.write_kubeconfig(tmp_path / "kubeconfig"))


@pytest.fixture
def api(kubeconfig: str) -> Iterator[client.ApiClient]:
    api = api_client(kubeconfig)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def net(api: client.ApiClient) -> client.NetworkingV1Api:
    return client.NetworkingV1Api(api)

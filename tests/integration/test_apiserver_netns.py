"""The lab API server serving one store on loopback and inside a network namespace (root)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
from collections.abc import Iterator

import pytest

from podwire.common.netns import in_netns
from podwire.lab.api.kinds import NAMESPACES
from podwire.lab.api.server import LabApiServer


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"pwt4-api-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def get_in(netns: str | None, port: int, path: str) -> tuple[int, dict]:
    """GET from inside `netns` (a thread that enters it), or from here when None."""
    result: list[tuple[int, dict] | OSError] = []

    def fetch() -> None:
        try:
            with in_netns(netns):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", path)
                resp = conn.getresponse()
                result.append((resp.status, json.loads(resp.read())))
                conn.close()
        except OSError as err:
            result.append(err)

    thread = threading.Thread(target=fetch)
    thread.start()
    thread.join()
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]


def test_listener_inside_a_netns_shares_the_store(netns: str) -> None:
    server = LabApiServer()
    host_addr = server.add_listener("127.0.0.1", 0)
    server.start()
    try:
        ns_addr = server.add_listener("127.0.0.1", 0, netns=netns)
        server.store.create(NAMESPACES, "", {"metadata": {"name": "shared"}})
        code, body = get_in(netns, ns_addr[1], "/api/v1/namespaces")
        assert code == 200 and [i["metadata"]["name"] for i in body["items"]] == ["shared"]
        assert get_in(None, host_addr[1], "/api/v1/namespaces/shared")[0] == 200
        # The namespace's loopback is its own: the host listener is not reachable from it.
        with pytest.raises(ConnectionRefusedError):
            get_in(netns, host_addr[1], "/version")
        server.stop()
        server.start()
        assert get_in(netns, ns_addr[1], "/version")[0] == 200
    finally:
        server.stop()


def test_bad_netns_path_is_a_clear_error() -> None:
    server = LabApiServer()
    with pytest.raises(OSError, match="pwt4-missing"):
        server.add_listener("127.0.0.1", 0, netns="/run/netns/pwt4-missing")

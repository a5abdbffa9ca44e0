"""The endpoint records of cni/endpoints.py (a temp dir, no root needed)."""

from __future__ import annotations

from pathlib import Path

from podwire.cni.endpoints import Endpoint, EndpointStore


def test_endpoint_store_round_trip(tmp_path: Path) -> None:
    store = EndpointStore(tmp_path / "eps")
    ep = Endpoint("c1", "eth0", "/run/netns/x", "net", "pw0123456789a", 7, "aa:aa:aa:aa:aa:aa",
                  "bb:bb:bb:bb:bb:bb", "10.0.0.2", 1450, "ns", "web", "uid")
    assert store.all() == [] and store.get(ep.host_ifname) is None
    store.put(ep)
    assert EndpointStore(tmp_path / "eps").get(ep.host_ifname) == ep
    assert store.all() == [ep] and ep.pod == "ns/web"
    store.remove(ep.host_ifname)
    store.remove(ep.host_ifname)
    assert store.all() == []

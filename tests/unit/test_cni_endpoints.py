"""The endpoint records of cni/endpoints.py (a temp dir, no root needed)."""

from __future__ import annotations

import json
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


def test_dual_stack_record_round_trip_and_older_records(tmp_path: Path) -> None:
    store = EndpointStore(tmp_path / "eps")
    ep = Endpoint("c1", "eth0", "/run/netns/x", "net", "pw0123456789a", 7, "aa:aa:aa:aa:aa:aa",
                  "bb:bb:bb:bb:bb:bb", "10.0.0.2", 1450, ips=("10.0.0.2", "fd00::2"))
    store.put(ep)
    back = store.get(ep.host_ifname)
    assert back == ep and back is not None and back.ips == ("10.0.0.2", "fd00::2")
    assert (back.address(4), back.address(6)) == ("10.0.0.2", "fd00::2")
    # A record an agent wrote before dual stack has `ip` only.
    old = json.loads((tmp_path / "eps" / "pw0123456789a.json").read_text())
    del old["ips"]
    (tmp_path / "eps" / "pw0123456789a.json").write_text(json.dumps(old))
    older = store.get(ep.host_ifname)
    assert older is not None and older.ips == ("10.0.0.2",) and older.address(6) is None


def test_a_record_removed_while_all_reads_is_left_out(tmp_path: Path) -> None:
    # A DEL served while the agent starts removes a record between the directory listing
    # and the read (the fault bench's agent crashed on it): a link to no file stands for
    # that record, listed by glob and gone when read.
    store = EndpointStore(tmp_path / "eps")
    ep = Endpoint("c1", "eth0", "/run/netns/x", "net", "pw0123456789a", 7, "aa:aa:aa:aa:aa:aa",
                  "bb:bb:bb:bb:bb:bb", "10.0.0.2", 1450)
    store.put(ep)
    (tmp_path / "eps" / "pw0000000000b.json").symlink_to(tmp_path / "eps" / "gone.json")
    assert store.all() == [ep]

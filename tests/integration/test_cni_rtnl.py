"""cni/rtnl.py's batches against the kernel: one write, every request answered in order."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cni_agent import netns, run

from podwire.cni import rtnl
from podwire.common.netns import in_netns


def test_a_batch_applies_in_order_and_names_the_request_refused() -> None:
    with netns() as path:
        run(["nsenter", f"--net={path}", "ip", "link", "add", "pwtr0", "type", "veth",
             "peer", "name", "pwtr1"])
        with in_netns(path):
            sock = rtnl.Rtnl()
        with sock:
            found = sock.link("pwtr0")
            assert found is not None
            index, mac = found
            ip = ipaddress.IPv4Address("10.66.0.2")
            with pytest.raises(rtnl.NetlinkError) as refused:
                sock.run(rtnl.set_up(index, "pwtr0"),
                         rtnl.add_address(index, ip, 32),
                         rtnl.add_address(index, ip, 32),  # exists by now: EEXIST
                         rtnl.add_route(ipaddress.IPv4Network("10.66.1.0/24"), index,
                                        scope=253))
            assert refused.value.errno == 17 and "address 10.66.0.2/32" in str(refused.value)
            # The ones before it are in place, and the kernel went on after it.
            out = run(["nsenter", f"--net={path}", "ip", "-o", "addr", "show", "pwtr0"]).stdout
            assert "10.66.0.2/32" in out
            routes = run(["nsenter", f"--net={path}", "ip", "route", "show"]).stdout
            assert "10.66.1.0/24 dev pwtr0" in routes
            links = run(["nsenter", f"--net={path}", "ip", "link", "show", "pwtr0"]).stdout
            assert ",UP" in links and mac in links

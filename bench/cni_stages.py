"""Where one CNI ADD's time goes inside the agent: each stage timed, in this process.

The CNI commands run on a Node in a throw-away node netns, called as the agent calls
them (`plugin.serve`), for real: veths, netns, netlink and the IPAM files. The stages
are the functions of cni/ that do one step each, wrapped in a timer; the netlink round
trips are counted with the requests each one carries. The shim, the socket and the
datapath hook are not in it (bench/cni_bench.py times whole calls; the stand-in hook
records nothing here).

    .venv/bin/python bench/cni_stages.py [--pods 40]
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "integration"), str(REPO / "tests")]
from cni_agent import netns, run, unique

from podwire.cni import allocator, commands, endpoints, ipamstore, plugin, rtnl, veth
from podwire.cni.node import Node
from podwire.common.netns import in_netns

# (owner, attribute, label): the steps of ADD and DEL, outermost first.
STAGES: tuple[tuple[Any, str, str], ...] = (
    (allocator, "allocate_all", "IPAM: allocate (lock, owner check, reserve)"),
    (ipamstore.IpamStore, "reserve", "IPAM:   reserve (file, cursor)"),
    (ipamstore.IpamStore, "release", "IPAM: release"),
    (veth, "wire", "veth: wire"),
    (veth, "_create", "veth:   create the pair"),
    (veth, "_configure", "veth:   configure both ends"),
    (veth, "_ipv6_knobs", "veth:     IPv6 sysctls"),
    (veth, "unwire", "veth: unwire"),
    (endpoints.EndpointStore, "put", "endpoint record: write"),
    (endpoints.EndpointStore, "remove", "endpoint record: remove"),
    (commands, "_attach", "datapath hook"),
)
_KINDS = {16: "link", 17: "dellink", 18: "getlink", 20: "addr", 24: "route", 28: "neigh",
          36: "qdisc", 44: "filter"}


def _timed(fn: Callable[..., Any], samples: list[float]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            samples.append((time.perf_counter() - started) * 1000)
    return timed


def instrument(times: dict[str, list[float]]) -> None:
    for owner, name, label in STAGES:
        setattr(owner, name, _timed(getattr(owner, name), times[label]))
    exchange = rtnl.Rtnl._exchange

    def counted(self: rtnl.Rtnl, requests: Sequence[rtnl.Request]) -> Any:
        label = "netlink round trip: " + "+".join(_KINDS.get(r.kind, str(r.kind))
                                                  for r in requests)
        return _timed(exchange, times[label])(self, requests)

    rtnl.Rtnl._exchange = counted  # type: ignore[method-assign]  # timed in place


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=40)
    args = parser.parse_args()
    times: dict[str, list[float]] = defaultdict(list)
    instrument(times)
    node_name = unique("n")
    state = Path(tempfile.mkdtemp(prefix="pwtc-stages-"))
    run(["ip", "netns", "add", node_name])
    totals: dict[str, list[tuple[float, float]]] = {"ADD": [], "DEL": []}
    try:
        with ExitStack() as stack:
            spaces = [stack.enter_context(netns()) for _ in range(args.pods)]
            stack.enter_context(in_netns(f"/run/netns/{node_name}"))
            node = Node(state, ["10.77.0.0/24"])
            conf = json.dumps({"cniVersion": "1.0.0", "name": "pwtc-net", "type": "podwire"})
            for command in ("ADD", "DEL"):
                for i, space in enumerate(spaces):
                    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": f"stage{i}",
                           "CNI_NETNS": space, "CNI_IFNAME": "eth0"}
                    wall, cpu = time.perf_counter(), time.process_time()
                    answer = plugin.serve(node, {"command": command, "env": env, "stdin": conf})
                    totals[command].append(((time.perf_counter() - wall) * 1000,
                                            (time.process_time() - cpu) * 1000))
                    if answer["exit_code"] != 0:
                        raise SystemExit(f"{command} failed: {answer['stdout']}")
    finally:
        run(["ip", "netns", "del", node_name], check=False)
        shutil.rmtree(state, ignore_errors=True)
    print(f"\nCNI stages in the agent, {args.pods} pods one at a time (median ms)")
    for command, values in totals.items():
        print(f"  {command}: wall {statistics.median(v for v, _ in values):.2f}, "
              f"CPU {statistics.median(c for _, c in values):.2f}")
    print(f"  {'stage':<58}{'calls/pod':>10}{'median':>9}{'ms/pod':>9}")
    for label, samples in times.items():
        if samples:
            print(f"  {label:<58}{len(samples) / args.pods:>10.2f}"
                  f"{statistics.median(samples):>9.3f}{sum(samples) / args.pods:>9.3f}")


if __name__ == "__main__":
    main()

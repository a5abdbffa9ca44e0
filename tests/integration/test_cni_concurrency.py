"""64 pods at once, repeated DELs, and a shim killed in the middle of ADD."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cni_agent import SHIM, NodeAgent, netns, node_agent, pod_ip, wait_for

PODS = 64


@pytest.fixture
def agent() -> Iterator[NodeAgent]:
    with node_agent(Path(tempfile.mkdtemp(prefix="pwtc-"))) as a:
        yield a


def test_64_concurrent_adds_and_dels(agent: NodeAgent) -> None:
    with ExitStack() as stack:
        spaces = [stack.enter_context(netns()) for _ in range(PODS)]
        with ThreadPoolExecutor(PODS) as pool:
            added = list(pool.map(
                lambda i: agent.cni("ADD", agent.conf(), f"c-many{i}", spaces[i]), range(PODS)))
        assert [r.code for r in added] == [0] * PODS, [r.stdout for r in added if r.code]
        ips = [pod_ip(r.json) for r in added]
        assert len(set(ips)) == PODS and len(agent.host_veths()) == PODS
        with ThreadPoolExecutor(8) as pool:
            reachable = list(pool.map(agent.ping, ips))
        assert all(reachable), [ip for ip, ok in zip(ips, reachable, strict=True) if not ok]

        with ThreadPoolExecutor(PODS) as pool:
            deleted = list(pool.map(
                lambda i: agent.cni("DEL", agent.conf(prevResult=added[i].json), f"c-many{i}",
                                    spaces[i]), range(PODS)))
        assert [r.code for r in deleted] == [0] * PODS
        assert agent.host_veths() == [] and agent.allocations() == [] and agent.endpoints() == []
        again = agent.cni("DEL", agent.conf(), "c-many0", spaces[0])
        assert (again.code, again.stdout) == (0, "")
        assert agent.cni("DEL", agent.conf(), "c-many1", "", "eth0").code == 0


def test_shim_killed_mid_add_leaves_only_what_gc_cleans(agent: NodeAgent) -> None:
    with netns() as ns:
        agent.hold_hook(True)
        env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c-kill",
               "CNI_NETNS": ns, "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
        shim = subprocess.Popen([str(SHIM)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        try:
            assert shim.stdin is not None
            shim.stdin.write(json.dumps(agent.conf()).encode())
            shim.stdin.close()
            # The agent is inside ADD: address taken, veth made, hook running.
            wait_for(lambda: any(c["container_id"] == "c-kill" for c in agent.hook_calls()),
                     "ADD to reach the endpoint hook")
            shim.send_signal(signal.SIGKILL)
            assert shim.wait() == -signal.SIGKILL
        finally:
            agent.hold_hook(False)
            if shim.poll() is None:
                shim.kill()
                shim.wait()
            for pipe in (shim.stdout, shim.stderr):
                if pipe is not None:
                    pipe.close()
        # The runtime never learnt of the attachment, so its GC does not list it.
        wait_for(lambda: agent.endpoints() != [], "the interrupted ADD to finish")
        assert len(agent.allocations()) == 1 and len(agent.host_veths()) == 1
        gc = agent.cni("GC", agent.conf(**{"cni.dev/valid-attachments": []}))
        assert gc.code == 0
        assert agent.host_veths() == [] and agent.allocations() == [] and agent.endpoints() == []
        assert agent.hook_calls()[-1]["event"] == "removed"

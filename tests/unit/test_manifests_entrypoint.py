"""agent/install.py without a node: settings, conflist, header choice, atomic files, CLI
errors, and the probes against the agent's real local API on a unix socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from podwire.agent import install
from podwire.agent.config import AgentConfig
from podwire.agent.localapi import LocalApi, Response
from podwire.cni import executable

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podwire.agent.install", *args],
                          capture_output=True, text=True, check=False, timeout=60, cwd=REPO)


# ------------------------------------------------------------------ settings


def test_agent_config_adds_the_node_name() -> None:
    config = install.agent_config({"mtu": 1400}, "node-a")
    assert config.node_name == "node-a" and config.mtu == 1400


@pytest.mark.parametrize(("settings", "node", "message"), [
    ({"node_name": "x"}, "node-a", "node_name does not belong in the shared settings"),
    ({}, "", "the node name is empty"),
    ({"mtuu": 1400}, "node-a", "unknown agent setting(s): mtuu"),
])
def test_agent_config_names_what_is_wrong(settings: dict[str, object], node: str,
                                          message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        install.agent_config(settings, node)


def test_conflist_names_the_plugin_and_the_agents_socket_and_mtu() -> None:
    config = AgentConfig(node_name="n", socket_path=Path("/run/x/agent.sock"), mtu=1400)
    assert install.conflist(config) == {
        "cniVersion": "1.0.0", "name": "podwire",
        "plugins": [{"type": "podwire", "agentSocket": "/run/x/agent.sock", "mtu": 1400}]}


# ------------------------------------------------------------------ headers


def test_host_headers_come_first(tmp_path: Path) -> None:
    (tmp_path / "modules/6.1.0/build/include").mkdir(parents=True)
    (tmp_path / "image/include").mkdir(parents=True)
    assert install.kernel_headers_env("6.1.0", tmp_path / "modules", tmp_path / "image") == {}


def test_image_headers_when_the_host_has_none(tmp_path: Path) -> None:
    (tmp_path / "modules/6.1.0").mkdir(parents=True)
    (tmp_path / "image/include").mkdir(parents=True)
    assert install.kernel_headers_env("6.1.0", tmp_path / "modules", tmp_path / "image") == {
        "BCC_KERNEL_SOURCE": str(tmp_path / "image")}


def test_no_headers_at_all_is_an_error_naming_both_places(tmp_path: Path) -> None:
    with pytest.raises(install.InstallError) as caught:
        install.kernel_headers_env("6.1.0", tmp_path / "modules", tmp_path / "image")
    assert str(tmp_path / "modules/6.1.0/build") in str(caught.value)
    assert str(tmp_path / "image") in str(caught.value)


# ------------------------------------------------------------------ files


def test_write_atomically_replaces_the_file_as_a_whole(tmp_path: Path) -> None:
    target = tmp_path / "05-podwire.conflist"
    target.write_text("old")
    with target.open() as reader:  # a runtime reading while the install replaces it
        install.write_atomically(target, b"new", 0o644)
        assert reader.read() == "old"
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["05-podwire.conflist"]


def test_install_then_uninstall(tmp_path: Path) -> None:
    settings = install.InstallSettings(cni_bin_dir=tmp_path / "bin",
                                       cni_conf_dir=tmp_path / "conf",
                                       interpreter="/opt/python3")
    config = AgentConfig(node_name="n")
    install.install(settings, config)
    assert settings.plugin_path.read_bytes().startswith(b"#!/opt/python3 -IS\n")
    assert os.access(settings.plugin_path, os.X_OK)
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["podwire", "podwire.d"]
    assert json.loads(settings.conflist_path.read_text()) == install.conflist(config)
    install.uninstall(settings)
    assert list((tmp_path / "bin").iterdir()) == [] and list((tmp_path / "conf").iterdir()) == []
    install.uninstall(settings)  # again: nothing to do, no error


def test_install_into_an_unwritable_bin_dir_names_it(tmp_path: Path) -> None:
    (tmp_path / "bin").write_text("a file where the bin dir should be")
    settings = install.InstallSettings(cni_bin_dir=tmp_path / "bin",
                                       cni_conf_dir=tmp_path / "conf")
    with pytest.raises(install.InstallError, match="cannot install into .*bin"):
        install.install(settings, AgentConfig(node_name="n"))
    assert not (tmp_path / "conf").exists()


# ------------------------------------------------------------------ CLI


def test_cli_install_and_uninstall(tmp_path: Path) -> None:
    config = tmp_path / "agent.json"
    config.write_text(json.dumps({"mtu": 1400}))
    dirs = ["--cni-bin-dir", str(tmp_path / "bin"), "--cni-conf-dir", str(tmp_path / "conf")]
    done = run_cli("install", "--config", str(config), "--node-name", "n", *dirs)
    assert done.returncode == 0, done.stderr
    conflist = json.loads((tmp_path / "conf/05-podwire.conflist").read_text())
    assert conflist["plugins"][0]["mtu"] == 1400
    assert (tmp_path / "bin/podwire").read_bytes() == executable.launcher()
    assert run_cli("uninstall", *dirs).returncode == 0
    assert not (tmp_path / "conf/05-podwire.conflist").exists()
    assert not (tmp_path / "bin/podwire").exists()


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "is not JSON"),
    ("[1, 2]", "must hold a JSON object of agent settings"),
    ('{"bogus": 1}', "unknown agent setting(s): bogus"),
    ('{"conntrack_timeouts": {"tcp": 1}}', "unexpected keyword argument 'tcp'"),
])
def test_cli_bad_settings_exit_2_with_a_message_and_install_nothing(
        tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "agent.json"
    config.write_text(content)
    result = run_cli("install", "--config", str(config), "--node-name", "n",
                     "--cni-bin-dir", str(tmp_path / "bin"),
                     "--cni-conf-dir", str(tmp_path / "conf"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "bin").exists() and not (tmp_path / "conf").exists()


def test_cli_missing_settings_file(tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(tmp_path / "nope.json"), "--node-name", "n")
    assert result.returncode == 2
    assert f"cannot read {tmp_path / 'nope.json'}" in result.stderr


# ------------------------------------------------------------------ probes


@pytest.fixture
def agent_socket(tmp_path: Path) -> Iterator[tuple[Path, dict[str, object]]]:
    """The agent's own local API serving a /healthz whose answer the test sets."""
    state: dict[str, object] = {"ready": False, "reason": "syncing"}
    api = LocalApi(tmp_path / "agent.sock")
    api.route("GET", "/healthz", lambda _req: Response(
        200 if state["ready"] else 503, {"ready": state["ready"], "reason": state["reason"]}))
    api.start()
    try:
        yield tmp_path / "agent.sock", state
    finally:
        api.close()


def test_probes_follow_the_agents_health(agent_socket: tuple[Path, dict[str, object]]) -> None:
    socket, state = agent_socket
    alive = run_cli("probe", "alive", "--socket", str(socket))
    ready = run_cli("probe", "ready", "--socket", str(socket))
    assert alive.returncode == 0, alive.stderr
    assert ready.returncode == 1 and "agent not ready: syncing" in ready.stderr
    state["ready"] = True
    assert run_cli("probe", "ready", "--socket", str(socket)).returncode == 0


def test_probes_fail_when_no_agent_answers(tmp_path: Path) -> None:
    for kind in ("alive", "ready"):
        result = run_cli("probe", kind, "--socket", str(tmp_path / "agent.sock"))
        assert result.returncode == 1
        assert "did not answer" in result.stderr and "Traceback" not in result.stderr


def test_probe_does_not_import_the_datapath_or_the_kubernetes_client() -> None:
    """The kubelet runs probes every few seconds: they must stay light."""
    code = ("import sys; from podwire.agent import install; "
            "print(sorted(m for m in ('bcc', 'kubernetes', 'pyroute2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout.strip()
    assert out == "[]"



def test_agent_config_takes_the_api_server_from_the_daemonset_once() -> None:
    assert install.agent_config({}, "node-a", "10.0.0.1:6443").api_server == "10.0.0.1:6443"
    assert install.agent_config({}, "node-a", "").api_server is None
    with pytest.raises(ValueError, match="api_server is set twice"):
        install.agent_config({"api_server": "10.0.0.2:6443"}, "node-a", "10.0.0.1:6443")

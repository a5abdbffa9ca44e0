"""The DaemonSet container's entrypoint: install-cni, run the agent, uninstall, probe.

`python -m podwire.agent.install run --config agent.json --node-name NODE` is what the
container runs: it checks the settings, finds kernel headers for bcc, installs the CNI
plugin and writes the conflist (each written whole under a temporary name, then renamed,
so the kubelet never reads half a file), runs the agent until SIGTERM, and with
`--uninstall-on-exit` removes the plugin and the conflist again. `install`, `uninstall`
and `probe ready|alive` (the kubelet's exec probes) are the same steps on their own.

The ConfigMap holds the cluster-wide agent settings (AgentConfig fields, JSON) without
`node_name`: the DaemonSet passes the node's name from the downward API, and the API
server's address (`--api-server`, from the ConfigMap's `api-server` key; empty: the
`kubernetes` Service address the kubelet passes, which needs kube-proxy).

Exit codes: 0 done (a probe: healthy), 1 failed (a probe: unhealthy), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podwire.agent.config import AgentConfig
from podwire.cni import executable
from podwire.common.agentapi import DEFAULT_SOCKET, AgentError, fetch
from podwire.common.files import write_atomically

log = logging.getLogger("podwire.agent.install")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# The plugin's type name in the conflist, and so its file name in the CNI bin dir.
PLUGIN_TYPE = "podwire"
# The first conflist in lexical order is the one the kubelet's runtime uses.
CONFLIST_NAME = "05-podwire.conflist"
# containerd 1.6/1.7 (libcni 1.1) parse results up to CNI 1.0.0; the plugin answers in
# the version the conflist names, so name one every current runtime reads.
CONFLIST_CNI_VERSION = "1.0.0"
# Where the image keeps Debian's headers (common and arch trees merged) for nodes whose
# kernel has none installed; bcc reads BCC_KERNEL_SOURCE when /lib/modules has none.
IMAGE_KERNEL_HEADERS = Path("/opt/podwire/kernel-headers")


class InstallError(Exception):
    """A step of the install could not be done; the message says which and why."""


@dataclass(frozen=True)
class InstallSettings:
    """Where the node's container runtime looks for CNI plugins and configurations."""

    cni_bin_dir: Path = Path("/host/opt/cni/bin")
    cni_conf_dir: Path = Path("/host/etc/cni/net.d")
    # The host's interpreter the plugin's shebang names (cni/executable.py).
    interpreter: str = executable.INTERPRETER
    uninstall_on_exit: bool = False

    @property
    def plugin_path(self) -> Path:
        return self.cni_bin_dir / PLUGIN_TYPE

    @property
    def conflist_path(self) -> Path:
        return self.cni_conf_dir / CONFLIST_NAME


# ------------------------------------------------------------------ pure logic


def agent_config(settings: dict[str, Any], node_name: str,
                 api_server: str = "") -> AgentConfig:
    """The node's AgentConfig: the ConfigMap's cluster-wide settings plus its own name,
    and the API server's address when the DaemonSet passes one."""
    if not node_name:
        raise ValueError("the node name is empty (the DaemonSet passes spec.nodeName)")
    if "node_name" in settings:
        raise ValueError("node_name does not belong in the shared settings: "
                         "every node passes its own with --node-name")
    extra: dict[str, Any] = {"node_name": node_name}
    if api_server:
        if settings.get("api_server"):
            raise ValueError("api_server is set twice: in the settings and by --api-server "
                             "(the ConfigMap's api-server key)")
        extra["api_server"] = api_server
    return AgentConfig.from_dict({**settings, **extra})


def conflist(config: AgentConfig) -> dict[str, Any]:
    """The CNI network configuration list for this node's runtime.

    No `ipam.subnet`: the agent allocates from the Node's spec.podCIDR.
    """
    return {
        "cniVersion": CONFLIST_CNI_VERSION,
        "name": "podwire",
        "plugins": [{
            "type": PLUGIN_TYPE,
            "agentSocket": str(config.socket_path),
            "mtu": config.mtu,
        }],
    }


def kernel_headers_env(release: str, modules_dir: Path = Path("/lib/modules"),
                       fallback: Path = IMAGE_KERNEL_HEADERS) -> dict[str, str]:
    """What bcc needs in its environment to find kernel headers for `release`.

    The host's own headers (its /lib/modules and /usr/src mounted read-only) match the
    kernel best; failing those, the image's Debian headers serve TC programs.
    """
    if (modules_dir / release / "build" / "include").is_dir():
        return {}
    if (fallback / "include").is_dir():
        return {"BCC_KERNEL_SOURCE": str(fallback)}
    raise InstallError(f"no kernel headers for kernel {release}: neither "
                       f"{modules_dir / release / 'build'} (the host's, mounted from "
                       f"/lib/modules and /usr/src) nor {fallback} (the image's) exists")


# ------------------------------------------------------------------ file steps


def install(settings: InstallSettings, config: AgentConfig) -> None:
    """Put the plugin in the CNI bin dir, then the conflist that names it."""
    try:
        # The plugin first: a conflist naming a missing plugin fails every pod ADD.
        executable.install(settings.plugin_path, settings.interpreter)
        text = json.dumps(conflist(config), indent=2) + "\n"
        write_atomically(settings.conflist_path, text.encode(), 0o644)
    except OSError as err:
        raise InstallError(f"cannot install into {err.filename}: {err.strerror}") from err
    log.info("event=cni_installed plugin=%s conflist=%s", settings.plugin_path,
             settings.conflist_path)


def uninstall(settings: InstallSettings) -> None:
    """Remove the conflist, then the plugin (the reverse order of install)."""
    try:
        settings.conflist_path.unlink(missing_ok=True)
        executable.uninstall(settings.plugin_path)
    except OSError as err:
        raise InstallError(f"cannot remove {err.filename}: {err.strerror}") from err
    log.info("event=cni_uninstalled plugin=%s conflist=%s", settings.plugin_path,
             settings.conflist_path)


# ------------------------------------------------------------------ probes


def probe(socket_path: Path, want_ready: bool, timeout: float = 3.0) -> tuple[bool, str]:
    """Ask the agent's /healthz. Alive: it answers at all (a starting agent is alive and
    not ready, and must not be restarted for it). Ready: it answers 200."""
    try:
        status, body = fetch(socket_path, "/healthz", timeout)
    except AgentError as err:
        return False, str(err)
    try:
        reason = str(json.loads(body).get("reason", ""))
    except (ValueError, AttributeError):
        return False, f"agent answered /healthz with non-JSON (HTTP {status})"
    if want_ready and status != 200:
        return False, f"agent not ready: {reason or f'HTTP {status}'}"
    return True, "ready" if status == 200 else f"alive, not ready: {reason}"


# ------------------------------------------------------------------ run


def run_agent(settings: InstallSettings, config: AgentConfig) -> int:
    """Install, serve until SIGTERM/SIGINT, then (when asked) uninstall."""
    os.environ.update(kernel_headers_env(os.uname().release))
    # Imported here: bcc and the kubernetes client are heavy, and the probes, which the
    # kubelet runs every few seconds, must not pay for them.
    from podwire.agent.daemon import Agent

    install(settings, config)
    agent = Agent(config)
    done = threading.Event()

    def on_signal(*_: object) -> None:
        # Also ends a start-up still waiting for the API server or its Node object.
        agent.stopping.set()
        done.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        agent.start()
        done.wait()
    finally:
        agent.stop()
        log.info("event=agent_stopped node=%s", config.node_name)
        if settings.uninstall_on_exit:
            uninstall(settings)
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m podwire.agent.install",
                                  description="podwire's DaemonSet entrypoint.")
    top.add_argument("--log-level", default="INFO")
    cmds = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def install_flags(cmd: argparse.ArgumentParser) -> None:
        defaults = InstallSettings()
        cmd.add_argument("--cni-bin-dir", type=Path, default=defaults.cni_bin_dir)
        cmd.add_argument("--cni-conf-dir", type=Path, default=defaults.cni_conf_dir)

    def agent_flags(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--config", type=Path, required=True,
                         help="JSON file of the shared agent settings (the ConfigMap)")
        cmd.add_argument("--node-name", required=True, help="this node's name")
        cmd.add_argument("--api-server", default="",
                         help="the API server as host:port or https://host:port; empty: "
                              "KUBERNETES_SERVICE_HOST/PORT (needs kube-proxy)")
        cmd.add_argument("--interpreter", default=executable.INTERPRETER,
                         help="the host's python3 the plugin runs with (default: %(default)s)")

    run = cmds.add_parser("run", help="install, run the agent until SIGTERM")
    install_flags(run)
    agent_flags(run)
    run.add_argument("--uninstall-on-exit", action="store_true",
                     help="remove the plugin and conflist when the agent stops")
    inst = cmds.add_parser("install", help="install the plugin and conflist, then exit")
    install_flags(inst)
    agent_flags(inst)
    uninst = cmds.add_parser("uninstall", help="remove the plugin and conflist")
    install_flags(uninst)
    prb = cmds.add_parser("probe", help="ask the agent's /healthz (exit 0: healthy)")
    prb.add_argument("kind", choices=["ready", "alive"])
    prb.add_argument("--socket", type=Path, default=DEFAULT_SOCKET)
    return top


def _load(args: argparse.Namespace) -> tuple[InstallSettings, AgentConfig]:
    try:
        settings = json.loads(args.config.read_text())
    except OSError as err:
        raise ValueError(f"cannot read {args.config}: {err.strerror}") from err
    except ValueError as err:
        raise ValueError(f"{args.config} is not JSON: {err}") from err
    if not isinstance(settings, dict):
        raise TypeError(f"{args.config} must hold a JSON object of agent settings")
    try:
        config = agent_config(settings, args.node_name, args.api_server)
    except TypeError as err:  # a setting of the wrong shape, e.g. conntrack_timeouts
        raise TypeError(f"{args.config}: {err}") from err
    install_settings = InstallSettings(
        cni_bin_dir=args.cni_bin_dir, cni_conf_dir=args.cni_conf_dir,
        interpreter=args.interpreter,
        uninstall_on_exit=getattr(args, "uninstall_on_exit", False))
    return install_settings, config


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "probe":
        healthy, detail = probe(args.socket, want_ready=args.kind == "ready")
        print(detail, file=sys.stdout if healthy else sys.stderr)
        return EXIT_OK if healthy else EXIT_FAILED
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="time=%(asctime)s level=%(levelname)s logger=%(name)s "
                               "%(message)s")
    try:
        if args.command == "uninstall":
            uninstall(InstallSettings(cni_bin_dir=args.cni_bin_dir,
                                      cni_conf_dir=args.cni_conf_dir))
            return EXIT_OK
        settings, config = _load(args)
    except (ValueError, TypeError) as err:
        print(f"podwire install: bad settings: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InstallError as err:
        print(f"podwire install: {err}", file=sys.stderr)
        return EXIT_FAILED
    try:
        if args.command == "install":
            install(settings, config)
            return EXIT_OK
        return run_agent(settings, config)
    except InstallError as err:
        print(f"podwire install: {err}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as err:  # the agent's start-up names what it could not use
        print(f"podwire agent: {err}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

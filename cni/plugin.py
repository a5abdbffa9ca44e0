"""One runtime call, from podwire-cni's request to its answer (the skel of the plugin).

podwire-cni forwards each call to the agent (`POST /cni`, see cni/shim.py) as
`{"command", "env", "stdin"}`; `serve` answers it with `{"exit_code", "stdout",
"stderr"}`, which the shim relays unchanged. `handle` validates the environment and
the configuration, runs the command (ADD, DEL and CHECK one at a time per attachment)
and turns every failure into a spec error object; it never raises.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

from podwire.cni import veth
from podwire.cni.commands import cmd_add, cmd_check, cmd_del, cmd_gc, cmd_status
from podwire.cni.config import Attachment, NetConf, parse_netconf, peek_version
from podwire.cni.node import Node
from podwire.cni.protocol import CniEnv, CniError, Code, error_json, parse_env
from podwire.cni.result import Result
from podwire.cni.shim import version_info

log = logging.getLogger("podwire.cni")

Command = Callable[[Node, CniEnv, NetConf], Result | None]
_COMMANDS: dict[str, Command] = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check,
                                 "STATUS": cmd_status, "GC": cmd_gc}
# The commands about one attachment; STATUS and GC are about the whole node.
_PER_ATTACHMENT = ("ADD", "DEL", "CHECK")


@dataclass(frozen=True)
class CniResponse:
    """What the shim relays: its exit code, stdout and stderr."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""


def serve(node: Node, body: Any) -> dict[str, Any]:
    """Answer one request of podwire-cni (its decoded JSON body, None if it was not JSON)."""
    if not (isinstance(body, dict) and isinstance(body.get("env"), dict)
            and isinstance(body.get("stdin"), str)):
        err = CniError(Code.DECODE_FAILURE, "CNI request must be {command, env, stdin}")
        return asdict(CniResponse(int(err.code), error_json(None, err)))
    env = {str(k): str(v) for k, v in body["env"].items()}
    if isinstance(body.get("command"), str):
        env.setdefault("CNI_COMMAND", body["command"])
    return asdict(handle(node, env, body["stdin"]))


def handle(node: Node, env: dict[str, str], stdin: str) -> CniResponse:
    """Execute one CNI invocation; never raises."""
    version = peek_version(stdin)
    started = time.monotonic()
    command = env.get("CNI_COMMAND", "")
    try:
        cni_env = parse_env(env)
        if cni_env.command == "VERSION":
            # The shim answers VERSION itself; answering here too keeps the agent a
            # complete plugin for callers that talk to the socket directly.
            return CniResponse(0, version_info(stdin))
        conf = parse_netconf(stdin, cni_env.command)
        stdout = _run(node, cni_env, conf)
    except CniError as err:
        log.warning("event=cni_error command=%s container=%s code=%d msg=%r details=%r",
                    command, env.get("CNI_CONTAINERID", ""), err.code, err.msg, err.details)
        return CniResponse(int(err.code), error_json(version, err))
    except OSError as exc:
        io_error = CniError(Code.IO_FAILURE, f"I/O failure during {command}",
                            f"{type(exc).__name__}: {exc}")
        log.warning("event=cni_error command=%s code=5 details=%r", command, io_error.details)
        return CniResponse(int(io_error.code), error_json(version, io_error))
    except Exception as exc:
        log.exception("event=cni_internal_error command=%s", command)
        bug = CniError(Code.INTERNAL, f"podwire internal error during {command}",
                       f"{type(exc).__name__}: {exc}")
        return CniResponse(int(bug.code), error_json(version, bug))
    log.info("event=cni_done command=%s container=%s ifname=%s ms=%.1f", command,
             env.get("CNI_CONTAINERID", ""), env.get("CNI_IFNAME", ""),
             (time.monotonic() - started) * 1000)
    return CniResponse(0, stdout)


def _run(node: Node, env: CniEnv, conf: NetConf) -> str:
    """The command's stdout: the rendered result of ADD, nothing for the others."""
    serial: AbstractContextManager[Any] = nullcontext()
    if env.command in _PER_ATTACHMENT:
        # A runtime retrying while podwire works must wait for the first attempt.
        serial = node.attachment_lock(veth.host_ifname(Attachment(env.container_id, env.ifname)))
    with serial:
        result = _COMMANDS[env.command](node, env, conf)
    return "" if result is None else json.dumps(result.render(conf.cni_version))

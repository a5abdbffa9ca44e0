"""podwire-cni: the executable a container runtime runs for every pod.

A thin client: VERSION is answered here; every other command is forwarded to the
node's agent over its unix socket (``POST /cni``) and the agent's stdout and exit code
are relayed unchanged. The runtime starts this once per pod operation, so it imports
only a few stdlib modules: it is installed (cni/executable.py) as a module beside a
launcher whose shebang runs ``/usr/bin/python3 -IS`` (no site, no editable finder, no
environment) and calls `main`, from cached bytecode. It must therefore stay a single,
standalone, stdlib-only file.
"""

import _json
import _socket
import posix
import sys

# What the shim must know to answer without the agent is defined here, once, and
# cni/protocol.py imports it: the spec versions the agent can produce results for, the
# error codes the shim itself answers with, and the error object (`error_json`).
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
CODE_INVALID_ENV = 4
CODE_DECODE_FAILURE = 6
CODE_TRY_AGAIN_LATER = 11
CODE_NOT_AVAILABLE = 50
# The one copy of podwire.common.agentapi.DEFAULT_SOCKET (this file can import nothing of
# the package); tests/unit/test_cni_shim.py holds the two equal.
DEFAULT_AGENT_SOCKET = "/run/podwire/agent.sock"
# Long enough for an ADD queued behind 64 others on a busy node.
AGENT_TIMEOUT_SECONDS = 120.0
_FORWARDED_ENV = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS",
                  "CNI_PATH")


class AgentUnreachable(Exception):
    """The agent's socket could not be reached or answered nonsense."""


# JSON through the C accelerator alone: `import json` (re, enum, ...) and `import socket`
# cost more start-up time than everything else the shim does, per pod, so the shim
# speaks JSON with `_json` and sockets with `_socket` directly, and reads its
# environment from the built-in `posix`: `import os` (stat, posixpath,
# _collections_abc) is another millisecond that `python3 -S` never loads otherwise.
class _ScanSettings:
    """The attributes `_json.make_scanner` reads, as json.JSONDecoder would set them."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float


def _unencodable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# typeshed types the scanner's context as the scanner class; any object with the
# attributes above is what CPython reads.
_scan = _json.make_scanner(_ScanSettings())  # type: ignore[arg-type]
_encode = _json.make_encoder(None, _unencodable, _json.encode_basestring_ascii, None, ": ",
                             ", ", False, False, True)


def loads(text: str | bytes) -> object:
    """json.loads for one JSON value; ValueError when `text` is not exactly one."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    text = text.strip(" \t\n\r")
    try:
        value, end = _scan(text, 0)
    except (StopIteration, ValueError, SystemError):
        # Not JSON. The accelerator reports where through json.decoder, which it cannot
        # reach unless the package is loaded: on this rare path, let the package answer
        # (it raises ValueError naming the problem).
        import json

        return json.loads(text)
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value


def dumps(value: object) -> str:
    """json.dumps with its default separators."""
    return "".join(_encode(value, 0))


def _config_field(stdin: str, key: str) -> object:
    """A top-level field of the network configuration, None if absent or undecodable.

    The agent validates the configuration; the shim only peeks at the version and
    the socket path.
    """
    try:
        conf = loads(stdin)
    except ValueError:
        return None
    return conf.get(key) if isinstance(conf, dict) else None


def error_json(version: object, code: int, msg: str, details: str = "") -> str:
    """The spec's error object, printed on stdout; `version` is the request's cniVersion
    (labelled with the latest when it is not one podwire speaks)."""
    body = {"cniVersion": version if version in SUPPORTED_VERSIONS else LATEST_VERSION,
            "code": code, "msg": msg}
    if details:
        body["details"] = details
    return dumps(body)


def version_info(stdin: str) -> str:
    """The VERSION answer: the versions this plugin can speak."""
    requested = _config_field(stdin, "cniVersion")
    cni_version = requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION
    return dumps({"cniVersion": cni_version, "supportedVersions": list(SUPPORTED_VERSIONS)})


def _post(socket_path: str, path: str, payload: bytes) -> dict:
    """One HTTP/1.1 request over a unix socket, written by hand: http.client costs more
    import time than the whole rest of the shim."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: podwire-agent\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode() + payload
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(AGENT_TIMEOUT_SECONDS)
            sock.connect(socket_path)
            sock.sendall(request)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            sock.close()
    except OSError as exc:
        raise AgentUnreachable(f"{type(exc).__name__}: {exc.strerror or exc}") from None
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status_line) < 2 or status_line[1] != b"200":
        raise AgentUnreachable(f"bad answer: {head[:200]!r}")
    try:
        answer = loads(body)
    except ValueError:
        raise AgentUnreachable("answer is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("exit_code"), int):
        raise AgentUnreachable("answer lacks exit_code")
    return answer


def run(env: dict[str, str], stdin: str) -> tuple[int, str, str]:
    """Execute one CNI command; returns (exit code, stdout, stderr)."""
    command = env.get("CNI_COMMAND", "")
    version = _config_field(stdin, "cniVersion")
    if command == "VERSION":
        return 0, version_info(stdin), ""
    if not command:
        return CODE_INVALID_ENV, error_json(version, CODE_INVALID_ENV, "CNI_COMMAND is not set"), ""
    try:
        decodable = isinstance(loads(stdin), dict)
    except ValueError:
        decodable = False
    if not decodable:
        # Without a configuration there is no agentSocket to ask: answer here.
        return CODE_DECODE_FAILURE, error_json(
            None, CODE_DECODE_FAILURE, "network configuration is not a JSON object"), ""
    socket_path = _config_field(stdin, "agentSocket")
    if not isinstance(socket_path, str) or not socket_path:
        socket_path = DEFAULT_AGENT_SOCKET
    payload = dumps({
        "command": command,
        "env": {k: env[k] for k in _FORWARDED_ENV if k in env},
        "stdin": stdin,
    }).encode()
    try:
        answer = _post(socket_path, "/cni", payload)
    except AgentUnreachable as exc:
        code = CODE_NOT_AVAILABLE if command == "STATUS" else CODE_TRY_AGAIN_LATER
        return code, error_json(version, code, f"podwire agent unreachable at {socket_path}",
                                str(exc)), ""
    return answer["exit_code"], str(answer.get("stdout", "")), str(answer.get("stderr", ""))


def _environ() -> dict[str, str]:
    """os.environ's decoding (the filesystem encoding, undecodable bytes escaped)."""
    return {key.decode("utf-8", "surrogateescape"): value.decode("utf-8", "surrogateescape")
            for key, value in posix.environ.items()}


def _exit(code: int) -> None:
    """Flush and leave without the interpreter's teardown, which the shim has no use
    for and which costs about half a millisecond per pod."""
    sys.stdout.flush()
    sys.stderr.flush()
    posix._exit(code)


def main() -> None:
    try:
        stdin = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError:
        code, out, err = CODE_DECODE_FAILURE, error_json(
            None, CODE_DECODE_FAILURE, "network configuration is not UTF-8"), ""
    else:
        code, out, err = run(_environ(), stdin)
    if out:
        sys.stdout.write(out)
    if err:
        sys.stderr.write(err)
    _exit(code)

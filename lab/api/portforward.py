"""The pods/portforward subresource of the lab API server, as the real server and kubelet
serve it over WebSocket (the Kubernetes client's `stream.portforward`).

`GET /api/v1/namespaces/NS/pods/NAME/portforward?ports=P` upgrades to a WebSocket with
the `v4.channel.k8s.io` protocol: for the i-th port, channel 2i carries data and 2i+1
errors, and each channel's first frame is the port number (two bytes, little-endian).
The stand-in then connects to the port on the pod's loopback, inside the pod's network
namespace, as the kubelet's runtime does, and relays bytes both ways until either side
closes. A connection that fails is reported on the error channel.

Only what podwire needs is served: hostNetwork pods (their namespace is their node's,
which the server is told), one connection per port, binary frames.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

from podwire.common.netns import in_netns
from podwire.lab.api.errors import ApiError, bad_request

log = logging.getLogger("podwire.lab.api.portforward")

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROTOCOL = "v4.channel.k8s.io"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
MAX_FRAME = 16 << 20
CONNECT_TIMEOUT = 5.0


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked frame (a server never masks)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def _exactly(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) < n:
        raise EOFError("the client closed the WebSocket")
    return data


def read_frame(stream: BinaryIO) -> tuple[int, bytes]:
    """One frame from the client: (opcode, unmasked payload). Fragments are joined."""
    opcode, (data, fin) = _read_one(stream)
    while opcode in (OP_TEXT, OP_BINARY) and not fin:
        more_op, (more, fin) = _read_one(stream)
        if more_op != OP_CONTINUATION:
            raise ValueError("a fragmented message was interleaved")
        data += more
    return opcode, data


def _read_one(stream: BinaryIO) -> tuple[int, tuple[bytes, bool]]:
    first, second = _exactly(stream, 2)
    fin, opcode, masked, n = bool(first & 0x80), first & 0x0F, bool(second & 0x80), second & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", _exactly(stream, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", _exactly(stream, 8))
    if n > MAX_FRAME:
        raise ValueError(f"a frame of {n} bytes is larger than {MAX_FRAME}")
    if not masked:
        raise ValueError("a client frame must be masked (RFC 6455 5.1)")
    mask = _exactly(stream, 4)
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(_exactly(stream, n)))
    return opcode, (data, fin)


def parse_ports(query: dict[str, str]) -> list[int]:
    text = query.get("ports") or ""
    ports = []
    for part in filter(None, text.split(",")):
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise bad_request(f"invalid port {part!r} in ports={text!r}")
        ports.append(int(part))
    if len(ports) != 1:
        raise bad_request("the lab forwards exactly one port a connection (ports=N)")
    return ports


def dial(netns: str, port: int) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port` inside `netns` (a /run/netns path; "" is this
    process's own), made on a short-lived thread so no serving thread changes namespace."""
    result: list[socket.socket | OSError] = []

    def connect() -> None:
        try:
            with in_netns(netns or None):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                sock.connect(("127.0.0.1", port))
            except OSError:
                sock.close()
                raise
            sock.settimeout(None)
            result.append(sock)
        except OSError as err:
            result.append(err)

    helper = threading.Thread(target=connect, name="portforward-dial")
    helper.start()
    helper.join()
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]


# A pod's network namespace path ("" for the server's own), or None when its ports
# cannot be forwarded.
PodNetns = Callable[[dict[str, Any]], str | None]


def pod_netns_by_node(nodes: dict[str, str]) -> PodNetns:
    """The namespace of a hostNetwork pod: its node's (`nodes`: node name -> path)."""

    def find(pod: dict[str, Any]) -> str | None:
        spec = pod.get("spec") or {}
        if not spec.get("hostNetwork"):
            return None
        return nodes.get(str(spec.get("nodeName")))

    return find


class Relay:
    """Bytes between one WebSocket (the handler's streams) and one TCP connection."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO, port: int) -> None:
        self.rfile, self.wfile, self.port = rfile, wfile, port
        self._write_lock = threading.Lock()

    def send(self, opcode: int, payload: bytes) -> None:
        with self._write_lock:
            self.wfile.write(encode_frame(opcode, payload))
            self.wfile.flush()

    def greet(self) -> None:
        """Each channel's first frame names its port, as the kubelet sends it."""
        port = struct.pack("<H", self.port)
        self.send(OP_BINARY, b"\x00" + port)
        self.send(OP_BINARY, b"\x01" + port)

    def error(self, text: str) -> None:
        self.send(OP_BINARY, b"\x01" + text.encode())

    def close(self) -> None:
        try:
            self.send(OP_CLOSE, struct.pack("!H", 1000))
        except OSError:
            pass

    def run(self, target: socket.socket) -> None:
        """Until either side is done: the client's data frames go to `target`, what
        `target` sends comes back on the data channel."""
        back = threading.Thread(target=self._from_target, args=(target,), daemon=True,
                                name="portforward-back")
        back.start()
        try:
            self._from_client(target)
        finally:
            try:
                target.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            back.join()
            target.close()

    def _from_client(self, target: socket.socket) -> None:
        while True:
            try:
                opcode, payload = read_frame(self.rfile)
            except (EOFError, OSError, ValueError):
                return
            if opcode == OP_CLOSE:
                return
            if opcode == OP_PING:
                self.send(OP_PONG, payload)
            elif opcode == OP_BINARY and payload[:1] == b"\x00" and len(payload) > 1:
                try:
                    target.sendall(payload[1:])
                except OSError:
                    return

    def _from_target(self, target: socket.socket) -> None:
        try:
            while True:
                data = target.recv(1 << 16)
                if not data:
                    break
                self.send(OP_BINARY, b"\x00" + data)
        except OSError:
            pass
        self.close()


def check_upgrade(headers: Any) -> str:
    """The client's key, after checking it asked for a WebSocket we speak."""
    if (headers.get("Upgrade") or "").lower() != "websocket":
        raise ApiError(400, "BadRequest", "pods/portforward: the lab serves the WebSocket "
                                          "protocol only (Upgrade: websocket)")
    offered = [p.strip() for p in (headers.get("Sec-WebSocket-Protocol") or "").split(",")]
    if PROTOCOL not in offered:
        raise ApiError(400, "BadRequest", f"pods/portforward: no supported protocol in "
                                          f"{offered} (the lab speaks {PROTOCOL})")
    key = headers.get("Sec-WebSocket-Key")
    if not key:
        raise bad_request("pods/portforward: no Sec-WebSocket-Key")
    return str(key)

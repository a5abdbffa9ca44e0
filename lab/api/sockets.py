"""Listening sockets for the API server, on the host or inside a lab network namespace."""

from __future__ import annotations

import socket
import threading

from podwire.common.netns import in_netns


def bind_socket(host: str, port: int, netns: str | None = None) -> socket.socket:
    """A listening TCP socket, created inside `netns` (a /run/netns path) when given.

    The socket keeps the namespace it was created in, so only a short-lived helper thread
    enters the namespace: the caller's threads never change namespace.
    """
    result: list[socket.socket | OSError] = []

    def make() -> None:
        try:
            with in_netns(netns):
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                    sock.listen(128)
                except OSError:
                    sock.close()
                    raise
            result.append(sock)
        except OSError as err:  # handed to the caller's thread below
            result.append(err)

    if netns is None:
        make()
    else:
        helper = threading.Thread(target=make, name="apiserver-bind")
        helper.start()
        helper.join()
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]

"""Listening sockets for the API server, on the host or inside a lab network namespace."""

from __future__ import annotations

import ctypes
import os
import socket
import threading

CLONE_NEWNET = 0x40000000


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def bind_socket(host: str, port: int, netns: str | None = None) -> socket.socket:
    """A listening TCP socket, created inside `netns` (a /run/netns path) when given.

    The socket keeps the namespace it was created in, so only a short-lived helper thread
    enters the namespace: the caller's threads never change namespace.
    """
    result: list[socket.socket | OSError] = []

    def make() -> None:
        try:
            if netns is not None:
                _setns(netns)
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

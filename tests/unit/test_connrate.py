"""bench/connrate.c, compiled as the benchmarks compile it, on loopback: every connection
the clients count completed its handshake and was accepted by the server, and bad
arguments are refused with the usage."""

from __future__ import annotations

import signal
import socket
import subprocess

from podwire.bench import connrate


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_client_counts_only_what_the_server_accepted() -> None:
    program, port = connrate.binary(), str(_free_port())
    server = subprocess.Popen([program, "serve", "127.0.0.1", port], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None and server.stdout.readline() == "listening\n"
        done = subprocess.run([program, "connect", "127.0.0.1", port, "0.3", "8", "2"],
                              capture_output=True, text=True, check=True, timeout=30)
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    word, completed, word2, failed, word3, seconds = done.stdout.split()
    assert (word, word2, word3) == ("completed", "failed", "seconds")
    assert int(completed) > 100 and int(failed) == 0 and 0.3 <= float(seconds) < 1.0
    assert out.split()[0] == "accepted" and int(out.split()[1]) >= int(completed)


def test_a_closed_port_counts_as_failed() -> None:
    done = subprocess.run([connrate.binary(), "connect", "127.0.0.1", str(_free_port()),
                           "0.1", "2"], capture_output=True, text=True, check=True, timeout=30)
    _, completed, _, failed, _, _ = done.stdout.split()
    assert int(completed) == 0 and int(failed) > 0


def test_bad_arguments_get_the_usage() -> None:
    for args in (["serve", "nowhere", "80"], ["connect", "127.0.0.1", "80", "0", "1"],
                 ["connect", "127.0.0.1", "80", "1", "1", "0"], ["listen"]):
        done = subprocess.run([connrate.binary(), *args], capture_output=True, text=True,
                              check=False, timeout=30)
        assert done.returncode == 2
        assert "usage: connrate" in done.stderr or "not an IPv4 address" in done.stderr

"""The flows benchmark's UDP sender (bench/udpflood.py): sendmmsg batches that the
kernel really sends (over loopback), paced by the clock so no datagram leaves before it
is due, and its bad arguments refused before anything is sent."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from podwire.bench import udpflood


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def received(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(2048) for _ in range(count)]


def test_a_batch_is_up_to_batch_datagrams_each_the_payload(receiver: socket.socket) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect(receiver.getsockname())
        sender = udpflood.Sender(sock)
        assert sender.send(3) == 3
        assert sender.send(udpflood.BATCH + 10) == udpflood.BATCH
    finally:
        sock.close()
    assert received(receiver, 3 + udpflood.BATCH) == [udpflood.PAYLOAD] * (3 + udpflood.BATCH)
    receiver.setblocking(False)
    with pytest.raises(BlockingIOError):
        receiver.recv(2048)


def test_flat_out_sends_the_count_asked(receiver: socket.socket) -> None:
    _, port = receiver.getsockname()
    sent = udpflood.flood(None, "127.0.0.1", port, rate=0, count=200, seconds=30)
    assert sent.packets == 200
    assert len(received(receiver, 200)) == 200


class Clock:
    """A clock that moves only when the sender sleeps or sends, so pacing is checked
    against the schedule itself, not against how fast this machine is."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Recorder:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sends: list[tuple[float, int]] = []
        self.total = 0

    def send(self, n: int) -> int:
        n = min(n, udpflood.BATCH)
        self.total += n
        self.sends.append((self.clock.now, self.total))
        self.clock.now += 1e-6 * n  # a microsecond a datagram
        return n


def test_paced_sending_never_runs_ahead_of_the_rate_and_stops_at_the_count() -> None:
    clock = Clock()
    recorder = Recorder(clock)
    sent = udpflood.send_paced(recorder, rate=10_000, count=5_000, seconds=30,
                               clock=clock, sleep=clock.sleep)
    assert sent.packets == recorder.total == 5_000
    for when, total in recorder.sends:
        assert total <= int((when - 1000.0) * 10_000) + udpflood.BATCH
    assert recorder.sends[-1][0] - 1000.0 >= 0.499, "5,000 at 10k/s take half a second"
    assert min(clock.sleeps) >= udpflood._SLEEP_FLOOR


def test_the_time_limit_ends_a_run_short_of_its_count() -> None:
    clock = Clock()
    sent = udpflood.send_paced(Recorder(clock), rate=1_000, count=10_000, seconds=2,
                               clock=clock, sleep=clock.sleep)
    assert 1_900 <= sent.packets <= 2_000 + udpflood.BATCH
    assert sent.seconds >= 2


@pytest.mark.parametrize("argv", [["--rate", "-1", "--count", "5"],
                                  ["--rate", "10", "--count", "-5"]])
def test_negative_rates_and_counts_are_refused_before_sending(
        argv: list[str], receiver: socket.socket, capsys: pytest.CaptureFixture[str]) -> None:
    _, port = receiver.getsockname()
    with pytest.raises(SystemExit) as exit_:
        udpflood.main(["--to", "127.0.0.1", "--port",
                       str(port), *argv])
    assert exit_.value.code == 2
    assert "--rate and --count must not be negative" in capsys.readouterr().err
    receiver.setblocking(False)
    with pytest.raises(BlockingIOError):
        receiver.recv(2048)


def test_it_prints_what_it_sent(receiver: socket.socket,
                                capsys: pytest.CaptureFixture[str]) -> None:
    _, port = receiver.getsockname()
    assert udpflood.main(["--to", "127.0.0.1", "--port",
                          str(port), "--count", "10"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sent"] == 10 and out["seconds"] >= 0
    assert len(received(receiver, 10)) == 10

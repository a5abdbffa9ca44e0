"""Every hubble flag of `podwire observe` against a recorded set of records: the CLI
replays tests/unit/data/observe_flows.jsonl with each snapshot's flags, and the records
it shows must be exactly the snapshot's (one more is a leak, one fewer a miss). The text
formats are held to snapshots too."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podwire import cli, observe
from podwire.common import flowfilter

DATA = Path(__file__).parent / "data"
# Each file: a recorded set of records and the selections over it; the second is a
# dual-stack set (-4/-6, IPv6 addresses and prefixes).
SNAPSHOT_FILES = ("observe_snapshots.json", "observe_snapshots_dual.json")
SETS = {name: json.loads((DATA / name).read_text()) for name in SNAPSHOT_FILES}
CASES = [(name, snapshot) for name, data in SETS.items() for snapshot in data["selections"]]
RECORDS = DATA / SETS["observe_snapshots.json"]["records"]


def replay(capsys: pytest.CaptureFixture[str], *argv: str, records: Path = RECORDS) -> str:
    code = cli.main(["observe", "--input-file", str(records), *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.parametrize(("name", "snapshot"), CASES,
                         ids=[f"{name.split('.')[0]}: {' '.join(s['argv'])}" for name, s in CASES])
def test_each_flag_shows_exactly_its_snapshot(name: str, snapshot: dict[str, list[object]],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    records = DATA / SETS[name]["records"]
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    by_key = {(r["node"], r["seq"]): number for number, r in enumerate(lines)}
    argv = [str(a) for a in snapshot["argv"]]
    window = [] if {"--first", "--last"} & set(argv) else ["--all"]
    out = replay(capsys, "-o", "json", *window, *argv, records=records)
    shown = [by_key[(r["node"], r["seq"])] for r in map(json.loads, out.splitlines())]
    want = snapshot["lines"]
    assert not sorted(set(shown) - set(want)), f"leaked lines {sorted(set(shown) - set(want))}"
    assert not sorted(set(want) - set(shown)), f"missed lines {sorted(set(want) - set(shown))}"
    assert shown == want  # in the file's (time) order, each once


def test_the_snapshots_cover_every_flag() -> None:
    used = {a.lstrip("-") for _, s in CASES for a in s["argv"] if str(a).startswith("-")}
    short = {"n": "namespace", "A": "all-namespaces", "l": "label", "t": "type", "4": "ipv4",
             "6": "ipv6"}
    used |= {short[u] for u in used if u in short}
    wanted = {*flowfilter.FILTER_FLAGS, "all-namespaces", "since", "until", "first", "last"}
    wanted -= {"from-service", "pod", "from-pod", "label", "type",
               "verdict"}  # the flags podwire had before: tests/unit/test_observe_filter.py
    assert not sorted(wanted - used)
    assert {name for name, *_ in observe.FILTER_FLAGS} == set(flowfilter.FILTER_FLAGS) | {"not"}


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


TEXT = {
    ("compact",): [
        ("May  1 12:00:22.375 x/a:40006 -> x/b:8080 (service x/web) policy-verdict FORWARDED "
        "TCP (SYN; egress: no policy isolates x/a)"),
        ("May  1 12:00:24.000 x/a:40006 -> x/b:8080 policy-verdict FORWARDED TCP (SYN; ingress "
        "allowed by x/b-web)")],
    ("compact", "--print-node-name", "--time-format", "RFC3339Milli"): [
        ("2026-05-01T12:00:22.375Z [node1] x/a:40006 -> x/b:8080 (service x/web) "
        "policy-verdict FORWARDED TCP (SYN; egress: no policy isolates x/a)"),
        ("2026-05-01T12:00:24Z [node2] x/a:40006 -> x/b:8080 policy-verdict FORWARDED TCP "
        "(SYN; ingress allowed by x/b-web)")],
    ("dict", "--print-node-name", "--time-format", "RFC3339"): [
        "  TIMESTAMP: 2026-05-01T12:00:22Z",
        "       NODE: node1",
        "     SOURCE: x/a:40006",
        "DESTINATION: x/b:8080 (service x/web)",
        "       TYPE: policy-verdict",
        "    VERDICT: FORWARDED",
        "    SUMMARY: TCP SYN; egress: no policy isolates x/a",
        "------------",
        "  TIMESTAMP: 2026-05-01T12:00:24Z",
        "       NODE: node2",
        "     SOURCE: x/a:40006",
        "DESTINATION: x/b:8080",
        "       TYPE: policy-verdict",
        "    VERDICT: FORWARDED",
        "    SUMMARY: TCP SYN; ingress allowed by x/b-web"],
}


@pytest.mark.parametrize("formatting", list(TEXT), ids=[" ".join(k) for k in TEXT])
def test_text_formats_match_their_snapshots(formatting: tuple[str, ...], utc: None,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = replay(capsys, "-o", *formatting, "--port", "8080", "--all")
    assert [line.rstrip() for line in out.splitlines()] == TEXT[formatting]


def test_table_has_the_node_column_only_when_asked(utc: None,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    plain = replay(capsys, "-o", "table", "--last", "1").splitlines()
    named = replay(capsys, "-o", "table", "--last", "1", "--print-node-name").splitlines()
    assert plain[0].split() == ["TIME", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]
    assert named[0].split()[:2] == ["TIME", "NODE"] and named[1].split()[3] == "node1"

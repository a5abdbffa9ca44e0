"""hubble's formats in `podwire observe`: --since/--until times and durations,
--time-format layouts, -o dict and -o jsonpb, and saved files read back for
--input-file (a damaged line is named, never replayed as silence)."""

from __future__ import annotations

import datetime
import io
import json

import pytest

from podwire.common import flowfile, flowtext, flowtime
from podwire.observe import Printer

NOW = datetime.datetime(2026, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
UTC = datetime.UTC
PLUS2 = datetime.timezone(datetime.timedelta(hours=2))


def record(time: str = "2026-05-01T09:05:07.123400+00:00") -> dict[str, object]:
    end = {"ip": "10.244.1.2", "port": 40000, "identity": 256, "namespace": "x", "pod": "a",
           "labels": {}, "service": None}
    return {"seq": 1, "time": time, "node": "node1", "type": "policy-verdict",
            "verdict": "FORWARDED", "drop_reason": None, "direction": "egress",
            "hook": "from-pod", "protocol": "TCP", "tcp_flags": ["SYN"], "length": 60,
            "source": end, "destination": {**end, "pod": "b", "port": 80}, "frontend": None,
            "evaluated": ["egress"], "allowed_by": {}, "isolated_by": []}


@pytest.mark.parametrize(("text", "want"), [
    ("90s", NOW - datetime.timedelta(seconds=90)),
    ("1.5h", NOW - datetime.timedelta(minutes=90)),
    ("1h30m", NOW - datetime.timedelta(minutes=90)),
    ("2d", NOW - datetime.timedelta(days=2)),
    ("250ms", NOW - datetime.timedelta(milliseconds=250)),
    ("2026-05-01T14:00:00+02:00", datetime.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)),
    ("2026-05-01T11:00:00Z", datetime.datetime(2026, 5, 1, 11, 0, tzinfo=UTC)),
    ("2026-05-01T11:00:00.123456Z",
     datetime.datetime(2026, 5, 1, 11, 0, 0, 123456, tzinfo=UTC)),
    ("2026-05-01", datetime.datetime(2026, 5, 1, tzinfo=UTC)),
    ("2026-05-01T10", datetime.datetime(2026, 5, 1, 10, tzinfo=UTC)),
    ("2026-05-01T10:30", datetime.datetime(2026, 5, 1, 10, 30, tzinfo=UTC)),
    ("Fri, 01 May 2026 11:00:00 +0200", datetime.datetime(2026, 5, 1, 9, tzinfo=UTC)),
    ("May  1 11:59:00.500", datetime.datetime(2026, 5, 1, 11, 59, 0, 500000, tzinfo=UTC)),
])
def test_since_and_until_read_durations_and_hubbles_layouts(
        text: str, want: datetime.datetime) -> None:
    assert flowtime.parse_when(text, NOW) == want


@pytest.mark.parametrize("text", ["yesterday", "5 minutes", "-5m", "1x", ""])
def test_an_unreadable_time_is_named(text: str) -> None:
    with pytest.raises(ValueError, match=f"--until {text!r}: expected a duration"):
        flowtime.parse_when(text, NOW, "--until")


@pytest.mark.parametrize(("name", "want"), [
    ("StampMilli", "May  1 11:05:07.123"),
    ("YearMonthDay", "2026-05-01"),
    ("YearMonthDayHour", "2026-05-01T11+02:00"),
    ("YearMonthDayHourMinute", "2026-05-01T11:05+02:00"),
    ("RFC3339", "2026-05-01T11:05:07+02:00"),
    ("RFC3339Milli", "2026-05-01T11:05:07.123+02:00"),
    ("RFC3339Micro", "2026-05-01T11:05:07.1234+02:00"),
    ("RFC3339Nano", "2026-05-01T11:05:07.1234+02:00"),
    ("RFC1123Z", "Fri, 01 May 2026 11:05:07 +0200"),
])
def test_time_formats_are_hubbles_layouts(name: str, want: str) -> None:
    assert flowtime.format_time("2026-05-01T09:05:07.123400+00:00", name, PLUS2) == want


def test_go_fractions_drop_trailing_zeros_and_utc_is_z() -> None:
    whole = "2026-05-01T09:05:07+00:00"
    assert flowtime.format_time(whole, "RFC3339Milli", UTC) == "2026-05-01T09:05:07Z"
    assert flowtime.format_time(whole, "RFC1123Z", UTC) == "Fri, 01 May 2026 09:05:07 +0000"
    assert flowtime.time_format("rfc3339") == "RFC3339"
    with pytest.raises(ValueError, match="--time-format 'ISO' is not one of StampMilli"):
        flowtime.time_format("ISO")


def test_dict_output_is_hubbles_key_value_blocks() -> None:
    out = io.StringIO()
    Printer("dict", "never", out, node_name=True, time_format="RFC3339").records(
        [record(), record()])
    blocks = out.getvalue().split(flowtext.DICT_SEPARATOR + "\n")
    assert len(blocks) == 2
    lines = blocks[0].splitlines()
    assert [line.split(":")[0].strip() for line in lines] == list(flowtext.DICT_KEYS)
    assert lines[1] == "       NODE: node1"
    assert lines[2] == "     SOURCE: x/a:40000" and lines[3] == "DESTINATION: x/b:80"
    assert lines[6] == "    SUMMARY: TCP SYN; egress: no policy isolates x/a"
    plain = io.StringIO()
    Printer("dict", "never", plain).records([record()])
    assert "NODE" not in plain.getvalue()


def test_jsonpb_is_the_json_output() -> None:
    json_out, jsonpb_out = io.StringIO(), io.StringIO()
    Printer("json", "never", json_out).records([record()])
    Printer("jsonpb", "never", jsonpb_out).records([record()])
    assert jsonpb_out.getvalue() == json_out.getvalue()
    assert json.loads(json_out.getvalue()) == record()


def test_a_saved_file_reads_back_as_it_was_written() -> None:
    out = io.StringIO()
    records = [record(), record("2026-05-01T09:05:08+00:00")]
    Printer("json", "never", out).records(records)  # type: ignore[arg-type]
    assert flowfile.read(io.StringIO(out.getvalue() + "\n"), "saved.json") == records


@pytest.mark.parametrize(("text", "message"), [
    ('{"seq": 1', "flows.json:2: not JSON"),
    ("[1, 2]", "flows.json:2: expected a flow record (a JSON object), got list"),
    ('{"time": "2026-05-01T09:00:00"}', "flows.json:2: not a podwire flow record (no node"),
    (json.dumps({**record(), "time": "noon"}), "flows.json:2: time 'noon' is not an ISO"),
    (json.dumps({**record(), "source": "x/a"}), "flows.json:2: source is not an object"),
])
def test_a_damaged_line_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        flowfile.read([json.dumps(record()), text], "flows.json")
    assert message in str(caught.value)

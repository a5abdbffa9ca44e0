"""Flow records saved with `podwire observe -o json` (one object a line), read back for
`podwire observe --input-file`: pure parsing, the caller opens the file.

A line that is not a JSON object with the fields every record has (common/flow.py) is
an error naming the file and line, so a truncated or foreign file is not replayed as
silence.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable

from podwire.common.flow import FlowRecord, from_json

# What filtering and printing read of every record; the others are optional to a replay.
REQUIRED = ("time", "node", "type", "verdict", "source", "destination")
END_REQUIRED = ("ip", "port")


def parse_line(line: str, where: str) -> FlowRecord:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not JSON ({err.msg})") from None
    kind = type(value).__name__
    value = value if isinstance(value, dict) else None
    if value is None:
        raise ValueError(f"{where}: expected a flow record (a JSON object), got {kind}")
    missing = [k for k in REQUIRED if k not in value]
    for side in ("source", "destination"):
        end = value.get(side)
        if side not in missing and not isinstance(end, dict):
            raise ValueError(f"{where}: {side} is not an object")
        if isinstance(end, dict):
            missing += [f"{side}.{k}" for k in END_REQUIRED if k not in end]
    if missing:
        raise ValueError(f"{where}: not a podwire flow record (no {', '.join(missing)}); "
                         "save flows with `podwire observe -o json`")
    try:
        datetime.datetime.fromisoformat(str(value["time"]))
    except ValueError:
        raise ValueError(f"{where}: time {value['time']!r} is not an ISO 8601 time") from None
    return from_json(value)


def read(lines: Iterable[str], name: str) -> list[FlowRecord]:
    """Every record of a saved file, in the file's order; blank lines are skipped."""
    return [parse_line(line, f"{name}:{number}")
            for number, line in enumerate(lines, start=1) if line.strip()]

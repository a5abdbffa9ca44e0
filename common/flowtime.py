"""Times as `podwire observe` reads and prints them, with hubble's spellings: pure.

`--since`/`--until` take a duration back from now (`30s`, `5m`, `1h30m`, `1.5h`, `2d`,
`300ms`) or a time in one of hubble's layouts (RFC3339 with any fraction,
`2026-01-31`, `2026-01-31T12`, `2026-01-31T12:00`, RFC1123Z, StampMilli); a time that
names no zone is UTC. `--time-format` names a layout for printing (hubble's names:
StampMilli, the default, YearMonthDay, ..., RFC1123Z); times print in local time.
"""

from __future__ import annotations

import datetime
import email.utils
import re
from collections.abc import Callable

_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600,
          "d": 86400}


def parse_duration(text: str) -> datetime.timedelta | None:
    """Go's duration syntax (`1h30m`, `2.5s`) plus days; None when `text` is not one."""
    text = text.strip()
    if not text or _PART.sub("", text):
        return None
    return datetime.timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)))


def _stamp(text: str, now: datetime.datetime) -> datetime.datetime:
    """StampMilli (`Jan  2 15:04:05.000`): a time this year."""
    for layout in ("%b %d %H:%M:%S.%f", "%b %d %H:%M:%S"):
        try:
            parsed = datetime.datetime.strptime(" ".join(text.split()), layout)
        except ValueError:
            continue
        return parsed.replace(year=now.year)
    raise ValueError(text)


def parse_when(text: str, now: datetime.datetime, flag: str = "--since") -> datetime.datetime:
    """The moment `text` names: `now` minus a duration, or an absolute time."""
    duration = parse_duration(text)
    if duration is not None:
        return now - duration
    value = text.strip()
    parsers: list[Callable[[str], datetime.datetime]] = [
        lambda t: datetime.datetime.fromisoformat(t.replace(" ", "T", 1)),
        email.utils.parsedate_to_datetime,
        lambda t: _stamp(t, now),
    ]
    for parse in parsers:
        try:
            when = parse(value)
        except (ValueError, TypeError, IndexError):
            continue
        return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)
    raise ValueError(f"{flag} {text!r}: expected a duration like 5m, 30s, 1h30m or a time "
                     "like 2026-01-31T12:00:00Z (RFC3339)")


def _fraction(when: datetime.datetime, digits: int) -> str:
    """Go's `.999...`: the fraction without trailing zeros, nothing when it is zero."""
    nanos = f"{when.microsecond:06d}000"[:digits].rstrip("0")
    return f".{nanos}" if nanos else ""


def _zone(when: datetime.datetime) -> str:
    offset = when.utcoffset() or datetime.timedelta(0)
    if not offset:
        return "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _stamp_milli(when: datetime.datetime) -> str:
    return (f"{when:%b} {when.day:2d} {when:%H:%M:%S}."
            f"{when.microsecond // 1000:03d}")


TIME_FORMATS: dict[str, Callable[[datetime.datetime], str]] = {
    "StampMilli": _stamp_milli,
    "YearMonthDay": lambda w: f"{w:%Y-%m-%d}",
    "YearMonthDayHour": lambda w: f"{w:%Y-%m-%dT%H}{_zone(w)}",
    "YearMonthDayHourMinute": lambda w: f"{w:%Y-%m-%dT%H:%M}{_zone(w)}",
    "RFC3339": lambda w: f"{w:%Y-%m-%dT%H:%M:%S}{_zone(w)}",
    "RFC3339Milli": lambda w: f"{w:%Y-%m-%dT%H:%M:%S}{_fraction(w, 3)}{_zone(w)}",
    "RFC3339Micro": lambda w: f"{w:%Y-%m-%dT%H:%M:%S}{_fraction(w, 6)}{_zone(w)}",
    "RFC3339Nano": lambda w: f"{w:%Y-%m-%dT%H:%M:%S}{_fraction(w, 9)}{_zone(w)}",
    "RFC1123Z": lambda w: f"{w:%a, %d %b %Y %H:%M:%S} {_zone(w).replace(':', '')}"
                          .replace(" Z", " +0000"),
}
DEFAULT_TIME_FORMAT = "StampMilli"


def time_format(name: str) -> str:
    """The layout name as hubble spells it, whatever the case; ValueError otherwise."""
    for known in TIME_FORMATS:
        if known.lower() == name.lower():
            return known
    raise ValueError(f"--time-format {name!r} is not one of {', '.join(TIME_FORMATS)}")


def format_time(iso: str, name: str = DEFAULT_TIME_FORMAT,
                zone: datetime.tzinfo | None = None) -> str:
    """A record's ISO time in layout `name`, in `zone` (local time when None)."""
    when = datetime.datetime.fromisoformat(iso).astimezone(zone)
    return TIME_FORMATS[name](when)

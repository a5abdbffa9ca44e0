"""The programs a benchmark runs, checked before it starts: a missing one ends the
benchmark at once with one line naming it (and the suite reports it failed), instead of
a run that waits for traffic that never comes until it times out."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable

MISSING = 3  # the exit code of a benchmark that lacks a program


def missing(programs: Iterable[str]) -> list[str]:
    """The programs neither on PATH nor, given as a path, executable there."""
    return [p for p in programs if shutil.which(p) is None]


def require(programs: Iterable[str]) -> None:
    """Exit with MISSING and one line on stderr when a program is missing."""
    absent = missing(programs)
    if absent:
        print(f"missing program{'s' if len(absent) > 1 else ''}: {', '.join(absent)} "
              "(scripts/setup.sh installs every program podwire runs)", file=sys.stderr)
        sys.exit(MISSING)

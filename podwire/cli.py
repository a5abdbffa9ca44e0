"""The `podwire` command: a thin dispatcher over command groups.

Each group lives with its part and exposes `register(subparsers)`, which adds its
parser and sets `run` (how to execute a parsed command) as a default. Adding a group
(observe, policy, status) is one line in `GROUPS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from podwire import benchcli, observe, status, trace
from podwire.authoring import cli as policy_cli
from podwire.lab import cli as lab_cli

GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [  # type: ignore[type-arg]
    lab_cli.register,
    policy_cli.register,
    observe.register,
    status.register,
    trace.register,
    benchcli.register,
]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="podwire", description="podwire: eBPF CNI for Kubernetes")
    groups = top.add_subparsers(dest="group", required=True, metavar="GROUP")
    for register in GROUPS:
        register(groups)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())

"""The `podwire` command: a thin dispatcher over command groups.

Each group lives with its part and exposes `register(subparsers)`, which adds its
parser and sets `run` (how to execute a parsed command) as a default. Adding a group
(observe, policy, status) is one line in `GROUPS`. Only the group named on the command
line is imported (the bench group alone pulls in matplotlib): every command starts in a
fraction of the time it took when all were; `podwire --help` still lists them all.
"""

from __future__ import annotations

import argparse
import importlib
import sys

GROUPS: dict[str, str] = {
    "lab": "podwire.lab.cli",
    "policy": "podwire.authoring.cli",
    "observe": "podwire.observe",
    "status": "podwire.status",
    "trace": "podwire.trace",
    "bench": "podwire.benchcli",
}


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command's parser; with `only`, that group's alone (the others not imported)."""
    top = argparse.ArgumentParser(prog="podwire", description="podwire: eBPF CNI for Kubernetes")
    groups = top.add_subparsers(dest="group", required=True, metavar="GROUP")
    for name, module in GROUPS.items():
        if only in (None, name):
            importlib.import_module(module).register(groups)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in GROUPS else None
    args = parser(only).parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())

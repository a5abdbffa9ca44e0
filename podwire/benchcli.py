"""`podwire bench [--quick] [--out DIR] [--only NAME ...]`: run the benchmark suite and
write results.json, report.md and charts/*.png.

Exit codes: 0 every benchmark ran, 1 one or more failed (the others are still
reported), 2 bad usage (not root, unknown benchmark, unusable output directory), 130
interrupted (the running benchmark is stopped with SIGINT so it cleans up).
"""

from __future__ import annotations

import argparse
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from podwire.bench import charts, report, suite

log = logging.getLogger("podwire.bench")


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    names = ", ".join(b.name for b in suite.BENCHMARKS)
    p = groups.add_parser("bench", help="run the benchmarks against their baselines",
                          description="Run the benchmarks, each against its baseline in the same run; "
                          "write results.json, report.md and charts/*.png.")
    p.add_argument("--quick", action="store_true",
                   help="every benchmark in a few minutes: fewer, shorter runs, smaller scales")
    p.add_argument("--out", type=Path,
                   help="output directory (default bench/results/<UTC timestamp>)")
    p.add_argument("--only", action="append", metavar="NAME",
                   help=f"run only these benchmarks (repeatable or comma-separated): {names}")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    profile = "quick" if args.quick else "full"
    only = [n.strip() for item in args.only or () for n in item.split(",") if n.strip()]
    if os.geteuid() != 0:
        log.error("event=bench_refused reason=%s", "needs root (namespaces, BPF, iptables)")
        return 2
    try:
        suite.select(profile, only or None)
    except ValueError as err:
        log.error("event=bench_refused reason=%r", str(err))
        return 2
    out = args.out or suite.REPO / "bench" / "results" / datetime.now(UTC).strftime(
        "%Y%m%dT%H%M%SZ")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        log.error("event=bench_refused reason=%r", f"--out {out}: {err.strerror}")
        return 2
    try:
        results = suite.run(profile, out, only or None)
    except KeyboardInterrupt:
        log.error("event=bench_interrupted out=%s", out)
        return 130
    pngs = charts.draw(results, out / "charts")
    (out / "report.md").write_text(
        report.render(results, [str(p.relative_to(out)) for p in pngs]))
    failed = [n for n, e in results["benchmarks"].items() if e["status"] != "ok"]
    log.info("event=bench_done profile=%s out=%s benchmarks=%d failed=%s", profile, out,
             len(results["benchmarks"]), ",".join(failed) or "none")
    return 1 if failed else 0

"""The Markdown report of a `podwire bench` run, rendered from results.json's content.

Pure: a dict in, text out, so the report can be re-rendered from a saved JSON file.
The ratio table is the heart of it: podwire's median over each baseline's median,
measured in the same run, with the spread (min..max over repetitions) beside each.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from podwire.bench.figures import from_json, ratio, summary

RATIO_HEADER = ("| benchmark | metric | subject | median (min..max) | baseline "
                "| median (min..max) | ratio | better |")


def _num(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value == int(value):
        return f"{int(value):,}"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _spread(values: list[float]) -> str:
    s = summary(values)
    if s["n"] == 1:
        return f"{_num(s['median'])} (n=1)"
    return f"{_num(s['median'])} ({_num(s['min'])}..{_num(s['max'])}, n={s['n']})"


def ratio_rows(results: dict[str, Any]) -> list[str]:
    rows = []
    for name, entry in results["benchmarks"].items():
        if entry["figures"] is None:
            continue
        for c in from_json(entry["figures"]).comparisons:
            for base in c.baselines:
                r = ratio(c, base)
                wins = r > 1 if c.higher_is_better else r < 1
                rows.append(f"| {name} | {c.metric} [{c.unit}] | {c.subject} | "
                            f"{_spread(c.samples[c.subject])} | {base} | "
                            f"{_spread(c.samples[base])} | {r:.2f} | "
                            f"{c.subject if wins else base} "
                            f"({'higher' if c.higher_is_better else 'lower'} is better) |")
    return rows


def _curve_tables(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, entry in results["benchmarks"].items():
        if entry["figures"] is None:
            continue
        for curve in from_json(entry["figures"]).curves:
            series = list(curve.samples)
            lines += ["", f"### {curve.metric} ({name})", "",
                      f"| {curve.x_label} | " + " | ".join(f"{s} [{curve.unit}]" for s in series)
                      + (f" | {series[0]} / {series[1]} |" if len(series) == 2 else " |"),
                      "|---" * (len(series) + 1 + (len(series) == 2)) + "|"]
            for i, x in enumerate(curve.x):
                medians = [statistics.median(curve.samples[s][i]) for s in series]
                cells = [_spread(curve.samples[s][i]) for s in series]
                if len(series) == 2:
                    cells.append(f"{medians[0] / medians[1]:.2f}" if medians[1] else "n/a")
                lines.append(f"| {_num(x)} | " + " | ".join(cells) + " |")
    return lines


def _scalar_tables(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, entry in results["benchmarks"].items():
        if entry["figures"] is None or not entry["figures"]["scalars"]:
            continue
        lines += ["", f"### {name}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {_num(float(v))} |" for k, v in entry["figures"]["scalars"].items()]
    return lines


def expectation_rows(results: dict[str, Any]) -> list[str]:
    """One row a figure that has an expected value: the value, the bound, met or not."""
    rows = []
    for name, entry in results["benchmarks"].items():
        if entry["figures"] is None:
            continue
        for e in from_json(entry["figures"]).expectations:
            unit = f" {e.unit}" if e.unit else ""
            rows.append(f"| {name} | {e.scenario} | {e.figure} | {_num(e.value)}{unit} | "
                        f"{e.op} {_num(e.bound)}{unit} | {'yes' if e.met else '**no**'} |")
    return rows


def render(results: dict[str, Any], charts: list[str]) -> str:
    """The report; `charts` are PNG paths relative to the report's directory."""
    env = results["environment"]
    failed = {n: e for n, e in results["benchmarks"].items() if e["status"] != "ok"}
    lines = [
        f"# podwire bench ({results['profile']})", "",
        (f"Run {results['started']} .. {results.get('finished', '?')} on kernel {env['kernel']}, "
         f"{env['cpu_count']} CPUs ({env['cpu_model']}); python {env['python']}, "
         f"bcc {env['bcc']}, pyroute2 {env['pyroute2']}, podwire {env['podwire']} at "
         f"{env['git_commit'][:12]}{' (uncommitted changes)' if env['git_dirty'] else ''}. "
         f"Load average (1, 5, 15 min) before {_load(env['load_before'])}, "
         f"after {_load(env.get('load_after'))}."), "",
        ("Every baseline is measured in the same run as podwire, interleaved with it. "
         "Ratio = podwire's median / the baseline's median; `better` names the side the "
         "ratio favours. Spread is min..max over the repetitions (n)."), "",
        "## Ratios against each baseline", "", RATIO_HEADER,
        "|---|---|---|---|---|---|---|---|", *ratio_rows(results)]
    curves = _curve_tables(results)
    if curves:
        lines += ["", "## Scaling", *curves]
    expectations = expectation_rows(results)
    if expectations:
        lines += ["", "## Against expectations", "",
                  "| benchmark | scenario | figure | value | expected | met |",
                  "|---|---|---|---|---|---|", *expectations]
    lines += ["", "## Other figures", *_scalar_tables(results)]
    if charts:
        lines += ["", "## Charts", ""] + [f"![{c}]({c})" for c in charts]
    lines += ["", "## Benchmarks run", "", "| benchmark | status | seconds | what |",
              "|---|---|---|---|"]
    lines += [f"| {n} | {e['status']} | {e['seconds']:.0f} | {e['description']} |"
              for n, e in results["benchmarks"].items()]
    for name, entry in failed.items():
        lines += ["", f"**{name} failed**: {entry['error']}"]
    return "\n".join(lines) + "\n"


def _load(values: list[float] | None) -> str:
    return ", ".join(f"{v:.2f}" for v in values) if values else "?"

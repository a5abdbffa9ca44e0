"""PNG charts of a `podwire bench` run, for the figures that read better as a picture.

Comparisons marked "bar" become bars of medians with min..max whiskers (throughput,
rates); "distribution" becomes box plots of every sample (latencies); curves become
lines of medians with a min..max band on a log x axis (the policy-count scaling curve,
podwire against iptables). matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from podwire.bench.figures import Comparison, Curve, from_json

SIZE = (7.0, 4.2)  # inches; at DPI 110 about 770 x 460 pixels
DPI = 110
SUBJECT_COLOUR, BASELINE_COLOUR = "#1f77b4", "#9a9a9a"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80]


def bar_chart(c: Comparison, path: Path) -> None:
    names = list(c.samples)
    medians = [statistics.median(c.samples[n]) for n in names]
    low = [m - min(c.samples[n]) for m, n in zip(medians, names, strict=True)]
    high = [max(c.samples[n]) - m for m, n in zip(medians, names, strict=True)]
    fig, ax = plt.subplots(figsize=SIZE)
    colours = [SUBJECT_COLOUR if n == c.subject else BASELINE_COLOUR for n in names]
    ax.bar(names, medians, yerr=[low, high], capsize=5, color=colours)
    for x, m in enumerate(medians):
        # Inside the bar's foot: above it the value would collide with the whisker.
        ax.annotate(f"{m:,.3g}", (x, 0), ha="center", va="bottom", xytext=(0, 4),
                    textcoords="offset points", fontsize=9, color="white")
    ax.set_ylabel(c.unit)
    ax.set_title(c.metric, fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    _save(fig, path)


def distribution_chart(c: Comparison, path: Path) -> None:
    names = list(c.samples)
    fig, ax = plt.subplots(figsize=SIZE)
    ax.boxplot([c.samples[n] for n in names], tick_labels=names, showfliers=True)
    ax.set_ylabel(c.unit)
    ax.set_title(f"{c.metric} (every sample)", fontsize=10)
    _save(fig, path)


def curve_chart(curve: Curve, path: Path) -> None:
    fig, ax = plt.subplots(figsize=SIZE)
    for series, points in curve.samples.items():
        medians = [statistics.median(p) for p in points]
        ax.plot(curve.x, medians, marker="o", label=series)
        ax.fill_between(curve.x, [min(p) for p in points], [max(p) for p in points], alpha=0.2)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel(curve.x_label)
    ax.set_ylabel(curve.unit)
    ax.set_title(curve.metric, fontsize=10)
    ax.legend()
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def draw(results: dict[str, Any], out: Path) -> list[Path]:
    """Every chart of the run under `out`; returns their paths in report order."""
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for name, entry in results["benchmarks"].items():
        if entry["figures"] is None:
            continue
        figures = from_json(entry["figures"])
        for c in figures.comparisons:
            draw_one = {"bar": bar_chart, "distribution": distribution_chart}.get(c.chart)
            if draw_one:
                paths.append(out / f"{slug(name)}--{slug(c.metric)}.png")
                draw_one(c, paths[-1])
        for curve in figures.curves:
            paths.append(out / f"{slug(name)}--{slug(curve.metric)}.png")
            curve_chart(curve, paths[-1])
    return paths

"""The shape every benchmark hands its figures over in, so one report and one set of
charts can read them all.

A benchmark script run with `--json PATH` writes one `Figures` document:
  - `comparisons`: one metric measured on podwire (`subject`) and on its baselines in
    the same run, every repetition kept (`samples`), so medians, spread and ratios are
    computed in one place (`summary`, `ratio`);
  - `curves`: a metric against a parameter (the policy-count scaling curve), samples per
    point per series;
  - `scalars`: single figures without a baseline (RSS, resync seconds, ...);
  - `expectations`: a figure against the value it should have (the fault bench: "leaked
    addresses == 0"), so the report says whether each was met.
`chart` says how a comparison reads best as a picture ("bar", "distribution") or "" for
table only. Pure data: no I/O except `write`/`read`.
"""

from __future__ import annotations

import json
import operator
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Comparison:
    metric: str
    unit: str
    higher_is_better: bool
    subject: str
    samples: dict[str, list[float]]
    chart: str = ""

    @property
    def baselines(self) -> list[str]:
        return [name for name in self.samples if name != self.subject]


@dataclass
class Curve:
    metric: str
    unit: str
    x_label: str
    x: list[float]
    samples: dict[str, list[list[float]]]


BOUNDS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "<": operator.lt, "<=": operator.le, ">=": operator.ge}


@dataclass
class Expectation:
    """`value` measured in `scenario`, expected to be `op` `bound` (op: ==, <, <=, >=)."""

    scenario: str
    figure: str
    value: float
    op: str
    bound: float
    unit: str = ""

    @property
    def met(self) -> bool:
        return BOUNDS[self.op](self.value, self.bound)


@dataclass
class Figures:
    comparisons: list[Comparison] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    scalars: dict[str, float] = field(default_factory=dict)
    expectations: list[Expectation] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"comparisons": [{**asdict(c), "baselines": c.baselines,
                                 "summary": {n: summary(v) for n, v in c.samples.items()}}
                                for c in self.comparisons],
                "curves": [asdict(c) for c in self.curves],
                "scalars": self.scalars,
                "expectations": [{**asdict(e), "met": e.met} for e in self.expectations]}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2))


def from_json(data: dict[str, Any]) -> Figures:
    """Rebuild Figures from `to_json` output (derived keys are recomputed, not trusted)."""
    return Figures(
        comparisons=[Comparison(c["metric"], c["unit"], c["higher_is_better"], c["subject"],
                                c["samples"], c.get("chart", "")) for c in data["comparisons"]],
        curves=[Curve(c["metric"], c["unit"], c["x_label"], c["x"], c["samples"])
                for c in data["curves"]],
        scalars=dict(data["scalars"]),
        expectations=[Expectation(e["scenario"], e["figure"], e["value"], e["op"], e["bound"],
                                  e.get("unit", "")) for e in data.get("expectations", [])])


def read(path: Path) -> Figures:
    return from_json(json.loads(path.read_text()))


def summary(values: list[float]) -> dict[str, float]:
    """Median and spread; spread is min..max (few repetitions make quartiles meaningless)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def ratio(comparison: Comparison, baseline: str) -> float:
    """subject median / baseline median: >1 means podwire is larger, not necessarily better."""
    base = statistics.median(comparison.samples[baseline])
    mine = statistics.median(comparison.samples[comparison.subject])
    return mine / base if base else float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

"""The bench report's pure parts: figures round-trip, ratios, the ratio table, selection."""

from __future__ import annotations

import pytest

from podwire.bench import report, suite
from podwire.bench.figures import (
    Comparison,
    Curve,
    Expectation,
    Figures,
    from_json,
    ratio,
    summary,
)


def sample_results() -> dict:
    figures = Figures(
        comparisons=[
            Comparison("throughput", "Gbit/s", True, "podwire",
                       {"podwire": [10.0, 12.0, 11.0], "veth": [20.0, 24.0, 22.0]}, "bar"),
            Comparison("ADD latency", "ms", False, "podwire",
                       {"podwire": [4.0, 6.0], "bridge": [10.0, 10.0]}, "distribution")],
        curves=[Curve("conn/s vs entries", "conn/s", "entries", [1, 10],
                      {"podwire": [[5.0], [5.0]], "iptables": [[5.0], [2.5]]})],
        scalars={"rss_mb": 101.5},
        expectations=[Expectation("chaos", "leaked addresses", 0, "==", 0),
                      Expectation("restarts", "longest stall", 1.5, "<", 1, "s")])
    env = {"kernel": "6.18", "cpu_count": 2, "cpu_model": "x", "python": "3.11", "bcc": "0.26",
           "pyroute2": "0.9", "podwire": "0.1", "git_commit": "a" * 40, "git_dirty": False,
           "load_before": [1.0, 1.0, 1.0], "load_after": [1.0, 1.0, 1.0]}
    return {"schema": suite.SCHEMA, "profile": "quick", "started": "t0", "finished": "t1",
            "environment": env,
            "benchmarks": {"demo": {"description": "d", "command": [], "status": "ok",
                                    "seconds": 1.0, "error": None,
                                    "figures": figures.to_json()},
                           "broken": {"description": "b", "command": [], "status": "failed",
                                      "seconds": 2.0, "error": "exit code 1", "figures": None}}}


def test_figures_survive_json_and_summaries_are_medians_with_min_max() -> None:
    data = sample_results()["benchmarks"]["demo"]["figures"]
    back = from_json(data)
    assert back.comparisons[0].samples["podwire"] == [10.0, 12.0, 11.0]
    assert data["comparisons"][0]["baselines"] == ["veth"]
    assert summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert ratio(back.comparisons[0], "veth") == pytest.approx(0.5)


def test_the_ratio_table_names_the_side_each_ratio_favours() -> None:
    rows = report.ratio_rows(sample_results())
    assert len(rows) == 2
    assert "| 0.50 | veth (higher is better) |" in rows[0]
    assert "| 0.50 | podwire (lower is better) |" in rows[1]


def test_the_report_lists_curves_scalars_charts_and_failures() -> None:
    text = report.render(sample_results(), ["charts/a.png"])
    assert "| 10 | 5 (n=1) | 2.5 (n=1) | 2.00 |" in text
    assert "| rss_mb | 101.5 |" in text
    assert "![charts/a.png](charts/a.png)" in text
    assert "**broken failed**: exit code 1" in text


def test_selection_covers_every_benchmark_in_quick_and_rejects_unknown_names() -> None:
    quick = {b.name for b in suite.select("quick", None)}
    assert {"same-node", "cross-node", "policy-scale", "cni", "control-plane", "agent-scale",
            "flows", "faults", "service-lb", "service-model", "service-agent",
            "tiers"} <= quick
    assert [b.name for b in suite.select("full", ["cni"])] == ["cni"]
    with pytest.raises(ValueError, match="--only nosuch: unknown benchmark"):
        suite.select("quick", ["nosuch"])
    with pytest.raises(ValueError, match="profile 'slow'"):
        suite.select("slow", None)


def test_expectations_survive_json_and_the_report_says_which_were_met() -> None:
    data = sample_results()["benchmarks"]["demo"]["figures"]
    assert [e["met"] for e in data["expectations"]] == [True, False]
    data["expectations"][1]["met"] = True  # derived: recomputed, never trusted
    assert [e.met for e in from_json(data).expectations] == [True, False]
    rows = report.expectation_rows(sample_results())
    assert rows == ["| demo | chaos | leaked addresses | 0 | == 0 | yes |",
                    "| demo | restarts | longest stall | 1.5 s | < 1 s | **no** |"]
    assert "## Against expectations" in report.render(sample_results(), [])


def test_figures_without_expectations_still_read() -> None:
    data = sample_results()["benchmarks"]["demo"]["figures"]
    del data["expectations"]
    assert from_json(data).expectations == []

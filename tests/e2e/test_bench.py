"""`podwire bench --quick` end to end (root): every benchmark runs for real against its
baselines, and the JSON, the Markdown report and the PNG charts come out well formed.

The figures themselves are not asserted (they are measurements on a shared machine);
their shape is: documented keys, every baseline present in every comparison, the
report's ratios equal to the JSON's medians, charts that open with sane dimensions,
and nothing left behind by the benchmarks (namespaces, pins).
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from podwire.bench import suite
from podwire.lab import netns

pytestmark = pytest.mark.timeout(600)  # the quick suite is about 3.5 minutes here

ENVIRONMENT_KEYS = {"kernel", "cpu_count", "cpu_model", "python", "bcc", "pyroute2", "podwire",
                    "git_commit", "git_dirty", "tools", "load_before", "load_after"}
ENTRY_KEYS = {"description", "command", "status", "seconds", "error", "figures"}
# Namespace prefixes the benchmarks use: datapath, cross-node baseline, policy-scale, service-lb,
# flows lab, cross-node lab, agent scale, faults lab (the CNI stand-in agent's pwtc- is
# shared with the CNI tests, which may run meanwhile).
BENCH_PREFIXES = ("pwbh1-", "pwbh9c-", "pwbh9s-", "pwbh11-", "pwbfl-", "pwbh9x-", "pwbs", "pwflt-")


def podwire(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podwire.cli", "bench", *args],
                          capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def run() -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    out = Path(tempfile.mkdtemp(prefix="pwtbench-"))
    try:
        yield out, podwire("--quick", "--out", str(out))
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def results(run: tuple[Path, subprocess.CompletedProcess[str]]) -> dict[str, Any]:
    out, done = run
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def test_every_quick_benchmark_ran_and_the_json_has_the_documented_keys(
        results: dict[str, Any]) -> None:
    assert results["schema"] == suite.SCHEMA and results["profile"] == "quick"
    assert {"started", "finished", "environment", "benchmarks"} <= results.keys()
    env = results["environment"]
    assert ENVIRONMENT_KEYS <= env.keys()
    assert env["cpu_count"] >= 1 and len(env["load_before"]) == 3
    assert re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])
    assert list(results["benchmarks"]) == [b.name for b in suite.select("quick", None)]
    for name, entry in results["benchmarks"].items():
        assert entry.keys() == ENTRY_KEYS, name
        assert entry["status"] == "ok" and entry["error"] is None, (name, entry["error"])
        assert {"comparisons", "curves", "scalars", "expectations"} == entry["figures"].keys(), \
            name


def comparisons(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, c) for name, e in results["benchmarks"].items()
            for c in e["figures"]["comparisons"]]


def test_each_comparison_holds_every_repetition_of_podwire_and_its_baselines(
        results: dict[str, Any]) -> None:
    metrics = {c["metric"] for _, c in comparisons(results)}
    for wanted in ("same-node TCP throughput (iperf3)", "cross-node TCP throughput (iperf3)",
                   "same-node TCP request/response (sockperf)", "CNI ADD latency",
                   "cross-node TCP request/response (sockperf)", "CNI DEL latency"):
        assert wanted in metrics
    for name, c in comparisons(results):
        assert c["subject"] in c["samples"], (name, c["metric"])
        for subject, values in c["samples"].items():
            assert values and all(v > 0 for v in values), (name, c["metric"], subject)
            assert c["summary"][subject]["median"] == statistics.median(values)
    baselines = {b for _, c in comparisons(results) for b in c["baselines"]}
    assert {"bare veth", "cni bridge", "vxlan+bridge", "iptables",
            "bridge+host-local"} <= baselines
    (curve,) = results["benchmarks"]["policy-scale"]["figures"]["curves"]
    assert curve["x"] == [1, 100, 1000, 10000]
    assert set(curve["samples"]) == {"podwire", "iptables"}
    assert all(len(points) == len(curve["x"]) for points in curve["samples"].values())
    scalars = results["benchmarks"]["agent-scale"]["figures"]["scalars"]
    assert {"rss_mb", "cold_start_to_ready_s", "restart_to_ready_s"} <= scalars.keys()
    assert "events_per_s_without_loss" in results["benchmarks"]["flows"]["figures"]["scalars"]
    assert "model_change_ms_p99" in results["benchmarks"]["tiers"]["figures"]["scalars"]


def test_every_fault_scenario_states_its_figures_against_an_expected_value(
        run: tuple[Path, subprocess.CompletedProcess[str]], results: dict[str, Any]) -> None:
    expectations = results["benchmarks"]["faults"]["figures"]["expectations"]
    scenarios = {e["scenario"] for e in expectations}
    assert scenarios == {"cni-chaos", "policy-churn", "crafted-packets", "agent-restarts",
                         "api-outage", "agent-memory"}
    for e in expectations:
        assert e["op"] in ("==", "<", "<=") and isinstance(e["met"], bool), e
    text = (run[0] / "report.md").read_text()
    rows = [line for line in text.splitlines()
            if line.startswith("| faults | ") and line.split(" | ")[1] in scenarios]
    assert len(rows) == len(expectations)


def test_the_report_has_a_ratio_row_per_baseline_matching_the_json(
        run: tuple[Path, subprocess.CompletedProcess[str]], results: dict[str, Any]) -> None:
    text = (run[0] / "report.md").read_text()
    assert "## Ratios against each baseline" in text
    rows = [line for line in text.splitlines()
            if line.startswith("| ") and line.count("|") == 9 and "| benchmark |" not in line]
    expected = {(name, c["metric"], base): statistics.median(c["samples"][c["subject"]])
                / statistics.median(c["samples"][base])
                for name, c in comparisons(results) for base in c["baselines"]}
    assert len(rows) == len(expected)
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        metric = cells[1].rsplit(" [", 1)[0]
        assert float(cells[6]) == pytest.approx(expected[(cells[0], metric, cells[4])],
                                                abs=0.006), row
    assert "### new TCP connections/s against policy entries (policy-scale)" in text


def test_charts_open_with_sane_dimensions_and_the_report_links_them(
        run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out = run[0]
    linked = re.findall(r"!\[[^]]*\]\((charts/[^)]+\.png)\)", (out / "report.md").read_text())
    pngs = sorted(p.relative_to(out).as_posix() for p in (out / "charts").glob("*.png"))
    assert pngs and sorted(linked) == pngs
    assert any("policy-entries" in p for p in pngs)  # the scaling curve
    assert any("throughput" in p for p in pngs) and any("latency" in p for p in pngs)
    for png in pngs:
        with Image.open(out / png) as image:
            assert image.format == "PNG"
            width, height = image.size
            assert 300 <= width <= 3000 and 200 <= height <= 3000, (png, image.size)
            lo, hi = image.convert("L").getextrema()
            assert hi - lo > 100, f"{png} looks blank"


def test_the_benchmarks_left_nothing_behind(
        run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    assert run[1].returncode == 0
    left = [n for prefix in BENCH_PREFIXES for n in netns.names_with_prefix(prefix)]
    assert left == []
    pins = [p.name for p in Path("/sys/fs/bpf").iterdir()
            if p.name.startswith(("pwbh1-", "pwbh9s-", "pwbs"))]
    lab_pins = Path("/sys/fs/bpf/podwire")
    if lab_pins.is_dir():
        pins += [p.name for p in lab_pins.iterdir()
                 if p.name.startswith(("pwbfl-", "pwbh9x-", "pwflt-"))]
    assert pins == []


def test_bad_usage_is_a_message_not_a_traceback() -> None:
    done = podwire("--quick", "--only", "same-node,nosuch")
    assert done.returncode == 2
    assert "--only nosuch: unknown benchmark" in done.stderr and "Traceback" not in done.stderr
    with tempfile.NamedTemporaryFile(prefix="pwtbench-") as not_a_dir:
        done = podwire("--quick", "--only", "cni", "--out", not_a_dir.name)
    assert done.returncode == 2
    assert "--out" in done.stderr and "Traceback" not in done.stderr

"""The bench charts draw with the matplotlib pip brings today, and without a warning:
matplotlib deprecates for two releases before it removes (Axes.boxplot(labels=) went in
3.11), so a warning here is the notice a fresh machine would otherwise get as a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from test_bench_report import sample_results

from podwire.bench import charts


@pytest.mark.filterwarnings("error")
def test_every_chart_kind_draws_a_png_without_warnings(tmp_path: Path) -> None:
    paths = charts.draw(sample_results(), tmp_path)
    # One bar chart, one box plot (distribution), one curve; the failed benchmark none.
    assert [p.name for p in paths] == ["demo--throughput.png", "demo--add-latency.png",
                                       "demo--conn-s-vs-entries.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= 300

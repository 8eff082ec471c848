"""scripts/cpu_graphs.py (the comparison in docs/benchmarks.md) still runs the graphs it names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts.cpu_graphs import measure

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("mode", ["eager", "script"])
def test_measure_reports_positive_figures(mode: str) -> None:
    row = measure(ROOT / "models" / "cnn" / "1-distilled", mode)
    m = re.fullmatch(
        rf"\| {mode} \| ([\d.]+) ms \| ([\d,]+) items/s \| ([\d.]+) s to build \+ warm up \|", row
    )
    assert m is not None, row
    assert float(m[1]) > 0 and int(m[2].replace(",", "")) > 0

"""scripts/measure_models.py: the table in docs/models.md comes from the upload pipeline run
on a shipped model with its held-out split, so it must keep producing measured rows."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.measure_models import main

NUMBER = r"[0-9][0-9,]*"


def test_linreg_gets_a_measured_base_and_a_published_int8_row(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    assert main(["--seconds", "0.01", "--only", "linreg", "--out", str(out)]) == 0
    rows = {
        cells[1]: cells
        for line in out.read_text(encoding="utf-8").splitlines()
        if line.startswith("| linreg |")
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    assert set(rows) >= {"base (fp32)", "int8"}
    for variant in ("base (fp32)", "int8"):
        _, _, _, quality, size, b1, b32, published = rows[variant]
        # The held-out diabetes split has 89 rows; the fitted model's R^2 there is ~0.33.
        match = re.fullmatch(r"R² (-?[0-9.]+), MAE ([0-9.]+) \(n=89\)", quality)
        assert match is not None, quality
        assert 0.2 < float(match[1]) < 0.5
        for cell in (size, b1, b32):
            assert re.fullmatch(NUMBER, cell) and int(cell.replace(",", "")) > 0, cell
        assert published == "yes"
    assert "dynamic quantization" in rows["int8"][2]
    assert "Machine: " in out.read_text(encoding="utf-8")

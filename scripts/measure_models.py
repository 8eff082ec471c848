"""Measure the shipped cnn and linreg the way an upload is measured, and print the table.

    python -m scripts.measure_models [--seconds S] [--threads N] [--only NAME] [--out FILE]

Each shipped archive (``models/<name>/1/model.pt``) goes through
:func:`app.catalog.pipeline.process_archive` exactly as an uploaded one would: its manifest's
contract (the archive-manifest fields of ``manifest.json``) and an eval ``.npz`` built from the
held-out TEST split of models/data.py, so the int8 variant is built, calibrated and judged by
the same code and the same tolerance as an operator's. The trusted shipped archives run in
this process (no child), into a temporary folder that is removed afterwards. The markdown
table it prints (and writes to ``--out``) is the one in docs/models.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from app.catalog.pipeline import QUANT_ENGINE, TIMING_LOOPS, PipelineReport, process_archive
from app.catalog.spec import ArchiveManifest

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
SHIPPED = ("cnn", "linreg")
# The archive-manifest fields of a shipped manifest.json; the rest are training notes.
CONTRACT_FIELDS = (
    "name",
    "version",
    "description",
    "task",
    "inputs",
    "outputs",
    "labels",
    "preprocessing",
    "license",
)
HEADER = (
    "| model | variant | method | quality | size bytes | CPU items/s b1 | CPU items/s b32 "
    "| published |\n|---|---|---|---|---:|---:|---:|---|"
)


def shipped_manifest(name: str) -> ArchiveManifest:
    """The upload contract of the shipped ``models/<name>/1``."""
    raw = json.loads((MODELS_DIR / name / "1" / "manifest.json").read_text(encoding="utf-8"))
    return ArchiveManifest.model_validate({key: raw[key] for key in CONTRACT_FIELDS})


def write_eval(name: str, path: Path) -> int:
    """The held-out test split as the eval ``.npz`` an operator would upload; its item count.

    The cnn takes the preprocessed 3x28x28 images with integer labels, linreg the 10 features
    with their targets."""
    from models.data import diabetes_split, digits_split

    if name == "cnn":
        _, test = digits_split()
        np.savez(path, inputs=test.x.numpy(), labels=test.y.numpy().astype(np.int64))
    elif name == "linreg":
        _, test = diabetes_split()
        np.savez(path, inputs=test.x.numpy(), targets=test.y.numpy())
    else:
        raise ValueError(f"no eval split for {name!r}")
    return len(test)


def measure(name: str, seconds: float, threads: int, work: Path) -> tuple[PipelineReport, int]:
    """Run the upload pipeline on the shipped ``name``; the report and the eval item count."""
    eval_path = work / f"{name}-eval.npz"
    items = write_eval(name, eval_path)
    report = process_archive(
        MODELS_DIR / name / "1" / "model.pt",
        shipped_manifest(name),
        eval_path,
        work / name,
        measure_seconds=seconds,
        threads=threads,
    )
    return report, items


def table_rows(name: str, report: PipelineReport, items: int) -> list[str]:
    """One markdown row per built variant, then one per skipped variant."""
    rows = []
    for built in report.variants:
        m = built.measured
        if "accuracy" in m:
            quality = f"accuracy {m['accuracy']:.4f} (n={items})"
        elif "r2" in m:
            quality = f"R² {m['r2']:.4f}, MAE {m['mae']:.2f} (n={items})"
        else:
            quality = "not measured"
        method = built.compression.get("method", f"as uploaded ({built.format})")
        published = "yes" if built.published else f"no: {built.unpublished_reason}"
        rates = [m.get(f"cpu_items_per_s_batch{batch}") for batch in (1, 32)]
        b1, b32 = (f"{rate:,.0f}" if rate is not None else "—" for rate in rates)
        variant = built.variant or "base (fp32)"
        rows.append(
            f"| {name} | {variant} | {method} | {quality} | {built.bytes:,} | {b1} | {b32} "
            f"| {published} |"
        )
    for variant, reason in report.skipped:
        rows.append(f"| {name} | {variant} | not built | — | — | — | — | no: {reason} |")
    return rows


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's name elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=0.5, help="each timing loop's length (default 0.5)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--only", choices=SHIPPED, help="measure this model only")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    names = (args.only,) if args.only else SHIPPED
    rows = [HEADER]
    with tempfile.TemporaryDirectory(prefix="tollgate-measure-") as work:
        for name in names:
            report, items = measure(name, args.seconds, args.threads, Path(work))
            rows.extend(table_rows(name, report, items))
    supported = torch.backends.quantized.supported_engines
    engine = QUANT_ENGINE if QUANT_ENGINE in supported else torch.backends.quantized.engine
    machine = (
        f"Machine: {cpu_model()}, {args.threads} torch thread(s), torch {torch.__version__}, "
        f"quantized engine {engine}, CUDA {'yes' if torch.cuda.is_available() else 'no'}; "
        f"items/s is the median of {TIMING_LOOPS} loops of >= {args.seconds:g} s each."
    )
    text = "\n".join(rows) + "\n\n" + machine + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

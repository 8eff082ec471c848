"""Package the shipped models as self-contained archives (the format uploads use too).

Usage::

    python -m models.package            # every <name>/<version>[-<variant>] under models/

Training (``models.train``) and compression (``models.compress``) write ``weights.pt`` state
dicts and a manifest; this step turns each into ``model.pt``, a TorchScript module saved with
``torch.jit.save``, and records it in the manifest's ``archive`` block (file, format, sha256,
bytes) with the archive manifest's ``license`` and ``preprocessing`` notes. Tollgate serves
only the archive: the server never builds a module from code in this repository, and never
unpickles anything but TorchScript's own restricted format.

The module is scripted (``torch.jit.script``), which keeps the forward pass exact for any
batch size; a module that cannot be scripted is traced on a sample of its declared shape.
Each archive is checked against the eager module it came from before it is written.
"""

from __future__ import annotations

import argparse
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.manifest import MANIFEST_FILENAME, discover, load_weights, sha256_bytes

ARCHIVE_FILE = "model.pt"
# Top-level keys this step adds to every shipped manifest (besides models.manifest's keys).
PACKAGED_KEYS: frozenset[str] = frozenset({"archive", "license", "preprocessing"})
LICENSE = "MIT (trained by Tollgate on scikit-learn's bundled datasets, BSD-3-Clause)"
PREPROCESSING = {
    "cnn": (
        "sklearn 8x8 digit images (0..16) scaled to [0, 1], upsampled bilinearly to 28x28 "
        "and repeated over 3 channels (models/data.py: digits_preprocess)."
    ),
    "linreg": (
        "the 10 scikit-learn diabetes features as load_diabetes() returns them (mean-centred, "
        "scaled); the target is the disease progression score."
    ),
}


def _example(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(3, *shape, generator=generator).to(dtype)


def to_torchscript(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> bytes:
    """``torch.jit.save`` bytes of ``module``, checked against the eager module."""
    x = _example(module, shape, dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Warning)
        try:
            scripted: torch.jit.ScriptModule = torch.jit.script(module)
        except Exception:
            with torch.no_grad():
                scripted = torch.jit.trace(module, x)  # type: ignore[no-untyped-call]
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)  # type: ignore[no-untyped-call]
        data = buffer.getvalue()
        reloaded = torch.jit.load(io.BytesIO(data), map_location="cpu")  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        if dtype == torch.float16:
            want, got = module.float()(x.float()), reloaded.float()(x.float())
            module.half()
        else:
            want, got = module(x), reloaded(x)
    if not torch.allclose(want.float(), got.float(), rtol=1e-4, atol=1e-4):
        raise ValueError("the TorchScript archive does not reproduce the eager module")
    return data


def package(models_dir: Path) -> list[Path]:
    written = []
    for manifest_dir, manifest in discover(models_dir):
        module = load_weights(manifest_dir, manifest)
        dtype = torch.float16 if manifest.dtype == "float16" else torch.float32
        data = to_torchscript(module, tuple(manifest.inputs[0].shape), dtype)
        (manifest_dir / ARCHIVE_FILE).write_bytes(data)
        raw: dict[str, Any] = dict(manifest.raw)
        raw["archive"] = {
            "file": ARCHIVE_FILE,
            "format": "torchscript",
            "sha256": sha256_bytes(data),
            "bytes": len(data),
        }
        raw["license"] = LICENSE
        raw["preprocessing"] = PREPROCESSING.get(manifest.name, "")
        path = manifest_dir / MANIFEST_FILENAME
        path.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(manifest_dir / ARCHIVE_FILE)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=Path(__file__).parent)
    args = parser.parse_args(argv)
    for path in package(args.models_dir):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""TEMPORARY minimal loader (replaced by the pipeline branch's archive.py at merge)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

ArchiveFormat = Literal["torchscript", "torch_export"]


def load_archive(path: Path, fmt: ArchiveFormat, device: str = "cpu") -> torch.nn.Module:
    if fmt == "torchscript":
        module: torch.nn.Module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    else:
        module = torch.export.load(str(path)).module().to(device)
    return module.eval()

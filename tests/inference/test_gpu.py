"""CUDA placement: runs where a GPU is present, skips cleanly elsewhere (CI has none)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch

from app.catalog.service import shipped_snapshot
from app.catalog.store import DirectoryStore
from app.inference.registry import ModelRegistry, choose_device
from app.observability.metrics import Metrics
from models.data import digits_split
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_auto_falls_back_to_cpu_without_cuda() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device("auto").type == expected
    assert choose_device("cpu").type == "cpu"
    assert choose_device("cuda").type == expected  # asks, falls back with a warning


@needs_cuda
def test_cuda_outputs_match_cpu(tmp_path: Path) -> None:
    _, test = digits_split()
    batch = test.x[:32].numpy()
    outputs = {}
    for device in ("cpu", "cuda"):
        store = DirectoryStore(tmp_path / "store", REPO_ROOT / "models")
        registry = ModelRegistry(store, Metrics(), device=device, max_batch_items=64, threads=1)
        registry.apply_now(shipped_snapshot(REPO_ROOT / "models"))
        served = registry.get("cnn")
        assert served.device == device
        outputs[device] = served.predictor.predict(batch)
        asyncio.run(registry.close())
    np.testing.assert_allclose(outputs["cuda"], outputs["cpu"], rtol=1e-3, atol=1e-3)


@needs_cuda
def test_the_fp16_variant_serves_on_cuda_close_to_fp32(tmp_path: Path) -> None:
    _, test = digits_split()
    batch = test.x[:32].numpy()
    store = DirectoryStore(tmp_path / "store", REPO_ROOT / "models")
    registry = ModelRegistry(store, Metrics(), device="cuda", max_batch_items=64, threads=1)
    registry.apply_now(shipped_snapshot(REPO_ROOT / "models"))
    fp32, fp16 = registry.get("cnn"), registry.get("cnn:fp16")
    assert fp16.device == "cuda" and fp16.predictor is not None and fp32.predictor is not None
    want, got = fp32.predictor.predict(batch), fp16.predictor.predict(batch)
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2)
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.99
    asyncio.run(registry.close())

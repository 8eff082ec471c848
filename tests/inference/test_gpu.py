"""CUDA placement: runs where a GPU is present, skips cleanly elsewhere (CI has none)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

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
def test_cuda_outputs_match_cpu() -> None:
    _, test = digits_split()
    batch = test.x[:32].numpy()
    outputs = {}
    for device in ("cpu", "cuda"):
        registry = ModelRegistry(
            REPO_ROOT / "models", Metrics(), device=device, max_batch_items=64, threads=1
        )
        registry.load_all()
        served = registry.get("cnn")
        assert served.device == device
        outputs[device] = served.predictor.predict(batch)
        asyncio.run(registry.close())
    np.testing.assert_allclose(outputs["cuda"], outputs["cpu"], rtol=1e-3, atol=1e-3)

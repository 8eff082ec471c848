"""The CPU execution graph: optimized where it is provably the same function, eager otherwise."""

from __future__ import annotations

import logging

import httpx
import pytest
import torch
from fastapi import FastAPI
from torch import nn

from app.catalog import graph
from app.catalog.graph import optimize_for_cpu
from app.main import create_app
from app.resources import resources
from models.data import digits_split
from models.manifest import discover, load_weights
from tests.conftest import bearer, make_key, make_settings
from tests.paths import REPO_ROOT

CNN_DIR, CNN_MANIFEST = next(
    (d, m) for d, m in discover(REPO_ROOT / "models") if m.name == "cnn" and m.variant is None
)
ITEM = (3, 28, 28)


def _cnn() -> nn.Module:
    return load_weights(CNN_DIR, CNN_MANIFEST).eval()


@pytest.mark.parametrize("mode", ["script", "channels_last"])
def test_optimized_graph_computes_what_eager_computes(mode: graph.CpuGraph) -> None:
    eager = _cnn()
    served, used = optimize_for_cpu(eager, ITEM, mode)
    assert used == mode
    assert served is not eager
    _, test = digits_split()
    with torch.inference_mode():
        for n in (1, 3, 32, 64):  # the trace used batch 2: other sizes must work too
            x = test.x[:n]
            want, got = eager(x), served(x)
            assert got.shape == (n, 10)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            assert torch.equal(got.argmax(1), want.argmax(1))


class _BakesInBatchSize(nn.Module):
    """Traces wrongly: int() freezes the traced batch size into the graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :4] * int(x.shape[0])


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # provoked on purpose
def test_a_trace_that_changes_the_function_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    module = _BakesInBatchSize().eval()
    with caplog.at_level(logging.WARNING, logger="app.catalog.graph"):
        served, used = optimize_for_cpu(module, ITEM, "script")
    assert used == "channels_last"
    assert "outputs differ from eager" in caplog.text
    x = torch.rand(5, *ITEM)
    torch.testing.assert_close(served(x), module(x))


def test_a_torch_without_torchscript_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def removed(*_: object, **__: object) -> None:
        raise AttributeError("module 'torch.jit' has no attribute 'optimize_for_inference'")

    monkeypatch.setattr(torch.jit, "optimize_for_inference", removed)
    _, used = optimize_for_cpu(_cnn(), ITEM, "script")
    assert used == "channels_last"


def test_eager_is_served_as_is() -> None:
    module = _cnn()
    served, used = optimize_for_cpu(module, ITEM, "eager")
    assert (served, used) == (module, "eager")


async def test_listing_shows_each_models_graph(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await make_key(app)
    listing = (await client.get("/v1/models", headers=bearer(key))).json()["data"]
    graphs = {m["id"]: m["graph"] for m in listing}
    assert graphs["cnn"] == "script"
    assert graphs["cnn:distilled"] == "script"
    assert graphs["cnn:int8"] == "eager"  # quantized kernels are already oneDNN/FBGEMM
    if not torch.cuda.is_available():
        assert graphs["cnn:fp16"] == "none"  # not loaded on a CPU-only server


async def test_cpu_graph_is_configurable_per_model(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, pg_sync: object
) -> None:
    monkeypatch.setenv("TOLLGATE_CPU_GRAPH", "channels_last")
    monkeypatch.setenv("TOLLGATE_MODEL_OVERRIDES", '{"cnn:pruned": {"cpu_graph": "eager"}}')
    app = create_app(make_settings(pg_url))
    async with app.router.lifespan_context(app):
        registry = resources(app).registry
        assert registry.find("cnn").graph == "channels_last"
        assert registry.find("cnn:distilled").graph == "channels_last"
        assert registry.find("cnn:pruned").graph == "eager"

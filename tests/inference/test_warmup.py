"""Warm-up runs at load time, at the batch sizes requests will bring, and is never billed.

A freshly built module plans its graph on its first calls at each batch shape (TorchScript's
profiling executor, oneDNN/FBGEMM kernels): those slow forwards must happen in the load, not
in the first customers' requests, whose ``compute_us`` is billed. What is proven here is
structural (which forwards the load runs, and that none of them reaches the ledger or the
metrics); how fast the first request then is belongs to the benchmarks.
"""

from __future__ import annotations

from collections import Counter

import httpx
import numpy as np
import torch
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.catalog.service import shipped_snapshot
from app.catalog.store import DirectoryStore
from app.inference.predictor import Array, Predictor
from app.inference.warmup import RUNS_PER_SIZE, warm_up_sizes
from tests.conftest import bearer, ledger, make_key
from tests.paths import REPO_ROOT


class _CountingPredictor(Predictor):
    """Records the batch size of every forward it runs."""

    forwards: list[int]

    def predict(self, batch: Array) -> Array:
        self.forwards.append(len(batch))
        return super().predict(batch)


def _loaded(name: str, max_batch_items: int) -> _CountingPredictor:
    models_dir = REPO_ROOT / "models"
    card = next(
        c for c in shipped_snapshot(models_dir).cards if c.name == name and c.variant is None
    )
    archive = DirectoryStore(models_dir, models_dir).local_path(card.archive_uri)
    predictor = _CountingPredictor(archive, card, max_batch_items=max_batch_items)
    predictor.forwards = []
    predictor.load(torch.device("cpu"))  # built here, not taken from the session's modules
    return predictor


def test_load_runs_repeated_forwards_from_one_item_to_the_largest_batch() -> None:
    predictor = _loaded("linreg", max_batch_items=16)
    assert predictor.graph == "script"  # the profiling executor is what needs the repeats
    runs = Counter(predictor.forwards)
    # Batch 1, a small batch and the largest one a request may bring, each enough times for
    # the executor to specialize and then run its optimized graph.
    assert sorted(runs) == [1, 8, 16]
    assert all(n >= RUNS_PER_SIZE >= 3 for n in runs.values()), runs
    # The module serves afterwards exactly as before (warm-up changes no state).
    x = np.linspace(-1, 1, 30, dtype=np.float32).reshape(3, 10)
    assert predictor.predict(x).shape == (3, 1)


def test_warm_up_sizes_stay_within_the_batch_limit() -> None:
    assert warm_up_sizes(64) == (1, 8, 64)
    assert warm_up_sizes(8) == (1, 8)
    assert warm_up_sizes(4) == (1, 4)
    assert warm_up_sizes(1) == (1,)


async def test_warm_up_is_neither_billed_nor_counted(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Every model was loaded (and warmed) by the app's start: no usage row and no
    inference metric holds any of it, and the first request is metered for itself alone."""

    def forwards(exposition: str) -> dict[str, float]:
        return {
            sample.labels["model"] + ":" + sample.labels["variant"]: sample.value
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples
            if sample.name == "tollgate_inference_batch_size_sum"
        }

    exposition = (await client.get("/metrics")).text
    assert await ledger(app) == []
    assert set(forwards(exposition).values()) == {0.0}  # every model's series, no item in any
    assert "tollgate_inference_duration_seconds_count{" not in exposition
    assert "tollgate_items_total{" not in exposition

    key = await make_key(app)
    response = await client.post(
        "/v1/models/cnn:int8/predict", json={"inputs": [[[0.5] * 28] * 28] * 3}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    (row,) = await ledger(app)
    assert (row.model, row.variant, row.items, row.billable) == ("cnn", "int8", 1, True)
    exposition = (await client.get("/metrics")).text
    assert {k: v for k, v in forwards(exposition).items() if v} == {"cnn:int8": 1.0}

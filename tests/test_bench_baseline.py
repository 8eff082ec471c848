"""The benchmark's baseline must serve the same model Tollgate is compared on."""

from __future__ import annotations

import httpx
import pytest
import torch

from models.data import digits_split
from models.manifest import discover, load_weights
from scripts.bare_server import build
from tests.paths import REPO_ROOT


@pytest.mark.parametrize("graph", ["eager", "script"])
async def test_bare_server_serves_the_fp32_base_model(graph: str) -> None:
    base_dir, base = next(
        (d, m) for d, m in discover(REPO_ROOT / "models") if m.name == "cnn" and m.variant is None
    )
    _, test = digits_split()
    with torch.inference_mode():
        want = load_weights(base_dir, base).eval()(test.x[:3])
    transport = httpx.ASGITransport(app=build(graph))
    async with httpx.AsyncClient(transport=transport, base_url="http://bare.test") as client:
        response = await client.post("/predict/cnn", json={"inputs": test.x[:3].tolist()})
    assert response.status_code == 200
    got = torch.tensor([o["logits"] for o in response.json()["outputs"]])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

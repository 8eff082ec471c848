"""The benchmark's baseline must serve the same model Tollgate is compared on: the shipped
archive (``model.pt``) Tollgate serves, not a module rebuilt from training weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import torch

from app.catalog.archive import load_archive
from models.data import digits_split
from scripts import bare_server
from tests.paths import REPO_ROOT


def _archives_only(target: Path) -> Path:
    """The shipped models as the catalog knows them: manifests and archives, no weights."""
    for manifest in (REPO_ROOT / "models").glob("*/*/manifest.json"):
        folder = target / manifest.parent.relative_to(REPO_ROOT / "models")
        folder.mkdir(parents=True)
        for name in ("manifest.json", "model.pt"):
            shutil.copyfile(manifest.parent / name, folder / name)
    return target


@pytest.mark.parametrize("graph", ["eager", "script"])
async def test_bare_server_serves_the_fp32_base_archive(
    graph: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models_dir = _archives_only(tmp_path / "models")
    monkeypatch.setattr(bare_server, "shipped_models_dir", lambda: models_dir)
    _, test = digits_split()
    with torch.inference_mode():
        want = load_archive(models_dir / "cnn" / "1" / "model.pt", "torchscript")(test.x[:3])
    transport = httpx.ASGITransport(app=bare_server.build(graph))
    async with httpx.AsyncClient(transport=transport, base_url="http://bare.test") as client:
        response = await client.post("/predict/cnn", json={"inputs": test.x[:3].tolist()})
    assert response.status_code == 200
    got = torch.tensor([o["logits"] for o in response.json()["outputs"]])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

"""Two replicas on one Postgres: a catalog change made through one is served (or refused) by
the other within 5 seconds, by LISTEN/NOTIFY and, with notifications off, by polling."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.clock import ManualClock
from app.config import Settings
from app.inference.predictor import LoadedModules
from app.keys.schemas import Scope
from app.main import create_app
from tests.catalog.mlp import write_mlp
from tests.conftest import bearer, make_key, make_settings

DEADLINE_S = 5.0


@asynccontextmanager
async def replica(
    settings: Settings, clock: ManualClock, modules: LoadedModules
) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(settings, clock=clock, modules=modules)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            client.app = application  # type: ignore[attr-defined]
            yield client


async def until(check: Any, deadline_s: float = DEADLINE_S) -> float:
    """Seconds until ``await check()`` is true; fails past the deadline."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > deadline_s:
            pytest.fail(f"not within {deadline_s} s")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("listen", [True, False], ids=["notify", "poll"])
async def test_an_upload_and_an_unload_on_one_replica_reach_the_other_within_5_s(
    settings: Settings,
    clock: ManualClock,
    loaded_modules: LoadedModules,
    tmp_path: Path,
    listen: bool,
) -> None:
    # Polling alone must make it too: 2 s between reads when notifications are off.
    shared = make_settings(
        settings.database_url, catalog_listen=listen, catalog_poll_s=30.0 if listen else 2.0
    )
    async with (
        replica(shared, clock, loaded_modules) as a,
        replica(shared, clock, loaded_modules) as b,
    ):
        admin = await make_key(a.app, "ops", (Scope.admin,))  # type: ignore[attr-defined]
        developer = await make_key(a.app, "dev")  # type: ignore[attr-defined]
        made = write_mlp(tmp_path, "torchscript")
        manifest = {**made.manifest, "name": "shared-mlp", "version": "1"}
        x = {"inputs": [[1.0] * 64]}

        async def b_serves(ref: str) -> bool:
            r = await b.post(f"/v1/models/{ref}/predict", json=x, headers=bearer(developer))
            return r.status_code == 200

        assert not await b_serves("shared-mlp")
        uploaded = await a.post(
            "/admin/models/shared-mlp/versions/1",
            files={
                "archive": ("model.pt", made.archive.read_bytes()),
                "manifest": ("manifest.json", json.dumps(manifest).encode()),
                "eval": ("eval.npz", made.eval_npz.read_bytes()),
            },
            headers=bearer(admin),
            timeout=300,
        )
        assert uploaded.status_code == 201, uploaded.text
        assert (
            await a.post("/v1/models/shared-mlp/predict", json=x, headers=bearer(developer))
        ).status_code == 200
        await until(lambda: b_serves("shared-mlp"))
        await until(lambda: b_serves("shared-mlp:int8"))

        # Unloading the int8 variant on A: B refuses it, and still serves the base.
        unloaded = await a.post(
            "/admin/models/shared-mlp:int8/versions/1/unload", headers=bearer(admin)
        )
        assert unloaded.status_code == 200, unloaded.text

        async def b_refuses_int8() -> bool:
            r = await b.post(
                "/v1/models/shared-mlp:int8/predict", json=x, headers=bearer(developer)
            )
            return r.status_code == 404

        await until(b_refuses_int8)
        assert await b_serves("shared-mlp")

        # /admin/models on either replica shows both, each with its actual state.
        async def both_report_unloaded() -> bool:
            listing = (await b.get("/admin/models", headers=bearer(admin))).json()
            states = [
                {m["model"]: m["state"] for m in r["models"] if m["model"].startswith("shared")}
                for r in listing["replicas"]
            ]
            return len(states) == 2 and all(s == {"shared-mlp": "loaded"} for s in states)

        await until(both_report_unloaded)

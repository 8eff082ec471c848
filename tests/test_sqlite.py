"""The embedded default: SQLite, built by the same migrations, serving the same path."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from app.main import create_app
from tests.conftest import bearer, ledger, make_key, make_settings, run_migrations


async def test_sqlite_end_to_end(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/tollgate.db"
    await asyncio.to_thread(run_migrations, url)
    app = create_app(make_settings(url))
    async with app.router.lifespan_context(app):
        key = await make_key(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/v1/models/linreg/predict",
                        json={"inputs": [0.0] * 10},
                        headers=bearer(key),
                    )
                    for _ in range(30)
                )
            )
            assert {r.status_code for r in responses} == {200}
            usage = (await client.get("/v1/usage", headers=bearer(key))).json()
            assert usage["total"]["requests"] == 30
            # Usage by model keeps variants apart here too (the key is built in SQL).
            int8 = await client.post(
                "/v1/models/cnn:int8/predict",
                json={"inputs": [[[0.5] * 28] * 28] * 3},
                headers=bearer(key),
            )
            assert int8.status_code == 200, int8.text
            for group_by, keys in (("model", ["cnn:int8", "linreg"]), ("variant", ["", "int8"])):
                report = await client.get(
                    "/v1/usage", params={"group_by": group_by}, headers=bearer(key)
                )
                assert [b["key"] for b in report.json()["data"]] == keys, group_by
            assert (await client.get("/readyz")).status_code == 200
        rows = await ledger(app)
        assert len(rows) == 31 and len({r.request_id for r in rows}) == 31
        assert rows[0].created_at.tzinfo is not None

"""Factories for billing tests: ledger rows at chosen times, plans, assignments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI

from app.keys.schemas import CreatedKey
from app.metering.rollups import insert_usage
from app.plans import service as plans
from app.plans.schemas import Effective, PlanAssign
from app.resources import resources

_seq = iter(range(10**9))


async def add_usage(
    app: FastAPI,
    key: CreatedKey,
    at: datetime,
    *,
    count: int = 1,
    items: int = 1,
    compute_us: int = 1000,
    model: str = "cnn",
    billable: bool = True,
    device: str = "cpu",
    variant: str | None = None,
) -> None:
    rows = [
        {
            "request_id": f"t-{next(_seq)}",
            "api_key_id": key.key_id,
            "customer_id": key.customer_id,
            "endpoint": "v1.predict",
            "model": model,
            "version": "1",
            "variant": variant,
            "device": device,
            "items": items,
            "compute_us": compute_us,
            "latency_us": compute_us + 100,
            "status_code": 200 if billable else 422,
            "billable": billable,
            "created_at": at,
        }
        for _ in range(count)
    ]
    async with resources(app).engine.begin() as conn:
        # As the meter writer does: the rows and their hourly rollups in one transaction.
        await insert_usage(conn, rows)


async def create_plan(client: httpx.AsyncClient, admin: CreatedKey, **plan: Any) -> dict[str, Any]:
    response = await client.post(
        "/admin/plans", json=plan, headers={"Authorization": f"Bearer {admin.secret}"}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def assign(
    app: FastAPI,
    customer_id: int,
    plan_id: int,
    now: datetime,
    *,
    version: int | None = None,
    immediately: bool = False,
) -> None:
    effective = Effective.immediately if immediately else Effective.next_period
    async with resources(app).sessionmaker() as session, session.begin():
        await plans.assign_plan(
            session,
            "test",
            customer_id,
            PlanAssign(plan_id=plan_id, version=version, effective=effective),
            now=now,
        )

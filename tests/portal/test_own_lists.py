"""The customer's own lists, a page at a time: issued invoices (never a draft) and keys,
with the total, and nothing of another customer's."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI
from sqlalchemy import insert

from app.orm import Invoice
from app.portal.service import own_invoices, own_keys
from app.resources import resources
from tests.conftest import make_key


async def _invoices(app: FastAPI, customer_id: int, statuses: list[str]) -> None:
    rows = [
        {
            "customer_id": customer_id,
            "period": f"20{10 + n // 12:02d}-{n % 12 + 1:02d}",
            "period_start": datetime(2020, 1, 1, tzinfo=UTC),
            "period_end": datetime(2020, 2, 1, tzinfo=UTC),
            "status": status,
            "currency": "usd",
            "subtotal_minor": 100,
            "tax_minor": 0,
            "total_minor": 100,
        }
        for n, status in enumerate(statuses)
    ]
    async with resources(app).engine.begin() as conn:
        await conn.execute(insert(Invoice), rows)


async def test_issued_invoices_paginate_newest_first_without_drafts(app: FastAPI) -> None:
    acme = await make_key(app, "acme")
    globex = await make_key(app, "globex")
    await _invoices(app, acme.customer_id, ["finalized"] * 60 + ["paid", "void", "draft"])
    await _invoices(app, globex.customer_id, ["finalized"] * 3)
    async with resources(app).sessionmaker() as session:
        first = await own_invoices(session, acme.customer_id, 1)
        second = await own_invoices(session, acme.customer_id, 2)
        beyond = await own_invoices(session, acme.customer_id, 9)
    assert (first.total, first.pages, len(first.items), len(second.items)) == (62, 2, 50, 12)
    assert beyond.items == [] and beyond.total == 62
    shown = first.items + second.items
    assert all(i.customer_id == acme.customer_id and i.status != "draft" for i in shown)
    assert [i.period for i in shown] == sorted((i.period for i in shown), reverse=True)
    assert len({i.id for i in shown}) == 62


async def test_own_keys_paginate(app: FastAPI) -> None:
    keys = [await make_key(app, "acme") for _ in range(3)]
    await make_key(app, "globex")
    async with resources(app).sessionmaker() as session:
        page = await own_keys(session, keys[0].customer_id, 1, per_page=2)
        rest = await own_keys(session, keys[0].customer_id, 2, per_page=2)
        clamped = await own_keys(session, keys[0].customer_id, 0, per_page=2)
    assert [k.id for k in page.items + rest.items] == [k.key_id for k in keys]
    assert (page.total, page.pages, clamped.page) == (3, 2, 1)

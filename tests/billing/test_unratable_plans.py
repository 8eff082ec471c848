"""A plan version that cannot be priced exactly, or whose invoice would not fit the invoice
columns, is a clear 409 at preview, never a 500 or a database error; a period close skips
that customer (listed in ``not_ratable``) and invoices everyone else. The API
no longer accepts such amounts, so the old versions are written straight to the table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.keys.schemas import CreatedKey, Scope
from app.orm import Invoice, PlanVersion
from app.resources import resources
from tests.billing.helpers import add_usage, assign, create_plan
from tests.conftest import bearer, make_key

SEPT = "2026-09"
AUG_1 = datetime(2026, 8, 1, tzinfo=UTC)
SEPT_5 = datetime(2026, 9, 5, 12, tzinfo=UTC)


@pytest.fixture
async def admin(app: FastAPI) -> CreatedKey:
    return await make_key(app, "tollgate-ops", (Scope.admin,))


@pytest.fixture
async def finance(app: FastAPI) -> CreatedKey:
    return await make_key(app, "tollgate-finance", (Scope.finance,))


_STORED = {"unit_price": None, "package_size": None, "tiers": [], "included": "0"}
_STORED |= {"model": None, "variant": None}


async def _legacy_components(app: FastAPI, plan_id: int, components: list[dict[str, Any]]) -> None:
    """Store components as the API did before it bounded them (every key, decimal strings)."""
    async with resources(app).sessionmaker() as session, session.begin():
        version = await session.scalar(select(PlanVersion).where(PlanVersion.plan_id == plan_id))
        assert version is not None
        version.components = [{**_STORED, **c} for c in components]


def _per_unit(**changes: str) -> dict[str, Any]:
    return {"unit": "request", "pricing": "per_unit", "unit_price": "1", **changes}


LEGACY = [
    pytest.param([_per_unit(unit_price="1e999999")], id="unit_price-1e999999"),
    pytest.param([_per_unit(unit_price="1e99999")], id="unit_price-1e99999"),
    pytest.param([_per_unit(included="1e99999")], id="included-1e99999"),
    pytest.param(
        [_per_unit(unit="compute_second", unit_price="0." + "7" * 199)],
        id="compute-second-price-199-digits",
    ),
    pytest.param(
        [
            {
                "unit": "request",
                "pricing": "volume",
                "tiers": [
                    {"up_to": "1e99999", "unit_price": "1e99999", "flat_fee": "0"},
                    {"up_to": None, "unit_price": "1", "flat_fee": "0"},
                ],
            }
        ],
        id="volume-tier-1e99999",
    ),
]


@pytest.mark.parametrize("components", LEGACY)
async def test_old_unbounded_versions_are_409_at_preview_and_skipped_at_close(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: CreatedKey,
    finance: CreatedKey,
    components: list[dict[str, Any]],
) -> None:
    plan = await create_plan(client, admin, name="old", currency="usd", components=[_per_unit()])
    await _legacy_components(app, plan["id"], components)
    listed = await client.get("/admin/plans", headers=bearer(admin))
    assert listed.status_code == 200, listed.text  # the old version still reads
    alice = await make_key(app, "alice")
    await assign(app, alice.customer_id, plan["id"], AUG_1, immediately=True)
    await add_usage(app, alice, SEPT_5, count=3, compute_us=1_234_567, model="linreg")

    preview = await client.get(
        "/finance/invoices/preview",
        params={"customer": alice.customer_id, "period": SEPT},
        headers=bearer(finance),
    )
    assert preview.status_code == 409, preview.text
    error = preview.json()["error"]
    assert error["type"] == "plan_not_ratable"
    assert error["details"] == {"customer_id": alice.customer_id, "plan_version_id": 1}
    assert len(error["message"]) < 1000

    close = await client.post(f"/finance/periods/{SEPT}/close", headers=bearer(finance))
    assert close.status_code == 200, close.text
    (skipped,) = close.json()["not_ratable"]
    assert skipped["customer_id"] == alice.customer_id
    assert skipped["plan_version_id"] == 1
    assert close.json()["created"] == []
    async with resources(app).sessionmaker() as session:
        assert (await session.scalars(select(Invoice))).all() == []  # nothing half-written


async def test_bounded_prices_whose_invoice_overflows_are_409(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    """The largest price times a million items is beyond NUMERIC(30, 10) and a BIGINT of
    cents: refused before it reaches the database."""
    plan = await create_plan(
        client,
        admin,
        name="dear",
        currency="usd",
        components=[
            {"unit": "item", "pricing": "per_unit", "unit_price": "99999999999999.9999999999"}
        ],
    )
    alice = await make_key(app, "alice")
    await assign(app, alice.customer_id, plan["id"], AUG_1, immediately=True)
    await add_usage(app, alice, SEPT_5, count=1, items=1_000_000, model="linreg")
    preview = await client.get(
        "/finance/invoices/preview",
        params={"customer": alice.customer_id, "period": SEPT},
        headers=bearer(finance),
    )
    assert preview.status_code == 409, preview.text
    assert "too large" in preview.json()["error"]["message"]
    close = await client.post(f"/finance/periods/{SEPT}/close", headers=bearer(finance))
    assert close.status_code == 200, close.text
    assert [c["customer_id"] for c in close.json()["not_ratable"]] == [alice.customer_id]
    assert "too large" in close.json()["not_ratable"][0]["reason"]


async def test_the_largest_amounts_that_fit_are_invoiced_exactly(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    plan = await create_plan(
        client,
        admin,
        name="dear",
        currency="usd",
        base_fee="99999999999999.9999999999",
        components=[{"unit": "item", "pricing": "per_unit", "unit_price": "0.0000000001"}],
    )
    alice = await make_key(app, "alice")
    await assign(app, alice.customer_id, plan["id"], AUG_1, immediately=True)
    await add_usage(app, alice, SEPT_5, count=1, items=7, model="linreg")
    preview = await client.get(
        "/finance/invoices/preview",
        params={"customer": alice.customer_id, "period": SEPT},
        headers=bearer(finance),
    )
    assert preview.status_code == 200, preview.text
    close = await client.post(f"/finance/periods/{SEPT}/close", headers=bearer(finance))
    assert close.status_code == 200, close.text
    (invoice_id,) = close.json()["created"]
    invoice = (await client.get(f"/finance/invoices/{invoice_id}", headers=bearer(finance))).json()
    fee, usage = invoice["lines"]
    assert fee["exact_amount"] == "99999999999999.9999999999"
    assert fee["amount_minor"] == 10**16 and fee["amount"] == "100000000000000.00"
    assert usage["exact_amount"] == "0.0000000007" and usage["amount_minor"] == 0
    assert usage["amount"] == "0.00"
    assert invoice["total_minor"] == 10**16
    previewed = [line["exact_amount"] for line in preview.json()["lines"]]
    assert previewed == [fee["exact_amount"], usage["exact_amount"]]


async def test_one_unratable_customer_does_not_hold_up_the_close(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    """Alice's plan cannot be priced; Bob is still invoiced, with the next number. Once
    Alice's plan is fixed, closing again invoices her and leaves Bob's invoice alone."""
    broken = await create_plan(client, admin, name="old", currency="usd", components=[_per_unit()])
    await _legacy_components(app, broken["id"], [_per_unit(unit_price="1e99999")])
    fine = await create_plan(client, admin, name="fine", currency="usd", components=[_per_unit()])
    alice = await make_key(app, "alice")
    bob = await make_key(app, "bob")
    await assign(app, alice.customer_id, broken["id"], AUG_1, immediately=True)
    await assign(app, bob.customer_id, fine["id"], AUG_1, immediately=True)
    await add_usage(app, alice, SEPT_5, count=2, model="linreg")
    await add_usage(app, bob, SEPT_5, count=3, model="linreg")

    first = await client.post(f"/finance/periods/{SEPT}/close", headers=bearer(finance))
    assert first.status_code == 200, first.text
    body = first.json()
    assert [c["customer_id"] for c in body["not_ratable"]] == [alice.customer_id]
    assert "cannot be invoiced" in body["not_ratable"][0]["reason"]
    (bob_invoice,) = body["created"]
    got = await client.get(f"/finance/invoices/{bob_invoice}", headers=bearer(finance))
    assert got.json()["customer_id"] == bob.customer_id
    assert got.json()["total_minor"] == 300  # 3 requests at 1 USD

    await _legacy_components(app, broken["id"], [_per_unit(unit_price="2")])
    second = await client.post(f"/finance/periods/{SEPT}/close", headers=bearer(finance))
    assert second.status_code == 200, second.text
    assert second.json()["not_ratable"] == []
    assert second.json()["already_closed"] == [bob.customer_id]
    (alice_invoice,) = second.json()["created"]
    got = await client.get(f"/finance/invoices/{alice_invoice}", headers=bearer(finance))
    assert got.json()["total_minor"] == 400
    numbers = [
        (await client.get(f"/finance/invoices/{i}", headers=bearer(finance))).json()["number"]
        for i in (bob_invoice, alice_invoice)
    ]
    assert [n[-6:] for n in numbers] == ["000001", "000002"]  # gapless: no number was burnt

"""Plan money at the door and in storage: every amount and quantity is finite and fits its
column exactly (else 422), reads back digit for digit on Postgres and on SQLite, and plan
writes hold up under concurrent requests."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from app.config import Settings
from app.inference.predictor import LoadedModules
from app.keys.schemas import CreatedKey, Scope
from app.main import create_app
from app.money.display import minor_string
from app.orm import CustomerPlan, Invoice, InvoiceLine, PlanVersion
from app.orm.base import ExactNumeric
from app.resources import resources
from tests.conftest import bearer, make_key, make_settings, run_migrations

PER_UNIT = {"unit": "request", "pricing": "per_unit", "unit_price": "1"}
LONG = "0." + "1" * 300


def _plan(**changes: Any) -> dict[str, Any]:
    return {"name": "p", "currency": "usd", **changes}


def _component(**changes: Any) -> dict[str, Any]:
    return _plan(components=[{**PER_UNIT, **changes}])


def _tiers(**tier: Any) -> dict[str, Any]:
    first = {"up_to": "10", "unit_price": "1", **tier}
    return _plan(
        components=[
            {"unit": "item", "pricing": "volume", "tiers": [first, {"up_to": None}]},
        ]
    )


BAD = [
    pytest.param(_plan(base_fee="1e400"), id="base_fee-1e400"),
    pytest.param(_plan(base_fee="Infinity"), id="base_fee-inf"),
    pytest.param(_plan(base_fee="NaN"), id="base_fee-nan"),
    pytest.param(_plan(base_fee="1e300"), id="base_fee-1e300"),
    pytest.param(_plan(base_fee="100000000000000"), id="base_fee-1e14"),
    pytest.param(_plan(base_fee="0.00000000001"), id="base_fee-11-places"),
    pytest.param(_plan(base_fee=LONG), id="base_fee-300-digits"),
    pytest.param(_plan(base_fee=10**30), id="base_fee-huge-int"),
    pytest.param(_plan(base_fee=0.1), id="base_fee-float"),
    pytest.param(_plan(spend_cap="1e100000"), id="spend_cap-1e100000"),
    pytest.param(_plan(spend_cap="-inf"), id="spend_cap-neg-inf"),
    pytest.param(_plan(spend_cap="12345678901234.12345678901"), id="spend_cap-11-places"),
    pytest.param(_component(unit_price="1e999999"), id="unit_price-1e999999"),
    pytest.param(_component(unit_price="0." + "7" * 199), id="unit_price-199-digits"),
    pytest.param(_component(unit_price=0.0004), id="unit_price-float"),
    pytest.param(_component(included="1e99999"), id="included-1e99999"),
    pytest.param(_component(included="0.0000001"), id="included-7-places"),
    pytest.param(
        _component(pricing="package", unit_price="1", package_size="1e99999"),
        id="package_size-1e99999",
    ),
    pytest.param(_tiers(up_to="1e99999"), id="up_to-1e99999"),
    pytest.param(_tiers(up_to="Infinity"), id="up_to-inf"),
    pytest.param(_tiers(unit_price="1e99999"), id="tier-unit_price-1e99999"),
    pytest.param(_tiers(flat_fee="1e400"), id="tier-flat_fee-1e400"),
    pytest.param(_tiers(flat_fee="0.12345678901"), id="tier-flat_fee-11-places"),
]


@pytest.fixture
async def admin(app: FastAPI) -> CreatedKey:
    return await make_key(app, "tollgate-ops", (Scope.admin,))


@pytest.mark.parametrize("body", BAD)
async def test_money_that_does_not_fit_is_422(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, body: dict[str, Any]
) -> None:
    created = await client.post("/admin/plans", json=body, headers=bearer(admin))
    assert created.status_code == 422, created.text
    error = created.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["details"][0]["loc"][0] == "body"
    good = await client.post("/admin/plans", json=_plan(), headers=bearer(admin))
    assert good.status_code == 201, good.text
    update = {k: v for k, v in body.items() if k != "name"}
    updated = await client.put(
        f"/admin/plans/{good.json()['id']}", json=update, headers=bearer(admin)
    )
    assert updated.status_code == 422, updated.text
    listed = await client.get("/admin/plans", headers=bearer(admin))
    assert listed.status_code == 200
    assert [p["current"]["version"] for p in listed.json()["data"]] == [1]


# The largest and the finest values each column holds; 12345678901234.1234567891 has 24
# significant digits, more than a double (SQLite's REAL) keeps.
EDGES = {
    "base_fee": "99999999999999.9999999999",
    "spend_cap": "12345678901234.1234567891",
    "components": [
        {
            "unit": "compute_second",
            "pricing": "per_unit",
            "unit_price": "0.0000000001",
            "included": "999999999999999999.999999",
        },
        {
            "unit": "item",
            "pricing": "graduated",
            "tiers": [
                {"up_to": "0.000001", "unit_price": "99999999999999.9999999999"},
                {"up_to": None, "unit_price": "1", "flat_fee": "98765432109876.5432109876"},
            ],
        },
    ],
}


@pytest.fixture(params=["postgres", "sqlite"])
def any_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for the test Postgres database, or for a fresh embedded SQLite file."""
    if request.param == "postgres":
        settings: Settings = request.getfixturevalue("settings")  # truncated after the test
        return settings
    url = f"sqlite+aiosqlite:///{tmp_path}/tollgate.db"
    run_migrations(url)
    return make_settings(url)


@pytest.fixture
async def any_db(any_settings: Settings, loaded_modules: LoadedModules) -> AsyncIterator[FastAPI]:
    application = create_app(any_settings, modules=loaded_modules)
    async with application.router.lifespan_context(application):
        yield application


async def test_money_at_the_edges_round_trips_exactly(any_db: FastAPI) -> None:
    admin = await make_key(any_db, "tollgate-ops", (Scope.admin,))
    transport = httpx.ASGITransport(app=any_db)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        created = await client.post(
            "/admin/plans",
            json={"name": "edges", "currency": "usd", **EDGES},
            headers=bearer(admin),
        )
        assert created.status_code == 201, created.text
        read = await client.get(f"/admin/plans/{created.json()['id']}", headers=bearer(admin))
    assert read.status_code == 200, read.text
    current = read.json()["current"]
    assert Decimal(current["base_fee"]) == Decimal(EDGES["base_fee"])
    assert current["base_fee"] == "99999999999999.9999999999"
    assert current["spend_cap"] == "12345678901234.1234567891"
    one, two = current["components"]
    assert Decimal(one["unit_price"]) == Decimal("1e-10")
    assert Decimal(one["included"]) == Decimal("999999999999999999.999999")
    assert [Decimal(t["unit_price"]) for t in two["tiers"]] == [
        Decimal("99999999999999.9999999999"),
        Decimal(1),
    ]
    assert Decimal(two["tiers"][1]["flat_fee"]) == Decimal("98765432109876.5432109876")

    # The invoice columns: NUMERIC(24, 6), (24, 10) and (30, 10), at their edges.
    line_values = {
        "quantity": Decimal("999999999999999999.999999"),
        "billable_quantity": Decimal("0.000001"),
        "unit_price": Decimal("12345678901234.1234567891"),
        "amount": Decimal("99999999999999999999.9999999999"),
    }
    now = datetime(2026, 9, 1, tzinfo=UTC)
    async with resources(any_db).sessionmaker() as session, session.begin():
        version_id = await session.scalar(select(PlanVersion.id))
        assert version_id is not None
        invoice = Invoice(
            customer_id=admin.customer_id,
            period="2026-09",
            period_start=now,
            period_end=now,
            currency="usd",
            subtotal_minor=0,
            total_minor=0,
        )
        session.add(invoice)
        await session.flush()
        session.add(
            InvoiceLine(
                invoice_id=invoice.id,
                position=1,
                plan_version_id=version_id,
                kind="usage",
                description="edges",
                amount_minor=0,
                period_start=now,
                period_end=now,
                **line_values,
            )
        )
    async with resources(any_db).sessionmaker() as session:
        line = await session.scalar(select(InvoiceLine))
        version = await session.scalar(select(PlanVersion))
    assert line is not None and version is not None
    assert {name: getattr(line, name) for name in line_values} == line_values
    assert version.base_fee == Decimal("99999999999999.9999999999")
    assert version.spend_cap == Decimal("12345678901234.1234567891")


async def test_concurrent_creates_of_one_plan_name_give_one_201_and_409s(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey
) -> None:
    responses = await asyncio.gather(
        *(client.post("/admin/plans", json=_plan(), headers=bearer(admin)) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 19, [
        r.text for r in responses if r.status_code >= 500
    ]


async def test_concurrent_assignments_leave_one_row_per_start(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey
) -> None:
    plans = [
        (await client.post("/admin/plans", json=_plan(name=f"p{i}"), headers=bearer(admin))).json()[
            "id"
        ]
        for i in range(10)
    ]
    customer = await make_key(app, "contested")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SQLAlchemy's "expected to delete 1 row" SAWarning
        responses = await asyncio.gather(
            *(
                client.put(
                    f"/admin/customers/{customer.customer_id}/plan",
                    json={"plan_id": plan_id},
                    headers=bearer(admin),
                )
                for plan_id in plans
            )
        )
    assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
    async with resources(app).sessionmaker() as session:
        rows = (
            await session.execute(
                select(CustomerPlan.effective_from, func.count())
                .where(CustomerPlan.customer_id == customer.customer_id)
                .group_by(CustomerPlan.effective_from)
            )
        ).all()
    assert [count for _, count in rows] == [1]  # the last assignment superseded the others


def test_exact_numeric_rounds_like_postgres_and_refuses_what_does_not_fit() -> None:
    money, lite = ExactNumeric(24, 10), sqlite.dialect()
    assert money.process_bind_param(Decimal("1.00000000005"), lite) == "1.0000000001"
    assert money.process_bind_param(Decimal("-0"), lite) == "0.0000000000"
    assert money.process_bind_param(7, lite) == "7.0000000000"
    assert money.process_result_value("7.0000000000", lite) == Decimal("7")
    assert money.process_result_value(0.1, lite) == Decimal("0.1")  # a row from before
    for too_big in ("1e14", "99999999999999.99999999995", "Infinity", "NaN"):
        for dialect in (lite, postgresql.dialect()):
            with pytest.raises(ValueError, match="does not fit"):
                money.process_bind_param(Decimal(too_big), dialect)
    with pytest.raises(TypeError):
        money.process_bind_param(0.1, lite)


async def test_revenue_and_margin_reports_sum_past_int64_exactly(any_db: FastAPI) -> None:
    """Three invoices near 2^63 minor units each (the most one invoice may hold) and one
    credit: the reports' sums pass 2^63, exactly, on both databases (SQLite's SUM would
    overflow)."""
    admin = await make_key(any_db, "tollgate-ops", (Scope.admin,))
    finance = await make_key(any_db, "tollgate-finance", (Scope.finance,))
    transport = httpx.ASGITransport(app=any_db)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        created = await client.post("/admin/plans", json=_plan(), headers=bearer(admin))
        assert created.status_code == 201, created.text
    amounts = [2**63 - 1, 2**63 - 2, 2**62 + 12_345, -(2**63) + 7]
    now = datetime(2026, 9, 1, tzinfo=UTC)
    customers = [await make_key(any_db, f"c{i}") for i in range(len(amounts))]
    async with resources(any_db).sessionmaker() as session, session.begin():
        version_id = await session.scalar(select(PlanVersion.id))
        for customer, amount in zip(customers, amounts, strict=True):
            invoice = Invoice(
                customer_id=customer.customer_id,
                period="2026-09",
                period_start=now,
                period_end=now,
                currency="usd",
                status="finalized",
                subtotal_minor=amount,
                total_minor=amount,
            )
            session.add(invoice)
            await session.flush()
            session.add(
                InvoiceLine(
                    invoice_id=invoice.id,
                    position=1,
                    plan_version_id=version_id,
                    kind="usage",
                    description="big",
                    model="cnn",
                    quantity=Decimal(1),
                    billable_quantity=Decimal(1),
                    unit_price=Decimal(1),
                    amount=Decimal(amount) / 100,
                    amount_minor=amount,
                    period_start=now,
                    period_end=now,
                )
            )
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        report = await client.get(
            "/finance/reports/revenue", params={"period": "2026-09"}, headers=bearer(finance)
        )
        margin = await client.get(
            "/finance/reports/margin", params={"period": "2026-09"}, headers=bearer(finance)
        )
    assert margin.status_code == 200, margin.text
    (section,) = margin.json()["sections"]
    assert section["revenue_minor"] == sum(amounts)
    assert [r["revenue_minor"] for r in section["by_plan"]] == [sum(amounts)]
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["total"] == [
        {
            "key": "total",
            "currency": "usd",
            "amount_minor": sum(amounts),
            "amount": minor_string(sum(amounts), "usd"),
        }
    ]
    assert sum(amounts) > 2**63  # the point of the test
    assert [r["amount_minor"] for r in body["by_model"]] == [sum(amounts)]
    assert sorted(r["amount_minor"] for r in body["by_customer"]) == sorted(amounts)

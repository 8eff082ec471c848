"""Margin: ledger compute cost by device and fixed costs against invoiced revenue."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI

from app.billing.margin import break_even_months, required_monthly_revenue
from app.config import Settings
from app.keys.schemas import Scope
from tests.billing.helpers import add_usage, assign, create_plan
from tests.conftest import bearer, make_key, make_settings

HOUR_US = 3_600_000_000


@pytest.fixture
def settings(pg_url: str, pg_sync: object) -> Settings:
    return make_settings(
        pg_url,
        cost_cpu_hour=Decimal("0.05"),
        cost_gpu_hour=Decimal("2.50"),
        cost_fixed_monthly=Decimal("0.30"),
    )


async def test_margin_and_break_even(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await make_key(app, "ops", (Scope.admin,))
    finance = await make_key(app, "fin", (Scope.finance,))
    plan = await create_plan(
        client,
        admin,
        name="m",
        currency="usd",
        components=[
            {"unit": "request", "pricing": "per_unit", "unit_price": "0.25", "model": "cnn"}
        ],
    )
    hana = await make_key(app, "hana")
    await assign(
        app, hana.customer_id, plan["id"], datetime(2026, 8, 1, tzinfo=UTC), immediately=True
    )
    at = datetime(2026, 9, 3, tzinfo=UTC)
    await add_usage(app, hana, at, count=4, compute_us=HOUR_US)  # 4 CPU hours = $0.20
    await add_usage(
        app,
        hana,
        at,
        count=1,
        compute_us=HOUR_US // 10,
        model="linreg",
        device="cuda",
        billable=False,
    )  # 0.1 GPU hour = $0.25, unbilled error
    assert (
        await client.post("/finance/periods/2026-09/close", headers=bearer(finance))
    ).status_code == 200

    report = (
        await client.get(
            "/finance/reports/margin",
            params={"period": "2026-09", "investment": "10", "yearly_upkeep": "2"},
            headers=bearer(finance),
        )
    ).json()
    assert report["revenue_minor"] == 100
    assert report["compute_cost_minor"] == 45
    assert report["fixed_cost_minor"] == 30
    assert report["operating_cost_minor"] == 75
    assert report["margin_minor"] == 25
    by_model = {r["key"]: (r["revenue_minor"], r["cost_minor"]) for r in report["by_model"]}
    assert by_model == {"cnn": (100, 20), "linreg": (0, 25)}
    assert [(r["key"], r["revenue_minor"], r["cost_minor"]) for r in report["by_plan"]] == [
        ("m v1", 100, 45)
    ]
    # C / (R - O - M/12) = 10 / (1.00 - 0.75 - 2/12) = 120 months; the upkeep is a running
    # cost, not a second investment.
    assert Decimal(report["break_even"]["months"]) == Decimal(120)
    # O + M/12 + C/H = 0.75 + 0.1666… + 10/12 = 1.75 a month recovers C within 12 months.
    assert report["break_even"]["horizon_months"] == 12
    assert report["break_even"]["required_monthly_revenue_minor"] == 175
    within_two_years = (
        await client.get(
            "/finance/reports/margin",
            params={"period": "2026-09", "investment": "10", "horizon_months": "24"},
            headers=bearer(finance),
        )
    ).json()["break_even"]
    assert within_two_years["required_monthly_revenue_minor"] == 75 + 42  # 10/24 = 0.4166…

    # Amounts in the query are bounded like money columns (they used to overflow: 500).
    for bad in ("1e30", "1e999999999", "100000000000000", "-1", "0.00000000001", "NaN"):
        for name in ("investment", "yearly_upkeep"):
            r = await client.get(
                "/finance/reports/margin",
                params={"period": "2026-09", name: bad},
                headers=bearer(finance),
            )
            assert r.status_code == 422, (name, bad, r.text)
    largest = await client.get(
        "/finance/reports/margin",
        params={"period": "2026-09", "investment": "99999999999999.9999999999"},
        headers=bearer(finance),
    )
    assert largest.status_code == 200, largest.text


def test_break_even_formula() -> None:
    # 1000 / (500 - 300 - 240/12) = 1000 / 180
    assert break_even_months(Decimal(1000), Decimal(240), Decimal(500), Decimal(300)) == Decimal(
        "5.56"
    )
    # The case: no investment, 1,200 a year of upkeep (100 a month), 47.36 of
    # revenue a month: it never breaks even (it used to say 25.34 months).
    assert break_even_months(Decimal(0), Decimal(1200), Decimal("47.36"), Decimal(0)) is None
    assert break_even_months(Decimal(0), Decimal(1200), Decimal(101), Decimal(0)) == 0
    assert required_monthly_revenue(Decimal(1200), Decimal(1200), Decimal(50), 12) == 250
    assert break_even_months(Decimal(1000), Decimal(0), Decimal(300), Decimal(300)) is None
    assert break_even_months(Decimal(1000), Decimal(0), Decimal(100), Decimal(300)) is None
    assert break_even_months(Decimal(100), Decimal(0), Decimal(30), Decimal(0)) == Decimal("3.33")


async def test_reports_name_lines_alike_and_only_compute_has_cost(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The revenue and the margin report call a base fee "(base fee)" and usage priced
    without a model filter "(all models)"; requests refused before any forward (an unknown
    model, an unavailable variant) are not listed as models with a cost."""
    admin = await make_key(app, "ops", (Scope.admin,))
    finance = await make_key(app, "fin", (Scope.finance,))
    plan = await create_plan(
        client,
        admin,
        name="flat",
        currency="usd",
        base_fee="5",
        components=[{"unit": "request", "pricing": "per_unit", "unit_price": "0.25"}],
    )
    kim = await make_key(app, "kim")
    await assign(
        app, kim.customer_id, plan["id"], datetime(2026, 8, 1, tzinfo=UTC), immediately=True
    )
    at = datetime(2026, 9, 3, tzinfo=UTC)
    await add_usage(app, kim, at, count=4, compute_us=HOUR_US)
    await add_usage(app, kim, at, count=2, compute_us=0, model="foo", billable=False)
    await add_usage(app, kim, at, count=1, compute_us=0, model="cnn:fp16", billable=False)
    closed = await client.post("/finance/periods/2026-09/close", headers=bearer(finance))
    assert closed.status_code == 200, closed.text

    revenue = (
        await client.get(
            "/finance/reports/revenue", params={"period": "2026-09"}, headers=bearer(finance)
        )
    ).json()
    margin = (
        await client.get(
            "/finance/reports/margin", params={"period": "2026-09"}, headers=bearer(finance)
        )
    ).json()
    in_revenue = {r["key"]: r["amount_minor"] for r in revenue["by_model"]}
    assert in_revenue == {"(base fee)": 500, "(all models)": 100}
    in_margin = {r["key"]: r["revenue_minor"] for r in margin["by_model"]}
    assert {k: v for k, v in in_margin.items() if v} == in_revenue
    assert not {"foo", "cnn:fp16"} & set(in_margin)
    assert "cnn" in in_margin  # the 4 CPU hours that did run

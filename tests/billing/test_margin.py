"""Margin: ledger compute cost by device and fixed costs against invoiced revenue."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.billing.margin import NOT_BILLED, break_even_months, required_monthly_revenue
from app.config import Settings
from app.keys.schemas import Scope
from tests.billing.helpers import add_usage, assign, create_plan
from tests.conftest import bearer, make_key, make_settings, run_migrations

HOUR_US = 3_600_000_000


@pytest.fixture(params=["postgres", "sqlite"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """The reports' SQL (a window over plan assignments) on both databases."""
    if request.param == "postgres":
        request.getfixturevalue("pg_sync")  # truncated after the test
        url: str = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/tollgate.db"
        run_migrations(url)
    return make_settings(
        url,
        cost_cpu_hour=Decimal("0.05"),
        cost_gpu_hour=Decimal("2.50"),
        cost_fixed_monthly=Decimal("0.30"),
        cost_rates={"gbp": {"gpu_hour": "2.00", "cpu_hour": "0.04", "fixed_monthly": "0.50"}},
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

    body = (
        await client.get(
            "/finance/reports/margin",
            params={"period": "2026-09", "investment": "10", "yearly_upkeep": "2"},
            headers=bearer(finance),
        )
    ).json()
    assert [s["currency"] for s in body["sections"]] == ["gbp", "usd"]
    report = body["sections"][1]
    assert report["revenue_minor"] == 100
    assert report["revenue"] == "1.00"
    assert report["compute_cost_minor"] == 45
    assert report["fixed_cost_minor"] == 30
    assert report["operating_cost_minor"] == 75
    assert report["margin_minor"] == 25
    assert (report["operating_cost"], report["margin"]) == ("0.75", "0.25")
    assert report["compute_seconds"] == "14760"  # 4 h + 0.1 h
    by_model = {r["key"]: (r["revenue_minor"], r["cost_minor"]) for r in report["by_model"]}
    # The failed GPU request's cost is work no invoice charges for, not a model of its own.
    assert by_model == {"cnn": (100, 20), "(not billed)": (0, 25)}
    assert [(r["key"], r["revenue_minor"], r["cost_minor"]) for r in report["by_plan"]] == [
        ("m v1", 100, 45)
    ]
    # C / (R - O - M/12) = 10 / (1.00 - 0.75 - 2/12) = 120 months; the upkeep is a running
    # cost, not a second investment.
    assert report["break_even"]["months"] == "120"
    assert report["break_even"]["investment"] == "10"
    # O + M/12 + C/H = 0.75 + 0.1666… + 10/12 = 1.75 a month recovers C within 12 months.
    assert report["break_even"]["horizon_months"] == 12
    assert report["break_even"]["required_monthly_revenue_minor"] == 175
    assert report["break_even"]["required_monthly_revenue"] == "1.75"
    within_two_years = (
        await client.get(
            "/finance/reports/margin",
            params={"period": "2026-09", "investment": "10", "horizon_months": "24"},
            headers=bearer(finance),
        )
    ).json()["sections"][1]["break_even"]
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
    ).json()["sections"][-1]
    assert margin["currency"] == "usd"
    in_revenue = {r["key"]: r["amount_minor"] for r in revenue["by_model"]}
    assert in_revenue == {"(base fee)": 500, "(all models)": 100}
    in_margin = {r["key"]: r["revenue_minor"] for r in margin["by_model"]}
    assert {k: v for k, v in in_margin.items() if v} == in_revenue
    assert not {"foo", "cnn:fp16"} & set(in_margin)
    assert "cnn" in in_margin  # the 4 CPU hours that did run
    assert NOT_BILLED not in in_margin  # the refused requests ran nothing: no cost at all


async def test_every_currency_has_its_revenue_margin_and_break_even(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """USD (the cost currency), EUR (no cost rates) and GBP (rates in TOLLGATE_COST_RATES)
    customers in one period: each currency has its own revenue, margin and break-even; EUR
    shows its revenue with cost and margin null, never dropped or converted; usage cost goes
    to the currency of the customer's plan; a customer without a plan costs in USD."""
    admin = await make_key(app, "ops", (Scope.admin,))
    finance = await make_key(app, "fin", (Scope.finance,))
    august = datetime(2026, 8, 1, tzinfo=UTC)
    plans = {}
    for name, currency, extra in (
        ("us", "usd", {"model": "cnn"}),
        ("eu", "eur", {}),
        ("uk", "gbp", {}),
    ):
        plans[currency] = await create_plan(
            client,
            admin,
            name=name,
            currency=currency,
            base_fee="5" if currency == "eur" else "0",
            components=[{"unit": "request", "pricing": "per_unit", "unit_price": "0.25", **extra}],
        )
    ann, eva, gus, nob = [await make_key(app, n) for n in ("ann", "eva", "gus", "nob")]
    for key, currency in ((ann, "usd"), (eva, "eur"), (gus, "gbp")):
        await assign(app, key.customer_id, plans[currency]["id"], august, immediately=True)
    at = datetime(2026, 9, 3, tzinfo=UTC)
    await add_usage(app, ann, at, count=4, compute_us=HOUR_US)  # 0.20 USD
    await add_usage(app, eva, at, count=2, compute_us=HOUR_US)  # 2 CPU hours, EUR
    # A failed request that names a model nobody serves, after some GPU time.
    await add_usage(
        app, eva, at, compute_us=HOUR_US // 10, model="foo", device="cuda", billable=False
    )
    await add_usage(app, gus, at, compute_us=HOUR_US)  # 0.04 GBP
    await add_usage(app, nob, at, compute_us=HOUR_US, device="cuda")  # 2.50 USD, no plan
    closed = await client.post("/finance/periods/2026-09/close", headers=bearer(finance))
    assert closed.status_code == 200, closed.text

    revenue = (
        await client.get(
            "/finance/reports/revenue", params={"period": "2026-09"}, headers=bearer(finance)
        )
    ).json()
    assert {(r["currency"], r["amount_minor"], r["amount"]) for r in revenue["total"]} == {
        ("usd", 100, "1.00"),
        ("eur", 550, "5.50"),
        ("gbp", 25, "0.25"),
    }
    body = (
        await client.get(
            "/finance/reports/margin",
            params={"period": "2026-09", "investment": "10", "currency": "GBP"},
            headers=bearer(finance),
        )
    ).json()
    assert (body["cost_currency"], body["investment_currency"]) == ("usd", "gbp")
    sections = {s["currency"]: s for s in body["sections"]}
    assert list(sections) == ["eur", "gbp", "usd"]

    # Both reports name the billed lines alike, currency by currency.
    for currency, section in sections.items():
        billed = {
            r["key"]: r["amount_minor"] for r in revenue["by_model"] if r["currency"] == currency
        }
        in_margin = {
            r["key"]: r["revenue_minor"] for r in section["by_model"] if r["revenue_minor"]
        }
        assert in_margin == billed, currency
        assert "foo" not in {r["key"] for r in section["by_model"]}

    eur = sections["eur"]
    assert (eur["revenue_minor"], eur["revenue"]) == (550, "5.50")
    assert eur["cost_rates"] is None
    assert "no cost rates for EUR" in eur["note"]
    for name in ("compute_cost", "fixed_cost", "operating_cost", "margin"):
        assert eur[f"{name}_minor"] is None and eur[name] is None, name
    assert eur["compute_seconds"] == "7560"  # 2 h + 0.1 h: known, only not priced
    assert {r["key"]: (r["revenue_minor"], r["cost_minor"]) for r in eur["by_model"]} == {
        "(base fee)": (500, None),
        "(all models)": (50, None),
        "cnn": (0, None),
        NOT_BILLED: (0, None),
    }
    assert eur["break_even"]["monthly_revenue"] == "5.50"
    assert eur["break_even"]["months"] is None
    assert eur["break_even"]["required_monthly_revenue_minor"] is None
    assert "no cost rates for EUR" in eur["break_even"]["note"]

    gbp = sections["gbp"]
    assert gbp["cost_rates"] == {"gpu_hour": "2", "cpu_hour": "0.04", "fixed_monthly": "0.5"}
    assert (gbp["compute_cost_minor"], gbp["fixed_cost_minor"], gbp["margin_minor"]) == (
        4,
        50,
        25 - 54,
    )
    assert gbp["margin"] == "-0.29"
    # C = 10 GBP: R - O = 0.25 - 0.54 < 0 never pays back; O + C/12 = 0.54 + 0.8333…
    assert gbp["break_even"]["investment"] == "10"
    assert gbp["break_even"]["months"] is None
    assert gbp["break_even"]["required_monthly_revenue"] == "1.37"

    usd = sections["usd"]
    assert (usd["revenue_minor"], usd["compute_cost_minor"], usd["fixed_cost_minor"]) == (
        100,
        20 + 250,
        30,
    )
    assert {r["key"]: (r["revenue_minor"], r["cost_minor"]) for r in usd["by_plan"]} == {
        "us v1": (100, 20),
        "(no plan)": (0, 250),
    }
    assert {r["key"]: (r["revenue_minor"], r["cost_minor"]) for r in usd["by_model"]} == {
        "cnn": (100, 20),
        NOT_BILLED: (0, 250),
    }
    # C and M were given in GBP: the USD break-even is its operating cost alone.
    assert usd["break_even"]["investment"] == "0"
    assert usd["break_even"]["required_monthly_revenue_minor"] == 300
    assert "given in GBP" in usd["break_even"]["note"]


async def test_cost_follows_the_plan_in_force_when_served(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Usage costs in the currency and under the plan in force when it was served: a USD
    plan in August, a GBP plan from September, another GBP plan from September 10."""
    admin = await make_key(app, "ops", (Scope.admin,))
    finance = await make_key(app, "fin", (Scope.finance,))
    a = await create_plan(client, admin, name="a", currency="usd")
    b = await create_plan(client, admin, name="b", currency="gbp")
    c = await create_plan(client, admin, name="c", currency="gbp")
    ivy = await make_key(app, "ivy")
    await assign(app, ivy.customer_id, a["id"], datetime(2026, 8, 1, tzinfo=UTC), immediately=True)
    await add_usage(app, ivy, datetime(2026, 8, 20, tzinfo=UTC), compute_us=HOUR_US)
    await assign(app, ivy.customer_id, b["id"], datetime(2026, 8, 25, tzinfo=UTC))
    await add_usage(app, ivy, datetime(2026, 9, 3, tzinfo=UTC), count=2, compute_us=HOUR_US)
    await assign(app, ivy.customer_id, c["id"], datetime(2026, 9, 10, tzinfo=UTC), immediately=True)
    await add_usage(app, ivy, datetime(2026, 9, 12, tzinfo=UTC), compute_us=HOUR_US)

    async def by_plan(period: str) -> dict[tuple[str, str], str]:
        body = (
            await client.get(
                "/finance/reports/margin", params={"period": period}, headers=bearer(finance)
            )
        ).json()
        return {
            (s["currency"], r["key"]): r["compute_seconds"]
            for s in body["sections"]
            for r in s["by_plan"]
        }

    assert await by_plan("2026-08") == {("usd", "a v1"): "3600"}
    assert await by_plan("2026-09") == {("gbp", "b v1"): "7200", ("gbp", "c v1"): "3600"}


def test_cost_rates_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="repeats the cost currency"):
        make_settings("sqlite://", cost_rates={"usd": {"gpu_hour": "1", "cpu_hour": "1"}})
    with pytest.raises(ValueError, match="three-letter"):
        make_settings("sqlite://", cost_rates={"euro": {"gpu_hour": "1", "cpu_hour": "1"}})
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        make_settings("sqlite://", cost_rates={"eur": {"gpu_hour": "-1", "cpu_hour": "1"}})
    with pytest.raises(ValueError, match="cpu_hour"):
        make_settings("sqlite://", cost_rates={"eur": {"gpu_hour": "1"}})
    with pytest.raises(ValueError, match="Extra inputs"):
        make_settings("sqlite://", cost_rates={"eur": {"gpu_hour": "1", "cpu_hour": "1", "x": 1}})
    settings = make_settings(
        "sqlite://", cost_rates={"EUR": {"gpu_hour": "2.30", "cpu_hour": "0.05"}}
    )
    assert settings.cost_rates["eur"].fixed_monthly == 0

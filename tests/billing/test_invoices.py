"""Usage → invoices through the API: exact money, versioned plans, mid-period changes,
preview equals close, closing twice is a no-op."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from app.clock import ManualClock
from app.keys.schemas import CreatedKey, Scope
from app.limits.policy import MAX_PER_MINUTE
from app.money.periods import Period
from tests.billing.helpers import add_usage, assign, create_plan
from tests.billing.pdftext import pdf_words
from tests.conftest import bearer, make_key

SEPT = "2026-09"
AUG_1 = datetime(2026, 8, 1, tzinfo=UTC)
SEPT_5 = datetime(2026, 9, 5, 12, tzinfo=UTC)
SEPT_16 = datetime(2026, 9, 16, tzinfo=UTC)
SEPT_20 = datetime(2026, 9, 20, tzinfo=UTC)

STRIPE_TIERS = [
    {"up_to": "5", "unit_price": "7"},
    {"up_to": "10", "unit_price": "6.50"},
    {"up_to": None, "unit_price": "6"},
]


@pytest.fixture
async def admin(app: FastAPI) -> CreatedKey:
    return await make_key(app, "tollgate-ops", (Scope.admin,))


@pytest.fixture
async def finance(app: FastAPI) -> CreatedKey:
    return await make_key(app, "tollgate-finance", (Scope.finance,))


async def _close(client: httpx.AsyncClient, finance: CreatedKey, period: str) -> dict:  # type: ignore[type-arg]
    response = await client.post(f"/finance/periods/{period}/close", headers=bearer(finance))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _invoice_for(
    client: httpx.AsyncClient, finance: CreatedKey, customer_id: int, period: str = SEPT
) -> dict:  # type: ignore[type-arg]
    listing = await client.get(
        "/finance/invoices",
        params={"customer": customer_id, "period": period},
        headers=bearer(finance),
    )
    (summary,) = listing.json()["data"]
    return (await client.get(f"/finance/invoices/{summary['id']}", headers=bearer(finance))).json()  # type: ignore[no-any-return]


async def test_mixed_plans_close_exactly_and_once(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    metered = await create_plan(
        client,
        admin,
        name="metered",
        currency="usd",
        base_fee="10",
        components=[{"unit": "request", "pricing": "per_unit", "unit_price": "0.0004"}],
    )
    tiered = await create_plan(
        client,
        admin,
        name="tiered",
        currency="usd",
        components=[
            {"unit": "item", "pricing": "graduated", "tiers": STRIPE_TIERS, "model": "cnn"},
            {"unit": "item", "pricing": "volume", "tiers": STRIPE_TIERS, "model": "linreg"},
        ],
    )
    alice, bob = await make_key(app, "alice"), await make_key(app, "bob")
    await assign(app, alice.customer_id, metered["id"], AUG_1, immediately=True)
    await assign(app, bob.customer_id, tiered["id"], AUG_1, immediately=True)
    await add_usage(app, alice, SEPT_5, count=12_345)
    await add_usage(app, alice, SEPT_5, count=50, billable=False)  # errors are never billed
    await add_usage(app, alice, datetime(2026, 10, 1, tzinfo=UTC), count=7)  # next period
    await add_usage(app, bob, SEPT_5, count=4, items=5, model="cnn")  # 20 items, graduated
    await add_usage(app, bob, SEPT_20, count=6, items=1, model="linreg")  # 6 items, volume

    previews = {}
    for key in (alice, bob):
        response = await client.get(
            "/finance/invoices/preview",
            params={"customer": key.customer_id, "period": SEPT},
            headers=bearer(finance),
        )
        assert response.status_code == 200, response.text
        previews[key.customer_id] = response.json()

    first = await _close(client, finance, SEPT)
    assert sorted(first["created"]) == [1, 2]
    a = await _invoice_for(client, finance, alice.customer_id)
    b = await _invoice_for(client, finance, bob.customer_id)

    # 12,345 x $0.0004 = $4.938 → 494 cents (rounded once); + $10 base fee.
    assert [(line["kind"], line["amount_minor"]) for line in a["lines"]] == [
        ("base_fee", 1000),
        ("usage", 494),
    ]
    assert a["total_minor"] == 1494 and a["currency"] == "usd" and a["status"] == "finalized"
    assert a["collection"] == "local: Stripe is not configured, this invoice is not collected"
    # DESIGN.md: q=20 graduated → $127.50; q=6 volume → $39.00.
    assert [line["amount_minor"] for line in b["lines"]] == [12750, 3900]
    assert b["total_minor"] == 16650
    assert {a["number"], b["number"]} == {"TG-2026-000001", "TG-2026-000002"}

    for invoice in (a, b):
        preview = previews[invoice["customer_id"]]
        assert preview["total_minor"] == invoice["total_minor"]
        strip = lambda lines: [{k: v for k, v in x.items() if k != "position"} for x in lines]  # noqa: E731
        assert strip(preview["lines"]) == strip(invoice["lines"])

    second = await _close(client, finance, SEPT)
    assert second["created"] == []
    assert sorted(second["already_closed"]) == [alice.customer_id, bob.customer_id]
    assert await _invoice_for(client, finance, alice.customer_id) == a
    everything = (await client.get("/finance/invoices", headers=bearer(finance))).json()["data"]
    assert len(everything) == 2

    report = (
        await client.get(
            "/finance/reports/revenue", params={"period": SEPT}, headers=bearer(finance)
        )
    ).json()
    assert report["total"] == [
        {"key": "total", "currency": "usd", "amount_minor": 18144, "amount": "181.44"}
    ]
    assert {r["key"]: r["amount_minor"] for r in report["by_plan"]} == {
        "metered v1": 1494,
        "tiered v1": 16650,
    }
    assert {r["key"]: r["amount_minor"] for r in report["by_customer"]} == {
        "alice": 1494,
        "bob": 16650,
    }


async def test_mid_period_plan_change_splits_and_prorates(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    basic = await create_plan(
        client,
        admin,
        name="basic",
        currency="usd",
        base_fee="10",
        components=[
            {"unit": "request", "pricing": "per_unit", "unit_price": "0.01", "included": "100"}
        ],
    )
    pro = await create_plan(
        client,
        admin,
        name="pro",
        currency="usd",
        base_fee="20",
        components=[{"unit": "compute_second", "pricing": "per_unit", "unit_price": "0.5"}],
    )
    carol = await make_key(app, "carol")
    await assign(app, carol.customer_id, basic["id"], AUG_1, immediately=True)
    await add_usage(app, carol, SEPT_5, count=300)  # before the change
    await assign(app, carol.customer_id, pro["id"], SEPT_16, immediately=True)
    await add_usage(app, carol, SEPT_20, count=10, compute_us=250_000)  # 2.5 compute seconds

    await _close(client, finance, SEPT)
    invoice = await _invoice_for(client, finance, carol.customer_id)
    lines = [
        (x["kind"], x["amount_minor"], x["period_start"][:10], x["period_end"][:10])
        for x in invoice["lines"]
    ]
    assert lines == [
        ("base_fee", 500, "2026-09-01", "2026-09-16"),  # $10 x 15/30 days
        ("usage", 250, "2026-09-01", "2026-09-16"),  # (300 - 100x15/30) x $0.01
        ("base_fee", 1000, "2026-09-16", "2026-10-01"),  # $20 x 15/30
        ("usage", 125, "2026-09-16", "2026-10-01"),  # 2.5 s x $0.50
    ]
    assert invoice["total_minor"] == 1875
    assert len({x["plan_version_id"] for x in invoice["lines"]}) == 2


async def test_plan_edits_never_change_a_customers_version(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    plan = await create_plan(
        client,
        admin,
        name="flat",
        currency="eur",
        components=[
            {"unit": "item", "pricing": "package", "unit_price": "2.50", "package_size": "1000"}
        ],
    )
    dave = await make_key(app, "dave")
    await assign(app, dave.customer_id, plan["id"], AUG_1, immediately=True)
    edited = await client.put(
        f"/admin/plans/{plan['id']}",
        json={
            "currency": "eur",
            "components": [
                {"unit": "item", "pricing": "package", "unit_price": "9", "package_size": "1000"}
            ],
        },
        headers=bearer(admin),
    )
    assert edited.status_code == 200
    assert edited.json()["versions"] == [1, 2]
    await add_usage(app, dave, SEPT_5, count=1, items=1001)  # two packages
    await _close(client, finance, SEPT)
    invoice = await _invoice_for(client, finance, dave.customer_id)
    assert invoice["total_minor"] == 500 and invoice["currency"] == "eur"


async def test_invoice_csv_and_period_export(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    plan = await create_plan(
        client,
        admin,
        name="csv",
        currency="usd",
        components=[{"unit": "request", "pricing": "per_unit", "unit_price": "0.25"}],
    )
    erin = await make_key(app, "erin")
    await assign(app, erin.customer_id, plan["id"], AUG_1, immediately=True)
    await add_usage(app, erin, SEPT_5, count=3)
    await _close(client, finance, SEPT)
    invoice = await _invoice_for(client, finance, erin.customer_id)

    one = await client.get(f"/finance/invoices/{invoice['id']}.csv", headers=bearer(finance))
    assert one.status_code == 200 and one.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(one.text)))
    assert [
        (r["invoice_number"], r["quantity"], r["unit_price"], r["amount"], r["amount_minor"])
        for r in rows
    ] == [(invoice["number"], "3", "0.25", "0.75", "75")]
    (row,) = rows
    assert (row["invoice_subtotal"], row["invoice_tax"], row["invoice_total"]) == (
        "0.75",
        "0.00",
        "0.75",
    )
    assert row["issued_at"] == invoice["issued_at"].replace("Z", "+00:00")
    export = await client.get(f"/finance/periods/{SEPT}/lines.csv", headers=bearer(finance))
    assert len(list(csv.DictReader(io.StringIO(export.text)))) == 1
    assert (
        await client.get("/finance/invoices/999999", headers=bearer(finance))
    ).status_code == 404


async def test_closing_too_early_and_bad_periods(
    app: FastAPI, client: httpx.AsyncClient, finance: CreatedKey
) -> None:
    now = datetime.now(UTC)
    current = f"{now.year:04d}-{now.month:02d}"
    early = await client.post(f"/finance/periods/{current}/close", headers=bearer(finance))
    assert early.status_code == 409
    assert early.json()["error"]["type"] == "period_not_closable"
    for bad in ("2026-13", "2026-1", "abc"):
        response = await client.post(f"/finance/periods/{bad}/close", headers=bearer(finance))
        assert response.status_code == 422, bad


async def test_plan_admin_rules(app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey) -> None:
    plan = await create_plan(client, admin, name="rules", currency="usd", components=[])
    duplicate = await client.post(
        "/admin/plans", json={"name": "rules", "currency": "usd"}, headers=bearer(admin)
    )
    assert duplicate.status_code == 409
    invalid = await client.post(
        "/admin/plans",
        json={
            "name": "bad",
            "currency": "usd",
            "components": [
                {
                    "unit": "request",
                    "pricing": "graduated",
                    "tiers": [
                        {"up_to": "10", "unit_price": "1"},
                        {"up_to": "5", "unit_price": "1"},
                    ],
                }
            ],
        },
        headers=bearer(admin),
    )
    assert invalid.status_code == 422
    assert invalid.json()["error"]["type"] == "invalid_plan"
    frank = await make_key(app, "frank")
    await assign(app, frank.customer_id, plan["id"], AUG_1)
    in_use = await client.delete(f"/admin/plans/{plan['id']}", headers=bearer(admin))
    assert in_use.status_code == 409
    assert in_use.json()["error"]["type"] == "plan_in_use"
    unused = await create_plan(client, admin, name="unused", currency="usd", components=[])
    assert (
        await client.delete(f"/admin/plans/{unused['id']}", headers=bearer(admin))
    ).status_code == 204
    other_currency = await create_plan(client, admin, name="yen", currency="jpy", components=[])
    switch = await client.put(
        f"/admin/customers/{frank.customer_id}/plan",
        json={"plan_id": other_currency["id"], "effective": "immediately"},
        headers=bearer(admin),
    )
    assert switch.status_code == 409
    later = await client.put(
        f"/admin/customers/{frank.customer_id}/plan",
        json={"plan_id": other_currency["id"]},
        headers=bearer(admin),
    )
    assert later.status_code == 200
    assert later.json()["effective_from"].endswith("T00:00:00Z")
    developer = await make_key(app, "frank")
    assert (await client.get("/admin/plans", headers=bearer(developer))).status_code == 403
    assert (await client.get("/finance/invoices", headers=bearer(developer))).status_code == 403


async def test_invoice_pdf_is_a_real_pdf_with_the_lines(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    from pypdf import PdfReader

    plan = await create_plan(
        client,
        admin,
        name="pdf",
        currency="usd",
        base_fee="12.5",
        components=[{"unit": "request", "pricing": "per_unit", "unit_price": "0.25"}],
    )
    gina = await make_key(app, "gina")
    await assign(app, gina.customer_id, plan["id"], AUG_1, immediately=True)
    await add_usage(app, gina, SEPT_5, count=4)
    await _close(client, finance, SEPT)
    invoice = await _invoice_for(client, finance, gina.customer_id)
    response = await client.get(f"/finance/invoices/{invoice['id']}.pdf", headers=bearer(finance))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert invoice["number"] in text
    assert "Amount (USD)" in text  # line amounts in the invoice's currency
    assert "Monthly base fee" in text and "12.50" in text
    assert "1.00" in text  # 4 requests x $0.25
    assert "13.50 USD" in text  # total


async def test_concurrent_closes_write_each_invoice_once(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    import asyncio

    plan = await create_plan(
        client,
        admin,
        name="race",
        currency="usd",
        components=[{"unit": "request", "pricing": "per_unit", "unit_price": "1"}],
    )
    for name in ("r1", "r2", "r3"):
        key = await make_key(app, name)
        await assign(app, key.customer_id, plan["id"], AUG_1, immediately=True)
        await add_usage(app, key, SEPT_5, count=2)
    responses = await asyncio.gather(
        *(client.post(f"/finance/periods/{SEPT}/close", headers=bearer(finance)) for _ in range(4))
    )
    assert {r.status_code for r in responses} <= {200, 409}
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"]["type"] == "close_conflict"
    invoices = (await client.get("/finance/invoices", headers=bearer(finance))).json()["data"]
    assert len(invoices) == 3
    assert sorted(i["number"] for i in invoices) == [
        "TG-2026-000001",
        "TG-2026-000002",
        "TG-2026-000003",
    ]


async def test_variants_priced_separately(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    plan = await create_plan(
        client,
        admin,
        name="by-variant",
        currency="usd",
        components=[
            {
                "unit": "item",
                "pricing": "per_unit",
                "unit_price": "0.02",
                "model": "cnn",
                "variant": "fp32",
            },
            {
                "unit": "item",
                "pricing": "per_unit",
                "unit_price": "0.01",
                "model": "cnn",
                "variant": "int8",
            },
        ],
    )
    ivy = await make_key(app, "ivy")
    await assign(app, ivy.customer_id, plan["id"], AUG_1, immediately=True)
    await add_usage(app, ivy, SEPT_5, count=10, items=10)  # 100 fp32 items
    await add_usage(app, ivy, SEPT_5, count=10, items=10, variant="int8")  # 100 int8 items
    await _close(client, finance, SEPT)
    invoice = await _invoice_for(client, finance, ivy.customer_id)
    assert [(x["variant"], x["quantity"], x["amount_minor"]) for x in invoice["lines"]] == [
        ("fp32", "100", 200),
        ("int8", "100", 100),
    ]


async def test_variants_called_through_v1_are_billed_apart_and_named(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: CreatedKey,
    finance: CreatedKey,
    clock: ManualClock,
) -> None:
    """The base cnn (``fp32``) and cnn:int8 priced apart, called through /v1: one invoice,
    two lines, each naming its variant (JSON, CSV and PDF), at different amounts."""
    plan = await create_plan(
        client,
        admin,
        name="by-variant-v1",
        currency="usd",
        components=[
            {
                "unit": "request",
                "pricing": "per_unit",
                "unit_price": "0.50",
                "model": "cnn",
                "variant": "fp32",
            },
            {
                "unit": "request",
                "pricing": "per_unit",
                "unit_price": "0.20",
                "model": "cnn",
                "variant": "int8",
            },
        ],
    )
    key = await make_key(app, "variant-buyer")
    period = Period.containing(clock.now())
    await assign(app, key.customer_id, plan["id"], period.start, immediately=True)
    image = {"inputs": [[[0.5] * 28] * 28] * 3}
    served = []
    for ref, times in (("cnn", 3), ("cnn:int8", 2)):
        for _ in range(times):
            response = await client.post(
                f"/v1/models/{ref}/predict", json=image, headers=bearer(key)
            )
            assert response.status_code == 200, response.text
            served.append((response.json()["model"], response.json()["variant"]))
    assert served == [("cnn", None)] * 3 + [("cnn:int8", "int8")] * 2

    clock.set(period.end + timedelta(days=2))  # past the close grace
    await _close(client, finance, str(period))
    invoice = await _invoice_for(client, finance, key.customer_id, str(period))
    lines = [
        (x["model"], x["variant"], x["quantity"], x["amount_minor"], x["description"])
        for x in invoice["lines"]
    ]
    assert lines == [
        ("cnn", "fp32", "3", 150, "cnn, variant fp32 (base): 0.50 per request"),
        ("cnn", "int8", "2", 40, "cnn, variant int8: 0.20 per request"),
    ]
    assert invoice["total_minor"] == 190

    csv_text = (
        await client.get(f"/finance/invoices/{invoice['id']}.csv", headers=bearer(finance))
    ).text
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert [(r["variant"], r["description"]) for r in rows] == [
        ("fp32", "cnn, variant fp32 (base): 0.50 per request"),
        ("int8", "cnn, variant int8: 0.20 per request"),
    ]
    pdf = await client.get(f"/finance/invoices/{invoice['id']}.pdf", headers=bearer(finance))
    words = pdf_words(pdf.content)
    for *_, description in lines:
        assert description in words, description


@pytest.mark.parametrize("bad", ["0", str(2**63), "9" * 25, "9" * 5000])
async def test_ids_outside_bigint_are_422(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey, bad: str
) -> None:
    plan = await create_plan(client, admin, name="ids", currency="usd", components=[])
    customer = (await make_key(app, "ids")).customer_id
    definition = {"currency": "usd", "components": []}
    requests = [
        (admin, "GET", f"/admin/plans/{bad}", None, None),
        (admin, "GET", f"/admin/plans/{bad}/versions/1", None, None),
        (admin, "PUT", f"/admin/plans/{bad}", None, definition),
        (admin, "DELETE", f"/admin/plans/{bad}", None, None),
        (admin, "PUT", f"/admin/customers/{bad}/plan", None, {"plan_id": plan["id"]}),
        (finance, "GET", f"/finance/invoices/{bad}", None, None),
        (finance, "GET", f"/finance/invoices/{bad}.csv", None, None),
        (finance, "GET", f"/finance/invoices/{bad}.pdf", None, None),
        (finance, "GET", "/finance/invoices", {"customer": bad}, None),
        (finance, "GET", "/finance/invoices/preview", {"customer": bad}, None),
    ]
    for key, method, path, params, body in requests:
        response = await client.request(method, path, params=params, json=body, headers=bearer(key))
        assert response.status_code == 422, (method, path, params, response.text)
        assert response.json()["error"]["type"] == "invalid_request"
    if len(bad) < 100:  # a JSON number of 5000 digits is refused by the JSON parser itself
        assigned = await client.put(
            f"/admin/customers/{customer}/plan",
            content=f'{{"plan_id": {bad}}}',
            headers={**bearer(admin), "Content-Type": "application/json"},
        )
        assert assigned.status_code == 422, assigned.text


async def test_invoice_routes_keep_their_formats_apart(
    app: FastAPI, client: httpx.AsyncClient, finance: CreatedKey
) -> None:
    for path in ("/finance/invoices/1", "/finance/invoices/1.csv", "/finance/invoices/1.pdf"):
        response = await client.get(path, headers=bearer(finance))
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "invoice_not_found"
    for path in ("/finance/invoices/abc", "/finance/invoices/1.txt", "/finance/invoices/1.csv.pdf"):
        assert (await client.get(path, headers=bearer(finance))).status_code == 422, path


@pytest.mark.parametrize("field", ["requests_per_minute", "items_per_minute"])
async def test_plan_limits_beyond_the_limiter_are_422(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, field: str
) -> None:
    for value in (MAX_PER_MINUTE + 1, 2**31, 2**63, 10**30):
        response = await client.post(
            "/admin/plans",
            json={"name": f"huge-{value}", "currency": "usd", field: value},
            headers=bearer(admin),
        )
        assert response.status_code == 422, response.text
    plan = await create_plan(
        client, admin, name="largest", currency="usd", **{field: MAX_PER_MINUTE}
    )
    assert plan["current"][field] == MAX_PER_MINUTE


@pytest.mark.parametrize("bad", ["0000-01", "1969-12", "9000-01", "9999-12", "2024-01\n"])
async def test_periods_outside_the_calendar_are_422(
    app: FastAPI, client: httpx.AsyncClient, finance: CreatedKey, bad: str
) -> None:
    customer = (await make_key(app, "periods")).customer_id
    requests = [
        ("POST", f"/finance/periods/{quote(bad)}/close", None),
        ("GET", f"/finance/periods/{quote(bad)}/lines.csv", None),
        ("GET", "/finance/reports/margin", {"period": bad}),
        ("GET", "/finance/reports/revenue", {"period": bad}),
        ("GET", "/finance/invoices", {"period": bad}),
        ("GET", "/finance/invoices/preview", {"customer": customer, "period": bad}),
    ]
    for method, path, params in requests:
        response = await client.request(method, path, params=params, headers=bearer(finance))
        assert response.status_code == 422, (method, path, params, response.text)
        assert response.json()["error"]["type"] in ("invalid_period", "invalid_request")
    closed = await client.post("/finance/periods/8999-12/close", headers=bearer(finance))
    assert closed.status_code == 409  # the last period accepted, not yet over

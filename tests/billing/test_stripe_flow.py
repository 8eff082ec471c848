"""Closed invoices collected through Stripe (the local stand-in, over HTTP, with the official
SDK): push without duplicates across failures and re-runs, webhooks, reconciliation."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.keys.schemas import CreatedKey, Scope
from app.main import create_app
from app.money.display import minor_string
from tests.billing.helpers import add_usage, assign, create_plan
from tests.conftest import bearer, make_key
from tests.stripe_standin.server import StripeStandin, event, sign_webhook

WEBHOOK_SECRET = "whsec_test_secret"
SEPT_5 = datetime(2026, 9, 5, tzinfo=UTC)


@pytest.fixture
def settings(pg_url: str, pg_sync: object, standin: StripeStandin) -> Settings:
    from tests.conftest import make_settings

    return make_settings(
        pg_url,
        stripe_api_key="sk_test_tollgate",
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=standin.base_url,
        stripe_max_retries=2,
        stripe_retry_delay_s=0.01,
    )


@pytest.fixture
async def keys(app: FastAPI, client: httpx.AsyncClient) -> dict[str, CreatedKey]:
    admin = await make_key(app, "ops", (Scope.admin,))
    finance = await make_key(app, "fin", (Scope.finance,))
    plan = await create_plan(
        client,
        admin,
        name="p",
        currency="usd",
        base_fee="3",
        components=[{"unit": "request", "pricing": "per_unit", "unit_price": "0.1"}],
    )
    customers = {}
    for name, requests in (("ann", 7), ("ben", 11)):
        key = await make_key(app, name)
        await assign(
            app, key.customer_id, plan["id"], datetime(2026, 8, 1, tzinfo=UTC), immediately=True
        )
        await add_usage(app, key, SEPT_5, count=requests)
        customers[name] = key
    closed = await client.post("/finance/periods/2026-09/close", headers=bearer(finance))
    assert closed.status_code == 200
    return {"finance": finance, **customers}


async def _invoices(client: httpx.AsyncClient, finance: CreatedKey) -> list[dict]:  # type: ignore[type-arg]
    listing = (await client.get("/finance/invoices", headers=bearer(finance))).json()["data"]
    return [
        (await client.get(f"/finance/invoices/{i['id']}", headers=bearer(finance))).json()
        for i in listing
    ]


async def test_push_reconcile_and_rerun_without_duplicates(
    client: httpx.AsyncClient, standin: StripeStandin, keys: dict[str, CreatedKey]
) -> None:
    finance = keys["finance"]
    first = await client.post("/finance/sync", headers=bearer(finance))
    assert first.status_code == 200, first.text
    assert len(first.json()["pushed"]) == 2

    local = await _invoices(client, finance)
    assert len(standin.invoices) == 2
    for invoice in local:
        remote = standin.invoices[invoice["stripe_invoice_id"]]
        assert remote["total"] == invoice["total_minor"]  # 300 + 70 / 300 + 110
        assert remote["status"] == "open"
        assert invoice["collection"] == "stripe"
        assert len(standin.items_of(remote["id"])) == len(invoice["lines"])
    assert sorted(i["total_minor"] for i in local) == [370, 410]

    again = await client.post("/finance/sync", headers=bearer(finance))
    assert again.json() == {
        "pushed": [],
        "failed": {},
        "voided": [],
        "credit_notes_pushed": [],
        "credit_notes_failed": {},
    }
    assert len(standin.invoices) == 2 and len(standin.invoice_items) == 4

    report = (
        await client.get(
            "/finance/reports/reconciliation", params={"period": "2026-09"}, headers=bearer(finance)
        )
    ).json()
    assert report["all_match"] is True
    assert [line["result"] for line in report["lines"]] == ["match", "match"]
    for line in report["lines"]:
        shown = minor_string(line["local_total_minor"], line["currency"])
        assert line["local_total"] == line["stripe_total"] == shown, line


async def test_push_interrupted_halfway_completes_on_rerun(
    client: httpx.AsyncClient, standin: StripeStandin, keys: dict[str, CreatedKey]
) -> None:
    finance = keys["finance"]
    # The first invoice item goes through; all 3 attempts (1 + 2 retries) at the second fail.
    standin.fail_next(3, 500, "/v1/invoiceitems", method="POST", skip=1)
    first = (await client.post("/finance/sync", headers=bearer(finance))).json()
    assert list(first["failed"]) == ["1"] and first["pushed"] == [2], first
    second = (await client.post("/finance/sync", headers=bearer(finance))).json()
    assert second["failed"] == {}
    assert len(first["pushed"]) + len(second["pushed"]) == 2
    assert len(standin.invoices) == 2
    assert len(standin.invoice_items) == 4  # no duplicates
    for invoice in await _invoices(client, finance):
        assert standin.invoices[invoice["stripe_invoice_id"]]["total"] == invoice["total_minor"]


async def _post_event(
    client: httpx.AsyncClient,
    payload: dict,
    *,
    secret: str = WEBHOOK_SECRET,  # type: ignore[type-arg]
    timestamp: int | None = None,
) -> httpx.Response:
    body = orjson.dumps(payload)
    return await client.post(
        "/webhooks/stripe",
        content=body,
        headers={
            "Stripe-Signature": sign_webhook(body, secret, timestamp),
            "Content-Type": "application/json",
        },
    )


async def test_webhooks_update_status_once_and_reject_forgeries(
    client: httpx.AsyncClient, standin: StripeStandin, keys: dict[str, CreatedKey]
) -> None:
    finance = keys["finance"]
    await client.post("/finance/sync", headers=bearer(finance))
    paid_invoice, voided_invoice = await _invoices(client, finance)
    remote = standin.invoices[paid_invoice["stripe_invoice_id"]]

    paid = event("invoice.paid", {**remote, "status": "paid"})
    forged = await _post_event(client, paid, secret="whsec_wrong")
    assert forged.status_code == 400
    assert forged.json()["error"]["type"] == "invalid_signature"
    stale = await _post_event(client, paid, timestamp=int(time.time()) - 301)
    assert stale.status_code == 400
    unsigned = await client.post("/webhooks/stripe", content=orjson.dumps(paid))
    assert unsigned.status_code == 400
    assert (await _invoices(client, finance))[0]["status"] == "finalized"  # nothing changed

    ok = await _post_event(client, paid)
    assert ok.status_code == 200 and ok.json()["outcome"] == "applied"
    replay = await _post_event(client, paid)
    assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"

    voided = event(
        "invoice.voided",
        {**standin.invoices[voided_invoice["stripe_invoice_id"]], "status": "void"},
    )
    assert (await _post_event(client, voided)).json()["outcome"] == "applied"
    statuses = {
        i["id"]: (i["status"], i["stripe_status"]) for i in await _invoices(client, finance)
    }
    assert statuses == {
        paid_invoice["id"]: ("paid", "paid"),
        voided_invoice["id"]: ("void", "void"),
    }

    unknown = await _post_event(client, event("invoice.paid", {**remote, "id": "in_nope"}))
    assert unknown.status_code == 400
    assert unknown.json()["error"]["type"] == "unknown_invoice"
    ignored = await _post_event(client, event("customer.created", {"id": "cus_x"}))
    assert ignored.status_code == 200 and ignored.json()["outcome"] == "ignored"

    # Finalized totals never move, whatever Stripe reports.
    after = {i["id"]: i["total_minor"] for i in await _invoices(client, finance)}
    assert after == {
        paid_invoice["id"]: paid_invoice["total_minor"],
        voided_invoice["id"]: voided_invoice["total_minor"],
    }


async def test_without_stripe_invoices_stay_local(pg_url: str, pg_sync: object) -> None:
    from tests.conftest import make_settings

    app = create_app(make_settings(pg_url))
    async with app.router.lifespan_context(app):
        finance = await make_key(app, "fin", (Scope.finance,))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            sync = await client.post("/finance/sync", headers=bearer(finance))
            assert sync.status_code == 503
            assert sync.json()["error"]["type"] == "stripe_not_configured"
            hook = await client.post("/webhooks/stripe", content=b"{}")
            assert hook.status_code == 503


async def test_a_taxed_invoice_is_collected_with_its_tax(
    app: FastAPI, client: httpx.AsyncClient, standin: StripeStandin
) -> None:
    """The tax is one more invoice item (its own idempotency key), so Stripe collects the
    same total as the local invoice and the reconciliation matches."""
    admin = await make_key(app, "ops", (Scope.admin,))
    finance = await make_key(app, "fin", (Scope.finance,))
    plan = await create_plan(
        client,
        admin,
        name="eu",
        currency="eur",
        components=[{"unit": "request", "pricing": "per_unit", "unit_price": "0.08"}],
    )
    key = await make_key(app, "acme")
    await assign(
        app, key.customer_id, plan["id"], datetime(2026, 8, 1, tzinfo=UTC), immediately=True
    )
    patched = await client.patch(
        f"/admin/customers/{key.customer_id}", json={"tax_rate": "19"}, headers=bearer(admin)
    )
    assert patched.status_code == 200
    await add_usage(app, key, SEPT_5, count=3)
    assert (await client.post("/finance/periods/2026-09/close", headers=bearer(finance))).is_success
    for _ in range(2):  # the second run pushes nothing more
        assert (await client.post("/finance/sync", headers=bearer(finance))).is_success
    (invoice,) = await _invoices(client, finance)
    assert invoice["total_minor"] == 29
    remote = standin.invoices[invoice["stripe_invoice_id"]]
    assert remote["total"] == 29
    items = standin.items_of(remote["id"])
    assert sorted((i["description"], i["amount"]) for i in items) == [
        ("0.08 per request", 24),
        ("Tax 19%", 5),
    ]
    report = (
        await client.get(
            "/finance/reports/reconciliation", params={"period": "2026-09"}, headers=bearer(finance)
        )
    ).json()
    assert report["all_match"] is True

"""The finance pages of the console: invoices (filters, pages, documents), previews, closing a
month (dry run, confirmation, CSRF, too early), void and credit notes, Stripe when it is not
configured, the reports, and who may open them."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func, select

from app.clock import ManualClock
from app.keys.schemas import CreatedKey, Scope
from app.orm import AuditEntry, Invoice
from app.resources import resources
from tests.billing.helpers import add_usage, assign, create_plan
from tests.conftest import bearer, make_key
from tests.console.helpers import csrf_of, sign_in

SEPT = "2026-09"
AUG_1 = datetime(2026, 8, 1, tzinfo=UTC)
SEPT_5 = datetime(2026, 9, 5, 12, tzinfo=UTC)
OCT_5 = datetime(2026, 10, 5, tzinfo=UTC)  # September closable (end + 24 h grace)
INVOICE_LINK = re.compile(r'href="/console/billing/invoices/(\d+)"')
CHART = re.compile(r"data-chart='([^']*)'")


@pytest.fixture
async def admin(app: FastAPI) -> CreatedKey:
    return await make_key(app, "operator", (Scope.admin,))


@pytest.fixture
async def finance(app: FastAPI, clock: ManualClock) -> CreatedKey:
    clock.set(OCT_5)  # before any session starts: moving the clock later would idle it out
    return await make_key(app, "operator", (Scope.finance,))


async def _customers(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, *currencies: str
) -> list[CreatedKey]:
    """One customer per currency on a plan of 2.00 a month plus 0.08 a request (one
    included), with 5 requests in September: 2.00 + 4 x 0.08 = 2.32 each."""
    keys = []
    for i, currency in enumerate(currencies):
        plan = await create_plan(
            client,
            admin,
            name=f"plan-{i}",
            currency=currency,
            base_fee="2",
            components=[
                {"unit": "request", "pricing": "per_unit", "unit_price": "0.08", "included": "1"}
            ],
        )
        key = await make_key(app, f"cust-{i}-{currency}")
        await assign(app, key.customer_id, plan["id"], AUG_1, immediately=True)
        await add_usage(app, key, SEPT_5, count=5)
        keys.append(key)
    return keys


async def _close_api(client: httpx.AsyncClient, finance: CreatedKey) -> list[int]:
    closed = await client.post(f"/finance/periods/{SEPT}/close", headers=bearer(finance))
    assert closed.status_code == 200, closed.text
    created: list[int] = closed.json()["created"]
    return created


def _count(pg_sync: Engine, table: type[Invoice] | type[AuditEntry]) -> int:
    with pg_sync.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


async def _bulk_invoices(app: FastAPI, customer_id: int, n: int) -> None:
    """``n`` finalized invoices of one customer, one per month from 2001-01 (a busy past)."""
    async with resources(app).sessionmaker() as session, session.begin():
        for i in range(n):
            year, month = 2001 + i // 12, i % 12 + 1
            start = datetime(year, month, 1, tzinfo=UTC)
            end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            session.add(
                Invoice(
                    number=f"OLD-{i:04d}",
                    customer_id=customer_id,
                    period=f"{year:04d}-{month:02d}",
                    period_start=start,
                    period_end=end,
                    status="paid",
                    currency="eur",
                    subtotal_minor=100,
                    tax_minor=0,
                    total_minor=100,
                )
            )


async def test_invoices_list_filters_and_pages(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    (acme,) = await _customers(app, client, admin, "eur")
    (invoice_id,) = await _close_api(client, finance)
    bulk = await make_key(app, "bulk")
    await _bulk_invoices(app, bulk.customer_id, 55)
    await sign_in(client, finance)

    first = await client.get("/console/billing")
    assert first.status_code == 200
    assert "56 invoices, page 1 of 2" in first.text
    ids = [int(i) for i in INVOICE_LINK.findall(first.text)]
    assert len(ids) == 50 and ids[0] == max(ids)  # newest first
    assert 'href="/console/billing?page=2"' in first.text
    second = await client.get("/console/billing", params={"page": "2"})
    assert len(INVOICE_LINK.findall(second.text)) == 6

    mine = await client.get("/console/billing", params={"customer": "cust-0-eur"})
    assert "1 invoice," in mine.text and INVOICE_LINK.findall(mine.text) == [str(invoice_id)]
    assert "TG-2026-000001" in mine.text and "2.32 EUR" in mine.text
    by_id = await client.get("/console/billing", params={"customer": str(acme.customer_id)})
    assert INVOICE_LINK.findall(by_id.text) == [str(invoice_id)]
    september = await client.get("/console/billing", params={"period": SEPT})
    assert INVOICE_LINK.findall(september.text) == [str(invoice_id)]
    paid = await client.get("/console/billing", params={"status": "paid", "page": "2"})
    assert "55 invoices, page 2 of 2" in paid.text and len(INVOICE_LINK.findall(paid.text)) == 5
    # The pager keeps the filters.
    assert 'href="/console/billing?status=paid&amp;page=1"' in paid.text
    none = await client.get("/console/billing", params={"period": "2026-10"})
    assert "No invoices match these filters" in none.text

    wrong = await client.get("/console/billing", params={"period": "2026-13", "customer": "nope"})
    assert wrong.status_code == 400
    assert 'role="alert"' in wrong.text and "No customer has the id or name" in wrong.text
    assert "period must be YYYY-MM" in wrong.text


async def test_invoice_page_and_its_documents(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    await _customers(app, client, admin, "eur")
    (invoice_id,) = await _close_api(client, finance)
    await sign_in(client, finance)

    page = await client.get(f"/console/billing/invoices/{invoice_id}")
    assert page.status_code == 200
    assert "Invoice TG-2026-000001" in page.text
    assert "2.32 EUR" in page.text and "cust-0-eur" in page.text
    assert "Stripe is not configured" in page.text  # the collection, in words
    assert f'href="/console/billing/invoices/{invoice_id}.pdf"' in page.text
    assert 'action="/console/billing/invoices/1/void"' in page.text

    pdf = await client.get(f"/console/billing/invoices/{invoice_id}.pdf")
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    assert "frame-ancestors 'none'" in pdf.headers["content-security-policy"]
    api_pdf = await client.get(f"/finance/invoices/{invoice_id}.pdf", headers=bearer(finance))
    assert len(pdf.content) == len(api_pdf.content)  # the same renderer
    csv = await client.get(f"/console/billing/invoices/{invoice_id}.csv")
    assert csv.headers["content-type"].startswith("text/csv") and "TG-2026-000001" in csv.text

    missing = await client.get("/console/billing/invoices/999")
    assert missing.status_code == 404 and "invoice 999 does not exist" in missing.text
    missing_pdf = await client.get("/console/billing/invoices/999.pdf")
    assert missing_pdf.status_code == 404 and "text/html" in missing_pdf.headers["content-type"]


async def test_a_dry_run_writes_nothing_and_the_confirmed_close_invoices(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: CreatedKey,
    finance: CreatedKey,
    pg_sync: Engine,
) -> None:
    await _customers(app, client, admin, "eur", "usd")
    await sign_in(client, finance)
    audits = _count(pg_sync, AuditEntry)

    rehearsal = await client.get("/console/billing/close", params={"period": SEPT})
    assert rehearsal.status_code == 200
    assert rehearsal.text.count("<h2>(draft) ·") == 2 and "nothing was written" in rehearsal.text
    assert "2.32 EUR" in rehearsal.text and "2.32 USD" in rehearsal.text
    assert 'name="confirm"' in rehearsal.text and "I confirm" in rehearsal.text
    assert _count(pg_sync, Invoice) == 0 and _count(pg_sync, AuditEntry) == audits

    forged = await client.post("/console/billing/close", data={"period": SEPT, "confirm": "yes"})
    assert forged.status_code == 403 and _count(pg_sync, Invoice) == 0

    token = csrf_of(rehearsal.text)
    unconfirmed = await client.post(
        "/console/billing/close", data={"period": SEPT, "csrf_token": token}
    )
    assert unconfirmed.status_code == 422 and "I confirm" in unconfirmed.text
    assert _count(pg_sync, Invoice) == 0

    closed = await client.post(
        "/console/billing/close", data={"period": SEPT, "confirm": "yes", "csrf_token": token}
    )
    assert closed.status_code == 200, closed.text
    assert "2026-09 is closed: 2 invoices written" in closed.text
    assert "TG-2026-000001" in closed.text and "TG-2026-000002" in closed.text
    assert _count(pg_sync, Invoice) == 2
    with pg_sync.connect() as conn:
        actor, action = conn.execute(
            select(AuditEntry.actor, AuditEntry.action).order_by(AuditEntry.id.desc()).limit(1)
        ).one()
    assert action == "period.close" and str(finance.key_id) in actor

    # Rehearsing a closed month: nothing left to invoice.
    again = await client.get("/console/billing/close", params={"period": SEPT})
    assert "(draft)" not in again.text and "Already closed" in again.text


async def test_a_close_before_the_grace_ends_shows_the_409_message(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: CreatedKey,
    clock: ManualClock,
    pg_sync: Engine,
) -> None:
    await _customers(app, client, admin, "eur")
    clock.set(datetime(2026, 9, 20, tzinfo=UTC))
    finance = await make_key(app, "operator", (Scope.finance,))
    await sign_in(client, finance)

    rehearsal = await client.get("/console/billing/close", params={"period": SEPT})
    assert rehearsal.status_code == 200 and "(draft)" in rehearsal.text
    assert "cannot be closed yet" in rehearsal.text and 'name="confirm"' not in rehearsal.text
    refused = await client.post(
        "/console/billing/close",
        data={"period": SEPT, "confirm": "yes", "csrf_token": csrf_of(rehearsal.text)},
    )
    assert refused.status_code == 409
    assert 'role="alert"' in refused.text and "can be closed from 2026-10-02" in refused.text
    assert _count(pg_sync, Invoice) == 0

    bad = await client.get("/console/billing/close", params={"period": "2026-9"})
    assert bad.status_code == 422 and "period must be YYYY-MM" in bad.text


async def test_preview_any_customer(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    (acme,) = await _customers(app, client, admin, "eur")
    await make_key(app, "planless")
    await sign_in(client, finance)

    shown = await client.get(
        "/console/billing/preview", params={"customer": "cust-0-eur", "period": SEPT}
    )
    assert shown.status_code == 200
    assert "2.32" in shown.text and "Subtotal" in shown.text and "(draft)" not in shown.text
    api = await client.get(
        "/finance/invoices/preview",
        params={"customer": acme.customer_id, "period": SEPT},
        headers=bearer(finance),
    )
    for line in api.json()["lines"]:
        assert line["description"] in html.unescape(shown.text)

    unknown = await client.get("/console/billing/preview", params={"customer": "nobody"})
    assert unknown.status_code == 404 and "No customer has the id or name" in unknown.text
    planless = await client.get("/console/billing/preview", params={"customer": "planless"})
    assert planless.status_code == 404 and "has no plan" in planless.text


async def test_credit_note_and_void_forms_call_the_services_and_show_refusals(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: CreatedKey,
    finance: CreatedKey,
    pg_sync: Engine,
) -> None:
    await _customers(app, client, admin, "eur", "usd")
    credited_id, voided_id = await _close_api(client, finance)
    await sign_in(client, finance)
    page = await client.get(f"/console/billing/invoices/{credited_id}")
    token = csrf_of(page.text)

    forged = await client.post(
        f"/console/billing/invoices/{credited_id}/credit-notes",
        data={"amount": "0.50", "reason": "goodwill"},
    )
    assert forged.status_code == 403
    too_much = await client.post(
        f"/console/billing/invoices/{credited_id}/credit-notes",
        data={"amount": "99", "reason": "goodwill", "csrf_token": token},
    )
    assert too_much.status_code == 409 and "left to credit" in too_much.text
    assert 'value="99"' in too_much.text  # the form comes back as sent
    not_a_number = await client.post(
        f"/console/billing/invoices/{credited_id}/credit-notes",
        data={"amount": "0.505", "reason": "goodwill", "csrf_token": token},
    )
    assert not_a_number.status_code == 422 and "at most 2 decimals" in not_a_number.text

    issued = await client.post(
        f"/console/billing/invoices/{credited_id}/credit-notes",
        data={"amount": "0.50", "reason": "goodwill", "line": "1", "csrf_token": token},
    )
    assert issued.status_code == 303
    after = await client.get(issued.headers["location"])
    assert "CN-2026-000001" in after.text and "The credit note is issued" in after.text
    assert "Credited 0.50 of 2.32 EUR; 1.82 remains" in after.text
    (note_pdf,) = re.findall(r'href="(/console/billing/credit-notes/\d+\.pdf)"', after.text)
    assert (await client.get(note_pdf)).content.startswith(b"%PDF")

    refused = await client.post(
        f"/console/billing/invoices/{credited_id}/void",
        data={"reason": "wrong customer", "csrf_token": token},
    )
    assert refused.status_code == 409 and "credit note(s)" in refused.text

    no_reason = await client.post(
        f"/console/billing/invoices/{voided_id}/void", data={"reason": " ", "csrf_token": token}
    )
    assert no_reason.status_code == 422 and 'role="alert"' in no_reason.text
    voided = await client.post(
        f"/console/billing/invoices/{voided_id}/void",
        data={"reason": "wrong customer", "csrf_token": token},
    )
    assert voided.status_code == 303
    shown = await client.get(voided.headers["location"])
    assert "<dd>void</dd>" in shown.text and "The invoice is void" in shown.text
    assert 'action="/console/billing/invoices/2/void"' not in shown.text
    with pg_sync.connect() as conn:
        status = conn.scalar(select(Invoice.status).where(Invoice.id == voided_id))
    assert status == "void"


async def test_stripe_not_configured_is_said_not_failed(
    client: httpx.AsyncClient, finance: CreatedKey
) -> None:
    await sign_in(client, finance)
    page = await client.get("/console/billing/stripe", params={"period": SEPT})
    assert page.status_code == 200 and "Stripe is not configured" in page.text
    billing = await client.get("/console/billing")
    assert "Stripe is not configured" in billing.text
    forged = await client.post("/console/billing/sync", data={})
    assert forged.status_code == 403
    synced = await client.post("/console/billing/sync", data={"csrf_token": csrf_of(page.text)})
    assert synced.status_code == 503 and "Stripe is not configured" in synced.text


async def test_reports_show_revenue_and_margin_per_currency(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    await _customers(app, client, admin, "eur", "usd")
    await _close_api(client, finance)
    await sign_in(client, finance)

    page = await client.get(
        "/console/reports",
        params={"period": SEPT, "investment": "1000", "yearly_upkeep": "120", "currency": "usd"},
    )
    assert page.status_code == 200, page.text
    assert "Revenue 2026-09" in page.text and "Margin and break-even 2026-09" in page.text
    assert "<h3>EUR</h3>" in page.text and "<h3>USD</h3>" in page.text
    assert "Total EUR<strong>2.32</strong>" in page.text
    assert "Total USD<strong>2.32</strong>" in page.text
    charts = [json.loads(html.unescape(c)) for c in CHART.findall(page.text)]
    revenue = charts[0]
    assert {d["label"] for d in revenue["datasets"]} == {"EUR", "USD"}
    assert "(base fee)" in revenue["labels"]
    assert all(len(d["data"]) == len(revenue["labels"]) for d in revenue["datasets"])
    assert len(charts) >= 3  # revenue, and margin by model for EUR and USD
    assert "Investment C" in page.text and ">1000<" in page.text

    # The revenue is memoized under the period's revision: a credit note changes it.
    eur_invoice = (
        await client.get("/finance/invoices", params={"period": SEPT}, headers=bearer(finance))
    ).json()["data"][0]
    credited = await client.post(
        f"/finance/invoices/{eur_invoice['id']}/credit-notes",
        json={"reason": "goodwill", "amount_minor": 32},
        headers=bearer(finance),
    )
    assert credited.status_code == 201, credited.text
    again = await client.get("/console/reports", params={"period": SEPT})
    currency = eur_invoice["currency"].upper()
    assert f"Total {currency}<strong>2.00</strong>" in again.text

    default = await client.get("/console/reports")
    assert default.status_code == 200 and 'value="2026-09"' in default.text  # last month
    bad = await client.get("/console/reports", params={"investment": "-1", "currency": "e"})
    assert bad.status_code == 422 and 'role="alert"' in bad.text
    assert "investment" in bad.text and "three-letter code" in bad.text


@pytest.mark.parametrize(
    "path",
    [
        "/console/billing",
        "/console/billing/invoices/1",
        "/console/billing/invoices/1.pdf",
        "/console/billing/preview",
        "/console/billing/close?period=2026-09",
        "/console/billing/stripe",
        "/console/reports",
    ],
)
async def test_only_finance_keys_open_the_finance_pages(
    app: FastAPI, client: httpx.AsyncClient, path: str
) -> None:
    admin = await make_key(app, "operator", (Scope.admin,))
    customer = await make_key(app, "acme", (Scope.billing, Scope.predict))
    for key in (admin, customer):
        await sign_in(client, key)
        page = await client.get(path)
        assert page.status_code == 403, (key.scopes, path)
        assert "needs the finance scope" in page.text
    home = await client.get("/console/me")
    csrf = csrf_of(home.text)
    for action in ("/console/billing/close", "/console/billing/sync"):
        posted = await client.post(action, data={"csrf_token": csrf, "period": SEPT})
        assert posted.status_code == 403

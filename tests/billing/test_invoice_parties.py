"""A finalized invoice is a document a customer's accounts-payable team accepts: seller and
customer blocks as they were when it was issued, issue and due dates, tax once on the
subtotal (or the exemption note), and money as minor units plus decimal strings at the
currency's exponent, never exponent notation or internal precision."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.clock import ManualClock
from app.config import Settings
from app.keys.schemas import CreatedKey, Scope
from app.resources import resources
from tests.billing.helpers import add_usage, assign, create_plan
from tests.conftest import bearer, make_key, make_settings

SEPT = "2026-09"
AUG_1 = datetime(2026, 8, 1, tzinfo=UTC)
SEPT_5 = datetime(2026, 9, 5, 12, tzinfo=UTC)
CLOSING = datetime(2026, 10, 3, 9, 30, tzinfo=UTC)

SELLER = {
    "name": "Tollgate GmbH",
    "address": "Torstr. 5\n10119 Berlin\nGermany",
    "email": "billing@tollgate.example",
    "tax_id": "DE999999999",
    "payment_terms_days": 14,
    "payment_instructions": "Bank transfer to IBAN DE00 1234 5678 9012 3456 78",
}


@pytest.fixture
def settings(pg_url: str, pg_sync: object) -> Settings:
    return make_settings(
        pg_url,
        seller_name=SELLER["name"],
        seller_address="Torstr. 5\\n10119 Berlin\\nGermany",  # as one environment line
        seller_email=SELLER["email"],
        seller_tax_id=SELLER["tax_id"],
        payment_terms_days=SELLER["payment_terms_days"],
        payment_instructions=SELLER["payment_instructions"],
    )


@pytest.fixture
async def admin(app: FastAPI) -> CreatedKey:
    return await make_key(app, "tollgate-ops", (Scope.admin,))


@pytest.fixture
async def finance(app: FastAPI) -> CreatedKey:
    return await make_key(app, "tollgate-finance", (Scope.finance,))


async def _customer(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: CreatedKey,
    name: str,
    plan_id: int,
    **details: Any,
) -> CreatedKey:
    key = await make_key(app, name)
    await assign(app, key.customer_id, plan_id, AUG_1, immediately=True)
    if details:
        patched = await client.patch(
            f"/admin/customers/{key.customer_id}", json=details, headers=bearer(admin)
        )
        assert patched.status_code == 200, patched.text
    return key


async def _get(client: httpx.AsyncClient, key: CreatedKey, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params, headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


async def _close(client: httpx.AsyncClient, finance: CreatedKey) -> dict[str, Any]:
    response = await client.post(f"/finance/periods/{SEPT}/close", headers=bearer(finance))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_an_eu_customer_is_taxed_once_on_the_subtotal_and_keeps_its_snapshot(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: CreatedKey,
    finance: CreatedKey,
    clock: ManualClock,
) -> None:
    plan = await create_plan(
        client,
        admin,
        name="eu",
        currency="eur",
        components=[{"unit": "request", "pricing": "per_unit", "unit_price": "0.08"}],
    )
    acme = await _customer(
        app,
        client,
        admin,
        "acme",
        plan["id"],
        legal_name="Acme GmbH",
        billing_email="ap@acme.example",
        address="Hauptstr. 1\n10115 Berlin",
        country="DE",
        tax_id="DE123456789",
        tax_rate="19",
    )
    await add_usage(app, acme, SEPT_5, count=3)  # 3 x 0.08 = 0.24 EUR
    clock.set(CLOSING)

    preview = await _get(
        client, finance, "/finance/invoices/preview", customer=acme.customer_id, period=SEPT
    )
    assert (preview["subtotal"], preview["tax"], preview["total"]) == ("0.24", "0.05", "0.29")
    assert preview["issued_at"] is None and preview["number"] is None

    closed = await _close(client, finance)
    (invoice_id,) = closed["created"]
    invoice = await _get(client, finance, f"/finance/invoices/{invoice_id}")
    # 0.24 EUR at 19 % is 4.56 cents: rounded once, half up, to 0.05.
    assert (invoice["subtotal_minor"], invoice["tax_minor"], invoice["total_minor"]) == (
        24,
        5,
        29,
    )
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == ("0.24", "0.05", "0.29")
    assert (invoice["tax_rate"], invoice["tax_exempt"], invoice["tax_note"]) == ("19", False, None)
    assert invoice["currency"] == "eur" and invoice["number"] == "TG-2026-000001"
    assert invoice["seller"] == SELLER
    assert invoice["bill_to"] == {
        "customer_id": acme.customer_id,
        "name": "acme",
        "legal_name": "Acme GmbH",
        "billing_email": "ap@acme.example",
        "address": "Hauptstr. 1\n10115 Berlin",
        "country": "DE",
        "tax_id": "DE123456789",
    }
    issued, due = _moment(invoice["issued_at"]), _moment(invoice["due_at"])
    assert CLOSING <= issued < CLOSING + timedelta(minutes=1)
    assert due - issued == timedelta(days=14)  # TOLLGATE_PAYMENT_TERMS_DAYS
    (line,) = invoice["lines"]
    assert (line["quantity"], line["unit_price"], line["exact_amount"]) == ("3", "0.08", "0.24")
    assert (line["amount_minor"], line["amount"]) == (24, "0.24")
    # The preview said what the close wrote.
    for field in ("subtotal_minor", "tax_minor", "total_minor", "tax_rate", "seller", "bill_to"):
        assert preview[field] == invoice[field], field

    (summary,) = (await _get(client, finance, "/finance/invoices"))["data"]
    assert (summary["subtotal"], summary["tax"], summary["total"]) == ("0.24", "0.05", "0.29")
    assert (summary["issued_at"], summary["due_at"]) == (invoice["issued_at"], invoice["due_at"])

    # Later edits to the customer and to the seller profile never reach the issued invoice.
    changed = await client.patch(
        f"/admin/customers/{acme.customer_id}",
        json={
            "name": "acme-renamed",
            "legal_name": "Acme AG",
            "address": "Bahnhofstr. 9\n8001 Zürich",
            "country": "CH",
            "tax_id": None,
            "tax_rate": "7.7",
            "billing_email": None,
        },
        headers=bearer(admin),
    )
    assert changed.status_code == 200, changed.text
    live = resources(app).settings
    live.seller_name = "Someone Else Ltd"
    live.seller_address = "Elsewhere 1"
    live.payment_terms_days = 60
    clock.advance(timedelta(days=1))
    assert await _get(client, finance, f"/finance/invoices/{invoice_id}") == invoice
    # ... while the next invoice would carry them (the edits did take effect).
    await add_usage(app, acme, datetime(2026, 10, 2, tzinfo=UTC), count=10)
    october = await _get(
        client, finance, "/finance/invoices/preview", customer=acme.customer_id, period="2026-10"
    )
    assert october["seller"]["name"] == "Someone Else Ltd"
    assert october["seller"]["payment_terms_days"] == 60
    assert october["bill_to"]["legal_name"] == "Acme AG" and october["bill_to"]["country"] == "CH"
    assert (october["tax_rate"], october["subtotal"], october["tax"]) == ("7.7", "0.80", "0.06")


async def test_an_exempt_customer_gets_no_tax_and_the_note(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    plan = await create_plan(client, admin, name="flat", currency="eur", base_fee="49")
    lyon = await _customer(
        app,
        client,
        admin,
        "lyon",
        plan["id"],
        legal_name="Lyon SAS",
        country="FR",
        tax_id="FR12345678901",
        tax_exempt=True,
        tax_note="Reverse charge: VAT to be accounted for by the recipient",
    )
    (invoice_id,) = (await _close(client, finance))["created"]
    invoice = await _get(client, finance, f"/finance/invoices/{invoice_id}")
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == ("49.00", "0.00", "49.00")
    assert invoice["tax_minor"] == 0 and invoice["tax_rate"] is None
    assert invoice["tax_exempt"] is True
    assert invoice["tax_note"] == "Reverse charge: VAT to be accounted for by the recipient"
    assert invoice["bill_to"]["tax_id"] == "FR12345678901"
    assert invoice["customer_id"] == lyon.customer_id
    (fee,) = invoice["lines"]
    # Plain decimals: never "49.0000000000" or "1.000000".
    assert (fee["quantity"], fee["unit_price"], fee["exact_amount"]) == ("1", "49", "49")


async def test_a_jpy_invoice_has_no_decimals(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    plan = await create_plan(
        client,
        admin,
        name="yen",
        currency="jpy",
        base_fee="1250",
        components=[{"unit": "item", "pricing": "per_unit", "unit_price": "0.5"}],
    )
    tokyo = await _customer(
        app, client, admin, "tokyo", plan["id"], country="JP", tax_rate="10", email="a@t.example"
    )
    await add_usage(app, tokyo, SEPT_5, count=3, items=1)  # 1.5 JPY -> 2 (half up)
    (invoice_id,) = (await _close(client, finance))["created"]
    invoice = await _get(client, finance, f"/finance/invoices/{invoice_id}")
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == ("1252", "125", "1377")
    assert (invoice["subtotal_minor"], invoice["tax_minor"], invoice["total_minor"]) == (
        1252,
        125,  # 125.2, half up
        1377,
    )
    fee, usage = invoice["lines"]
    assert (fee["amount"], fee["amount_minor"]) == ("1250", 1250)
    assert (usage["exact_amount"], usage["amount"], usage["amount_minor"]) == ("1.5", "2", 2)
    # Without a billing email the invoice goes to the account's email.
    assert invoice["bill_to"]["billing_email"] == "a@t.example"


_LONG_FRACTION = re.compile(r"\d\.\d{7,}")
_EXPONENT = re.compile(r"\d[eE][+-]?\d")


async def test_descriptions_and_amounts_show_no_internal_precision(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    plan = await create_plan(
        client,
        admin,
        name="prorated",
        currency="usd",
        base_fee="49",
        components=[
            {"unit": "request", "pricing": "per_unit", "unit_price": "0.0015", "included": "1000"},
            {"unit": "item", "pricing": "per_unit", "unit_price": "0.01", "model": "linreg"},
        ],
    )
    key = await make_key(app, "midmonth")
    # On the plan from one second before the end of 1 September: 2,505,601 of the month's
    # 2,592,000 seconds, so 1000 included requests prorate to 966.667052469135802...
    start = datetime(2026, 9, 1, 23, 59, 59, tzinfo=UTC)
    await assign(app, key.customer_id, plan["id"], start, immediately=True)
    await add_usage(app, key, SEPT_5, count=1200)
    (invoice_id,) = (await _close(client, finance))["created"]
    invoice = await _get(client, finance, f"/finance/invoices/{invoice_id}")
    fee, requests, unused = invoice["lines"]
    assert "(first 966.667052 included)" in requests["description"], requests["description"]
    assert requests["unit_price"] == "0.0015" and requests["quantity"] == "1200"
    assert requests["billable_quantity"] == "233.332948"
    assert unused["exact_amount"] == "0" and unused["amount"] == "0.00"  # never "0E-10"
    assert fee["unit_price"] == "49"  # never "49.0000000000"

    def values(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [v for x in node.values() for v in values(x)]
        if isinstance(node, list):
            return [v for x in node for v in values(x)]
        return [node] if isinstance(node, str) else []

    # No exponent notation anywhere; no long fractions but in the exact line amounts (the
    # prorated fee is 47.366685571 before its one rounding: exact, and said to be).
    for text in values(invoice):
        assert not _EXPONENT.search(text), text
    shown = [line["description"] for line in invoice["lines"]] + [
        invoice[name] for name in ("subtotal", "tax", "total")
    ]
    for text in shown + [line["amount"] for line in invoice["lines"]]:
        assert not _LONG_FRACTION.search(text), text
    assert fee["exact_amount"] == "47.366685571" and fee["amount"] == "47.37"
    csv_text = (
        await client.get(f"/finance/invoices/{invoice_id}.csv", headers=bearer(finance))
    ).text
    assert not _EXPONENT.search(csv_text), csv_text
    assert "966.667052 included" in csv_text and "966.6670524" not in csv_text


async def test_the_invoice_csv_reconciles_on_its_own(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, finance: CreatedKey
) -> None:
    import csv
    import io

    plan = await create_plan(
        client,
        admin,
        name="csv-tax",
        currency="eur",
        base_fee="10",
        components=[{"unit": "request", "pricing": "per_unit", "unit_price": "0.0015"}],
    )
    key = await _customer(
        app, client, admin, "ledger", plan["id"], legal_name="Ledger BV", tax_rate="21"
    )
    await add_usage(app, key, SEPT_5, count=333)  # 0.4995 -> 0.50
    (invoice_id,) = (await _close(client, finance))["created"]
    invoice = await _get(client, finance, f"/finance/invoices/{invoice_id}")
    response = await client.get(f"/finance/invoices/{invoice_id}.csv", headers=bearer(finance))
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["description"], r["exact_amount"], r["amount"]) for r in rows] == [
        ("Monthly base fee", "10", "10.00"),
        ("0.0015 per request", "0.4995", "0.50"),
    ]
    assert sum(int(r["amount_minor"]) for r in rows) == int(rows[0]["invoice_subtotal_minor"])
    first = rows[0]
    assert first["customer"] == "Ledger BV" and first["tax_rate"] == "21"
    assert (first["invoice_subtotal"], first["invoice_tax"], first["invoice_total"]) == (
        "10.50",
        "2.21",  # 220.5 cents, half up
        "12.71",
    )
    assert first["invoice_total_minor"] == str(invoice["total_minor"]) == "1271"
    assert first["due_at"] == invoice["due_at"].replace("Z", "+00:00")

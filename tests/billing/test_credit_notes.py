"""Corrections without rewriting history: void and credit notes through the API, their
rules (never over-credit, even concurrently), numbering, documents, the revenue report, and
their push to Stripe (the stand-in) without duplicates across failures and replays."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select, text

from app.billing.corrections import OverCredit, create_credit_note
from app.billing.credit_schemas import CreditNoteCreate
from app.billing.repository import invoiced_customers, revenue, revenue_totals
from app.config import Settings
from app.keys.schemas import CreatedKey, Scope
from app.money.periods import Period
from app.orm import AuditEntry, CreditNote, InvoiceLine
from app.resources import resources
from tests.billing.helpers import add_usage, assign, create_plan
from tests.billing.pdftext import pdf_words
from tests.conftest import bearer, make_key, make_settings
from tests.stripe_standin.server import StripeStandin

SEPT_5 = datetime(2026, 9, 5, tzinfo=UTC)

Json = dict[str, Any]


@pytest.fixture
def settings(pg_url: str, pg_sync: object, standin: StripeStandin) -> Settings:
    return make_settings(
        pg_url,
        stripe_api_key="sk_test_tollgate",
        stripe_webhook_secret="whsec_credit",
        stripe_api_base=standin.base_url,
        stripe_max_retries=2,
        stripe_retry_delay_s=0.01,
    )


@pytest.fixture
async def finance(app: FastAPI) -> CreatedKey:
    return await make_key(app, "fin", (Scope.finance,))


@pytest.fixture
async def invoices(app: FastAPI, client: httpx.AsyncClient, finance: CreatedKey) -> dict[str, Json]:
    """Two closed September invoices: ann 3.00 + 7 x 0.10 = 3.70, ben 3.00 + 1.10 = 4.10
    (line 1 the base fee, line 2 the usage)."""
    admin = await make_key(app, "ops", (Scope.admin,))
    plan = await create_plan(
        client,
        admin,
        name="p",
        currency="usd",
        base_fee="3",
        components=[{"unit": "request", "pricing": "per_unit", "unit_price": "0.1"}],
    )
    out = {}
    for name, requests in (("ann", 7), ("ben", 11)):
        key = await make_key(app, name)
        await assign(
            app, key.customer_id, plan["id"], datetime(2026, 8, 1, tzinfo=UTC), immediately=True
        )
        await add_usage(app, key, SEPT_5, count=requests)
        out[name] = key
    closed = await client.post("/finance/periods/2026-09/close", headers=bearer(finance))
    assert closed.status_code == 200, closed.text
    result = {}
    for name, key in out.items():
        listing = await client.get(
            "/finance/invoices", params={"customer": key.customer_id}, headers=bearer(finance)
        )
        (summary,) = listing.json()["data"]
        result[name] = (
            await client.get(f"/finance/invoices/{summary['id']}", headers=bearer(finance))
        ).json()
    return result


def _tax(pg_sync: Engine, invoice_id: int, rate: int, tax_minor: int) -> None:
    """Give a closed invoice a tax rate (as closing does for a customer with one)."""
    with pg_sync.begin() as conn:
        conn.execute(
            text(
                "UPDATE invoices SET tax_rate = :rate, tax_minor = :tax, "
                "total_minor = subtotal_minor + :tax WHERE id = :id"
            ),
            {"rate": rate, "tax": tax_minor, "id": invoice_id},
        )


def _status(pg_sync: Engine, invoice_id: int, status: str) -> None:
    with pg_sync.begin() as conn:
        conn.execute(
            text("UPDATE invoices SET status = :s WHERE id = :id"), {"s": status, "id": invoice_id}
        )


async def _credit(
    client: httpx.AsyncClient, finance: CreatedKey, invoice_id: int, body: Json, status: int = 201
) -> Json:
    response = await client.post(
        f"/finance/invoices/{invoice_id}/credit-notes", json=body, headers=bearer(finance)
    )
    assert response.status_code == status, response.text
    return response.json()  # type: ignore[no-any-return]


async def _void(
    client: httpx.AsyncClient, finance: CreatedKey, invoice_id: int, status: int = 200
) -> Json:
    response = await client.post(
        f"/finance/invoices/{invoice_id}/void", json={"reason": "wrong"}, headers=bearer(finance)
    )
    assert response.status_code == status, response.text
    return response.json()  # type: ignore[no-any-return]


def _line(position: int, amount_minor: int, **extra: Any) -> Json:
    return {"invoice_line_position": position, "amount_minor": amount_minor, **extra}


async def test_credit_notes_take_tax_and_never_exceed_the_invoice(
    client: httpx.AsyncClient,
    finance: CreatedKey,
    invoices: dict[str, Json],
    pg_sync: Engine,
    clock: Any,
) -> None:
    ann = invoices["ann"]
    _tax(pg_sync, ann["id"], 19, 70)  # 19 % of 3.70 = 0.703: 0.70; total 4.40
    year = clock.now().year

    first = await _credit(
        client,
        finance,
        ann["id"],
        {"reason": "Outage", "lines": [_line(2, 50, quantity="5", description="Failed calls")]},
    )
    assert first["number"] == f"CN-{year}-000001"
    # 19 % of 0.50 = 0.095: 0.10 (half up); strings at the currency's exponent.
    assert (first["subtotal_minor"], first["tax_minor"], first["total_minor"]) == (50, 10, 60)
    assert (first["subtotal"], first["tax"], first["total"]) == ("0.50", "0.10", "0.60")
    assert first["lines"] == [
        {
            "position": 1,
            "invoice_line_id": first["lines"][0]["invoice_line_id"],
            "invoice_line_position": 2,
            "description": "Failed calls",
            "quantity": "5",
            "amount_minor": 50,
            "amount": "0.50",
        }
    ]
    assert isinstance(first["lines"][0]["invoice_line_id"], int)
    assert first["reason"] == "Outage" and first["invoice_number"] == ann["number"]

    # What remains: 3.20 before tax. Crediting all of it takes exactly the tax left (0.60),
    # not 19 % of 3.20 (0.608: 0.61), so the invoice is credited its total, 4.40, exactly.
    last = await _credit(
        client,
        finance,
        ann["id"],
        {"reason": "Refund", "lines": [_line(1, 300), _line(2, 20)]},
    )
    assert last["number"] == f"CN-{year}-000002"
    assert (last["subtotal_minor"], last["tax_minor"], last["total_minor"]) == (320, 60, 380)

    credits = (
        await client.get(f"/finance/invoices/{ann['id']}/credit-notes", headers=bearer(finance))
    ).json()
    assert (credits["total_minor"], credits["credited_minor"], credits["remaining_minor"]) == (
        440,
        440,
        0,
    )
    assert credits["remaining"] == "0.00"
    assert [n["number"] for n in credits["credit_notes"]] == [first["number"], last["number"]]

    over = await _credit(client, finance, ann["id"], {"reason": "x", "amount_minor": 1}, 409)
    assert over["error"]["type"] == "over_credit"


async def test_over_crediting_is_refused_with_what_remains(
    client: httpx.AsyncClient, finance: CreatedKey, invoices: dict[str, Json]
) -> None:
    ann = invoices["ann"]["id"]
    # One line beyond its amount (usage: 0.70).
    too_much = await _credit(client, finance, ann, {"reason": "x", "lines": [_line(2, 71)]}, 409)
    assert too_much["error"]["type"] == "over_credit"
    # The same line twice in one note counts together.
    twice = await _credit(
        client, finance, ann, {"reason": "x", "lines": [_line(2, 40), _line(2, 40)]}, 409
    )
    assert twice["error"]["type"] == "over_credit"
    # A whole-invoice credit beyond the subtotal (3.70).
    await _credit(client, finance, ann, {"reason": "x", "amount_minor": 371}, 409)
    # Two notes that together exceed it: the second is refused and says what remains.
    await _credit(client, finance, ann, {"reason": "first", "amount_minor": 200})
    second = await _credit(client, finance, ann, {"reason": "second", "amount_minor": 200}, 409)
    assert "170" in second["error"]["message"]
    # A line credit after a whole-invoice credit still respects the subtotal.
    await _credit(client, finance, ann, {"reason": "x", "lines": [_line(1, 171)]}, 409)
    ok = await _credit(client, finance, ann, {"reason": "rest", "lines": [_line(1, 170)]})
    assert ok["total_minor"] == 170
    listing = (
        await client.get("/finance/credit-notes", params={"invoice": ann}, headers=bearer(finance))
    ).json()["data"]
    assert [n["total_minor"] for n in listing] == [200, 170]


async def test_over_credit_details(
    app: FastAPI, client: httpx.AsyncClient, finance: CreatedKey, invoices: dict[str, Json]
) -> None:
    response = await client.post(
        f"/finance/invoices/{invoices['ann']['id']}/credit-notes",
        json={"reason": "x", "lines": [_line(2, 71)]},
        headers=bearer(finance),
    )
    assert response.status_code == 409
    async with resources(app).sessionmaker() as session:
        with pytest.raises(OverCredit) as caught:
            await create_credit_note(
                session,
                "test",
                invoices["ann"]["id"],
                CreditNoteCreate(reason="x", lines=[_line(2, 71)]),  # type: ignore[list-item]
                now=datetime.now(UTC),
            )
    assert caught.value.details == {
        "invoice_line_position": 2,
        "invoice_line_id": caught.value.details["invoice_line_id"],
        "requested_minor": 71,
        "line_remaining_minor": 70,
        "remaining_subtotal_minor": 370,
        "remaining_tax_minor": 0,
        "remaining_minor": 370,
    }


async def test_concurrent_credit_notes_cannot_over_credit(
    app: FastAPI, invoices: dict[str, Json], pg_sync: Engine
) -> None:
    """Two credit notes of 3.00 each at once on a 3.70 invoice: the invoice row is locked,
    so the second sees the first and is refused."""
    invoice_id = invoices["ann"]["id"]
    sessionmaker = resources(app).sessionmaker

    async def credit(reason: str) -> str:
        async with sessionmaker() as session, session.begin():
            note = await create_credit_note(
                session,
                "test",
                invoice_id,
                CreditNoteCreate(reason=reason, amount_minor=300),
                now=datetime.now(UTC),
            )
            await asyncio.sleep(0.05)  # hold the lock while the other one waits
            return note.number

    results = await asyncio.gather(credit("a"), credit("b"), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["OverCredit", "str"]
    with pg_sync.connect() as conn:
        notes = conn.execute(select(CreditNote.number, CreditNote.total_minor)).all()
    assert len(notes) == 1 and notes[0].total_minor == 300
    assert notes[0].number.endswith("-000001")


async def test_numbers_stay_gapless_across_a_rolled_back_attempt(
    app: FastAPI, client: httpx.AsyncClient, finance: CreatedKey, invoices: dict[str, Json]
) -> None:
    async with resources(app).sessionmaker() as session:  # begins on first use
        note = await create_credit_note(
            session,
            "test",
            invoices["ann"]["id"],
            CreditNoteCreate(reason="rolled back", amount_minor=10),
            now=datetime.now(UTC),
        )
        taken = note.number
        await session.rollback()
    assert taken.endswith("-000001")
    # A refused credit (409) takes no number either.
    await _credit(client, finance, invoices["ann"]["id"], {"reason": "x", "amount_minor": 999}, 409)
    first = await _credit(
        client, finance, invoices["ann"]["id"], {"reason": "a", "amount_minor": 10}
    )
    second = await _credit(
        client, finance, invoices["ben"]["id"], {"reason": "b", "amount_minor": 10}
    )
    assert first["number"] == taken
    assert second["number"].endswith("-000002")


async def test_void_rules(
    client: httpx.AsyncClient, finance: CreatedKey, invoices: dict[str, Json], pg_sync: Engine
) -> None:
    ann, ben = invoices["ann"]["id"], invoices["ben"]["id"]
    voided = await _void(client, finance, ann)
    assert voided["status"] == "void" and voided["void_reason"] == "wrong"
    after = (await client.get(f"/finance/invoices/{ann}", headers=bearer(finance))).json()
    assert after["status"] == "void"
    assert after["total_minor"] == invoices["ann"]["total_minor"]  # never edited
    assert after["lines"] == invoices["ann"]["lines"]

    again = await _void(client, finance, ann, 409)
    assert again["error"]["type"] == "invoice_not_voidable"
    # A void invoice cannot be credited.
    refused = await _credit(client, finance, ann, {"reason": "x", "amount_minor": 1}, 409)
    assert refused["error"]["type"] == "invoice_not_creditable"

    # A partly credited invoice cannot be voided: credit what remains instead.
    await _credit(client, finance, ben, {"reason": "x", "amount_minor": 10})
    credited = await _void(client, finance, ben, 409)
    assert "credit note" in credited["error"]["message"]

    # Paid and draft invoices cannot be voided; a draft cannot be credited.
    _status(pg_sync, ben, "paid")
    paid = await _void(client, finance, ben, 409)
    assert "paid" in paid["error"]["message"]
    await _credit(client, finance, ben, {"reason": "paid: refund", "amount_minor": 10})
    _status(pg_sync, ben, "draft")
    await _void(client, finance, ben, 409)
    await _credit(client, finance, ben, {"reason": "x", "amount_minor": 1}, 409)

    with pg_sync.connect() as conn:
        actions = list(conn.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert actions.count("invoice.void") == 1
    assert actions.count("credit_note.create") == 2


async def test_unknown_ids_are_404(client: httpx.AsyncClient, finance: CreatedKey) -> None:
    for method, path, body in (
        ("POST", "/finance/invoices/999/void", {"reason": "x"}),
        ("POST", "/finance/invoices/999/credit-notes", {"reason": "x", "amount_minor": 1}),
        ("GET", "/finance/invoices/999/credit-notes", None),
        ("GET", "/finance/credit-notes/999", None),
        ("GET", "/finance/credit-notes/999.pdf", None),
        ("GET", "/finance/credit-notes/999.csv", None),
    ):
        response = await client.request(method, path, json=body, headers=bearer(finance))
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["type"] in ("invoice_not_found", "credit_note_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"lines": [{"invoice_line_position": 1, "amount_minor": 1}]},  # no reason
        {"reason": "   ", "amount_minor": 1},
        {"reason": "x"},  # neither lines nor amount
        {"reason": "x", "amount_minor": 1, "lines": [_line(1, 1)]},  # both
        {"reason": "x", "amount_minor": 0},
        {"reason": "x", "amount_minor": -5},
        {"reason": "x", "amount_minor": 1.5},
        {"reason": "x", "amount_minor": "10"},
        {"reason": "x", "amount_minor": 2**63},
        {"reason": "x", "lines": []},
        {"reason": "x", "lines": [_line(1, 0)]},
        {"reason": "x", "lines": [_line(1, -1)]},
        {"reason": "x", "lines": [{"amount_minor": 1}]},  # no line named
        {"reason": "x", "lines": [{**_line(1, 1), "invoice_line_id": 1}]},  # named twice
        {"reason": "x", "lines": [_line(1, 1, quantity="-1")]},
        {"reason": "x", "lines": [_line(1, 1, colour="red")]},
        {"reason": "x" * 501, "amount_minor": 1},
    ],
)
async def test_bad_credit_bodies_are_422(
    client: httpx.AsyncClient, finance: CreatedKey, invoices: dict[str, Json], body: Json
) -> None:
    response = await client.post(
        f"/finance/invoices/{invoices['ann']['id']}/credit-notes",
        json=body,
        headers=bearer(finance),
    )
    assert response.status_code == 422, response.text
    assert "error" in response.json()


async def test_unknown_lines_and_bad_void_bodies_are_422(
    client: httpx.AsyncClient, finance: CreatedKey, invoices: dict[str, Json], pg_sync: Engine
) -> None:
    ann, ben = invoices["ann"], invoices["ben"]
    unknown = await _credit(
        client, finance, ann["id"], {"reason": "x", "lines": [_line(9, 1)]}, 422
    )
    assert unknown["error"]["type"] == "unknown_invoice_line"
    # A line of another invoice is not a line of this one.
    with pg_sync.connect() as conn:
        bens_line = conn.scalar(select(InvoiceLine.id).where(InvoiceLine.invoice_id == ben["id"]))
    foreign = {"reason": "x", "lines": [{"invoice_line_id": bens_line, "amount_minor": 1}]}
    refused = await _credit(client, finance, ann["id"], foreign, 422)
    assert refused["error"]["type"] == "unknown_invoice_line"
    for body in ({}, {"reason": ""}, {"reason": "x", "extra": 1}):
        response = await client.post(
            f"/finance/invoices/{ann['id']}/void", json=body, headers=bearer(finance)
        )
        assert response.status_code == 422, response.text


async def test_credit_note_documents_and_filters(
    client: httpx.AsyncClient, finance: CreatedKey, invoices: dict[str, Json]
) -> None:
    ann, ben = invoices["ann"], invoices["ben"]
    note = await _credit(
        client,
        finance,
        ann["id"],
        {"reason": "Outage on the 14th", "lines": [_line(2, 30, description="Failed requests")]},
    )
    await _credit(client, finance, ben["id"], {"reason": "Goodwill", "amount_minor": 25})

    one = (await client.get(f"/finance/credit-notes/{note['id']}", headers=bearer(finance))).json()
    assert one == note

    def numbers(params: Json) -> list[str]:
        return [n["number"] for n in listing(params)]

    def listing(params: Json) -> list[Json]:
        return responses[str(params)]

    responses: dict[str, list[Json]] = {}
    for params in (
        {},
        {"invoice": ann["id"]},
        {"customer": ben["customer_id"]},
        {"period": "2026-09"},
        {"period": "2026-08"},
    ):
        got = await client.get("/finance/credit-notes", params=params, headers=bearer(finance))
        assert got.status_code == 200
        responses[str(params)] = got.json()["data"]
    assert len(numbers({})) == 2
    assert numbers({"invoice": ann["id"]}) == [note["number"]]
    assert len(numbers({"customer": ben["customer_id"]})) == 1
    assert len(numbers({"period": "2026-09"})) == 2 and numbers({"period": "2026-08"}) == []
    bad = await client.get(
        "/finance/credit-notes", params={"period": "2026-13"}, headers=bearer(finance)
    )
    assert bad.status_code == 422

    pdf = await client.get(f"/finance/credit-notes/{note['id']}.pdf", headers=bearer(finance))
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert f'filename="{note["number"]}.pdf"' in pdf.headers["content-disposition"]
    words = pdf_words(pdf.content)
    for expected in (
        f"Credit note Number {note['number']}",
        f"Credits invoice {ann['number']} of",
        "Reason: Outage on the 14th",
        "Line 2: Failed requests",
        "Subtotal 0.30",
        "Total credited 0.30 USD",
    ):
        assert expected in words, expected

    got_csv = await client.get(f"/finance/credit-notes/{note['id']}.csv", headers=bearer(finance))
    assert got_csv.status_code == 200 and got_csv.headers["content-type"].startswith("text/csv")
    (row,) = list(csv.DictReader(io.StringIO(got_csv.text)))
    assert row["credit_note_number"] == note["number"]
    assert row["invoice_number"] == ann["number"]
    assert (row["invoice_line_position"], row["amount_minor"], row["amount"]) == ("2", "30", "0.30")
    assert row["reason"] == "Outage on the 14th"


async def test_revenue_is_net_of_credit_notes(
    app: FastAPI, client: httpx.AsyncClient, finance: CreatedKey, invoices: dict[str, Json]
) -> None:
    ann, ben = invoices["ann"], invoices["ben"]

    async def report() -> Json:
        got = await client.get(
            "/finance/reports/revenue", params={"period": "2026-09"}, headers=bearer(finance)
        )
        assert got.status_code == 200, got.text
        return got.json()  # type: ignore[no-any-return]

    before = await report()
    assert [r["amount_minor"] for r in before["total"]] == [780]
    await _credit(client, finance, ann["id"], {"reason": "usage", "lines": [_line(2, 30)]})
    await _credit(client, finance, ben["id"], {"reason": "fee", "lines": [_line(1, 100)]})
    await _credit(client, finance, ben["id"], {"reason": "goodwill", "amount_minor": 5})
    after = await report()

    def keyed(rows: list[Json]) -> dict[str, int]:
        return {r["key"]: r["amount_minor"] for r in rows}

    assert keyed(after["invoiced"]) == {"total": 780}
    assert keyed(after["credited"]) == {"credited": 135}
    assert keyed(after["total"]) == {"total": 645}
    assert keyed(after["by_model"]) == {
        "(base fee)": 600 - 100,
        "(all models)": 180 - 30,
        "(invoice credit)": -5,
    }
    assert keyed(after["by_customer"]) == {"ann": 370 - 30, "ben": 410 - 105}
    assert keyed(after["by_plan"]) == {"p v1": 780 - 130, "(invoice credit)": -5}
    for section in ("by_model", "by_customer", "by_plan"):
        assert sum(keyed(after[section]).values()) == 645, section
    # The totals-only read (the console's overview) agrees with the report.
    async with resources(app).sessionmaker() as session:
        totals = await revenue_totals(session, Period(2026, 9))
        top = await revenue(session, Period(2026, 9), top_customers=1)
        customers = await invoiced_customers(session, Period(2026, 9))
    assert [(r.currency, r.amount_minor) for r in totals] == [("usd", 645)]
    # The console's largest customers: the most invoiced, still net of its own credits.
    assert keyed([r.model_dump() for r in top.by_customer]) == {"ben": 410 - 105}
    assert customers == 2


# ----------------------------------------------------------------------------- Stripe


async def _sync(client: httpx.AsyncClient, finance: CreatedKey) -> Json:
    response = await client.post("/finance/sync", headers=bearer(finance))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_a_void_invoice_is_never_pushed(
    client: httpx.AsyncClient,
    finance: CreatedKey,
    invoices: dict[str, Json],
    standin: StripeStandin,
) -> None:
    await _void(client, finance, invoices["ann"]["id"])
    result = await _sync(client, finance)
    assert result["pushed"] == [invoices["ben"]["id"]] and result["voided"] == []
    assert len(standin.invoices) == 1
    (remote,) = standin.invoices.values()
    assert remote["metadata"]["tollgate_invoice_id"] == str(invoices["ben"]["id"])
    again = await _sync(client, finance)
    assert again["pushed"] == [] and len(standin.invoices) == 1


async def test_a_pushed_invoice_is_voided_in_stripe_once(
    client: httpx.AsyncClient,
    finance: CreatedKey,
    invoices: dict[str, Json],
    standin: StripeStandin,
) -> None:
    ann = invoices["ann"]["id"]
    await _sync(client, finance)
    await _void(client, finance, ann)
    # The void reaches Stripe but its answer is lost, every retry too: Stripe has done it.
    standin.fail_next(3, 500, "/v1/invoices/", method="POST", after_commit=True)
    failed = await _sync(client, finance)
    assert str(ann) in failed["failed"] and failed["voided"] == []
    done = await _sync(client, finance)
    assert done["voided"] == [ann] and done["failed"] == {}
    local = (await client.get(f"/finance/invoices/{ann}", headers=bearer(finance))).json()
    assert local["stripe_status"] == "void"
    assert standin.invoices[local["stripe_invoice_id"]]["status"] == "void"
    executed = [r for r in standin.requests_to("/v1/invoices/", "POST") if r.path.endswith("/void")]
    assert len({r.idempotency_key for r in executed}) == 1
    assert (await _sync(client, finance))["voided"] == []


async def test_credit_note_push_is_idempotent_across_failures(
    client: httpx.AsyncClient,
    finance: CreatedKey,
    invoices: dict[str, Json],
    standin: StripeStandin,
    pg_sync: Engine,
) -> None:
    ann = invoices["ann"]
    _tax(pg_sync, ann["id"], 19, 70)
    # A credit note on an invoice not yet in Stripe waits for it.
    note = await _credit(client, finance, ann["id"], {"reason": "Outage", "lines": [_line(2, 50)]})
    standin.fail_next(1, 500, "/v1/credit_notes", method="POST", after_commit=True)
    first = await _sync(client, finance)
    # The SDK's retry carried the same key: Stripe replayed the first answer.
    assert first["credit_notes_pushed"] == [note["id"]], first
    assert len(standin.credit_notes) == 1
    (remote,) = standin.credit_notes.values()
    stripe_invoice = (
        await client.get(f"/finance/invoices/{ann['id']}", headers=bearer(finance))
    ).json()["stripe_invoice_id"]
    assert remote["invoice"] == stripe_invoice
    assert remote["metadata"] == {
        "tollgate_credit_note_id": str(note["id"]),
        "tollgate_number": note["number"],
    }
    assert remote["amount"] == 60 and remote["memo"] == f"{note['number']}: Outage"
    usage_line = next(
        il for il in standin.invoices[stripe_invoice]["lines"]["data"] if il["amount"] == 70
    )
    assert [
        (ln["type"], ln.get("invoice_line_item"), ln["amount"]) for ln in remote["lines"]["data"]
    ] == [
        ("invoice_line_item", usage_line["id"], 50),
        ("custom_line_item", None, 10),
    ]
    stored = (
        await client.get(f"/finance/credit-notes/{note['id']}", headers=bearer(finance))
    ).json()
    assert stored["stripe_credit_note_id"] == remote["id"]

    # Every attempt's answer lost, then Stripe forgets the key (after 24 h): the next sync
    # finds the credit note by its metadata instead of creating a second one.
    second = await _credit(client, finance, ann["id"], {"reason": "Goodwill", "amount_minor": 20})
    standin.fail_next(3, 500, "/v1/credit_notes", method="POST", after_commit=True)
    failed = await _sync(client, finance)
    assert list(failed["credit_notes_failed"]) == [str(second["id"])]
    assert len(standin.credit_notes) == 2
    standin.expire_idempotency_keys()
    retried = await _sync(client, finance)
    assert retried["credit_notes_pushed"] == [second["id"]]
    assert len(standin.credit_notes) == 2
    assert (await _sync(client, finance))["credit_notes_pushed"] == []
    with pg_sync.connect() as conn:
        actions = list(conn.scalars(select(AuditEntry.action)))
    assert actions.count("credit_note.push") == 2


@pytest.mark.parametrize(
    "args",
    [
        ["credit", "1", "--reason", "x", "--line", "nonsense"],
        ["credit", "1", "--reason", "x", "--line", "1=0"],
        ["credit", "1", "--reason", "x", "--line", "1=5", "--amount", "5"],
        ["credit", "1", "--reason", "x"],
        ["void", "1", "--reason", " "],
    ],
)
def test_cli_refuses_bad_corrections_before_touching_anything(args: list[str]) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    result = CliRunner().invoke(cli, ["billing", *args])
    assert result.exit_code == 2, result.output


async def test_a_paid_invoices_credit_is_settled_outside_stripe(
    client: httpx.AsyncClient,
    finance: CreatedKey,
    invoices: dict[str, Json],
    standin: StripeStandin,
    pg_sync: Engine,
) -> None:
    ben = invoices["ben"]["id"]
    await _sync(client, finance)
    stripe_id = (await client.get(f"/finance/invoices/{ben}", headers=bearer(finance))).json()[
        "stripe_invoice_id"
    ]
    standin.invoices[stripe_id]["status"] = "paid"  # as after invoice.paid
    _status(pg_sync, ben, "paid")
    note = await _credit(client, finance, ben, {"reason": "refund", "amount_minor": 110})
    pushed = await _sync(client, finance)
    assert pushed["credit_notes_pushed"] == [note["id"]], pushed
    (remote,) = standin.credit_notes.values()
    assert (remote["type"], remote["amount"], remote["out_of_band_amount"]) == (
        "post_payment",
        110,
        110,
    )

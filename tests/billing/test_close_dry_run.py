"""Rehearsing a close: ``POST /finance/periods/{YYYY-MM}/close?dry_run=true`` works for any
month and returns exactly the invoices a close would write at that moment, writing nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func, select

from app.clock import ManualClock
from app.keys.schemas import CreatedKey, Scope
from app.orm import AuditEntry, Invoice, InvoiceLine, InvoiceSequence
from tests.billing.helpers import add_usage, assign, create_plan
from tests.conftest import bearer, make_key

SEPT = "2026-09"
AUG_1 = datetime(2026, 8, 1, tzinfo=UTC)
SEPT_5 = datetime(2026, 9, 5, 12, tzinfo=UTC)

# What differs between a rehearsal and the real thing: the number and id it gets when
# written, the status and collection words, and the moment (the close runs a little later).
_WRITTEN_ONLY = {"id", "number", "status", "collection", "finalized_at", "issued_at", "due_at"}


@pytest.fixture
async def admin(app: FastAPI) -> CreatedKey:
    return await make_key(app, "tollgate-ops", (Scope.admin,))


@pytest.fixture
async def finance(app: FastAPI) -> CreatedKey:
    return await make_key(app, "tollgate-finance", (Scope.finance,))


def _counts(pg_sync: Engine) -> dict[str, int]:
    tables = (Invoice, InvoiceLine, InvoiceSequence, AuditEntry)
    with pg_sync.connect() as conn:
        return {
            t.__tablename__: int(conn.scalar(select(func.count()).select_from(t)) or 0)
            for t in tables
        }


async def _close(
    client: httpx.AsyncClient, finance: CreatedKey, period: str, *, dry_run: bool
) -> dict[str, Any]:
    response = await client.post(
        f"/finance/periods/{period}/close",
        params={"dry_run": "true"} if dry_run else None,
        headers=bearer(finance),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _comparable(invoice: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in invoice.items() if k not in _WRITTEN_ONLY}


async def _customers(app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey) -> list[int]:
    """Four customers: taxed at 19 %, exempt, without a plan, and one on a JPY plan."""
    eur = await create_plan(
        client,
        admin,
        name="eur",
        currency="eur",
        base_fee="2",
        components=[
            {"unit": "request", "pricing": "per_unit", "unit_price": "0.08", "included": "1"}
        ],
    )
    jpy = await create_plan(client, admin, name="jpy", currency="jpy", base_fee="1250")
    details: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = [
        ("taxed", eur, {"legal_name": "Taxed GmbH", "country": "DE", "tax_rate": "19"}),
        ("exempt", eur, {"tax_exempt": True, "tax_note": "Reverse charge", "country": "FR"}),
        ("planless", None, {}),
        ("yen", jpy, {"tax_rate": "10"}),
    ]
    ids = []
    for name, plan, body in details:
        key = await make_key(app, name)
        if plan is not None:
            await assign(app, key.customer_id, plan["id"], AUG_1, immediately=True)
            await add_usage(app, key, SEPT_5, count=4)
        if body:
            patched = await client.patch(
                f"/admin/customers/{key.customer_id}", json=body, headers=bearer(admin)
            )
            assert patched.status_code == 200, patched.text
        ids.append(key.customer_id)
    return ids


async def test_a_dry_run_of_an_ended_month_equals_the_close_that_follows(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: CreatedKey,
    finance: CreatedKey,
    pg_sync: Engine,
) -> None:
    taxed, exempt, planless, yen = await _customers(app, client, admin)
    before = _counts(pg_sync)

    rehearsal = await _close(client, finance, SEPT, dry_run=True)
    assert _counts(pg_sync) == before  # no invoice, no line, no number taken, no audit entry
    assert rehearsal["dry_run"] is True and rehearsal["created"] == []
    assert rehearsal["invoiced"] == [taxed, exempt, yen]
    assert rehearsal["without_plan"] == [planless]  # the operator account is never billed
    assert finance.customer_id not in rehearsal["invoiced"] + rehearsal["already_closed"]
    drafts = rehearsal["invoices"]
    assert [d["number"] for d in drafts] == ["(draft)"] * 3
    assert [d["id"] for d in drafts] == [None] * 3
    assert all(d["issued_at"] and d["due_at"] for d in drafts)
    by_customer = {d["customer_id"]: d for d in drafts}
    # 2 EUR + 3 billable requests x 0.08 = 2.24; 19 % of it is 42.56 cents -> 0.43.
    assert (by_customer[taxed]["total"], by_customer[taxed]["tax"]) == ("2.67", "0.43")
    assert (by_customer[exempt]["total"], by_customer[exempt]["tax_note"]) == (
        "2.24",
        "Reverse charge",
    )
    assert by_customer[yen]["total"] == "1375"

    again = await _close(client, finance, SEPT, dry_run=True)
    assert [_comparable(d) for d in again["invoices"]] == [_comparable(d) for d in drafts]

    closed = await _close(client, finance, SEPT, dry_run=False)
    assert closed["dry_run"] is False and len(closed["created"]) == 3
    for key in ("invoiced", "already_closed", "without_plan", "not_ratable"):
        assert closed[key] == rehearsal[key], key
    assert [i["number"] for i in closed["invoices"]] == [
        "TG-2026-000001",
        "TG-2026-000002",
        "TG-2026-000003",
    ]
    assert [_comparable(i) for i in closed["invoices"]] == [_comparable(d) for d in drafts]
    # What the close answered is what is stored and read back.
    for invoice_id, answered in zip(closed["created"], closed["invoices"], strict=True):
        stored = await client.get(f"/finance/invoices/{invoice_id}", headers=bearer(finance))
        assert stored.json() == answered
    after = _counts(pg_sync)
    assert after["invoices"] == before["invoices"] + 3
    assert after["audit_log"] == before["audit_log"] + 1  # the close, not the rehearsals

    # A closed month can be rehearsed too: nothing left to invoice, nothing written.
    closed_again = await _close(client, finance, SEPT, dry_run=True)
    assert closed_again["invoices"] == [] and closed_again["invoiced"] == []
    assert sorted(closed_again["already_closed"]) == sorted([taxed, exempt, yen])
    assert _counts(pg_sync) == after


async def test_the_open_month_can_be_rehearsed_but_not_closed(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: CreatedKey,
    finance: CreatedKey,
    pg_sync: Engine,
    clock: ManualClock,
) -> None:
    plan = await create_plan(
        client,
        admin,
        name="open",
        currency="usd",
        components=[{"unit": "request", "pricing": "per_unit", "unit_price": "0.25"}],
    )
    key = await make_key(app, "early")
    await assign(app, key.customer_id, plan["id"], AUG_1, immediately=True)
    clock.set(datetime(2026, 10, 20, tzinfo=UTC))
    await add_usage(app, key, datetime(2026, 10, 2, tzinfo=UTC), count=6)
    before = _counts(pg_sync)

    refused = await client.post("/finance/periods/2026-10/close", headers=bearer(finance))
    assert refused.status_code == 409
    assert refused.json()["error"]["type"] == "period_not_closable"

    rehearsal = await _close(client, finance, "2026-10", dry_run=True)
    assert rehearsal["closable_from"].startswith("2026-11-02T00:00:00")
    (draft,) = rehearsal["invoices"]
    assert (draft["customer_id"], draft["total"], draft["number"]) == (
        key.customer_id,
        "1.50",
        "(draft)",
    )
    # The same as the preview of the month to date.
    preview = await client.get(
        "/finance/invoices/preview",
        params={"customer": key.customer_id, "period": "2026-10"},
        headers=bearer(finance),
    )
    assert preview.json()["lines"] == draft["lines"]
    assert preview.json()["total_minor"] == draft["total_minor"]
    # A month that has not begun: nobody has usage yet, base fees only.
    future = await _close(client, finance, "2027-03", dry_run=True)
    assert [d["total"] for d in future["invoices"]] == ["0.00"]
    assert _counts(pg_sync) == before


async def test_dry_run_is_a_boolean(client: httpx.AsyncClient, finance: CreatedKey) -> None:
    response = await client.post(
        f"/finance/periods/{SEPT}/close", params={"dry_run": "perhaps"}, headers=bearer(finance)
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"

"""One write path per action: every admin and finance write done once through the HTTP API
and once through the ``tollgate`` CLI leaves the same rows and the same audit entries.

The same scenario runs twice on an emptied database: first over HTTP, then with the CLI
(in-process, in a worker thread, since each command runs its own event loop). Identical
order means identical ids, so whole tables are compared; only what cannot match is set aside:
who acted (the API's key or "cli"), secrets' traces (hash, prefix, last four), Stripe's ids,
and moments, which are compared as past or future of the comparison.

Model catalog writes are not here: the catalog's tables also hold what the app's start-up
registers (the shipped models) and what its replica reports, which the scenario does not
write, so they are left out of the comparison. Webhooks have no CLI; their audit row is
checked below.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, insert, select, text
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings, get_settings
from app.keys.schemas import CreatedKey, Scope
from app.orm import (
    ApiKey,
    AuditEntry,
    CatalogModel,
    CatalogRevision,
    Customer,
    Invoice,
    ModelReplica,
    ModelVariant,
    ModelVersion,
)
from app.orm.base import Base
from tests.billing.helpers import add_usage
from tests.conftest import TEST_SECRET, bearer, make_key, make_settings
from tests.stripe_standin.server import StripeStandin, event, sign_webhook

WEBHOOK_SECRET = "whsec_parity"
PLAN = {
    "name": "metered",
    "currency": "usd",
    "base_fee": "2",
    "components": [{"unit": "request", "pricing": "per_unit", "unit_price": "0.25"}],
}
PLAN_V2 = {
    "currency": "usd",
    "base_fee": "3",
    "components": [{"unit": "request", "pricing": "per_unit", "unit_price": "0.5"}],
    "requests_per_minute": 600,
}
UNUSED_PLAN = {"name": "unused", "currency": "eur", "base_fee": "1"}
BILLING_DETAILS = {
    "legal_name": "Acme Inc.",
    "billing_email": "ap@acme.co",
    "address": "1 Main St\nSpringfield",
    "country": "US",
    "tax_id": "US-123",
    "tax_rate": "7.25",
}
CUSTOMER = 2  # ids in both runs: 1 is the operator that holds the admin key
KEY, ROTATED_TO = 2, 3
METERED, UNUSED = 1, 2
PERIOD = "2026-09"


def _stripe(standin: StripeStandin) -> dict[str, Any]:
    return {
        "stripe_api_key": "sk_test_tollgate",
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "stripe_api_base": standin.base_url,
        "stripe_max_retries": 2,
        "stripe_retry_delay_s": 0.01,
    }


@pytest.fixture
def settings(pg_url: str, pg_sync: object, standin: StripeStandin) -> Settings:
    return make_settings(pg_url, **_stripe(standin))


@pytest.fixture
def run_cli(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Awaitable[str]]]:
    """``tollgate ARGS...`` against the test database and a Stripe of its own (the API's
    would replay its first run's answers); returns stdout, asserts exit 0."""
    standin = StripeStandin()
    standin.start()
    env = {
        "TOLLGATE_ENV": "test",
        "TOLLGATE_DATABASE_URL": pg_url,
        "TOLLGATE_SECRET_KEY": TEST_SECRET,
        **{f"TOLLGATE_{k.upper()}": str(v) for k, v in _stripe(standin).items()},
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    runner = CliRunner()

    async def run(*args: str) -> str:
        result = await asyncio.to_thread(runner.invoke, cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
        return result.stdout

    try:
        yield run
    finally:
        get_settings.cache_clear()
        standin.stop()


async def _operator(app: FastAPI) -> CreatedKey:
    return await make_key(app, "operator", (Scope.admin, Scope.finance))


def _past_plan_and_usage(pg_sync: Engine) -> None:
    """Set-up both runs share: the customer was on the plan in PERIOD and used its key."""
    with pg_sync.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customer_plans (customer_id, plan_version_id, effective_from, "
                "created_at) VALUES (:c, 1, '2026-08-01T00:00:00+00:00', now())"
            ),
            {"c": CUSTOMER},
        )


async def _usage(app: FastAPI) -> None:
    key = CreatedKey(ROTATED_TO, CUSTOMER, "", "", (), None)
    await add_usage(app, key, datetime(2026, 9, 5, tzinfo=UTC), count=4)


INVOICE, UNPAID = 1, 2  # the close's invoice; one more, inserted, to void
WHOLE_CREDIT = {"reason": "goodwill", "amount_minor": 25}


def _unpaid_invoice(pg_sync: Engine) -> None:
    """An issued, unpaid invoice of an earlier month, the same in both runs."""
    with pg_sync.begin() as conn:
        conn.execute(
            insert(Invoice).values(
                number="TG-2026-000900",
                customer_id=CUSTOMER,
                period="2026-08",
                period_start=datetime(2026, 8, 1, tzinfo=UTC),
                period_end=datetime(2026, 9, 1, tzinfo=UTC),
                status="finalized",
                currency="usd",
                subtotal_minor=500,
                total_minor=500,
            )
        )


def _prefix(pg_sync: Engine, key_id: int) -> str:
    with pg_sync.connect() as conn:
        prefix = conn.scalar(select(ApiKey.prefix).where(ApiKey.id == key_id))
    assert prefix is not None
    return prefix


async def _through_the_api(
    app: FastAPI, client: httpx.AsyncClient, pg_sync: Engine, admin: CreatedKey
) -> None:
    async def call(method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = await client.request(method, path, json=body, headers=bearer(admin))
        assert response.status_code == status, (method, path, response.text)
        return response.json() if response.content else None

    await call("POST", "/admin/customers", {"name": "acme", "email": "a@acme.co"}, 201)
    await call("PATCH", f"/admin/customers/{CUSTOMER}", {"name": "acme-inc", "email": None})
    await call("PATCH", f"/admin/customers/{CUSTOMER}", BILLING_DETAILS)
    await call("PATCH", f"/admin/customers/{CUSTOMER}", {"tax_id": None, "tax_rate": "19"})
    await call("POST", f"/admin/customers/{CUSTOMER}/suspend")
    await call("POST", f"/admin/customers/{CUSTOMER}/reactivate")
    key = {
        "customer_id": CUSTOMER,
        "scopes": ["predict"],
        "name": "ci",
        "allowed_models": ["linreg"],
        "requests_per_minute": 60,
        "items_per_minute": 600,
        "expires_at": "2030-01-01T00:00:00Z",
    }
    await call("POST", "/admin/keys", key, 201)
    await call("POST", f"/admin/keys/{KEY}/rotate", {"grace_seconds": 86400})
    # The old key, in its grace window, revoked by prefix: it stops now.
    await call("POST", f"/admin/keys/{_prefix(pg_sync, KEY)}/revoke")
    await call("POST", f"/admin/keys/{ROTATED_TO}/expire", {"expires_at": "2029-06-01T00:00:00Z"})
    await call("POST", "/admin/plans", PLAN, 201)
    await call("PUT", f"/admin/plans/{METERED}", PLAN_V2)
    await call("POST", "/admin/plans", UNUSED_PLAN, 201)
    await call("DELETE", f"/admin/plans/{UNUSED}", status=204)
    assignment = {"plan_id": METERED, "version": 2, "effective": "next_period"}
    await call("PUT", f"/admin/customers/{CUSTOMER}/plan", assignment)
    _past_plan_and_usage(pg_sync)
    await _usage(app)
    await call("POST", f"/finance/periods/{PERIOD}/close?dry_run=true")  # writes nothing
    await call("POST", f"/finance/periods/{PERIOD}/close")
    await call("POST", f"/finance/sync?period={PERIOD}")
    credit = {"reason": "outage", "lines": [{"invoice_line_position": 1, "amount_minor": 100}]}
    await call("POST", f"/finance/invoices/{INVOICE}/credit-notes", credit, 201)
    await call("POST", f"/finance/invoices/{INVOICE}/credit-notes", WHOLE_CREDIT, 201)
    _unpaid_invoice(pg_sync)
    await call("POST", f"/finance/invoices/{UNPAID}/void", {"reason": "duplicate"})
    await call("POST", f"/finance/sync?period={PERIOD}")


async def _through_the_cli(
    app: FastAPI, run: Callable[..., Awaitable[str]], pg_sync: Engine, files: Path
) -> None:
    plan, plan_v2, unused = files / "plan.json", files / "plan_v2.json", files / "unused.json"
    plan.write_text(json.dumps(PLAN))
    plan_v2.write_text(json.dumps(PLAN_V2))
    unused.write_text(json.dumps(UNUSED_PLAN))

    await run("customers", "create", "acme", "--email", "a@acme.co")
    await run("customers", "update", str(CUSTOMER), "--name", "acme-inc", "--clear-email")
    await run(
        "customers", "update", str(CUSTOMER), "--legal-name", "Acme Inc.",
        "--billing-email", "ap@acme.co", "--address", r"1 Main St\nSpringfield",
        "--country", "us", "--tax-id", "US-123", "--tax-rate", "7.25",
    )  # fmt: skip
    await run("customers", "update", str(CUSTOMER), "--clear", "tax_id", "--tax-rate", "19")
    await run("customers", "suspend", str(CUSTOMER))
    await run("customers", "reactivate", str(CUSTOMER))
    await run(
        "keys", "create", "--customer-id", str(CUSTOMER), "--scope", "predict",
        "--name", "ci", "--model", "linreg", "--requests-per-minute", "60",
        "--items-per-minute", "600", "--expires-at", "2030-01-01T00:00:00Z",
    )  # fmt: skip
    await run("keys", "rotate", str(KEY), "--grace-seconds", "86400")
    await run("keys", "revoke", _prefix(pg_sync, KEY))
    await run("keys", "expire", str(ROTATED_TO), "--at", "2029-06-01T00:00:00Z")
    await run("plans", "create", str(plan))
    await run("plans", "edit", str(METERED), str(plan_v2))
    await run("plans", "create", str(unused))
    await run("plans", "archive", str(UNUSED))
    await run("plans", "assign", str(CUSTOMER), str(METERED), "--version", "2")
    _past_plan_and_usage(pg_sync)
    await _usage(app)
    await run("billing", "close", PERIOD, "--dry-run")
    await run("billing", "close", PERIOD)
    await run("billing", "sync", PERIOD)
    await run("billing", "credit", str(INVOICE), "--reason", "outage", "--line", "1=100")
    await run("billing", "credit", str(INVOICE), "--reason", "goodwill", "--amount", "25")
    _unpaid_invoice(pg_sync)
    await run("billing", "void", str(UNPAID), "--reason", "duplicate")
    await run("billing", "sync", PERIOD)


# What cannot match between two runs, wherever it appears (rows or audit snapshots).
_UNCOMPARABLE = {"hash", "prefix", "last_four", "actor", "actor_key_id", "request_id"}
_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?")
_STRIPE_ID = re.compile(r"(cus|in|ii|evt|cn)_[A-Za-z0-9]+")


def _when(moment: datetime, now: datetime) -> str:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return "past" if moment <= now else f"future:{moment.date()}"


def _normal(value: Any, now: datetime) -> Any:
    if isinstance(value, dict):
        return {k: _normal(v, now) for k, v in value.items() if k not in _UNCOMPARABLE}
    if isinstance(value, list):
        return [_normal(v, now) for v in value]
    if isinstance(value, datetime):
        return _when(value, now)
    if isinstance(value, str):
        if _MOMENT.fullmatch(value):
            return _when(datetime.fromisoformat(value.replace("Z", "+00:00")), now)
        return _STRIPE_ID.sub(lambda m: f"{m.group(1)}_<stripe>", value)
    return value


# Filled by the app's start-up (shipped models) and its replica's reports, not by the scenario.
_CATALOG = {
    model.__tablename__
    for model in (CatalogModel, ModelVersion, ModelVariant, CatalogRevision, ModelReplica)
}


def _tables(pg_sync: Engine) -> dict[str, list[dict[str, Any]]]:
    now = datetime.now(UTC)
    out = {}
    with pg_sync.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name in _CATALOG:
                continue
            order = [c for c in table.primary_key.columns]
            rows = conn.execute(select(table).order_by(*order)).mappings().all()
            out[table.name] = [_normal(dict(row), now) for row in rows]
    return out


def _empty(pg_sync: Engine) -> None:
    names = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with pg_sync.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


async def test_api_and_cli_writes_leave_the_same_rows_and_audit_entries(
    app: FastAPI,
    client: httpx.AsyncClient,
    pg_sync: Engine,
    run_cli: Callable[..., Awaitable[str]],
    tmp_path: Path,
) -> None:
    await _through_the_api(app, client, pg_sync, await _operator(app))
    by_api = _tables(pg_sync)
    _empty(pg_sync)
    await _operator(app)  # the same first rows, so that ids match
    await _through_the_cli(app, run_cli, pg_sync, tmp_path)
    by_cli = _tables(pg_sync)

    actions = [e["action"] for e in by_api["audit_log"]]
    assert actions == [
        "customer.create",
        "customer.update",
        "customer.update",
        "customer.update",
        "customer.suspend",
        "customer.reactivate",
        "key.create",
        "key.rotate",
        "key.revoke",
        "key.expire",
        "plan.create",
        "plan.update",
        "plan.create",
        "plan.archive",
        "customer.plan",
        "period.close",
        "invoice.push",
        "stripe.sync",
        "credit_note.create",
        "credit_note.create",
        "invoice.void",
        "credit_note.push",
        "credit_note.push",
        "stripe.sync",
    ]
    for table in by_api:
        assert by_cli[table] == by_api[table], table
    # What a user would notice, spelled out: the old key is revoked now, not at the end of
    # its grace day; the invoice reached Stripe; the price change is on record.
    old_key = by_cli["api_keys"][KEY - 1]
    assert old_key["revoked_at"] == "past" and old_key["replaced_by"] == ROTATED_TO
    assert by_cli["invoices"][0]["stripe_invoice_id"] == "in_<stripe>"
    billed = by_cli["customers"][CUSTOMER - 1]
    assert billed["address"] == "1 Main St\nSpringfield" and billed["tax_id"] is None
    assert by_cli["invoices"][0]["tax_rate"] == by_api["invoices"][0]["tax_rate"]
    assert by_cli["invoices"][0]["bill_to"]["legal_name"] == "Acme Inc."
    assert by_cli["invoices"][0]["tax_minor"] > 0
    assert [n["stripe_credit_note_id"] for n in by_cli["credit_notes"]] == ["cn_<stripe>"] * 2
    # Credited before tax, taxed at the invoice's 19 %: 100 + 19, 25 + 4.75 -> 5.
    assert [n["subtotal_minor"] for n in by_cli["credit_notes"]] == [100, 25]
    assert [n["total_minor"] for n in by_cli["credit_notes"]] == [119, 30]
    assert by_cli["invoices"][1]["status"] == "void"
    update = by_cli["audit_log"][actions.index("plan.update")]
    assert (update["before"]["base_fee"], update["after"]["base_fee"]) == ("2", "3")
    with pg_sync.connect() as conn:
        actors = set(conn.scalars(select(AuditEntry.actor)))
    assert actors == {"cli"}


async def test_webhook_effects_are_audited(client: httpx.AsyncClient, pg_sync: Engine) -> None:
    with pg_sync.begin() as conn:
        customer_id = conn.scalar(insert(Customer).values(name="hooked").returning(Customer.id))
        invoice_id = conn.scalar(
            insert(Invoice)
            .values(
                number="TG-2026-000009",
                customer_id=customer_id,
                period=PERIOD,
                period_start=datetime(2026, 9, 1, tzinfo=UTC),
                period_end=datetime(2026, 10, 1, tzinfo=UTC),
                status="finalized",
                currency="usd",
                subtotal_minor=100,
                total_minor=100,
                stripe_invoice_id="in_hooked",
                stripe_status="open",
            )
            .returning(Invoice.id)
        )
    paid = event("invoice.paid", {"id": "in_hooked", "object": "invoice", "status": "paid"})
    body = orjson.dumps(paid)
    headers = {"Stripe-Signature": sign_webhook(body, WEBHOOK_SECRET)}
    for _ in range(2):  # the second delivery is a duplicate: no second entry
        response = await client.post("/webhooks/stripe", content=body, headers=headers)
        assert response.status_code == 200, response.text
    with pg_sync.connect() as conn:
        entries = conn.execute(
            select(
                AuditEntry.actor,
                AuditEntry.action,
                AuditEntry.target_id,
                AuditEntry.before,
                AuditEntry.after,
            )
        ).all()
    assert [(e.actor, e.action, e.target_id) for e in entries] == [
        ("stripe", "invoice.webhook", str(invoice_id))
    ]
    assert entries[0].before == {"status": "finalized", "stripe_status": "open"}
    assert entries[0].after == {
        "status": "paid",
        "stripe_status": "paid",
        "event": paid["id"],
        "type": "invoice.paid",
    }

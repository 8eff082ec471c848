"""The Stripe webhook under hostile input (cases found by fuzzing a running server).

Unsigned or forged requests are ``invalid_signature``; a correctly signed body that is not a
well-formed event is ``malformed_event``. Either way the answer is a 400 with the app's JSON
error, never a 500, and neither the invoice nor the event log changes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Engine, func, insert, select

from app.config import Settings
from app.orm import Customer, Invoice, StripeEvent
from tests.conftest import make_settings
from tests.stripe_standin.server import event, sign_webhook

WEBHOOK_SECRET = "whsec_fuzz"
STRIPE_INVOICE = "in_fuzz0001"
# Replaced in the serialized event by raw JSON text that no dict can express.
HOLE = "__raw_json_here__"


@pytest.fixture
def settings(pg_url: str, pg_sync: object) -> Settings:
    # Verifying a webhook never calls Stripe: the API base is a closed port on purpose.
    return make_settings(
        pg_url,
        stripe_api_key="sk_test_tollgate",
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base="http://127.0.0.1:9",
    )


@pytest.fixture
def invoice(pg_sync: Engine) -> None:
    """One finalized invoice already pushed to Stripe as ``STRIPE_INVOICE``."""
    with pg_sync.begin() as conn:
        customer_id = conn.scalar(
            insert(Customer).values(name="fuzz", email=None).returning(Customer.id)
        )
        conn.execute(
            insert(Invoice).values(
                number="TG-2026-000001",
                customer_id=customer_id,
                period="2026-09",
                period_start=datetime(2026, 9, 1, tzinfo=UTC),
                period_end=datetime(2026, 10, 1, tzinfo=UTC),
                status="finalized",
                currency="usd",
                subtotal_minor=370,
                total_minor=370,
                stripe_invoice_id=STRIPE_INVOICE,
                stripe_status="open",
            )
        )


def _state(pg_sync: Engine) -> tuple[str, str | None, int]:
    """What a webhook can change: the invoice's status, its Stripe status, the event log."""
    with pg_sync.connect() as conn:
        row = conn.execute(select(Invoice.status, Invoice.stripe_status)).one()
        events = conn.scalar(select(func.count()).select_from(StripeEvent))
    return row.status, row.stripe_status, int(events or 0)


UNTOUCHED = ("finalized", "open", 0)


def _paid(**obj: Any) -> dict[str, Any]:
    return event(
        "invoice.paid", {"id": STRIPE_INVOICE, "object": "invoice", "status": "paid", **obj}
    )


def _with_raw(evt: dict[str, Any], raw: bytes) -> bytes:
    """``evt`` serialized, with the ``HOLE`` string replaced by ``raw`` JSON text."""
    body = orjson.dumps(evt)
    assert body.count(HOLE.encode()) == 1
    return body.replace(f'"{HOLE}"'.encode(), raw)


def _nested_dict(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


async def _post(
    client: httpx.AsyncClient,
    body: bytes,
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
    header: bytes | str | None = None,
) -> httpx.Response:
    signature = sign_webhook(body, secret, timestamp) if header is None else header
    return await client.post(
        "/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )


def _assert_error(response: httpx.Response, type_: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == type_ and error["message"], error


# ------------------------------------------------------------------ signature header


@pytest.mark.parametrize(
    "header",
    [b"t=1,v1=\xff", "t=1,v1=é".encode(), b"t=1,v1=\xff\xfe,v0=\xc3\xa9"],
    ids=["latin1-byte", "utf8-letter", "several"],
)
async def test_non_ascii_signature_header_is_a_bad_signature(
    client: httpx.AsyncClient, pg_sync: Engine, invoice: None, header: bytes
) -> None:
    response = await _post(client, orjson.dumps(_paid()), header=header)
    _assert_error(response, "invalid_signature")
    assert _state(pg_sync) == UNTOUCHED


async def test_valid_signature_next_to_a_non_ascii_one_is_rejected(
    client: httpx.AsyncClient, pg_sync: Engine, invoice: None
) -> None:
    # Stripe only ever sends ASCII; a header carrying anything else is not Stripe's.
    body = orjson.dumps(_paid())
    header = sign_webhook(body, WEBHOOK_SECRET).encode() + b",v0=\xff"
    _assert_error(await _post(client, body, header=header), "invalid_signature")
    assert _state(pg_sync) == UNTOUCHED


# ------------------------------------------------------------------ signed, malformed body

MALFORMED_BODIES = {
    "array": b"[1,2]",
    "null": b"null",
    "string": b'"x"',
    "number": b"1",
    "nan": b"NaN",
    "infinity": b"-Infinity",
    "lone-surrogate": b'"\\ud800"',
    "deep-arrays": b"[" * 3000 + b"]" * 3000,
    "deep-objects": _nested_dict(900),
    "nan-in-event": _with_raw(_paid(amount_paid=HOLE), b"NaN"),
    "surrogate-in-event": _with_raw(_paid(description=HOLE), b'"\\ud800"'),
    "deep-in-event": _with_raw(_paid(metadata=HOLE), _nested_dict(900)),
    "huge-number-in-event": _with_raw(_paid(total=HOLE), b"1e400"),
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
async def test_signed_malformed_body_is_rejected_without_effect(
    client: httpx.AsyncClient, pg_sync: Engine, invoice: None, body: bytes
) -> None:
    _assert_error(await _post(client, body), "malformed_event")
    assert _state(pg_sync) == UNTOUCHED


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
async def test_forged_malformed_body_is_a_bad_signature(
    client: httpx.AsyncClient, pg_sync: Engine, invoice: None, body: bytes
) -> None:
    # The signature is judged first: a forger learns nothing about how the body is parsed.
    _assert_error(await _post(client, body, secret="whsec_wrong"), "invalid_signature")
    assert _state(pg_sync) == UNTOUCHED


def _replace(evt: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**evt, **fields}


MALFORMED_EVENTS = {
    "data-list": _replace(_paid(), data=[{"object": {"id": STRIPE_INVOICE}}]),
    "data-string": _replace(_paid(), data="x"),
    "data-null": _replace(_paid(), data=None),
    "data-missing": {k: v for k, v in _paid().items() if k != "data"},
    "object-list": _replace(_paid(), data={"object": [STRIPE_INVOICE]}),
    "object-string": _replace(_paid(), data={"object": STRIPE_INVOICE}),
    "object-null": _replace(_paid(), data={"object": None}),
    "object-id-number": _paid(id=12345),
    "object-id-list": _paid(id=[STRIPE_INVOICE]),
    "object-id-nul": _paid(id=STRIPE_INVOICE + "\x00"),
    "status-list": _paid(status=["paid"]),
    "status-object": _paid(status={"paid": True}),
    "status-too-long": _paid(status="p" * 40),
    "status-nul": _paid(status="pa\x00id"),
    "event-id-list": _replace(_paid(), id=["evt_1"]),
    "event-id-not-evt": _replace(_paid(), id="in_1"),
    "event-id-too-long": _replace(_paid(), id="evt_" + "a" * 300),
    "event-id-nul": _replace(_paid(), id="evt_1\x00"),
    "type-list": _replace(_paid(), type=["invoice.paid"]),
    "type-too-long": _replace(_paid(), type="customer." + "x" * 150),
    "type-nul": _replace(_paid(), type="customer.created\x00"),
}


@pytest.mark.parametrize("evt", MALFORMED_EVENTS.values(), ids=MALFORMED_EVENTS.keys())
async def test_signed_event_of_the_wrong_shape_is_rejected_without_effect(
    client: httpx.AsyncClient, pg_sync: Engine, invoice: None, evt: dict[str, Any]
) -> None:
    _assert_error(await _post(client, orjson.dumps(evt)), "malformed_event")
    assert _state(pg_sync) == UNTOUCHED


# ------------------------------------------------------------------ timestamps


async def test_timestamp_far_in_the_future_is_rejected(
    client: httpx.AsyncClient, pg_sync: Engine, invoice: None
) -> None:
    body = orjson.dumps(_paid())
    future = await _post(client, body, timestamp=int(time.time()) + 10**6)
    _assert_error(future, "invalid_signature")
    assert "future" in future.json()["error"]["message"]
    just_over = await _post(client, body, timestamp=int(time.time()) + 400)
    _assert_error(just_over, "invalid_signature")
    assert _state(pg_sync) == UNTOUCHED


async def test_timestamp_slightly_ahead_is_accepted(
    client: httpx.AsyncClient, pg_sync: Engine, invoice: None
) -> None:
    # A sender's clock a little ahead of ours is within the same 300 s tolerance.
    response = await _post(client, orjson.dumps(_paid()), timestamp=int(time.time()) + 200)
    assert response.status_code == 200 and response.json()["outcome"] == "applied"


# ------------------------------------------------------------------ well-formed events


async def test_well_formed_events_still_apply_and_unknown_types_are_acknowledged(
    client: httpx.AsyncClient, pg_sync: Engine, invoice: None
) -> None:
    # Text Postgres cannot keep in a column (NUL) is fine inside the stored payload.
    paid = _paid(description="usage\x00note", metadata={"tollgate_invoice": "1"})
    ok = await _post(client, orjson.dumps(paid))
    assert ok.status_code == 200 and ok.json() == {"received": True, "outcome": "applied"}
    assert _state(pg_sync) == ("paid", "paid", 1)
    assert (await _post(client, orjson.dumps(paid))).json()["outcome"] == "duplicate"

    # Types Tollgate does not act on are acknowledged (Stripe retries anything but 2xx).
    for evt in (
        event("customer.created", {"id": "cus_x", "object": "customer"}),
        _replace(event("charge.succeeded", {}), data="whatever"),
        event("v1.billing.meter.error_report_triggered", {"id": "mtr_x"}),
    ):
        ignored = await _post(client, orjson.dumps(evt))
        assert ignored.status_code == 200 and ignored.json()["outcome"] == "ignored", ignored.text
    assert _state(pg_sync) == ("paid", "paid", 4)

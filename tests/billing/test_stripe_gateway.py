"""StripeGateway against the in-process Stripe stand-in (no database, no network).

The official SDK talks HTTP to ``tests/stripe_standin``; the tests inspect the stand-in's
state and request log. Retry delays are set to milliseconds so the suite stays fast.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import stripe

from app.billing.stripe_gateway import (
    PushedInvoice,
    PushInvoice,
    PushLine,
    StripeError,
    StripeGateway,
    WebhookInvalid,
)
from tests.stripe_standin.server import StripeStandin, event, parse_form, sign_webhook

API_KEY = "sk_test_tollgate_standin"
WEBHOOK_SECRET = "whsec_test_0123456789"
RETRIES = 2
PERIOD = (1_740_787_200, 1_743_465_600)  # 2025-03-01 .. 2025-04-01 UTC


def make_gateway(standin: StripeStandin, **overrides: Any) -> StripeGateway:
    options: dict[str, Any] = {
        "webhook_secret": WEBHOOK_SECRET,
        "api_base": standin.base_url,
        "max_network_retries": RETRIES,
        "timeout_s": 5.0,
        "retry_initial_delay_s": 0.001,
        "retry_max_delay_s": 0.005,
    }
    options.update(overrides)
    return StripeGateway(API_KEY, **options)


@pytest.fixture
def gateway(standin: StripeStandin) -> StripeGateway:
    return make_gateway(standin)


@pytest.fixture
def sdk(standin: StripeStandin) -> stripe.StripeClient:
    """The SDK itself, without retries, for calls the gateway does not make."""
    return stripe.StripeClient(
        API_KEY, base_addresses={"api": standin.base_url}, max_network_retries=0
    )


@pytest.fixture
def customer_id(gateway: StripeGateway) -> str:
    return gateway.ensure_customer("cust-1", "Acme Robotics", "billing@acme.test")


def make_invoice(customer_id: str, n: int = 4, local_id: str = "inv-2025-03") -> PushInvoice:
    lines = tuple(
        PushLine(
            local_id=f"{local_id}-line-{i}",
            description=f"linreg v{i}: {1000 * (i + 1)} predictions",
            amount_minor=125 * (i + 1),
            period_start=PERIOD[0],
            period_end=PERIOD[1],
        )
        for i in range(n)
    )
    return PushInvoice(
        local_id=local_id,
        number="TG-2025-03-0001",
        customer_stripe_id=customer_id,
        currency="USD",
        lines=lines,
        description="Tollgate usage, March 2025",
    )


def expected_total(inv: PushInvoice) -> int:
    return sum(line.amount_minor for line in inv.lines)


def assert_complete(standin: StripeStandin, inv: PushInvoice, pushed: PushedInvoice) -> None:
    """Exactly one Stripe invoice for ``inv``, each line exactly once, right total, finalized."""
    assert len(standin.invoices) == 1
    stored = standin.invoices[pushed.stripe_invoice_id]
    items = standin.items_of(pushed.stripe_invoice_id)
    assert sorted(ii["metadata"]["tollgate_line_id"] for ii in items) == sorted(
        line.local_id for line in inv.lines
    )
    assert len(standin.invoice_items) == len(inv.lines)
    assert len(stored["lines"]["data"]) == len(inv.lines)
    assert stored["total"] == stored["amount_due"] == expected_total(inv)
    assert stored["status"] == "open"
    assert stored["number"]
    assert pushed == PushedInvoice(
        stripe_invoice_id=stored["id"],
        status="open",
        total_minor=expected_total(inv),
        number=stored["number"],
    )


def posts(standin: StripeStandin, path_prefix: str) -> list[str | None]:
    return [r.idempotency_key for r in standin.requests_to(path_prefix, "POST")]


# --------------------------------------------------------------------------- customers


def test_ensure_customer_is_idempotent(gateway: StripeGateway, standin: StripeStandin) -> None:
    first = gateway.ensure_customer("cust-1", "Acme Robotics", "billing@acme.test")
    second = gateway.ensure_customer("cust-1", "Acme Robotics", "billing@acme.test")

    assert first == second
    assert first.startswith("cus_")
    assert list(standin.customers) == [first]
    customer = standin.customers[first]
    assert customer["name"] == "Acme Robotics"
    assert customer["email"] == "billing@acme.test"
    assert customer["metadata"] == {"tollgate_customer_id": "cust-1"}
    calls = standin.requests_to("/v1/customers", "POST")
    assert [r.idempotency_key for r in calls] == ["tollgate-customer-cust-1"] * 2
    assert [r.replayed for r in calls] == [False, True]


def test_customer_without_email(gateway: StripeGateway, standin: StripeStandin) -> None:
    customer = gateway.ensure_customer("cust-2", "No Mail Ltd", None)
    assert standin.customers[customer]["email"] is None
    assert "email" not in standin.requests[-1].params


# --------------------------------------------------------------------------- push


def test_push_creates_one_finalized_invoice(
    gateway: StripeGateway, standin: StripeStandin, customer_id: str
) -> None:
    inv = make_invoice(customer_id, n=4)

    pushed = gateway.push_invoice(inv)

    assert_complete(standin, inv, pushed)
    stored = standin.invoices[pushed.stripe_invoice_id]
    assert stored["customer"] == customer_id
    assert stored["currency"] == "usd"
    assert stored["collection_method"] == "send_invoice"
    assert stored["auto_advance"] is False
    assert stored["due_date"] is not None
    assert stored["description"] == inv.description
    assert stored["metadata"] == {
        "tollgate_invoice_id": inv.local_id,
        "tollgate_number": inv.number,
    }
    for line, item in zip(inv.lines, standin.items_of(pushed.stripe_invoice_id), strict=True):
        assert item["amount"] == line.amount_minor
        assert item["description"] == line.description
        assert item["period"] == {"start": PERIOD[0], "end": PERIOD[1]}
        assert item["metadata"]["tollgate_line_id"] == line.local_id
    assert standin.requests_to("/v1/invoices", "POST")[0].params[
        "pending_invoice_items_behavior"
    ] == ("exclude")
    assert posts(standin, "/v1/invoiceitems") == [
        f"tollgate-line-{ln.local_id}" for ln in inv.lines
    ]
    assert posts(standin, "/v1/invoices/") == [f"tollgate-finalize-{inv.local_id}"]
    assert gateway.retrieve_invoice(pushed.stripe_invoice_id) == pushed
    assert gateway.list_invoices(customer_id) == [pushed]


def test_push_with_more_lines_than_one_page(
    gateway: StripeGateway, standin: StripeStandin, customer_id: str
) -> None:
    inv = make_invoice(customer_id, n=23)
    pushed = gateway.push_invoice(inv)
    assert_complete(standin, inv, pushed)
    assert gateway.push_invoice(inv) == pushed
    assert len(standin.invoice_items) == 23


def test_rerun_after_success_creates_nothing(
    gateway: StripeGateway, standin: StripeStandin, customer_id: str
) -> None:
    inv = make_invoice(customer_id)
    pushed = gateway.push_invoice(inv)
    before = len(standin.requests)

    again = gateway.push_invoice(inv)

    assert again == pushed
    assert_complete(standin, inv, pushed)
    assert all(r.method == "GET" for r in standin.requests[before:])


def test_rerun_after_keys_expired_creates_nothing(
    gateway: StripeGateway, standin: StripeStandin, customer_id: str
) -> None:
    inv = make_invoice(customer_id)
    pushed = gateway.push_invoice(inv)
    standin.expire_idempotency_keys()

    assert gateway.push_invoice(inv) == pushed
    assert_complete(standin, inv, pushed)


def test_interrupted_push_resumes_without_duplicates(
    gateway: StripeGateway, standin: StripeStandin, customer_id: str
) -> None:
    inv = make_invoice(customer_id, n=5)
    # Lines 0 and 1 go through; line 2 fails on every attempt the SDK makes.
    standin.fail_next(RETRIES + 1, 500, "/v1/invoiceitems", method="POST", skip=2)

    with pytest.raises(StripeError) as caught:
        gateway.push_invoice(inv)

    assert caught.value.retryable
    assert caught.value.http_status == 500
    (draft,) = standin.invoices.values()
    assert draft["status"] == "draft"
    assert len(standin.invoice_items) == 2
    assert posts(standin, "/v1/invoiceitems")[2:] == [f"tollgate-line-{inv.lines[2].local_id}"] * (
        RETRIES + 1
    )

    pushed = gateway.push_invoice(inv)

    assert pushed.stripe_invoice_id == draft["id"]
    assert_complete(standin, inv, pushed)


def test_interrupted_push_resumes_after_keys_expired(
    gateway: StripeGateway, standin: StripeStandin, customer_id: str
) -> None:
    """After 24 h Stripe has forgotten the keys: the metadata guards alone prevent duplicates."""
    inv = make_invoice(customer_id, n=5)
    standin.fail_next(RETRIES + 1, 503, "/v1/invoiceitems", method="POST", skip=3)
    with pytest.raises(StripeError):
        gateway.push_invoice(inv)
    assert len(standin.invoice_items) == 3
    standin.expire_idempotency_keys()

    pushed = gateway.push_invoice(inv)

    assert_complete(standin, inv, pushed)


def test_lost_response_after_commit_does_not_duplicate(
    gateway: StripeGateway, standin: StripeStandin, customer_id: str
) -> None:
    """Stripe created the item but every response was lost: the retries replay the stored
    result and a later re-run sees the item by its metadata."""
    inv = make_invoice(customer_id, n=3)
    standin.fail_next(RETRIES + 1, 502, "/v1/invoiceitems", method="POST", after_commit=True)
    with pytest.raises(StripeError):
        gateway.push_invoice(inv)
    assert len(standin.invoice_items) == 1

    pushed = gateway.push_invoice(inv)

    assert_complete(standin, inv, pushed)


def test_interrupted_before_any_line_reuses_the_draft(
    gateway: StripeGateway, standin: StripeStandin, customer_id: str
) -> None:
    inv = make_invoice(customer_id)
    standin.fail_next(RETRIES + 1, 500, "/v1/invoiceitems", method="POST")
    with pytest.raises(StripeError):
        gateway.push_invoice(inv)
    assert len(standin.invoices) == 1
    assert not standin.invoice_items

    pushed = gateway.push_invoice(inv)

    assert_complete(standin, inv, pushed)
    creates = [r for r in standin.requests_to("/v1/invoices", "POST") if r.path == "/v1/invoices"]
    assert len(creates) == 1  # the re-run found the draft by its metadata


def test_interrupted_at_finalize_finalizes_once(
    gateway: StripeGateway, standin: StripeStandin, customer_id: str
) -> None:
    inv = make_invoice(customer_id)
    standin.fail_next(RETRIES + 1, 500, "/v1/invoices/", method="POST")
    with pytest.raises(StripeError):
        gateway.push_invoice(inv)
    (draft,) = standin.invoices.values()
    assert draft["status"] == "draft"
    assert draft["total"] == expected_total(inv)

    pushed = gateway.push_invoice(inv)

    assert_complete(standin, inv, pushed)
    assert standin.customers[customer_id]["next_invoice_sequence"] == 2
    gateway.push_invoice(inv)
    assert standin.customers[customer_id]["next_invoice_sequence"] == 2


def test_already_paid_invoice_is_reported_not_touched(
    gateway: StripeGateway, standin: StripeStandin, sdk: stripe.StripeClient, customer_id: str
) -> None:
    inv = make_invoice(customer_id)
    pushed = gateway.push_invoice(inv)
    sdk.v1.invoices.pay(pushed.stripe_invoice_id, {"paid_out_of_band": True})
    before = len(standin.requests)

    again = gateway.push_invoice(inv)

    assert again.status == "paid"
    assert again.stripe_invoice_id == pushed.stripe_invoice_id
    assert all(r.method == "GET" for r in standin.requests[before:])
    assert gateway.retrieve_invoice(pushed.stripe_invoice_id).status == "paid"


def test_separate_invoices_do_not_interfere(
    gateway: StripeGateway, standin: StripeStandin, customer_id: str
) -> None:
    march = make_invoice(customer_id, n=2, local_id="inv-2025-03")
    april = make_invoice(customer_id, n=3, local_id="inv-2025-04")
    pushed_march = gateway.push_invoice(march)
    pushed_april = gateway.push_invoice(april)

    assert pushed_march.stripe_invoice_id != pushed_april.stripe_invoice_id
    assert pushed_march.number != pushed_april.number
    assert len(standin.invoices) == 2
    assert len(standin.invoice_items) == 5
    assert gateway.list_invoices(customer_id) == [pushed_april, pushed_march]
    assert gateway.push_invoice(march) == pushed_march


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [500, 503, 429, 409])
def test_transient_failures_are_retried_with_the_same_key(
    gateway: StripeGateway, standin: StripeStandin, customer_id: str, status: int
) -> None:
    inv = make_invoice(customer_id, n=3)
    standin.fail_next(RETRIES, status, "/v1/invoiceitems", method="POST")

    pushed = gateway.push_invoice(inv)

    assert_complete(standin, inv, pushed)
    calls = standin.requests_to("/v1/invoiceitems", "POST")
    first_line_key = f"tollgate-line-{inv.lines[0].local_id}"
    assert [r.idempotency_key for r in calls[: RETRIES + 1]] == [first_line_key] * (RETRIES + 1)
    assert [r.status for r in calls[: RETRIES + 1]] == [status] * RETRIES + [200]
    assert len(calls) == len(inv.lines) + RETRIES


def test_customer_create_retried_transparently(
    gateway: StripeGateway, standin: StripeStandin
) -> None:
    standin.fail_next(RETRIES, 500, "/v1/customers")
    customer = gateway.ensure_customer("cust-9", "Retry Co", None)
    assert list(standin.customers) == [customer]
    assert posts(standin, "/v1/customers") == ["tollgate-customer-cust-9"] * (RETRIES + 1)


def test_timeout_is_retried_without_duplicate(standin: StripeStandin) -> None:
    gateway = make_gateway(standin, timeout_s=0.3)
    customer = gateway.ensure_customer("cust-slow", "Slow Co", None)
    standin.delay_next(1, 0.8, "/v1/invoiceitems", method="POST")
    inv = make_invoice(customer, n=2)

    pushed = gateway.push_invoice(inv)
    time.sleep(0.8)  # let the delayed first attempt run to completion (it replays)

    assert_complete(standin, inv, pushed)
    first = [
        r
        for r in standin.requests_to("/v1/invoiceitems", "POST")
        if r.idempotency_key == f"tollgate-line-{inv.lines[0].local_id}"
    ]
    assert len(first) == 2
    assert sorted(r.replayed for r in first) == [False, True]


def test_retries_exhausted_raise_retryable_error(
    gateway: StripeGateway, standin: StripeStandin
) -> None:
    standin.fail_next(RETRIES + 1, 429, "/v1/customers")
    with pytest.raises(StripeError) as caught:
        gateway.ensure_customer("cust-3", "Busy", None)
    assert caught.value.retryable
    assert caught.value.http_status == 429
    assert not standin.customers


def test_client_errors_are_not_retried(gateway: StripeGateway, standin: StripeStandin) -> None:
    inv = make_invoice("cus_does_not_exist")
    with pytest.raises(StripeError) as caught:
        gateway.push_invoice(inv)
    assert not caught.value.retryable
    assert caught.value.http_status == 400
    assert caught.value.code == "resource_missing"
    assert len(posts(standin, "/v1/invoices")) == 1


def test_stripe_should_retry_false_is_honoured(
    gateway: StripeGateway, standin: StripeStandin
) -> None:
    standin.fail_next(1, 500, "/v1/customers", should_retry=False)
    with pytest.raises(StripeError) as caught:
        gateway.ensure_customer("cust-4", "No Retry", None)
    assert not caught.value.retryable
    assert len(posts(standin, "/v1/customers")) == 1


def test_bad_api_key_is_refused(standin: StripeStandin) -> None:
    gateway = StripeGateway("sk_live_nope", api_base=standin.base_url, max_network_retries=0)
    with pytest.raises(StripeError) as caught:
        gateway.ensure_customer("cust-5", "Nope", None)
    assert caught.value.http_status == 401
    assert not caught.value.retryable
    assert not standin.customers


# --------------------------------------------------------------------------- idempotency


def test_reused_key_with_different_params_is_refused(
    sdk: stripe.StripeClient, standin: StripeStandin
) -> None:
    options: stripe.RequestOptions = {"idempotency_key": "key-1"}
    first = sdk.v1.customers.create({"name": "First"}, options)
    replay = sdk.v1.customers.create({"name": "First"}, options)
    assert replay.id == first.id

    with pytest.raises(stripe.IdempotencyError):
        sdk.v1.customers.create({"name": "Second"}, options)
    with pytest.raises(stripe.IdempotencyError):
        sdk.v1.invoices.create({"customer": first.id}, options)

    assert list(standin.customers) == [first.id]
    assert [r.status for r in standin.requests] == [200, 200, 400, 400]


def test_gateway_surfaces_idempotency_conflict(
    gateway: StripeGateway, standin: StripeStandin
) -> None:
    gateway.ensure_customer("cust-6", "Old Name", None)
    with pytest.raises(StripeError) as caught:
        gateway.ensure_customer("cust-6", "New Name", None)
    assert not caught.value.retryable
    assert len(standin.customers) == 1


def test_idempotency_keys_are_scoped_per_api_key(standin: StripeStandin) -> None:
    one = stripe.StripeClient("sk_test_one", base_addresses={"api": standin.base_url})
    two = stripe.StripeClient("sk_test_two", base_addresses={"api": standin.base_url})
    a = one.v1.customers.create({"name": "A"}, {"idempotency_key": "shared"})
    b = two.v1.customers.create({"name": "B"}, {"idempotency_key": "shared"})
    assert a.id != b.id


# --------------------------------------------------------------------------- stand-in


def test_standin_parses_stripe_form_encoding() -> None:
    pairs = [
        ("customer", "cus_1"),
        ("metadata[tollgate_line_id]", "l-1"),
        ("metadata[0]", "zero"),
        ("period[start]", "1"),
        ("period[end]", "2"),
        ("expand[0]", "customer"),
        ("expand[1]", "lines"),
        ("tags[]", "a"),
        ("tags[]", "b"),
    ]
    assert parse_form(pairs) == {
        "customer": "cus_1",
        "metadata": {"tollgate_line_id": "l-1", "0": "zero"},
        "period": {"start": "1", "end": "2"},
        "expand": ["customer", "lines"],
        "tags": ["a", "b"],
    }


def test_standin_lines_paginate_and_states_advance(
    sdk: stripe.StripeClient, gateway: StripeGateway, standin: StripeStandin, customer_id: str
) -> None:
    inv = make_invoice(customer_id, n=12)
    pushed = gateway.push_invoice(inv)

    invoice = sdk.v1.invoices.retrieve(pushed.stripe_invoice_id, {"expand": ["customer"]})
    assert len(invoice.lines.data) == 10
    assert invoice.lines.has_more
    lines = list(
        sdk.v1.invoices.line_items.list(pushed.stripe_invoice_id, {"limit": 5}).auto_paging_iter()
    )
    assert [line.amount for line in lines] == [line.amount_minor for line in inv.lines]
    sources = {
        line.parent.invoice_item_details.invoice_item
        for line in lines
        if line.parent and line.parent.invoice_item_details
    }
    assert sources == set(standin.invoice_items)

    voided = sdk.v1.invoices.void_invoice(pushed.stripe_invoice_id)
    assert voided.status == "void"
    assert gateway.retrieve_invoice(pushed.stripe_invoice_id).status == "void"
    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.invoices.pay(pushed.stripe_invoice_id)


def test_standin_refuses_items_on_finalized_invoice(
    sdk: stripe.StripeClient, gateway: StripeGateway, customer_id: str
) -> None:
    pushed = gateway.push_invoice(make_invoice(customer_id, n=1))
    with pytest.raises(stripe.InvalidRequestError) as caught:
        sdk.v1.invoice_items.create(
            {"customer": customer_id, "invoice": pushed.stripe_invoice_id, "amount": 1}
        )
    assert caught.value.code == "invoice_not_editable"


def test_standin_requires_a_test_secret_key(standin: StripeStandin) -> None:
    client = stripe.StripeClient("pk_test_public", base_addresses={"api": standin.base_url})
    with pytest.raises(stripe.AuthenticationError):
        client.v1.customers.list()


# --------------------------------------------------------------------------- webhooks


def signed_event(secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> tuple[bytes, str]:
    invoice = {"id": "in_123", "object": "invoice", "status": "paid", "total": 500}
    payload = json.dumps(event("invoice.paid", invoice)).encode()
    return payload, sign_webhook(payload, secret, timestamp)


def test_webhook_valid_signature_is_accepted(gateway: StripeGateway) -> None:
    payload, header = signed_event()
    evt = gateway.verify_webhook(payload, header)
    assert evt["id"].startswith("evt_")
    assert evt["type"] == "invoice.paid"
    assert evt["data"]["object"]["id"] == "in_123"
    assert evt == json.loads(payload)


def test_webhook_within_tolerance_is_accepted(gateway: StripeGateway) -> None:
    payload, header = signed_event(timestamp=int(time.time()) - 200)
    assert gateway.verify_webhook(payload, header)["type"] == "invoice.paid"


def test_webhook_forged_signature_is_rejected(gateway: StripeGateway) -> None:
    payload, header = signed_event()
    tampered = payload.replace(b'"total": 500', b'"total": 1')
    with pytest.raises(WebhookInvalid):
        gateway.verify_webhook(tampered, header)
    t = header.split(",")[0]
    with pytest.raises(WebhookInvalid):
        gateway.verify_webhook(payload, f"{t},v1={'0' * 64}")


def test_webhook_wrong_secret_is_rejected(gateway: StripeGateway) -> None:
    payload, header = signed_event(secret="whsec_someone_else")
    with pytest.raises(WebhookInvalid):
        gateway.verify_webhook(payload, header)


def test_webhook_stale_timestamp_is_rejected(gateway: StripeGateway) -> None:
    payload, header = signed_event(timestamp=int(time.time()) - 301)
    with pytest.raises(WebhookInvalid):
        gateway.verify_webhook(payload, header)


@pytest.mark.parametrize("header", ["", "garbage", "t=notanumber,v1=abc", "t=123"])
def test_webhook_missing_or_malformed_header_is_rejected(
    gateway: StripeGateway, header: str
) -> None:
    payload, _ = signed_event()
    with pytest.raises(WebhookInvalid):
        gateway.verify_webhook(payload, header)


@pytest.mark.parametrize("payload", [b"{not json", b"\xff\xfe", b'{"hello": "world"}'])
def test_webhook_body_that_is_not_an_event_is_rejected(
    gateway: StripeGateway, payload: bytes
) -> None:
    header = sign_webhook(payload, WEBHOOK_SECRET) if payload != b"\xff\xfe" else "t=1,v1=00"
    with pytest.raises(WebhookInvalid):
        gateway.verify_webhook(payload, header)


def test_webhook_without_configured_secret_is_a_config_error(standin: StripeStandin) -> None:
    gateway = StripeGateway(API_KEY, api_base=standin.base_url)
    payload, header = signed_event()
    with pytest.raises(RuntimeError):
        gateway.verify_webhook(payload, header)

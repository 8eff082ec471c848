"""Stripe gateway: the only module in ``app/`` that imports the ``stripe`` SDK.

It pushes closed local invoices to Stripe and verifies Stripe's webhooks. Everything it sends
carries an explicit idempotency key derived from local ids, and the SDK's own retry loop
(``max_network_retries``) re-sends a failed request with the *same* key, so a retry can never
create a second object.

Retries: the SDK retries connection errors, timeouts, 409 and 5xx with exponential backoff and
jitter. The gateway's HTTP client also retries 429 (rate limited), which the SDK leaves to the
caller unless Stripe sends ``Stripe-Should-Retry: true``; ``Stripe-Should-Retry: false`` is
always honoured. Delays start at ``retry_initial_delay_s`` and double up to
``retry_max_delay_s``.

``push_invoice`` is safe to re-run after an interruption at any point:

1. find the Stripe invoice whose ``metadata.tollgate_invoice_id`` is the local id among the
   customer's invoices, else create a draft with key ``tollgate-invoice-{local_id}``
   (``pending_invoice_items_behavior=exclude`` so stray pending items never join it);
2. re-read it (a replayed create returns the *original* response, which may be stale); if it
   is still a draft, list its invoice items and add only the lines whose
   ``metadata.tollgate_line_id`` is not there yet, each with key ``tollgate-line-{line_id}``;
3. finalize it with key ``tollgate-finalize-{local_id}``, unless it is no longer a draft.

Steps 1 and 2 look for existing objects by metadata as well as relying on idempotency keys,
because Stripe forgets keys after 24 hours. An invoice found in a non-draft state (open, paid,
void, uncollectible) is reported as it is; nothing is added to it.

Corrections (``void_invoice``, ``push_credit_note``) follow the same rules: keys
``tollgate-void-{local_id}`` and ``tollgate-credit-note-{local_id}``, and a credit note is
looked for by ``metadata.tollgate_credit_note_id`` before one is created.

Invoices use ``collection_method="send_invoice"`` with ``days_until_due=30`` and
``auto_advance=False``: customers need no saved payment method, Stripe never charges or emails
on its own, and the caller decides when to send or mark paid.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import stripe

DAYS_UNTIL_DUE = 30
COLLECTION_METHOD = "send_invoice"
_PAGE = 100


@dataclass(frozen=True)
class PushLine:
    local_id: str
    description: str
    amount_minor: int
    period_start: int  # unix seconds
    period_end: int  # unix seconds


@dataclass(frozen=True)
class PushInvoice:
    local_id: str
    number: str
    customer_stripe_id: str
    currency: str
    lines: tuple[PushLine, ...]
    description: str


@dataclass(frozen=True)
class PushedInvoice:
    stripe_invoice_id: str
    status: str
    total_minor: int
    number: str | None


@dataclass(frozen=True)
class PushCreditLine:
    invoice_line_local_id: str | None  # None: a credit on the invoice as a whole
    description: str
    amount_minor: int


@dataclass(frozen=True)
class PushCreditNote:
    local_id: str
    number: str
    stripe_invoice_id: str
    memo: str
    lines: tuple[PushCreditLine, ...]
    tax_minor: int
    tax_label: str

    @property
    def total_minor(self) -> int:
        return sum(line.amount_minor for line in self.lines) + self.tax_minor


def _custom_line(description: str, amount_minor: int) -> stripe.params.CreditNoteCreateParamsLine:
    return {
        "type": "custom_line_item",
        "description": description,
        "quantity": 1,
        "unit_amount": amount_minor,
    }


class StripeError(Exception):
    """A Stripe call failed (after the SDK's retries).

    ``retryable`` is true for failures that may succeed if the whole operation is run again
    later (connection problems, timeouts, 409, 429, 5xx); false for requests Stripe refused
    (invalid parameters, authentication, idempotency-key reuse, missing objects)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        http_status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.http_status = http_status
        self.code = code
        self.request_id = request_id


class WebhookInvalid(Exception):
    """A webhook's signature is missing, forged or stale, or its body is not an event."""


class _RetryingHTTPClient(stripe.RequestsClient):
    """The SDK's requests-based client with configurable backoff that also retries 429."""

    def __init__(self, *, timeout_s: float, initial_delay_s: float, max_delay_s: float) -> None:
        super().__init__(timeout=timeout_s)
        self._initial_delay_s = initial_delay_s
        self._max_delay_s = max_delay_s

    def _should_retry(
        self,
        response: tuple[Any, int, Mapping[str, str] | None] | None,
        api_connection_error: stripe.APIConnectionError | None,
        num_retries: int,
        max_network_retries: int | None,
    ) -> bool:
        if super()._should_retry(response, api_connection_error, num_retries, max_network_retries):
            return True
        if response is None or num_retries >= (max_network_retries or 0):
            return False
        _, status, headers = response
        if headers is not None and headers.get("stripe-should-retry") == "false":
            return False
        return status == 429

    def _sleep_time_seconds(self, num_retries: int) -> float:
        delay = min(self._initial_delay_s * 2.0 ** (num_retries - 1), self._max_delay_s)
        delay *= 0.5 * (1 + random.uniform(0, 1))  # jitter: [delay/2, delay]
        return max(self._initial_delay_s, delay)


def _wrap(action: str, exc: stripe.StripeError) -> StripeError:
    status = exc.http_status
    retryable = isinstance(exc, stripe.APIConnectionError) or (
        status is not None and (status in (409, 429) or status >= 500)
    )
    if (exc.headers or {}).get("stripe-should-retry") == "false":
        retryable = False
    return StripeError(
        f"Stripe {action} failed: {exc.user_message or exc.__class__.__name__}",
        retryable=retryable,
        http_status=status,
        code=exc.code,
        request_id=exc.request_id,
    )


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except stripe.StripeError as exc:
        raise _wrap(action, exc) from exc


def _pushed(invoice: stripe.Invoice) -> PushedInvoice:
    return PushedInvoice(
        stripe_invoice_id=invoice.id,
        status=str(invoice.status),
        total_minor=invoice.total,
        number=invoice.number,
    )


def _meta(obj: stripe.Invoice | stripe.InvoiceItem, key: str) -> str | None:
    metadata = obj.metadata
    if metadata is None or key not in metadata:
        return None
    return str(metadata[key])


class StripeGateway:
    def __init__(
        self,
        api_key: str,
        *,
        webhook_secret: str | None = None,
        api_base: str | None = None,
        max_network_retries: int = 3,
        timeout_s: float = 10.0,
        retry_initial_delay_s: float = 0.5,
        retry_max_delay_s: float = 5.0,
    ) -> None:
        if max_network_retries < 0:
            raise ValueError("max_network_retries must be >= 0")
        self._webhook_secret = webhook_secret
        http_client = _RetryingHTTPClient(
            timeout_s=timeout_s,
            initial_delay_s=retry_initial_delay_s,
            max_delay_s=max(retry_max_delay_s, retry_initial_delay_s),
        )
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=http_client,
        )

    # ----------------------------------------------------------------- customers

    def ensure_customer(self, local_id: str, name: str, email: str | None) -> str:
        """Create the Stripe customer for a local customer; returns its ``cus_`` id.

        Idempotent per ``local_id`` for Stripe's 24 h key lifetime (the same call replays the
        same customer); the caller stores the returned id and does not call this again."""
        params: stripe.params.CustomerCreateParams = {
            "name": name,
            "metadata": {"tollgate_customer_id": local_id},
        }
        if email is not None:
            params["email"] = email
        with _translated("customer create"):
            customer = self._client.v1.customers.create(
                params, {"idempotency_key": f"tollgate-customer-{local_id}"}
            )
        return customer.id

    # ----------------------------------------------------------------- invoices

    def push_invoice(self, inv: PushInvoice) -> PushedInvoice:
        """Create, fill and finalize the Stripe invoice for a local invoice (see module doc)."""
        with _translated(f"invoice push ({inv.local_id})"):
            invoice_id = self._find_invoice(inv) or self._create_invoice(inv)
            invoice = self._client.v1.invoices.retrieve(invoice_id)
            if invoice.status != "draft":
                return _pushed(invoice)
            present = self._line_ids_on(invoice_id)
            for line in inv.lines:
                if line.local_id not in present:
                    self._add_line(inv, invoice_id, line)
            invoice = self._client.v1.invoices.finalize_invoice(
                invoice_id, options={"idempotency_key": f"tollgate-finalize-{inv.local_id}"}
            )
        return _pushed(invoice)

    def _find_invoice(self, inv: PushInvoice) -> str | None:
        page = self._client.v1.invoices.list({"customer": inv.customer_stripe_id, "limit": _PAGE})
        for invoice in page.auto_paging_iter():
            if _meta(invoice, "tollgate_invoice_id") == inv.local_id:
                return invoice.id
        return None

    def _create_invoice(self, inv: PushInvoice) -> str:
        invoice = self._client.v1.invoices.create(
            {
                "customer": inv.customer_stripe_id,
                "currency": inv.currency.lower(),
                "auto_advance": False,
                "collection_method": COLLECTION_METHOD,
                "days_until_due": DAYS_UNTIL_DUE,
                "pending_invoice_items_behavior": "exclude",
                "description": inv.description,
                "metadata": {"tollgate_invoice_id": inv.local_id, "tollgate_number": inv.number},
            },
            {"idempotency_key": f"tollgate-invoice-{inv.local_id}"},
        )
        return invoice.id

    def _line_ids_on(self, invoice_id: str) -> set[str]:
        page = self._client.v1.invoice_items.list({"invoice": invoice_id, "limit": _PAGE})
        found = (_meta(item, "tollgate_line_id") for item in page.auto_paging_iter())
        return {line_id for line_id in found if line_id is not None}

    def _add_line(self, inv: PushInvoice, invoice_id: str, line: PushLine) -> None:
        self._client.v1.invoice_items.create(
            {
                "customer": inv.customer_stripe_id,
                "invoice": invoice_id,
                "amount": line.amount_minor,
                "currency": inv.currency.lower(),
                "description": line.description,
                "period": {"start": line.period_start, "end": line.period_end},
                "metadata": {
                    "tollgate_line_id": line.local_id,
                    "tollgate_invoice_id": inv.local_id,
                },
            },
            {"idempotency_key": f"tollgate-line-{line.local_id}"},
        )

    def retrieve_invoice(self, stripe_invoice_id: str) -> PushedInvoice:
        with _translated("invoice retrieve"):
            return _pushed(self._client.v1.invoices.retrieve(stripe_invoice_id))

    def list_invoices(self, customer_stripe_id: str) -> list[PushedInvoice]:
        """All of a customer's Stripe invoices, newest first."""
        with _translated("invoice list"):
            page = self._client.v1.invoices.list({"customer": customer_stripe_id, "limit": _PAGE})
            return [_pushed(invoice) for invoice in page.auto_paging_iter()]

    # ----------------------------------------------------------------- corrections

    def void_invoice(self, stripe_invoice_id: str, local_id: str) -> PushedInvoice:
        """Void a Stripe invoice for a locally voided one (key ``tollgate-void-{local_id}``).
        An invoice already void in Stripe is reported as it is: re-running is harmless."""
        with _translated(f"invoice void ({local_id})"):
            invoice = self._client.v1.invoices.retrieve(stripe_invoice_id)
            if invoice.status == "void":
                return _pushed(invoice)
            invoice = self._client.v1.invoices.void_invoice(
                stripe_invoice_id, options={"idempotency_key": f"tollgate-void-{local_id}"}
            )
        return _pushed(invoice)

    def push_credit_note(self, note: PushCreditNote) -> str:
        """Create the Stripe credit note for a local one; returns its ``cn_`` id.

        Safe to re-run: a credit note whose ``metadata.tollgate_credit_note_id`` is the local
        id is found among the invoice's before anything is created, and the create carries
        the key ``tollgate-credit-note-{local_id}``. A line credited against an invoice line
        names Stripe's line item (found by its ``metadata.tollgate_line_id``); a credit on
        the invoice as a whole, and the tax, are custom lines."""
        with _translated(f"credit note push ({note.local_id})"):
            found = self._find_credit_note(note)
            if found is not None:
                return found
            stripe_lines = self._stripe_line_ids(note.stripe_invoice_id)
            lines: list[stripe.params.CreditNoteCreateParamsLine] = []
            for line in note.lines:
                item = stripe_lines.get(line.invoice_line_local_id or "")
                if item is not None:
                    lines.append(
                        {
                            "type": "invoice_line_item",
                            "invoice_line_item": item,
                            "amount": line.amount_minor,
                            "description": line.description,
                        }
                    )
                else:
                    lines.append(_custom_line(line.description, line.amount_minor))
            if note.tax_minor:
                lines.append(_custom_line(note.tax_label, note.tax_minor))
            params: stripe.params.CreditNoteCreateParams = {
                "invoice": note.stripe_invoice_id,
                "lines": lines,
                "memo": note.memo,
                "metadata": {
                    "tollgate_credit_note_id": note.local_id,
                    "tollgate_number": note.number,
                },
            }
            invoice = self._client.v1.invoices.retrieve(note.stripe_invoice_id)
            if invoice.status == "paid":
                # Stripe must be told where a paid invoice's credit goes; Tollgate settles
                # it outside Stripe (refund or next invoice), never on the Stripe balance.
                params["out_of_band_amount"] = note.total_minor
            created = self._client.v1.credit_notes.create(
                params, {"idempotency_key": f"tollgate-credit-note-{note.local_id}"}
            )
        return created.id

    def _find_credit_note(self, note: PushCreditNote) -> str | None:
        page = self._client.v1.credit_notes.list(
            {"invoice": note.stripe_invoice_id, "limit": _PAGE}
        )
        for credit_note in page.auto_paging_iter():
            metadata = credit_note.metadata
            if (
                metadata is not None
                and "tollgate_credit_note_id" in metadata
                and str(metadata["tollgate_credit_note_id"]) == note.local_id
            ):
                return credit_note.id
        return None

    def _stripe_line_ids(self, stripe_invoice_id: str) -> dict[str, str]:
        """Tollgate invoice line id -> Stripe invoice line item id."""
        page = self._client.v1.invoices.line_items.list(stripe_invoice_id, {"limit": _PAGE})
        out = {}
        for item in page.auto_paging_iter():
            metadata = item.metadata
            if metadata is not None and "tollgate_line_id" in metadata:
                out[str(metadata["tollgate_line_id"])] = item.id
        return out

    # ----------------------------------------------------------------- webhooks

    def verify_webhook(
        self, payload: bytes, signature_header: str, tolerance_s: int = 300
    ) -> dict[str, Any]:
        """Check ``Stripe-Signature`` against the raw body; return the event as a dict.

        Raises :class:`WebhookInvalid` for a missing, malformed or forged signature, a
        timestamp older than ``tolerance_s``, or a body that is not a JSON event. Raises
        ``RuntimeError`` when the gateway has no webhook secret (a configuration error)."""
        if not self._webhook_secret:
            raise RuntimeError("StripeGateway has no webhook_secret configured")
        if not signature_header:
            raise WebhookInvalid("missing Stripe-Signature header")
        try:
            event = self._client.construct_event(
                payload, signature_header, self._webhook_secret, tolerance=tolerance_s
            )
        except stripe.SignatureVerificationError as exc:
            raise WebhookInvalid(f"bad webhook signature: {exc.user_message}") from exc
        except ValueError as exc:  # bad UTF-8 or JSON
            raise WebhookInvalid(f"webhook body is not a JSON event: {exc}") from exc
        body = event.to_dict()
        if body.get("object") != "event" or not body.get("id") or not body.get("type"):
            raise WebhookInvalid("webhook body is not a Stripe event")
        return body

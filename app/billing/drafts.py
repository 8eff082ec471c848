"""An invoice as closing would write it: the rated lines, the tax and both parties.

The close, its dry run and the preview all make their invoices here, so that what a preview
or a dry run shows is what a close writes (``tests/billing/test_close_dry_run.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from app.billing.parties import BillToSnapshot, SellerSnapshot, bill_to_snapshot, tax_on
from app.billing.rating import RatedInvoice
from app.orm import Customer

DRAFT_NUMBER = "(draft)"
"""The number a dry run shows: a real number is taken only when an invoice is written."""


@dataclass(frozen=True, slots=True)
class DraftInvoice:
    rated: RatedInvoice
    seller: SellerSnapshot
    bill_to: BillToSnapshot
    tax_rate: Decimal | None  # percent; None when exempt or without a rate
    tax_exempt: bool
    tax_note: str | None
    tax_minor: int
    issued_at: datetime
    due_at: datetime

    @property
    def customer_id(self) -> int:
        return self.rated.customer_id

    @property
    def currency(self) -> str:
        return self.rated.currency

    @property
    def subtotal_minor(self) -> int:
        return self.rated.subtotal_minor

    @property
    def total_minor(self) -> int:
        return self.rated.subtotal_minor + self.tax_minor


def draft_invoice(
    rated: RatedInvoice, customer: Customer, seller: SellerSnapshot, *, now: datetime
) -> DraftInvoice:
    """The invoice for ``rated`` if it were issued ``now``: the customer's tax treatment
    (tax once on the subtotal, :func:`~app.billing.parties.tax_on`; none when exempt), its
    billing details and the seller profile as they are now, due after the payment terms."""
    rate = None if customer.tax_exempt else customer.tax_rate
    return DraftInvoice(
        rated=rated,
        seller=seller,
        bill_to=bill_to_snapshot(customer),
        tax_rate=rate,
        tax_exempt=customer.tax_exempt,
        tax_note=customer.tax_note,
        tax_minor=tax_on(rated.subtotal_minor, rate),
        issued_at=now,
        due_at=now + timedelta(days=seller["payment_terms_days"]),
    )

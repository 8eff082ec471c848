"""The two parties on an invoice and the tax between them.

A finalized invoice (and each credit note, through its invoice) keeps a snapshot of the
seller profile (configuration, ``TOLLGATE_SELLER_*``) and of the customer's billing details
as they were when it was finalized; later edits never change a document already issued.

Tax is computed once, on the invoice subtotal, never per line:
``tax_minor = round_half_up(subtotal_minor * rate / 100)`` in the currency's minor unit, so
an invoice of 0.24 EUR at 19 % carries 0.05 EUR tax (4.56 cents, rounded half up). A
tax-exempt customer's invoice carries no tax and shows the exemption note instead.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import TypedDict

from app.config import Settings
from app.orm import Customer

__all__ = ["BillToSnapshot", "SellerSnapshot", "bill_to_snapshot", "seller_snapshot", "tax_on"]


class SellerSnapshot(TypedDict):
    name: str
    address: str | None  # multi-line
    email: str | None
    tax_id: str | None
    payment_terms_days: int
    payment_instructions: str | None


class BillToSnapshot(TypedDict):
    customer_id: int
    name: str  # the account name
    legal_name: str | None
    billing_email: str | None
    address: str | None  # multi-line
    country: str | None  # ISO 3166-1 alpha-2
    tax_id: str | None


def tax_on(subtotal_minor: int, rate_percent: Decimal | None) -> int:
    """Tax in minor units on a subtotal in minor units at ``rate_percent`` (e.g. 19 or
    7.25), rounded once, half up (away from zero); 0 without a rate."""
    if rate_percent is None or subtotal_minor == 0:
        return 0
    exact = Decimal(subtotal_minor) * rate_percent / 100
    return int(exact.to_integral_value(rounding=ROUND_HALF_UP))


def seller_snapshot(settings: Settings) -> SellerSnapshot:
    """The seller profile as configured now (``TOLLGATE_SELLER_*``,
    ``TOLLGATE_PAYMENT_TERMS_DAYS``, ``TOLLGATE_PAYMENT_INSTRUCTIONS``). The endpoint or the
    CLI builds it and hands it to the close: services never read settings."""
    return SellerSnapshot(
        name=settings.seller_name,
        address=settings.seller_address,
        email=settings.seller_email,
        tax_id=settings.seller_tax_id,
        payment_terms_days=settings.payment_terms_days,
        payment_instructions=settings.payment_instructions,
    )


def bill_to_snapshot(customer: Customer) -> BillToSnapshot:
    """The customer's billing details as they are now."""
    return BillToSnapshot(
        customer_id=customer.id,
        name=customer.name,
        legal_name=customer.legal_name,
        billing_email=customer.billing_email or customer.email,
        address=customer.address,
        country=customer.country,
        tax_id=customer.tax_id,
    )

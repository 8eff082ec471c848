"""Render a sample invoice and credit note (no database): PDFs, and PNGs of their first
pages for docs/ when ``pdftoppm`` (poppler-utils) is installed.

    python -m scripts.render_samples [OUT_DIR]     # default: docs/

The documents are built in memory from the ORM classes, exactly as the API renders stored
ones, so what the PNGs show is what a customer receives.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from app.billing.parties import tax_on
from app.billing.pdf import credit_note_pdf, invoice_pdf
from app.orm import CreditNote, CreditNoteLine, Customer, Invoice, InvoiceLine

ISSUED = datetime(2026, 10, 1, 9, 30, tzinfo=UTC)

SELLER = {
    "name": "Tollgate GmbH",
    "address": "Friedrichstrasse 123\n10117 Berlin\nGermany",
    "email": "billing@tollgate.example",
    "tax_id": "DE123456789",
    "payment_terms_days": 30,
    "payment_instructions": (
        "Bank transfer to Tollgate GmbH, IBAN DE89 3704 0044 0532 0130 00, BIC COBADEFFXXX."
    ),
}
BILL_TO = {
    "customer_id": 7,
    "name": "acme",
    "legal_name": "Acme Robotics B.V.",
    "billing_email": "ap@acme-robotics.example",
    "address": "Keizersgracht 221\n1016 DV Amsterdam",
    "country": "NL",
    "tax_id": "NL123456789B01",
}


def _lines(start: datetime, end: datetime) -> list[InvoiceLine]:
    rows = [
        ("base_fee", "Monthly base fee", None, "1", "49", 4900),
        (
            "usage",
            "cnn: requests, first 10000 included, then 0.0015 each; requests made from the "
            "batch endpoint count once per item in the batch, as described in the plan",
            "cnn",
            "184220",
            "0.0015",
            27633,
        ),
        ("usage", "linreg: items, 0.0004 each", "linreg", "52000", "0.0004", 2080),
        ("usage", "cnn, fp16: compute seconds, graduated tiers", "cnn", "3120.5", None, 1845),
    ]
    return [
        InvoiceLine(
            id=100 + i,
            invoice_id=1,
            position=i,
            plan_version_id=1,
            kind=kind,
            description=description,
            unit=None if kind == "base_fee" else "request",
            model=model,
            variant=None,
            quantity=Decimal(quantity),
            billable_quantity=Decimal(quantity),
            unit_price=None if price is None else Decimal(price),
            amount=Decimal(minor) / 100,
            amount_minor=minor,
            period_start=start,
            period_end=end,
        )
        for i, (kind, description, model, quantity, price, minor) in enumerate(rows, start=1)
    ]


def sample_invoice() -> tuple[Invoice, list[InvoiceLine], Customer]:
    """A finalized EUR invoice at 19 % with a long, wrapping description."""
    start, end = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC)
    lines = _lines(start, end)
    subtotal = sum(line.amount_minor for line in lines)
    tax = tax_on(subtotal, Decimal(19))
    invoice = Invoice(
        id=1,
        number="TG-2026-000042",
        customer_id=7,
        period="2026-09",
        period_start=start,
        period_end=end,
        status="finalized",
        currency="eur",
        subtotal_minor=subtotal,
        tax_minor=tax,
        total_minor=subtotal + tax,
        tax_rate=Decimal(19),
        tax_exempt=False,
        issued_at=ISSUED,
        finalized_at=ISSUED,
        due_at=ISSUED + timedelta(days=30),
        seller=SELLER,
        bill_to=BILL_TO,
    )
    customer = Customer(id=7, name="acme", email="dev@acme-robotics.example")
    return invoice, lines, customer


def sample_credit_note(
    invoice: Invoice,
) -> tuple[CreditNote, list[tuple[CreditNoteLine, int | None]]]:
    """A credit note on ``invoice``: part of line 2 and a goodwill credit on the whole."""
    credit = [(1250, 2), (500, None)]
    note_subtotal = sum(amount for amount, _ in credit)
    note_tax = tax_on(note_subtotal, Decimal(19))
    note = CreditNote(
        id=1,
        number="CN-2026-000003",
        invoice_id=1,
        customer_id=7,
        currency="eur",
        reason="Outage on 2026-09-14 (incident 2026-0914): failed requests refunded",
        subtotal_minor=note_subtotal,
        tax_minor=note_tax,
        total_minor=note_subtotal + note_tax,
        issued_at=datetime(2026, 10, 6, 14, tzinfo=UTC),
    )
    note_lines = [
        (
            CreditNoteLine(
                id=1,
                credit_note_id=1,
                position=1,
                invoice_line_id=102,
                description="Requests failed during the outage of 2026-09-14, 10:02 to 11:17 UTC",
                quantity=Decimal("8333"),
                amount_minor=1250,
            ),
            2,
        ),
        (
            CreditNoteLine(
                id=2,
                credit_note_id=1,
                position=2,
                invoice_line_id=None,
                description="Goodwill credit",
                quantity=None,
                amount_minor=500,
            ),
            None,
        ),
    ]
    return note, note_lines


def sample() -> tuple[bytes, bytes]:
    invoice, lines, customer = sample_invoice()
    note, note_lines = sample_credit_note(invoice)
    return invoice_pdf(invoice, lines, customer), credit_note_pdf(
        note, note_lines, invoice, customer
    )


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    invoice, note = sample()
    pdftoppm = shutil.which("pdftoppm")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in (("invoice-sample", invoice), ("credit-note-sample", note)):
            pdf = Path(tmp) / f"{name}.pdf"
            pdf.write_bytes(data)
            if pdftoppm is None:
                (out / f"{name}.pdf").write_bytes(data)
                print(f"pdftoppm not found: wrote {out / name}.pdf only")
                continue
            subprocess.run(
                [pdftoppm, "-png", "-r", "80", "-singlefile", str(pdf), str(out / name)],
                check=True,
            )
            print(f"wrote {out / name}.png")


if __name__ == "__main__":
    main()

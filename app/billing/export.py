"""CSV renderings of invoices (one invoice, or every line of a period).

One row per invoice line, and on every row the invoice it belongs to: number, dates,
customer, and the invoice's subtotal, tax and total, so that one file reconciles on its own
(the lines' ``amount_minor`` add up to ``invoice_subtotal_minor``; ``invoice_total_minor``
= subtotal + tax). Money as in the JSON API: ``X_minor`` integers with ``X`` decimal strings
at the currency's exponent; quantities, unit prices and the exact line amount in plain
notation with their significant digits only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from app.money.display import minor_string, plain
from app.orm import Invoice, InvoiceLine

LINE_COLUMNS = [
    "invoice_number",
    "invoice_id",
    "customer_id",
    "customer",
    "period",
    "issued_at",
    "due_at",
    "currency",
    "position",
    "kind",
    "description",
    "unit",
    "model",
    "variant",
    "quantity",
    "billable_quantity",
    "unit_price",
    "exact_amount",
    "amount",
    "amount_minor",
    "line_start",
    "line_end",
    "invoice_subtotal",
    "invoice_subtotal_minor",
    "tax_rate",
    "tax_exempt",
    "tax_note",
    "invoice_tax",
    "invoice_tax_minor",
    "invoice_total",
    "invoice_total_minor",
]


def _customer(invoice: Invoice) -> str:
    bill_to = invoice.bill_to or {}
    return str(bill_to.get("legal_name") or bill_to.get("name") or "")


def lines_csv(rows: Iterable[tuple[Invoice, InvoiceLine]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LINE_COLUMNS)
    for invoice, line in rows:
        currency = invoice.currency
        writer.writerow(
            [
                invoice.number or "",
                invoice.id,
                invoice.customer_id,
                _customer(invoice),
                invoice.period,
                "" if invoice.issued_at is None else invoice.issued_at.isoformat(),
                "" if invoice.due_at is None else invoice.due_at.isoformat(),
                currency,
                line.position,
                line.kind,
                line.description,
                line.unit or "",
                line.model or "",
                line.variant or "",
                plain(line.quantity),
                plain(line.billable_quantity),
                "" if line.unit_price is None else plain(line.unit_price),
                plain(line.amount),
                minor_string(line.amount_minor, currency),
                line.amount_minor,
                line.period_start.isoformat(),
                line.period_end.isoformat(),
                minor_string(invoice.subtotal_minor, currency),
                invoice.subtotal_minor,
                "" if invoice.tax_rate is None else plain(invoice.tax_rate),
                "true" if invoice.tax_exempt else "false",
                invoice.tax_note or "",
                minor_string(invoice.tax_minor, currency),
                invoice.tax_minor,
                minor_string(invoice.total_minor, currency),
                invoice.total_minor,
            ]
        )
    return out.getvalue()

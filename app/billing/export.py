"""CSV renderings of invoices (one invoice, or every line of a period)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from app.orm import Invoice, InvoiceLine

LINE_COLUMNS = [
    "invoice_number",
    "invoice_id",
    "customer_id",
    "period",
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
    "amount",
    "amount_minor",
    "line_start",
    "line_end",
]


def lines_csv(rows: Iterable[tuple[Invoice, InvoiceLine]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LINE_COLUMNS)
    for invoice, line in rows:
        writer.writerow(
            [
                invoice.number or "",
                invoice.id,
                invoice.customer_id,
                invoice.period,
                invoice.currency,
                line.position,
                line.kind,
                line.description,
                line.unit or "",
                line.model or "",
                line.variant or "",
                line.quantity,
                line.billable_quantity,
                "" if line.unit_price is None else line.unit_price,
                line.amount,
                line.amount_minor,
                line.period_start.isoformat(),
                line.period_end.isoformat(),
            ]
        )
    return out.getvalue()

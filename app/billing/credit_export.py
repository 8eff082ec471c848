"""A credit note as CSV: one row per line, amounts in minor units and as decimals."""

from __future__ import annotations

import csv
import io

from app.money.display import minor_string, plain
from app.orm import CreditNote, CreditNoteLine, Invoice

CREDIT_NOTE_COLUMNS = [
    "credit_note_number",
    "credit_note_id",
    "issued_at",
    "invoice_number",
    "invoice_id",
    "customer_id",
    "period",
    "currency",
    "reason",
    "position",
    "invoice_line_position",
    "description",
    "quantity",
    "amount_minor",
    "amount",
    "credit_note_subtotal_minor",
    "credit_note_tax_minor",
    "credit_note_total_minor",
]


def credit_note_csv(
    note: CreditNote, invoice: Invoice, lines: list[tuple[CreditNoteLine, int | None]]
) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CREDIT_NOTE_COLUMNS)
    for line, invoice_position in lines:
        writer.writerow(
            [
                note.number,
                note.id,
                note.issued_at.isoformat(),
                invoice.number or "",
                invoice.id,
                note.customer_id,
                invoice.period,
                note.currency,
                note.reason,
                line.position,
                "" if invoice_position is None else invoice_position,
                line.description,
                "" if line.quantity is None else plain(line.quantity),
                line.amount_minor,
                minor_string(line.amount_minor, note.currency),
                note.subtotal_minor,
                note.tax_minor,
                note.total_minor,
            ]
        )
    return out.getvalue()

"""Invoice PDFs, drawn with fpdf2 (core fonts: Latin-1 text only, so labels stay ASCII)."""

from __future__ import annotations

from decimal import Decimal

from fpdf import FPDF

from app.money.pricing import minor_exponent
from app.orm import Customer, Invoice, InvoiceLine


def format_minor(amount_minor: int, currency: str) -> str:
    exponent = minor_exponent(currency)
    value = Decimal(amount_minor).scaleb(-exponent)
    return f"{value:,.{exponent}f} {currency.upper()}"


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def invoice_pdf(invoice: Invoice, lines: list[InvoiceLine], customer: Customer) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(f"Invoice {invoice.number or invoice.id}")
    pdf.set_author("Tollgate")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, "Tollgate invoice", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for label, value in (
        ("Number", invoice.number or "(draft)"),
        ("Customer", f"{customer.name} (#{customer.id})"),
        (
            "Period",
            f"{invoice.period} ({invoice.period_start:%Y-%m-%d} to "
            f"{invoice.period_end:%Y-%m-%d}, UTC)",
        ),
        ("Status", invoice.status),
        ("Currency", invoice.currency.upper()),
    ):
        pdf.cell(30, 6, label)
        pdf.cell(0, 6, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    widths = (10, 110, 30, 40)
    pdf.set_font("Helvetica", "B", 10)
    for width, head in zip(widths, ("#", "Description", "Quantity", "Amount"), strict=True):
        pdf.cell(width, 7, head, border="B", align="R" if head in ("Quantity", "Amount") else "L")
    pdf.ln()
    pdf.set_font("Helvetica", size=9)
    for line in lines:
        quantity = f"{line.quantity.normalize():f}"
        cells = (
            str(line.position),
            _latin1(line.description)[:70],
            quantity,
            format_minor(line.amount_minor, invoice.currency),
        )
        for width, value, align in zip(widths, cells, ("L", "L", "R", "R"), strict=True):
            pdf.cell(width, 6, value, align=align)
        pdf.ln()
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(sum(widths[:3]), 8, "Total", border="T")
    pdf.cell(
        widths[3], 8, format_minor(invoice.total_minor, invoice.currency), border="T", align="R"
    )
    pdf.ln(12)
    pdf.set_font("Helvetica", size=8)
    pdf.multi_cell(0, 4, "Each line is rounded once, half up, to the currency's minor unit.")
    return bytes(pdf.output())

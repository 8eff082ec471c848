"""Invoice and credit note PDFs, drawn with fpdf2: the documents a customer's accounts-payable
team receives.

Both share one layout: the seller (from the invoice's ``seller`` snapshot) and the customer
(from its ``bill_to`` snapshot) at the top, the title, number and dates, a table
Description / Quantity / Unit price / Amount whose descriptions wrap (never cut), the
subtotal, the tax (rate or exemption note) and the total with its currency, then payment
terms and instructions. Page numbers ("Page 1 of 2") appear when a document runs over one
page, and the table's heading repeats on every page.

Invoices finalized before the snapshots existed (``seller`` None, ``bill_to`` None) render
with what is known: the customer's account name and email, no seller block.

The core PDF fonts (Helvetica) cover Latin-1 only, and no Unicode TrueType font ships with
the package: text outside Latin-1 is folded to its base letters where it has them ("ő" ->
"o") and otherwise shown as "?", visibly, rather than dropped.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from fpdf import FPDF, FontFace
from fpdf.enums import MethodReturnValue

from app.money.display import plain, with_currency
from app.orm import CreditNote, CreditNoteLine, Customer, Invoice, InvoiceLine

__all__ = ["credit_note_pdf", "invoice_pdf", "pdf_text"]

_PAGE_W, _MARGIN = 210.0, 18.0
_WIDTH = _PAGE_W - 2 * _MARGIN
_RIGHT_X = 118.0  # the right-hand column (title, dates)
_GREY = (90, 90, 90)
_RULE = (170, 170, 170)

# Typographic characters outside Latin-1 that have a plain equivalent.
_FOLD = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
        "\u20ac": "EUR",
        "\u00a0": " ",
        "\u2009": " ",
    }
)


def pdf_text(text: str) -> str:
    """``text`` as the core fonts can draw it: Latin-1, foreign letters folded to their base
    letter where Unicode gives one, anything else a visible "?"."""
    out = []
    for char in unicodedata.normalize("NFC", text.translate(_FOLD)):
        if char in "\r\t":
            out.append(" ")
        elif char == "\n" or (ord(char) < 256 and char.isprintable()):
            out.append(char)
        else:
            base = "".join(
                c
                for c in unicodedata.normalize("NFKD", char)
                if ord(c) < 256 and not unicodedata.combining(c) and c.isprintable()
            )
            out.append(base or "?")
    return "".join(out)


def _lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _date(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d}"


def _amount(amount_minor: int, currency: str) -> str:
    return with_currency(amount_minor, currency).rsplit(" ", 1)[0]  # "1,234.50"


@dataclass
class _Row:
    description: str
    quantity: str
    unit_price: str
    amount: str


@dataclass
class _Document:
    title: str
    file_title: str
    seller: list[str]  # first line: the name
    bill_to: list[str]  # first line: the name
    facts: list[tuple[str, str]]  # right column: ("Issue date", "2026-10-01"), ...
    notes: list[str]  # under the parties: what the document refers to
    currency: str
    rows: list[_Row]
    totals: list[tuple[str, str]]  # the last one is the total, in bold
    closing: list[str] = field(default_factory=list)  # payment terms and instructions


class _Pdf(FPDF):
    def __init__(self, footer_label: str, numbered: bool) -> None:
        super().__init__(format="A4")
        self._footer_label = footer_label
        self._numbered = numbered
        self.set_margins(_MARGIN, _MARGIN, _MARGIN)
        self.set_auto_page_break(True, margin=20)

    def footer(self) -> None:
        if not self._numbered:
            return
        self.set_y(-14)
        self.set_font("Helvetica", size=8)
        self.set_text_color(*_GREY)
        self.cell(_WIDTH / 2, 5, self._footer_label)
        self.cell(_WIDTH / 2, 5, f"Page {self.page_no()} of {{nb}}", align="R")
        self.set_text_color(0)


def _block(pdf: FPDF, x: float, width: float, heading: str | None, lines: list[str]) -> float:
    """A party block at ``x``: optional small heading, the name in bold, then the lines;
    returns the y below it."""
    if heading:
        pdf.set_x(x)
        pdf.set_font("Helvetica", "B", 8)
        pdf.set_text_color(*_GREY)
        pdf.multi_cell(width, 4.5, heading.upper(), new_x="LEFT", new_y="NEXT")
        pdf.set_text_color(0)
    for i, line in enumerate(lines):
        pdf.set_x(x)
        pdf.set_font("Helvetica", "B" if i == 0 else "", 11 if i == 0 else 9)
        pdf.multi_cell(width, 5.5 if i == 0 else 4.5, pdf_text(line), new_x="LEFT", new_y="NEXT")
    return pdf.get_y()


def _draw(doc: _Document, numbered: bool) -> _Pdf:
    pdf = _Pdf(doc.file_title, numbered)
    pdf.set_title(pdf_text(doc.file_title))
    seller_name = doc.seller[0] if doc.seller else None
    if seller_name:
        pdf.set_author(pdf_text(seller_name))
    pdf.add_page()

    # Seller (left) and title with its facts (right).
    top = pdf.get_y()
    left_end = _block(pdf, _MARGIN, 92, None, doc.seller)
    pdf.set_xy(_RIGHT_X, top)
    pdf.set_font("Helvetica", "B", 20)
    pdf.multi_cell(_PAGE_W - _MARGIN - _RIGHT_X, 9, pdf_text(doc.title), new_x="LEFT", new_y="NEXT")
    pdf.ln(2)
    for label, value in doc.facts:
        pdf.set_x(_RIGHT_X)
        pdf.set_font("Helvetica", "", 9)
        pdf.set_text_color(*_GREY)
        pdf.cell(28, 5, label)
        pdf.set_text_color(0)
        pdf.multi_cell(
            _PAGE_W - _MARGIN - _RIGHT_X - 28, 5, pdf_text(value), new_x="LEFT", new_y="NEXT"
        )
    right_end = pdf.get_y()

    # The customer.
    pdf.set_y(max(left_end, right_end) + 8)
    _block(pdf, _MARGIN, 92, "Bill to", doc.bill_to)
    pdf.ln(4)
    pdf.set_font("Helvetica", "", 9)
    for note in doc.notes:
        pdf.multi_cell(_WIDTH, 5, pdf_text(note), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    # The lines.
    pdf.set_font("Helvetica", "", 9)
    pdf.set_draw_color(*_RULE)
    heading = FontFace(emphasis="BOLD", fill_color=(235, 235, 235))
    with pdf.table(
        width=_WIDTH,
        col_widths=(94, 24, 26, 30),
        text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"),
        borders_layout="HORIZONTAL_LINES",
        headings_style=heading,
        line_height=4.6,
        padding=(1.6, 1.5),
        v_align="TOP",
        align="LEFT",
    ) as table:
        head = table.row()
        for text in (
            "Description",
            "Quantity",
            "Unit price",
            f"Amount ({doc.currency.upper()})",
        ):
            head.cell(text)
        for row in doc.rows:
            cells = table.row()
            cells.cell(pdf_text(row.description))
            cells.cell(row.quantity)
            cells.cell(row.unit_price)
            cells.cell(row.amount)
    pdf.line(_MARGIN, pdf.get_y(), _MARGIN + _WIDTH, pdf.get_y())

    # Totals and payment terms, kept together on one page.
    pdf.set_font("Helvetica", "", 9)
    needed = 8.0 + 7 * len(doc.totals) + 6
    for text in doc.closing:
        height = pdf.multi_cell(
            _WIDTH, 4.6, pdf_text(text), dry_run=True, output=MethodReturnValue.HEIGHT
        )
        needed += 1.5 + float(cast(float, height))
    if pdf.get_y() + needed > pdf.page_break_trigger:
        pdf.add_page()
    pdf.ln(3)
    label_x, label_w, value_w = _MARGIN + _WIDTH - 100, 64.0, 36.0
    for i, (label, value) in enumerate(doc.totals):
        last = i == len(doc.totals) - 1
        pdf.set_x(label_x)
        pdf.set_font("Helvetica", "B" if last else "", 11 if last else 9)
        border = "T" if last else ""
        pdf.cell(label_w, 7 if last else 5.5, pdf_text(label), border=border)
        pdf.cell(value_w, 7 if last else 5.5, value, border=border, align="R")
        pdf.ln()

    # Payment terms and instructions.
    if doc.closing:
        pdf.ln(6)
        pdf.set_font("Helvetica", "", 9)
        for text in doc.closing:
            pdf.multi_cell(_WIDTH, 4.6, pdf_text(text), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1.5)
    return pdf


def _render(doc: _Document) -> bytes:
    pdf = _draw(doc, numbered=False)
    if pdf.pages_count > 1:  # drawn again, numbered: "Page 1 of N" only when N > 1
        pdf = _draw(doc, numbered=True)
    return bytes(pdf.output())


# ----------------------------------------------------------------------------- parties


def _seller_lines(seller: dict[str, Any] | None) -> list[str]:
    if not seller:
        return []
    lines = [str(seller.get("name") or "")]
    lines += _lines(seller.get("address"))
    if seller.get("email"):
        lines.append(str(seller["email"]))
    if seller.get("tax_id"):
        lines.append(f"VAT ID: {seller['tax_id']}")
    return [line for line in lines if line]


def _bill_to_lines(invoice: Invoice, customer: Customer) -> list[str]:
    bill_to = invoice.bill_to or {}
    name = bill_to.get("legal_name") or bill_to.get("name") or customer.name
    lines = [str(name)]
    lines += _lines(bill_to.get("address"))
    if bill_to.get("country"):
        lines.append(str(bill_to["country"]))
    if bill_to.get("tax_id"):
        lines.append(f"VAT ID: {bill_to['tax_id']}")
    email = bill_to.get("billing_email") if invoice.bill_to else customer.email
    if email:
        lines.append(str(email))
    return lines


def _period(invoice: Invoice) -> str:
    last_day = invoice.period_end - timedelta(days=1)
    return f"{invoice.period_start:%Y-%m-%d} to {last_day:%Y-%m-%d}"


def _tax_label(invoice: Invoice) -> str | None:
    if invoice.tax_exempt:
        return f"Tax exempt: {invoice.tax_note}" if invoice.tax_note else "Tax exempt"
    if invoice.tax_rate is not None:
        return f"Tax ({plain(invoice.tax_rate)}%)"
    return "Tax" if invoice.tax_minor else None


def _totals(
    invoice: Invoice, subtotal_minor: int, tax_minor: int, total_minor: int, total_label: str
) -> list[tuple[str, str]]:
    c = invoice.currency
    rows = [("Subtotal", _amount(subtotal_minor, c))]
    tax_label = _tax_label(invoice)
    if tax_label is not None:
        rows.append((tax_label, _amount(tax_minor, c)))
    rows.append((total_label, with_currency(total_minor, c)))
    return rows


def _issued(invoice: Invoice) -> datetime | None:
    return invoice.issued_at or invoice.finalized_at


# ----------------------------------------------------------------------------- documents


def invoice_pdf(invoice: Invoice, lines: Sequence[InvoiceLine], customer: Customer) -> bytes:
    """The invoice as sent to the customer."""
    number = invoice.number or "(draft)"
    issued = _issued(invoice)
    facts = [("Invoice number", number), ("Issue date", _date(issued))]
    if invoice.due_at is not None:
        facts.append(("Due date", _date(invoice.due_at)))
    facts.append(("Period", _period(invoice)))
    notes = []
    if invoice.status == "void":
        notes.append(
            f"This invoice was voided on {_date(invoice.voided_at)}"
            + (f": {invoice.void_reason}" if invoice.void_reason else ".")
            + " Nothing is due."
        )
    seller = invoice.seller or {}
    closing = []
    if invoice.status != "void":
        if invoice.due_at is not None:
            days = seller.get("payment_terms_days")
            if days is None and issued is not None:
                days = (invoice.due_at.date() - issued.date()).days
            closing.append(
                f"Payment due within {days} days, by {_date(invoice.due_at)}."
                if days is not None
                else f"Payment due by {_date(invoice.due_at)}."
            )
        if seller.get("payment_instructions"):
            closing.append(str(seller["payment_instructions"]))
        closing.append(f"Please quote {number} with your payment.")
    c = invoice.currency
    doc = _Document(
        title="Invoice",
        file_title=f"Invoice {number}",
        seller=_seller_lines(invoice.seller),
        bill_to=_bill_to_lines(invoice, customer),
        facts=facts,
        notes=notes,
        currency=c,
        rows=[
            _Row(
                description=line.description,
                quantity=plain(line.billable_quantity),
                unit_price="" if line.unit_price is None else plain(line.unit_price),
                amount=_amount(line.amount_minor, c),
            )
            for line in lines
        ],
        totals=_totals(
            invoice, invoice.subtotal_minor, invoice.tax_minor, invoice.total_minor, "Total"
        ),
        closing=closing,
    )
    return _render(doc)


def credit_note_pdf(
    note: CreditNote,
    lines: Sequence[tuple[CreditNoteLine, int | None]],
    invoice: Invoice,
    customer: Customer,
) -> bytes:
    """The credit note as sent to the customer; the parties are the credited invoice's."""
    c = note.currency
    invoice_number = invoice.number or f"#{invoice.id}"
    doc = _Document(
        title="Credit note",
        file_title=f"Credit note {note.number}",
        seller=_seller_lines(invoice.seller),
        bill_to=_bill_to_lines(invoice, customer),
        facts=[
            ("Number", note.number),
            ("Issue date", _date(note.issued_at)),
            ("Invoice", invoice_number),
            ("Period", _period(invoice)),
        ],
        notes=[
            f"Credits invoice {invoice_number} of {_date(_issued(invoice))}.",
            f"Reason: {note.reason}",
        ],
        currency=c,
        rows=[
            _Row(
                description=(
                    f"Line {position}: {line.description}"
                    if position is not None
                    else line.description
                ),
                quantity="" if line.quantity is None else plain(line.quantity),
                unit_price="",
                amount=_amount(line.amount_minor, c),
            )
            for line, position in lines
        ],
        totals=_totals(
            invoice, note.subtotal_minor, note.tax_minor, note.total_minor, "Total credited"
        ),
        closing=[
            f"This credit note reduces the amount of invoice {invoice_number} by "
            f"{with_currency(note.total_minor, c)}."
        ],
    )
    return _render(doc)

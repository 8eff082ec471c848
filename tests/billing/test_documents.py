"""The invoice and credit note PDFs as an accounts-payable team reads them: parties, dates,
tax, totals, whole descriptions, page numbers; no internal words. Drawn from in-memory
documents (the same builders as scripts/render_samples.py), read back without a PDF
library (tests/billing/pdftext.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from app.billing.pdf import credit_note_pdf, invoice_pdf, pdf_text
from app.orm import Customer, Invoice, InvoiceLine
from scripts.render_samples import sample_credit_note, sample_invoice
from tests.billing.pdftext import page_count, pdf_words
from tests.billing.pdftext import pdf_text as shown


def test_invoice_pdf_has_parties_dates_tax_and_totals() -> None:
    invoice, lines, customer = sample_invoice()
    text = shown(invoice_pdf(invoice, lines, customer))
    for expected in (
        # the seller, from the snapshot
        "Tollgate GmbH",
        "Friedrichstrasse 123",
        "10117 Berlin",
        "billing@tollgate.example",
        "VAT ID: DE123456789",
        # the customer: legal name, address, country, tax id, billing email
        "Acme Robotics B.V.",
        "Keizersgracht 221",
        "1016 DV Amsterdam",
        "NL",
        "VAT ID: NL123456789B01",
        "ap@acme-robotics.example",
        # the document
        "Invoice",
        "TG-2026-000042",
        "Issue date\n2026-10-01",
        "Due date\n2026-10-31",
        "2026-09-01 to 2026-09-30",
        "Description\nQuantity\nUnit price\nAmount (EUR)",
        "Monthly base fee\n1\n49\n49.00",
        "Subtotal\n364.58",
        "Tax (19%)\n69.27",
        "Total\n433.85 EUR",
        "Payment due within 30 days, by 2026-10-31.",
        "IBAN DE89 3704 0044 0532 0130 00",
    ):
        assert expected in text, expected
    for internal in ("finalized", "rounded", "Status", "acme (#"):
        assert internal not in text
    # The account name is not the legal name; the account's own email is not the billing one.
    assert "dev@acme-robotics.example" not in text


def test_long_descriptions_wrap_whole() -> None:
    invoice, lines, customer = sample_invoice()
    data = invoice_pdf(invoice, lines, customer)
    assert lines[1].description in pdf_words(data)
    # Drawn over several lines, each inside the description column.
    assert "cnn: requests, first 10000 included, then 0.0015 each; requests" in shown(data)


def _many_lines(invoice: Invoice, n: int) -> list[InvoiceLine]:
    return [
        InvoiceLine(
            id=1000 + i,
            position=i,
            kind="usage",
            description=f"model-{i}: requests, 0.001 each, billed for line number {i} of a "
            f"long month of usage across many models and variants",
            quantity=Decimal(1000),
            billable_quantity=Decimal(1000),
            unit_price=Decimal("0.001"),
            amount=Decimal(1),
            amount_minor=100,
            period_start=invoice.period_start,
            period_end=invoice.period_end,
        )
        for i in range(1, n + 1)
    ]


def test_page_numbers_only_when_over_one_page_and_headings_repeat() -> None:
    invoice, lines, customer = sample_invoice()
    one = invoice_pdf(invoice, lines, customer)
    assert page_count(one) == 1 and "Page 1 of" not in shown(one)

    many = _many_lines(invoice, 70)
    invoice.subtotal_minor = 7000
    invoice.tax_minor = 1330
    invoice.total_minor = 8330
    data = invoice_pdf(invoice, many, customer)
    text = shown(data)
    words = pdf_words(data)
    pages = page_count(data)
    assert pages >= 2
    for page in range(1, pages + 1):
        assert f"Page {page} of {pages}" in words
    # The table's heading repeats on each page the table runs over.
    assert text.count("Description\nQuantity\nUnit price\nAmount (EUR)") >= pages - 1
    for line in many:  # every line, whole, none lost at a page break
        assert line.description in words
    assert "Total\n83.30 EUR" in text


def test_exempt_customer_shows_the_exemption_note() -> None:
    invoice, lines, customer = sample_invoice()
    invoice.tax_rate = None
    invoice.tax_exempt = True
    invoice.tax_note = "Reverse charge"
    invoice.tax_minor = 0
    invoice.total_minor = invoice.subtotal_minor
    text = shown(invoice_pdf(invoice, lines, customer))
    assert "Tax exempt: Reverse charge\n0.00" in text
    assert "Total\n364.58 EUR" in text
    assert "Tax (" not in text


def test_invoice_from_before_snapshots_renders_with_what_is_known() -> None:
    invoice, lines, customer = sample_invoice()
    invoice.seller = None
    invoice.bill_to = None
    invoice.issued_at = None
    invoice.due_at = None
    invoice.tax_rate = None
    invoice.tax_minor = 0
    invoice.total_minor = invoice.subtotal_minor
    text = shown(invoice_pdf(invoice, lines, customer))
    assert "acme\n" in text and "dev@acme-robotics.example" in text
    assert "Issue date\n2026-10-01" in text  # the finalization moment
    assert "Total\n364.58 EUR" in text
    assert "Tax" not in text and "Payment due" not in text


def test_void_invoice_says_so_and_asks_for_nothing() -> None:
    invoice, lines, customer = sample_invoice()
    invoice.status = "void"
    invoice.voided_at = datetime(2026, 10, 3, tzinfo=UTC)
    invoice.void_reason = "Sent to the wrong customer"
    text = pdf_words(invoice_pdf(invoice, lines, customer))
    assert "This invoice was voided on 2026-10-03: Sent to the wrong customer" in text
    assert "Payment due" not in text


def test_text_outside_latin1_is_replaced_visibly() -> None:
    foreign = "M\u00fcller \u0141\u00f3d\u017a \u201c\u00d8rsted\u201d \u2013 Zo\u00eb \u682a\u5f0f"
    assert pdf_text(foreign) == 'M\u00fcller ?\u00f3dz "\u00d8rsted" - Zo\u00eb ??'
    invoice, lines, customer = sample_invoice()
    assert invoice.bill_to is not None
    invoice.bill_to = {**invoice.bill_to, "legal_name": "Őrség Kft. 株式会社"}
    text = shown(invoice_pdf(invoice, lines, customer))
    assert "Orség Kft. ????" in text


def test_credit_note_pdf() -> None:
    invoice, _, customer = sample_invoice()
    note, note_lines = sample_credit_note(invoice)
    data = credit_note_pdf(note, note_lines, invoice, customer)
    text = shown(data)
    words = pdf_words(data)
    for expected in (
        "Tollgate GmbH",
        "Acme Robotics B.V.",
        "VAT ID: NL123456789B01",
        "Credit note",
        "CN-2026-000003",
        "Issue date\n2026-10-06",
        "Subtotal\n17.50",
        "Tax (19%)\n3.33",
        "Total credited\n20.83 EUR",
    ):
        assert expected in text, expected
    assert "Credits invoice TG-2026-000042 of 2026-10-01." in words
    assert "Reason: Outage on 2026-09-14 (incident 2026-0914): failed requests refunded" in words
    assert "Line 2: Requests failed during the outage of 2026-09-14, 10:02 to 11:17 UTC" in words
    assert "Goodwill credit" in words


def test_customer_without_snapshot_falls_back_to_account() -> None:
    invoice, lines, _ = sample_invoice()
    invoice.bill_to = {"customer_id": 7, "name": "acme"}  # partial, as an older snapshot
    text = shown(invoice_pdf(invoice, lines, Customer(id=7, name="acme", email=None)))
    assert "BILL TO\nacme\n" in text

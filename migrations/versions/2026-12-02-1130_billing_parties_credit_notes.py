"""Billing parties, tax, credit notes and operator accounts.

- customers: ``is_operator`` and billing details (legal name, billing email, address,
  country, tax id, tax rate or exemption with a note).
- invoices: tax (``tax_minor`` and the treatment it was computed with), issue and due dates,
  snapshots of the seller and the customer (``seller``, ``bill_to``), void date and reason.
  Existing invoices get ``tax_minor`` 0, ``issued_at`` = ``finalized_at``, ``due_at`` 30 days
  later, and a ``bill_to`` snapshot of the customer's name and email as they are now.
- credit_notes, credit_note_lines, credit_note_sequences.
- api_keys: ``legacy_staff``. Every existing key holding ``admin`` or ``finance`` is marked:
  none of them belongs to an operator account yet (the flag is new), and they keep those
  scopes until an admin re-issues them. Each one is written to the audit log.

On SQLite the two CHECK constraints added to existing tables (customers' tax treatment,
invoices' total) are left out: adding one means rebuilding a table that others reference,
which SQLite cannot do with foreign keys on inside the migration's transaction. The services
enforce both rules on every database.

Revision ID: b7c1d2e3f405
Revises: a2a9ba0c146b
Create Date: 2026-12-02 11:30:00.000000+00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "b7c1d2e3f405"
down_revision: str | None = "a2a9ba0c146b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _percent() -> sa.types.TypeEngine[object]:
    # ExactNumeric(7, 4): fixed-point text on SQLite, NUMERIC on Postgres.
    return sa.String(9) if _sqlite() else sa.Numeric(7, 4)  # type: ignore[return-value]


def _exact(precision: int, scale: int) -> sa.types.TypeEngine[object]:
    return sa.String(precision + 2) if _sqlite() else sa.Numeric(precision, scale)  # type: ignore[return-value]


def upgrade() -> None:
    sqlite = _sqlite()
    ts = sa.DateTime(timezone=True)

    op.add_column(
        "customers",
        sa.Column("is_operator", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("customers", sa.Column("legal_name", sa.String(200), nullable=True))
    op.add_column("customers", sa.Column("billing_email", sa.String(320), nullable=True))
    op.add_column("customers", sa.Column("address", sa.Text(), nullable=True))
    op.add_column("customers", sa.Column("country", sa.String(2), nullable=True))
    op.add_column("customers", sa.Column("tax_id", sa.String(64), nullable=True))
    op.add_column("customers", sa.Column("tax_rate", _percent(), nullable=True))
    op.add_column(
        "customers",
        sa.Column("tax_exempt", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("customers", sa.Column("tax_note", sa.String(200), nullable=True))

    op.add_column(
        "invoices", sa.Column("tax_minor", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.add_column("invoices", sa.Column("tax_rate", _percent(), nullable=True))
    op.add_column(
        "invoices",
        sa.Column("tax_exempt", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("invoices", sa.Column("tax_note", sa.String(200), nullable=True))
    op.add_column("invoices", sa.Column("issued_at", ts, nullable=True))
    op.add_column("invoices", sa.Column("due_at", ts, nullable=True))
    op.add_column("invoices", sa.Column("seller", sa.JSON(), nullable=True))
    op.add_column("invoices", sa.Column("bill_to", sa.JSON(), nullable=True))
    op.add_column("invoices", sa.Column("voided_at", ts, nullable=True))
    op.add_column("invoices", sa.Column("void_reason", sa.String(500), nullable=True))

    op.add_column(
        "api_keys",
        sa.Column("legacy_staff", sa.Boolean(), server_default=sa.false(), nullable=False),
    )

    if not sqlite:
        op.create_check_constraint(
            "tax_treatment", "customers", "NOT (tax_exempt AND tax_rate IS NOT NULL)"
        )
        op.create_check_constraint("total", "invoices", "total_minor = subtotal_minor + tax_minor")

    op.create_table(
        "credit_notes",
        sa.Column("id", _BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("invoice_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("subtotal_minor", sa.BigInteger(), nullable=False),
        sa.Column("tax_minor", sa.BigInteger(), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("issued_at", ts, nullable=False),
        sa.Column("stripe_credit_note_id", sa.String(64), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.CheckConstraint(
            "total_minor = subtotal_minor + tax_minor", name=op.f("ck_credit_notes_total")
        ),
        sa.CheckConstraint(
            "subtotal_minor >= 0 AND tax_minor >= 0", name=op.f("ck_credit_notes_positive")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_credit_notes_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_credit_notes_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
        sa.UniqueConstraint("number", name=op.f("uq_credit_notes_number")),
        sa.UniqueConstraint(
            "stripe_credit_note_id", name=op.f("uq_credit_notes_stripe_credit_note_id")
        ),
    )
    op.create_index(
        op.f("ix_credit_notes_customer_id"), "credit_notes", ["customer_id"], unique=False
    )
    op.create_index(
        op.f("ix_credit_notes_invoice_id"), "credit_notes", ["invoice_id"], unique=False
    )
    op.create_table(
        "credit_note_lines",
        sa.Column("id", _BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("credit_note_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("invoice_line_id", sa.BigInteger(), nullable=True),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("quantity", _exact(24, 6), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_credit_note_lines_positive")),
        sa.ForeignKeyConstraint(
            ["credit_note_id"],
            ["credit_notes.id"],
            name=op.f("fk_credit_note_lines_credit_note_id_credit_notes"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_line_id"],
            ["invoice_lines.id"],
            name=op.f("fk_credit_note_lines_invoice_line_id_invoice_lines"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_note_lines")),
    )
    op.create_index(
        op.f("ix_credit_note_lines_credit_note_id"),
        "credit_note_lines",
        ["credit_note_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_credit_note_lines_invoice_line_id"),
        "credit_note_lines",
        ["invoice_line_id"],
        unique=False,
    )
    op.create_table(
        "credit_note_sequences",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("year", name=op.f("pk_credit_note_sequences")),
    )

    _backfill_invoices()
    _mark_legacy_staff_keys()


def _backfill_invoices() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT i.id, i.finalized_at, c.name, c.email FROM invoices i "
            "JOIN customers c ON c.id = i.customer_id WHERE i.finalized_at IS NOT NULL"
        )
    ).all()
    invoices = sa.table(
        "invoices",
        sa.column("id"),
        sa.column("issued_at", sa.DateTime(timezone=True)),
        sa.column("due_at", sa.DateTime(timezone=True)),
        sa.column("bill_to", sa.JSON()),
    )
    for invoice_id, finalized_at, name, email in rows:
        if isinstance(finalized_at, str):  # SQLite hands back text
            finalized_at = datetime.fromisoformat(finalized_at)
        bind.execute(
            invoices.update()
            .where(invoices.c.id == invoice_id)
            .values(
                issued_at=finalized_at,
                due_at=finalized_at + timedelta(days=30),
                bill_to={"name": name, "legal_name": None, "billing_email": email},
            )
        )


def _mark_legacy_staff_keys() -> None:
    bind = op.get_bind()
    keys = sa.table(
        "api_keys",
        sa.column("id"),
        sa.column("customer_id"),
        sa.column("prefix"),
        sa.column("scopes", sa.JSON()),
        sa.column("revoked_at"),
        sa.column("legacy_staff", sa.Boolean()),
    )
    audit = sa.table(
        "audit_log",
        sa.column("actor", sa.String()),
        sa.column("actor_key_id", sa.BigInteger()),
        sa.column("action", sa.String()),
        sa.column("target_type", sa.String()),
        sa.column("target_id", sa.String()),
        sa.column("before", sa.JSON()),
        sa.column("after", sa.JSON()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    if _sqlite():
        now = now.replace(tzinfo=None)
    rows = bind.execute(
        sa.select(keys.c.id, keys.c.customer_id, keys.c.prefix, keys.c.scopes).where(
            keys.c.revoked_at.is_(None)
        )
    ).all()
    for key_id, customer_id, prefix, scopes in rows:
        staff = sorted(set(scopes or ()) & {"admin", "finance"})
        if not staff:
            continue
        bind.execute(keys.update().where(keys.c.id == key_id).values(legacy_staff=True))
        bind.execute(
            audit.insert().values(
                actor="migration",
                actor_key_id=None,
                action="key.legacy_staff",
                target_type="key",
                target_id=str(key_id),
                before=None,
                after={
                    "prefix": prefix,
                    "customer_id": customer_id,
                    "scopes": staff,
                    "note": "admin/finance key of a customer, not of the operator: keeps "
                    "working until an admin re-issues it to the operator account",
                },
                created_at=now,
            )
        )


def downgrade() -> None:
    op.drop_table("credit_note_sequences")
    op.drop_index(op.f("ix_credit_note_lines_invoice_line_id"), table_name="credit_note_lines")
    op.drop_index(op.f("ix_credit_note_lines_credit_note_id"), table_name="credit_note_lines")
    op.drop_table("credit_note_lines")
    op.drop_index(op.f("ix_credit_notes_invoice_id"), table_name="credit_notes")
    op.drop_index(op.f("ix_credit_notes_customer_id"), table_name="credit_notes")
    op.drop_table("credit_notes")
    if not _sqlite():
        op.drop_constraint("total", "invoices", type_="check")
        op.drop_constraint("tax_treatment", "customers", type_="check")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("legacy_staff")
    with op.batch_alter_table("invoices") as batch:
        for column in (
            "void_reason",
            "voided_at",
            "bill_to",
            "seller",
            "due_at",
            "issued_at",
            "tax_note",
            "tax_exempt",
            "tax_rate",
            "tax_minor",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("customers") as batch:
        for column in (
            "tax_note",
            "tax_exempt",
            "tax_rate",
            "tax_id",
            "country",
            "address",
            "billing_email",
            "legal_name",
            "is_operator",
        ):
            batch.drop_column(column)

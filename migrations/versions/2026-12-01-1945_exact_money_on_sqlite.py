"""Exact money on SQLite: the NUMERIC money columns become fixed-point text there.

SQLite stores a NUMERIC value as a double (about 15 significant digits); the columns hold up
to 24 or 30 digits, so prices and invoice amounts came back rounded. ``ExactNumeric`` keeps
them as text on SQLite (Postgres keeps NUMERIC: nothing changes there). Existing values are
carried over with SQLite's own CAST, i.e. as the double they already were.

``plan_versions`` is a parent of ``customer_plans`` and ``invoice_lines``: recreating it (what
batch mode does) would trip the foreign keys, and ``PRAGMA foreign_keys`` cannot be switched
off inside the migration's transaction. Its two columns are therefore swapped in place (add,
copy, drop, rename: SQLite >= 3.35); NOT NULL ``base_fee`` needs a DEFAULT for that, which the
application never relies on. ``invoice_lines`` has no children and is rebuilt in batch mode.

Revision ID: a2a9ba0c146b
Revises: 4f58dcc142e8
Create Date: 2026-12-01 19:45:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a2a9ba0c146b"
down_revision: str | None = "4f58dcc142e8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (column, precision, scale, nullable)
_INVOICE_LINES = (
    ("quantity", 24, 6, False),
    ("billable_quantity", 24, 6, False),
    ("unit_price", 24, 10, True),
    ("amount", 30, 10, False),
)


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _swap_in_place(table: str, column: str, type_sql: str, not_null_default: str | None) -> None:
    new = f"{column}__new"
    constraint = "" if not_null_default is None else f" DEFAULT {not_null_default} NOT NULL"
    op.execute(f"ALTER TABLE {table} ADD COLUMN {new} {type_sql}{constraint}")
    op.execute(f"UPDATE {table} SET {new} = CAST({column} AS {type_sql})")  # noqa: S608 (constants)
    op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    op.execute(f"ALTER TABLE {table} RENAME COLUMN {new} TO {column}")


def upgrade() -> None:
    if not _sqlite():
        return
    _swap_in_place("plan_versions", "base_fee", "VARCHAR(26)", "'0'")
    _swap_in_place("plan_versions", "spend_cap", "VARCHAR(26)", None)
    with op.batch_alter_table("invoice_lines") as batch:
        for column, precision, scale, nullable in _INVOICE_LINES:
            batch.alter_column(
                column,
                existing_type=sa.Numeric(precision=precision, scale=scale),
                type_=sa.String(length=precision + 2),
                existing_nullable=nullable,
            )


def downgrade() -> None:
    if not _sqlite():
        return
    with op.batch_alter_table("invoice_lines") as batch:
        for column, precision, scale, nullable in _INVOICE_LINES:
            batch.alter_column(
                column,
                existing_type=sa.String(length=precision + 2),
                type_=sa.Numeric(precision=precision, scale=scale),
                existing_nullable=nullable,
            )
    _swap_in_place("plan_versions", "spend_cap", "NUMERIC(24, 10)", None)
    _swap_in_place("plan_versions", "base_fee", "NUMERIC(24, 10)", "0")

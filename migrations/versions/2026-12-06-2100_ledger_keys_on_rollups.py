"""The ledger's foreign keys move to its rollups; its time index becomes BRIN on Postgres.

Issue 17, the last of the per-request overhead: every ledger row paid two foreign-key checks
(a key-share lock on its customer and on its API key) and a B-tree insert on ``created_at``
inside the durable commit a prediction waits for.

Foreign keys: ``usage_hourly`` now references ``customers`` and ``api_keys`` instead of
``usage_events``. The integrity is the same: every ledger row is written in the same
statement (Postgres) or transaction (SQLite) as the rollup row that counts it
(``app/metering/writer.py``, ``app/metering/rollups.py``), with the same customer and key,
so a row naming a customer or key that does not exist fails the rollup's check and the whole
write rolls back; and a customer or key with usage cannot be deleted, because its rollup rows
reference it. The checks are now paid once per (customer, key, model, hour) rollup row
instead of once per request: an upsert that only adds to an existing rollup changes no key
column, so Postgres does not check it again. Measured (interleaved, one durable commit of
the meter's statement): 1 row 0.450 -> 0.421 ms, 6 rows 0.616 -> 0.534 ms.

Index: ``ix_usage_events_created_at`` becomes a BRIN index on Postgres (rows arrive in time
order, so a block range summary serves the range scans of retention and the margin report at
a fraction of a B-tree's insert cost and size). SQLite keeps its B-tree.

Rows are not touched. Postgres adds the new keys NOT VALID and then validates them, so the
check of existing rollups reads rather than blocks writers for longer than the DDL itself.

Revision ID: f60718293041
Revises: e5f607182930
Create Date: 2026-12-06 21:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "f60718293041"
down_revision: str | None = "e5f607182930"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEYS = (
    # (constraint name without the table, column, referenced table)
    ("api_key_id_api_keys", "api_key_id", "api_keys"),
    ("customer_id_customers", "customer_id", "customers"),
)


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _postgres():
        for suffix, column, target in _KEYS:
            op.execute(
                f"ALTER TABLE usage_hourly ADD CONSTRAINT fk_usage_hourly_{suffix} "
                f"FOREIGN KEY ({column}) REFERENCES {target} (id) NOT VALID"
            )
            op.execute(f"ALTER TABLE usage_hourly VALIDATE CONSTRAINT fk_usage_hourly_{suffix}")
            op.execute(f"ALTER TABLE usage_events DROP CONSTRAINT fk_usage_events_{suffix}")
        op.execute("DROP INDEX ix_usage_events_created_at")
        op.execute(
            "CREATE INDEX ix_usage_events_created_at ON usage_events USING brin (created_at)"
        )
        return
    with op.batch_alter_table("usage_hourly") as batch:
        for suffix, column, target in _KEYS:
            batch.create_foreign_key(f"fk_usage_hourly_{suffix}", target, [column], ["id"])
    with op.batch_alter_table("usage_events") as batch:
        for suffix, _, _ in _KEYS:
            batch.drop_constraint(f"fk_usage_events_{suffix}", type_="foreignkey")


def downgrade() -> None:
    if _postgres():
        op.execute("DROP INDEX ix_usage_events_created_at")
        op.execute("CREATE INDEX ix_usage_events_created_at ON usage_events (created_at)")
        for suffix, column, target in _KEYS:
            op.execute(
                f"ALTER TABLE usage_events ADD CONSTRAINT fk_usage_events_{suffix} "
                f"FOREIGN KEY ({column}) REFERENCES {target} (id)"
            )
            op.execute(f"ALTER TABLE usage_hourly DROP CONSTRAINT fk_usage_hourly_{suffix}")
        return
    with op.batch_alter_table("usage_events") as batch:
        for suffix, column, target in _KEYS:
            batch.create_foreign_key(f"fk_usage_events_{suffix}", target, [column], ["id"])
    with op.batch_alter_table("usage_hourly") as batch:
        for suffix, _, _ in _KEYS:
            batch.drop_constraint(f"fk_usage_hourly_{suffix}", type_="foreignkey")

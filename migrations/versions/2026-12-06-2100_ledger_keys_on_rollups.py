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
a fraction of a B-tree's insert cost and size: 72 kB against 214 MB per 10 M rows). SQLite
keeps its B-tree.

Rows are not touched, and the ledger keeps taking writes while this runs on Postgres: the keys
move in one short transaction (the new ones added NOT VALID, then validated against the
rollups, which are small); the BRIN index is built partition by partition with CREATE INDEX
CONCURRENTLY under an invalid parent index (``ON ONLY``), each attached as it is done, and only
then is the old B-tree dropped and the new index renamed, in a transaction that holds the
table's lock for milliseconds. That part runs outside the migration transaction (Alembic's
autocommit block), so every step checks what is already done: a run interrupted in the middle
(a killed migration Job) is completed by running it again. Downgrade rebuilds the B-tree in
its transaction (it blocks ledger writes for one scan of the table).

Revision ID: f60718293041
Revises: e5f607182930
Create Date: 2026-12-06 21:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
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
        _move_keys_postgres()
        with op.get_context().autocommit_block():
            swap = _brin_time_index_postgres()
        if swap:  # back in a transaction: the old B-tree goes, the new index takes its name
            op.execute(f"DROP INDEX IF EXISTS {_INDEX}")
            op.execute(f"ALTER INDEX {_NEW} RENAME TO {_INDEX}")
        return
    with op.batch_alter_table("usage_hourly") as batch:
        for suffix, column, target in _KEYS:
            batch.create_foreign_key(f"fk_usage_hourly_{suffix}", target, [column], ["id"])
    with op.batch_alter_table("usage_events") as batch:
        for suffix, _, _ in _KEYS:
            batch.drop_constraint(f"fk_usage_events_{suffix}", type_="foreignkey")


def _move_keys_postgres() -> None:
    conn = op.get_bind()
    for suffix, column, target in _KEYS:
        name = f"fk_usage_hourly_{suffix}"
        if not conn.scalar(sa.text("SELECT 1 FROM pg_constraint WHERE conname = :n"), {"n": name}):
            op.execute(
                f"ALTER TABLE usage_hourly ADD CONSTRAINT {name} "
                f"FOREIGN KEY ({column}) REFERENCES {target} (id) NOT VALID"
            )
            op.execute(f"ALTER TABLE usage_hourly VALIDATE CONSTRAINT {name}")
        op.execute(f"ALTER TABLE usage_events DROP CONSTRAINT IF EXISTS fk_usage_events_{suffix}")


_INDEX = "ix_usage_events_created_at"
_NEW = "ix_usage_events_created_at_brin"  # the new parent index until it takes the name


def _brin_time_index_postgres() -> bool:
    """Outside a transaction: each statement commits on its own, and each step is skipped
    when a previous, interrupted run already did it. Returns whether the new index still has
    to replace the old one."""
    conn = op.get_bind()
    method = sa.text(
        "SELECT am.amname FROM pg_class i JOIN pg_am am ON am.oid = i.relam WHERE i.relname = :n"
    )
    if conn.scalar(method, {"n": _INDEX}) == "brin":
        return False
    op.execute(f"CREATE INDEX IF NOT EXISTS {_NEW} ON ONLY usage_events USING brin (created_at)")
    partitions = conn.scalars(
        sa.text(
            "SELECT c.relname FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid "
            "WHERE h.inhparent = 'usage_events'::regclass ORDER BY c.relname"
        )
    ).all()
    # A partition whose index is already attached to the new parent index: done (by an
    # earlier run, or created meanwhile by the partition job, which clones the parent's
    # indexes onto each new partition).
    attached = sa.text(
        "SELECT 1 FROM pg_inherits h JOIN pg_index x ON x.indexrelid = h.inhrelid "
        "WHERE h.inhparent = CAST(:parent AS regclass) AND x.indrelid = CAST(:part AS regclass)"
    )
    for part in partitions:
        if conn.scalar(attached, {"parent": _NEW, "part": part}):
            continue
        child = f"{part}_created_at_brin"
        # Left by an interrupted run (perhaps invalid): build it again.
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {child}")
        op.execute(f"CREATE INDEX CONCURRENTLY {child} ON {part} USING brin (created_at)")
        op.execute(f"ALTER INDEX {_NEW} ATTACH PARTITION {child}")
    return True


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

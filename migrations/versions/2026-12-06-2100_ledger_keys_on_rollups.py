"""The ledger's foreign keys move to its rollups.

Issue 17, the last of the per-request overhead: every ledger row paid two foreign-key checks
(a key-share lock on its customer and on its API key) inside the durable commit a prediction
waits for.

``usage_hourly`` now references ``customers`` and ``api_keys`` instead of ``usage_events``.
The integrity is the same: every ledger row is written in the same statement (Postgres) or
transaction (SQLite) as the rollup row that counts it (``app/metering/writer.py``,
``app/metering/rollups.py``), with the same customer and key, so a row naming a customer or
key that does not exist fails the rollup's check and the whole write rolls back; and a
customer or key with usage cannot be deleted, because its rollup rows reference it. The
checks are now paid once per (customer, key, model, hour) rollup row instead of twice per
request: an upsert that only adds to an existing rollup changes no key column, so Postgres
does not check it again. Measured (``scripts/bench_commit.py``, interleaved): one durable
commit of the meter's statement, 1 row 0.465-0.484 -> 0.441-0.452 ms, 6 rows 0.567-0.678 ->
0.524-0.583 ms. (A BRIN index on ``created_at`` instead of the B-tree was tried with it and
measured no difference: 0.534 vs 0.537 ms.)

Rows are not touched, and on Postgres the ledger keeps taking writes:
- the keys move in one short transaction that first locks the rollups, the ledger (and its
  partitions) and the two referenced tables (adding or dropping a foreign key locks the
  table it references exclusively; key lookups wait for those milliseconds, and their
  cache covers most requests). A writer's statement, once its plan is cached (asyncpg
  prepares it once per connection), locks the first three in that same order: usage_hourly
  (its target), usage_events, then the partition a row goes to; so the two queue instead of
  deadlocking. For any other order (a writer's first execution, a transaction that read a
  customer before writing usage), no lock of the move is waited for more than 100 ms (well
  under Postgres's 1 s deadlock check): on a timeout the attempt releases everything it
  took (a savepoint) and starts again, for up to 60 s, then fails, to be run again. The new
  keys go on NOT VALID: enforced on every new row from the commit, no scan under the lock;
- then, outside a transaction (Alembic's autocommit block), they are validated against the
  existing rollups under a lock that does not block writes.
Each step skips what is already done, so an interrupted run is completed by running it again.
Downgrade is not online: it validates the old keys against every ledger row while holding
the ledger's lock.

Revision ID: f60718293041
Revises: e5f607182930
Create Date: 2026-12-06 21:00:00+00:00
"""

import time
from collections.abc import Callable, Sequence

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
# Taking the locks (see above): one attempt's wait, and how long to keep trying.
_LOCK_TIMEOUT = "100ms"
_LOCK_TRIES_FOR_S = 60.0


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _postgres():
        _move_keys_postgres()
        with op.get_context().autocommit_block():
            for suffix, _, _ in _KEYS:
                op.execute(f"ALTER TABLE usage_hourly VALIDATE CONSTRAINT fk_usage_hourly_{suffix}")
        return
    _move_keys_sqlite(source="usage_events", target="usage_hourly")


def _move_keys_sqlite(source: str, target: str) -> None:
    """SQLite (batch mode: each table rebuilt): the keys go on ``target``, then off ``source``."""
    with op.batch_alter_table(target) as batch:
        for suffix, column, referred in _KEYS:
            batch.create_foreign_key(f"fk_{target}_{suffix}", referred, [column], ["id"])
    with op.batch_alter_table(source) as batch:
        for suffix, _, _ in _KEYS:
            batch.drop_constraint(f"fk_{source}_{suffix}", type_="foreignkey")


def _move_keys_postgres() -> None:
    conn = op.get_bind()

    def move() -> None:
        for suffix, column, target in _KEYS:
            name = f"fk_usage_hourly_{suffix}"
            exists = conn.scalar(
                sa.text("SELECT 1 FROM pg_constraint WHERE conname = :n"), {"n": name}
            )
            if not exists:
                conn.execute(
                    sa.text(
                        f"ALTER TABLE usage_hourly ADD CONSTRAINT {name} "
                        f"FOREIGN KEY ({column}) REFERENCES {target} (id) NOT VALID"
                    )
                )
            conn.execute(
                sa.text(
                    f"ALTER TABLE usage_events DROP CONSTRAINT IF EXISTS fk_usage_events_{suffix}"
                )
            )

    _with_ledger_locked(conn, move)


def _with_ledger_locked(conn: sa.Connection, work: Callable[[], None]) -> None:
    """Take every lock the key move needs, all at once, and run ``work`` under them, without
    ever waiting more than 100 ms for a lock while holding another (see the module
    docstring). Adding or dropping a foreign key also locks the referenced table
    exclusively, so customers and api_keys are taken here too rather than found waiting
    later; and the timeout stays on through ``work``, so a lock missed here still only costs
    one attempt."""
    deadline = time.monotonic() + _LOCK_TRIES_FOR_S
    while True:
        attempt = conn.begin_nested()
        try:
            conn.execute(sa.text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'"))
            conn.execute(sa.text("LOCK TABLE usage_hourly, usage_events IN ACCESS EXCLUSIVE MODE"))
            conn.execute(sa.text("LOCK TABLE customers, api_keys IN ACCESS EXCLUSIVE MODE"))
            work()
        except sa.exc.DBAPIError as exc:
            attempt.rollback()  # releases whatever this attempt locked and undoes its work
            if getattr(exc.orig, "sqlstate", None) != "55P03" or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        attempt.commit()  # the locks and the work stay with the migration's transaction
        conn.execute(sa.text("SET LOCAL lock_timeout = DEFAULT"))
        return


def downgrade() -> None:
    if _postgres():
        conn = op.get_bind()
        # Locks first (as the upgrade takes them); the keys' validation then scans the
        # ledger with no timeout, holding them: not online (module docstring).
        _with_ledger_locked(conn, lambda: None)
        for suffix, column, target in _KEYS:
            op.execute(
                f"ALTER TABLE usage_events ADD CONSTRAINT fk_usage_events_{suffix} "
                f"FOREIGN KEY ({column}) REFERENCES {target} (id)"
            )
            op.execute(f"ALTER TABLE usage_hourly DROP CONSTRAINT fk_usage_hourly_{suffix}")
        return
    _move_keys_sqlite(source="usage_hourly", target="usage_events")

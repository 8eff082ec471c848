"""The ledger at scale: ``usage_events`` partitioned by month on Postgres, and hourly rollups.

Postgres: the table is converted in place, in this migration's one transaction, under an
ACCESS EXCLUSIVE lock: the old table is renamed aside, a partitioned table of the same
shape takes its name, one partition per month from the oldest row to three months ahead
(plus a DEFAULT partition, so a row outside every month is still written, never refused),
every row is copied with its id, and the id sequence is handed over so new ids continue it.
The copy is checked (row count and sums equal, or the migration raises and rolls back), so
no row is lost or duplicated; only then is the old table dropped.

Partitioning requires every unique constraint to include the partition key, so the dedupe
constraint becomes ``(request_id, created_at)`` (and the primary key ``(id, created_at)``).
That still dedupes: a request's row is built once, with its ``created_at``, and the only
way the same ``request_id`` reaches the ledger twice is the writer retrying a batch (or a
caller repeating an insert), which re-sends the identical row, time included, and so hits
the constraint. Request ids are unique per request by construction (``new_request_id``).
SQLite keeps one table with the same constraint, so both databases dedupe alike.

Both: ``usage_hourly`` is created and filled from the existing rows with one
INSERT ... SELECT; from then on the meter writer maintains it with each batch.

Revision ID: e5f607182930
Revises: d4e5f6071829
Create Date: 2026-12-06 06:40:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e5f607182930"
down_revision: str | None = "d4e5f6071829"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Months created ahead of now (the maintenance job keeps this many ahead afterwards).
AHEAD = 3

_COLUMNS = (
    "id, request_id, api_key_id, customer_id, endpoint, model, version, variant, device, "
    "items, compute_us, latency_us, status_code, billable, created_at"
)
# Row count and sums, to prove a copy exact.
_CHECKSUM = (
    "SELECT count(*), coalesce(sum(id), 0), coalesce(sum(items), 0), "
    "coalesce(sum(compute_us), 0), count(DISTINCT request_id) FROM {table}"
)

_ROLLUP_FILL = """
INSERT INTO usage_hourly (customer_id, hour, api_key_id, model, version, variant, billable,
                          requests, errors, items, compute_us)
SELECT customer_id, {hour}, api_key_id, coalesce(model, ''), coalesce(version, ''),
       coalesce(variant, ''), billable, count(*),
       sum(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END), sum(items), sum(compute_us)
FROM usage_events
GROUP BY 1, 2, 3, 4, 5, 6, 7
"""


def upgrade() -> None:
    op.create_table(
        "usage_hourly",
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("api_key_id", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("variant", sa.String(length=32), nullable=False),
        sa.Column("billable", sa.Boolean(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("items", sa.BigInteger(), nullable=False),
        sa.Column("compute_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "customer_id",
            "hour",
            "api_key_id",
            "model",
            "version",
            "variant",
            "billable",
            name=op.f("pk_usage_hourly"),
        ),
    )
    op.create_index("ix_usage_hourly_hour", "usage_hourly", ["hour"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        _partition_postgres()
        hour = "date_trunc('hour', created_at, 'UTC')"
    else:
        with op.batch_alter_table("usage_events") as batch:
            batch.drop_constraint("uq_usage_events_request_id", type_="unique")
            batch.create_unique_constraint(
                "uq_usage_events_request_id", ["request_id", "created_at"]
            )
        hour = "strftime('%Y-%m-%d %H:00:00.000000', created_at)"
    op.execute(_ROLLUP_FILL.format(hour=hour))


def _partition_postgres() -> None:
    conn = op.get_bind()
    op.execute("LOCK TABLE usage_events IN ACCESS EXCLUSIVE MODE")
    op.execute("ALTER TABLE usage_events RENAME TO usage_events_unpartitioned")
    for old, new in (
        ("pk_usage_events", "pk_usage_events_unpartitioned"),
        ("uq_usage_events_request_id", "uq_usage_events_unpartitioned_request_id"),
        ("fk_usage_events_api_key_id_api_keys", "fk_usage_events_unpartitioned_api_key_id"),
        ("fk_usage_events_customer_id_customers", "fk_usage_events_unpartitioned_customer_id"),
    ):
        op.execute(f"ALTER TABLE usage_events_unpartitioned RENAME CONSTRAINT {old} TO {new}")
    op.execute("ALTER INDEX ix_usage_events_created_at RENAME TO ix_usage_events_old_created_at")
    op.execute(
        "ALTER INDEX ix_usage_events_customer_id_created_at "
        "RENAME TO ix_usage_events_old_customer_id_created_at"
    )
    # The sequence outlives the old table: new ids continue where the old ones stopped.
    op.execute("ALTER SEQUENCE usage_events_id_seq OWNED BY NONE")
    op.execute(
        """
        CREATE TABLE usage_events (
            id BIGINT NOT NULL DEFAULT nextval('usage_events_id_seq'),
            request_id VARCHAR(64) NOT NULL,
            api_key_id BIGINT NOT NULL,
            customer_id BIGINT NOT NULL,
            endpoint VARCHAR(64) NOT NULL,
            model VARCHAR(128),
            version VARCHAR(32),
            variant VARCHAR(32),
            device VARCHAR(16),
            items INTEGER NOT NULL,
            compute_us BIGINT NOT NULL,
            latency_us BIGINT NOT NULL,
            status_code SMALLINT NOT NULL,
            billable BOOLEAN NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            CONSTRAINT pk_usage_events PRIMARY KEY (id, created_at),
            CONSTRAINT uq_usage_events_request_id UNIQUE (request_id, created_at),
            CONSTRAINT fk_usage_events_api_key_id_api_keys
                FOREIGN KEY (api_key_id) REFERENCES api_keys (id),
            CONSTRAINT fk_usage_events_customer_id_customers
                FOREIGN KEY (customer_id) REFERENCES customers (id)
        ) PARTITION BY RANGE (created_at)
        """
    )
    op.execute("ALTER SEQUENCE usage_events_id_seq OWNED BY usage_events.id")
    op.execute("CREATE INDEX ix_usage_events_created_at ON usage_events (created_at)")
    op.execute(
        "CREATE INDEX ix_usage_events_customer_id_created_at "
        "ON usage_events (customer_id, created_at)"
    )
    op.execute("CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT")
    months = conn.execute(
        sa.text(
            "SELECT generate_series(date_trunc('month', coalesce(min(created_at), now()), 'UTC'),"
            " date_trunc('month', now(), 'UTC') + make_interval(months => :ahead),"
            " interval '1 month') FROM usage_events_unpartitioned"
        ),
        {"ahead": AHEAD},
    ).scalars()
    for start in list(months):
        name = f"usage_events_p{start:%Y_%m}"
        op.execute(
            f"CREATE TABLE {name} PARTITION OF usage_events FOR VALUES FROM "
            f"('{start:%Y-%m}-01 00:00:00+00') TO "
            f"(('{start:%Y-%m}-01 00:00:00+00'::timestamptz AT TIME ZONE 'UTC' "
            f"+ interval '1 month') AT TIME ZONE 'UTC')"
        )
    op.execute(
        f"INSERT INTO usage_events ({_COLUMNS}) "  # noqa: S608
        f"SELECT {_COLUMNS} FROM usage_events_unpartitioned"
    )
    _check_copy("usage_events_unpartitioned", "usage_events")
    op.execute("DROP TABLE usage_events_unpartitioned")


def _check_copy(source: str, target: str) -> None:
    conn = op.get_bind()
    before = conn.execute(sa.text(_CHECKSUM.format(table=source))).one()
    after = conn.execute(sa.text(_CHECKSUM.format(table=target))).one()
    if tuple(before) != tuple(after):
        raise RuntimeError(f"ledger copy differs: {tuple(before)} != {tuple(after)}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _unpartition_postgres()
    else:
        with op.batch_alter_table("usage_events") as batch:
            batch.drop_constraint("uq_usage_events_request_id", type_="unique")
            batch.create_unique_constraint("uq_usage_events_request_id", ["request_id"])
    op.drop_index("ix_usage_hourly_hour", table_name="usage_hourly")
    op.drop_table("usage_hourly")


def _unpartition_postgres() -> None:
    """Back to one table (detached partitions are archives and are not brought back)."""
    op.execute("LOCK TABLE usage_events IN ACCESS EXCLUSIVE MODE")
    op.execute("ALTER TABLE usage_events RENAME TO usage_events_partitioned")
    for old, new in (
        ("pk_usage_events", "pk_usage_events_partitioned"),
        ("uq_usage_events_request_id", "uq_usage_events_partitioned_request_id"),
        ("fk_usage_events_api_key_id_api_keys", "fk_usage_events_partitioned_api_key_id"),
        ("fk_usage_events_customer_id_customers", "fk_usage_events_partitioned_customer_id"),
    ):
        op.execute(f"ALTER TABLE usage_events_partitioned RENAME CONSTRAINT {old} TO {new}")
    op.execute("ALTER INDEX ix_usage_events_created_at RENAME TO ix_usage_events_part_created_at")
    op.execute(
        "ALTER INDEX ix_usage_events_customer_id_created_at "
        "RENAME TO ix_usage_events_part_customer_id_created_at"
    )
    op.execute("ALTER SEQUENCE usage_events_id_seq OWNED BY NONE")
    op.execute(
        """
        CREATE TABLE usage_events (
            id BIGINT NOT NULL DEFAULT nextval('usage_events_id_seq'),
            request_id VARCHAR(64) NOT NULL,
            api_key_id BIGINT NOT NULL,
            customer_id BIGINT NOT NULL,
            endpoint VARCHAR(64) NOT NULL,
            model VARCHAR(128),
            version VARCHAR(32),
            variant VARCHAR(32),
            device VARCHAR(16),
            items INTEGER NOT NULL,
            compute_us BIGINT NOT NULL,
            latency_us BIGINT NOT NULL,
            status_code SMALLINT NOT NULL,
            billable BOOLEAN NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            CONSTRAINT pk_usage_events PRIMARY KEY (id),
            CONSTRAINT uq_usage_events_request_id UNIQUE (request_id),
            CONSTRAINT fk_usage_events_api_key_id_api_keys
                FOREIGN KEY (api_key_id) REFERENCES api_keys (id),
            CONSTRAINT fk_usage_events_customer_id_customers
                FOREIGN KEY (customer_id) REFERENCES customers (id)
        )
        """
    )
    op.execute("ALTER SEQUENCE usage_events_id_seq OWNED BY usage_events.id")
    op.execute(
        f"INSERT INTO usage_events ({_COLUMNS}) "  # noqa: S608
        f"SELECT {_COLUMNS} FROM usage_events_partitioned"
    )
    _check_copy("usage_events_partitioned", "usage_events")
    op.execute("DROP TABLE usage_events_partitioned")
    op.execute("CREATE INDEX ix_usage_events_created_at ON usage_events (created_at)")
    op.execute(
        "CREATE INDEX ix_usage_events_customer_id_created_at "
        "ON usage_events (customer_id, created_at)"
    )

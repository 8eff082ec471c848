"""The schema comes only from migrations, and the ORM never drifts from them."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect, text

from tests.conftest import alembic_config, run_migrations


def test_postgres_upgrade_check_downgrade(scratch_pg: str) -> None:
    run_migrations(scratch_pg)
    command.check(alembic_config(scratch_pg))  # raises if the ORM and migrations differ
    command.downgrade(alembic_config(scratch_pg), "base")
    engine = create_engine(scratch_pg.replace("postgresql://", "postgresql+psycopg://"))
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    run_migrations(scratch_pg)


def test_sqlite_upgrade_and_check(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    run_migrations(url)
    command.check(alembic_config(url))


def test_upgrade_marks_staff_keys_of_customers_as_legacy_and_audits_each(scratch_pg: str) -> None:
    """Admin and finance keys issued before operator accounts belonged to customers; the
    upgrade keeps them working as legacy staff keys and writes one audit row per key."""
    run_migrations(scratch_pg, "a2a9ba0c146b")  # the revision before operator accounts
    engine = create_engine(scratch_pg.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customers (id, name, status, created_at) VALUES "
                          "(1, 'acme', 'active', now())"))  # fmt: skip
        for key_id, scopes, revoked in (
            (1, '["admin", "predict"]', None),
            (2, '["predict"]', None),
            (3, '["finance"]', "2026-01-01T00:00:00Z"),  # revoked: nothing to grandfather
            (4, '["finance"]', None),
        ):
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, customer_id, prefix, last_four, hash, scopes, "
                    "revoked_at, created_at) VALUES (:id, 1, :prefix, 'abcd', :hash, "
                    "CAST(:scopes AS json), CAST(:revoked AS timestamptz), now())"
                ),
                {
                    "id": key_id,
                    "prefix": f"tg_key{key_id:05d}",
                    "hash": f"{key_id:064d}",
                    "scopes": scopes,
                    "revoked": revoked,
                },
            )
    run_migrations(scratch_pg)
    with engine.connect() as conn:
        legacy = dict(conn.execute(text("SELECT id, legacy_staff FROM api_keys")).all())
        audit = conn.execute(
            text("SELECT actor, action, target_type, target_id, after FROM audit_log ORDER BY id")
        ).all()
        operator = conn.scalar(text("SELECT is_operator FROM customers WHERE id = 1"))
    engine.dispose()
    assert legacy == {1: True, 2: False, 3: False, 4: True}
    assert operator is False  # the migration makes nobody the operator account
    assert [(a, b, c, d) for a, b, c, d, _ in audit] == [
        ("migration", "key.legacy_staff", "key", "1"),
        ("migration", "key.legacy_staff", "key", "4"),
    ]
    assert audit[0][4]["scopes"] == ["admin"]
    assert audit[0][4]["prefix"] == "tg_key00001"
    assert "re-issues it to the operator account" in audit[0][4]["note"]

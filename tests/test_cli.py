"""The ``tollgate`` command, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TEST_SECRET


def _tollgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_migrate_create_and_revoke_keys(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
        "TOLLGATE_ENV": "production",
        "TOLLGATE_ALLOW_SQLITE": "true",
        "TOLLGATE_SECRET_KEY": TEST_SECRET,
    }
    assert _tollgate("migrate", env=env).returncode == 0
    created = _tollgate(
        "keys",
        "create",
        "--customer",
        "Initech",
        "--scope",
        "predict",
        "--scope",
        "billing",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("tg_") and len(key) == 35
    assert key not in created.stderr
    assert "billing,predict" in created.stderr

    revoked = _tollgate("keys", "revoke", key[:11], env=env)
    assert revoked.returncode == 0, revoked.stderr
    again = _tollgate("keys", "revoke", key[:11], env=env)
    assert again.returncode == 1

    bad_scope = _tollgate("keys", "create", "--customer", "x", "--scope", "root", env=env)
    assert bad_scope.returncode != 0


def test_cli_refuses_default_secret_in_production(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TOLLGATE_ENV": "production",
        "TOLLGATE_ALLOW_SQLITE": "true",
        "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
    }
    env.pop("TOLLGATE_SECRET_KEY", None)
    result = _tollgate("keys", "create", "--customer", "x", env=env)
    assert result.returncode != 0
    assert "TOLLGATE_SECRET_KEY" in result.stderr


def test_plans_and_billing_commands(tmp_path: Path) -> None:
    import json

    env = {
        **os.environ,
        "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp_path}/billing.db",
        "TOLLGATE_ENV": "production",
        "TOLLGATE_ALLOW_SQLITE": "true",
        "TOLLGATE_SECRET_KEY": TEST_SECRET,
    }
    assert _tollgate("migrate", env=env).returncode == 0
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "name": "starter",
                "currency": "usd",
                "base_fee": "5",
                "components": [{"unit": "request", "pricing": "per_unit", "unit_price": "0.001"}],
            }
        )
    )
    created = _tollgate("plans", "create", str(plan), env=env)
    assert created.returncode == 0, created.stderr
    again = _tollgate("plans", "create", str(plan), env=env)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    listed = [json.loads(x) for x in _tollgate("plans", "list", env=env).stdout.splitlines()]
    assert [(p["name"], p["version"], p["base_fee"]) for p in listed] == [("starter", 1, "5")]
    closed = _tollgate("billing", "close", "2026-01", env=env)
    assert closed.returncode == 0, closed.stderr
    assert json.loads(closed.stdout)["period"] == "2026-01"
    too_early = _tollgate("billing", "close", "2999-01", env=env)
    assert too_early.returncode == 1
    assert "can be closed from" in too_early.stderr


def test_billing_close_exits_3_when_a_customer_is_not_invoiced(tmp_path: Path) -> None:
    """A plan stored before amounts were bounded cannot be priced: the close commits the
    other invoices and exits 3 (partial) so that a scheduled run shows the gap."""
    import json
    import sqlite3

    db = tmp_path / "unratable.db"
    env = {
        **os.environ,
        "TOLLGATE_DATABASE_URL": f"sqlite:///{db}",
        "TOLLGATE_ENV": "production",
        "TOLLGATE_ALLOW_SQLITE": "true",
        "TOLLGATE_SECRET_KEY": TEST_SECRET,
    }
    assert _tollgate("migrate", env=env).returncode == 0
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"name": "flat", "currency": "usd", "base_fee": "5"}))
    assert _tollgate("plans", "create", str(plan), env=env).returncode == 0
    for customer in ("broken", "fine"):
        made = _tollgate("keys", "create", "--customer", customer, env=env)
        assert made.returncode == 0, made.stderr
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE plan_versions SET base_fee = '1e99999'")  # as stored long ago
        conn.execute(
            "INSERT INTO plan_versions (plan_id, version, currency, base_fee, components, "
            "created_at) SELECT plan_id, 2, currency, '5', components, created_at "
            "FROM plan_versions"
        )
        for customer, version in (("broken", 1), ("fine", 2)):
            conn.execute(
                "INSERT INTO customer_plans (customer_id, plan_version_id, effective_from, "
                "created_at) SELECT c.id, v.id, '2025-12-01 00:00:00.000000', "
                "'2025-12-01 00:00:00.000000' FROM customers c, plan_versions v "
                "WHERE c.name = ? AND v.version = ?",
                (customer, version),
            )
    closed = _tollgate("billing", "close", "2026-01", env=env)
    assert closed.returncode == 3, closed.stderr  # partial: not 1, which means nothing closed
    result = json.loads(closed.stdout)
    assert len(result["created"]) == 1
    assert [c["plan_version_id"] for c in result["not_ratable"]] == [1]
    assert "not invoiced: customer" in closed.stderr
    with sqlite3.connect(db) as conn:  # "fine" is invoiced and committed
        rows = conn.execute(
            "SELECT c.name, i.status FROM invoices i JOIN customers c ON c.id = i.customer_id"
        ).fetchall()
    assert rows == [("fine", "finalized")]


def test_customer_and_key_admin_commands(tmp_path: Path) -> None:
    import json

    env = {
        **os.environ,
        "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp_path}/admin.db",
        "TOLLGATE_ENV": "production",
        "TOLLGATE_ALLOW_SQLITE": "true",
        "TOLLGATE_SECRET_KEY": TEST_SECRET,
    }
    assert _tollgate("migrate", env=env).returncode == 0
    made = _tollgate("customers", "create", "Umbrella", "--email", "it@umbrella.co", env=env)
    assert made.returncode == 0, made.stderr
    customer = json.loads(made.stdout)
    assert customer["status"] == "active"
    assert _tollgate("customers", "create", "Umbrella", env=env).returncode == 1
    suspended = _tollgate("customers", "suspend", str(customer["id"]), env=env)
    assert json.loads(suspended.stdout)["status"] == "suspended"
    listed = _tollgate("customers", "list", "--status", "suspended", env=env).stdout
    assert [json.loads(x)["name"] for x in listed.splitlines()] == ["Umbrella"]
    assert _tollgate("customers", "reactivate", str(customer["id"]), env=env).returncode == 0

    secret = _tollgate("keys", "create", "--customer", "Umbrella", env=env).stdout.split()[-1]
    keys = [json.loads(x) for x in _tollgate("keys", "list", env=env).stdout.splitlines()]
    assert len(keys) == 1 and secret not in json.dumps(keys)
    rotated = _tollgate("keys", "rotate", str(keys[0]["id"]), "--grace-seconds", "60", env=env)
    assert rotated.returncode == 0, rotated.stderr
    new_secret = rotated.stdout.strip().splitlines()[-1]
    assert new_secret.startswith("tg_") and new_secret != secret
    assert _tollgate("keys", "rotate", str(keys[0]["id"]), env=env).returncode == 1


def test_revoke_cuts_off_a_key_in_its_rotation_grace_window(tmp_path: Path) -> None:
    """A leaked old key, still in the grace day of a rotation, is revoked at once by its
    prefix (it used to answer "no active key" and exit 1)."""
    import sqlite3
    from datetime import UTC, datetime

    db = tmp_path / "grace.db"
    env = {
        **os.environ,
        "TOLLGATE_DATABASE_URL": f"sqlite:///{db}",
        "TOLLGATE_ENV": "production",
        "TOLLGATE_ALLOW_SQLITE": "true",
        "TOLLGATE_SECRET_KEY": TEST_SECRET,
    }
    assert _tollgate("migrate", env=env).returncode == 0
    leaked = _tollgate("keys", "create", "--customer", "Hooli", env=env).stdout.split()[-1]
    rotated = _tollgate("keys", "rotate", leaked[:11], "--grace-seconds", "86400", env=env)
    assert rotated.returncode == 0, rotated.stderr
    revoked = _tollgate("keys", "revoke", leaked[:11], env=env)
    assert revoked.returncode == 0, revoked.stderr
    with sqlite3.connect(db) as conn:
        revoked_at = conn.execute(
            "SELECT revoked_at FROM api_keys WHERE prefix = ?", (leaked[:11],)
        ).fetchone()[0]
        audit = conn.execute("SELECT actor, action FROM audit_log ORDER BY id").fetchall()
    assert datetime.fromisoformat(revoked_at).replace(tzinfo=UTC) <= datetime.now(UTC)
    assert audit == [
        ("cli", "customer.create"),  # the operator account, by migrate
        ("cli", "customer.create"),
        ("cli", "key.create"),
        ("cli", "key.rotate"),
        ("cli", "key.revoke"),
    ]
    again = _tollgate("keys", "revoke", leaked[:11], env=env)
    assert again.returncode == 1
    assert "already revoked" in again.stderr


def _sqlite_env(db: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TOLLGATE_DATABASE_URL": f"sqlite:///{db}",
        "TOLLGATE_ENV": "production",
        "TOLLGATE_ALLOW_SQLITE": "true",
        "TOLLGATE_SECRET_KEY": TEST_SECRET,
    }


def test_billing_details_and_a_rehearsed_close(tmp_path: Path) -> None:
    """Customers' billing details from the command line (an address's "\\n" escapes are line
    breaks), the seller profile from the environment, and `billing close --dry-run`, which
    shows the invoices with their tax and writes nothing."""
    import json
    import sqlite3

    db = tmp_path / "details.db"
    env = {
        **_sqlite_env(db),
        "TOLLGATE_SELLER_NAME": "Tollgate GmbH",
        "TOLLGATE_SELLER_ADDRESS": r"Torstr. 5\n10119 Berlin",
        "TOLLGATE_PAYMENT_TERMS_DAYS": "10",
    }
    assert _tollgate("migrate", env=env).returncode == 0
    made = _tollgate(
        "customers", "create", "Acme", "--legal-name", "Acme GmbH",
        "--address", r"Hauptstr. 1\n10115 Berlin", "--country", "de", "--tax-rate", "19",
        env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    customer = json.loads(made.stdout)
    assert customer["address"] == "Hauptstr. 1\n10115 Berlin"
    assert (customer["country"], customer["tax_rate"]) == ("DE", "19")
    cid = str(customer["id"])

    bad_country = _tollgate("customers", "update", cid, "--country", "XX", env=env)
    assert bad_country.returncode == 2 and "country" in bad_country.stderr
    both = _tollgate(
        "customers", "update", cid, "--tax-exempt", "--tax-note", "Reverse charge", env=env
    )
    assert both.returncode == 1 and "not both" in both.stderr  # the stored rate counts
    value_and_clear = _tollgate(
        "customers", "update", cid, "--tax-id", "X", "--clear", "tax_id", env=env
    )
    assert value_and_clear.returncode == 2
    exempt = _tollgate(
        "customers", "update", cid, "--clear", "tax_rate", "--tax-exempt",
        "--tax-note", "Reverse charge", env=env,
    )  # fmt: skip
    assert exempt.returncode == 0, exempt.stderr
    assert json.loads(exempt.stdout)["tax_exempt"] is True
    rated = _tollgate(
        "customers", "update", cid, "--no-tax-exempt", "--clear", "tax_note",
        "--tax-rate", "19", env=env,
    )  # fmt: skip
    assert rated.returncode == 0, rated.stderr
    assert json.loads(rated.stdout)["tax_rate"] == "19"

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"name": "flat", "currency": "eur", "base_fee": "49"}))
    assert _tollgate("plans", "create", str(plan), env=env).returncode == 0
    assigned = _tollgate("plans", "assign", cid, "1", "--effective", "immediately", env=env)
    assert assigned.returncode == 0, assigned.stderr
    with sqlite3.connect(db) as conn:  # on the plan since long before the month rehearsed
        conn.execute("UPDATE customer_plans SET effective_from = '2025-12-01 00:00:00.000000'")

    rehearsal = _tollgate("billing", "close", "2026-01", "--dry-run", env=env)
    assert rehearsal.returncode == 0, rehearsal.stderr
    result = json.loads(rehearsal.stdout)
    assert result["dry_run"] is True and result["created"] == []
    (draft,) = result["invoices"]
    assert (draft["number"], draft["subtotal"], draft["tax"], draft["total"]) == (
        "(draft)",
        "49.00",
        "9.31",
        "58.31",
    )
    assert draft["seller"]["name"] == "Tollgate GmbH"
    assert draft["seller"]["address"] == "Torstr. 5\n10119 Berlin"
    assert draft["bill_to"]["legal_name"] == "Acme GmbH"
    with sqlite3.connect(db) as conn:
        invoices = conn.execute("SELECT count(*) FROM invoices").fetchone()
        numbers = conn.execute("SELECT count(*) FROM invoice_sequences").fetchone()
    assert (invoices, numbers) == ((0,), (0,))  # nothing written, no number taken

    closed = _tollgate("billing", "close", "2026-01", env=env)
    assert closed.returncode == 0, closed.stderr
    (invoice,) = json.loads(closed.stdout)["invoices"]
    assert (invoice["number"], invoice["total"]) == ("TG-2026-000001", "58.31")
    issued = invoice["issued_at"].replace("Z", "+00:00")
    due = invoice["due_at"].replace("Z", "+00:00")
    from datetime import datetime, timedelta

    assert datetime.fromisoformat(due) - datetime.fromisoformat(issued) == timedelta(days=10)


def test_migrate_creates_the_operator_account_once_and_staff_keys_are_its_only(
    tmp_path: Path,
) -> None:
    import json
    import sqlite3

    env = _sqlite_env(tmp_path / "operator.db")
    first = _tollgate("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "operator account created 'operator' (id 1)" in first.stderr
    again = _tollgate("migrate", env=env)
    assert again.returncode == 0 and "operator account is 'operator' (id 1)" in again.stderr
    customers = [json.loads(x) for x in _tollgate("customers", "list", env=env).stdout.splitlines()]
    assert [(c["name"], c["is_operator"]) for c in customers] == [("operator", True)]
    with sqlite3.connect(tmp_path / "operator.db") as conn:
        audit = conn.execute("SELECT actor, action, after FROM audit_log").fetchall()
    assert [(a, b) for a, b, _ in audit] == [("cli", "customer.create")]
    assert json.loads(audit[0][2])["is_operator"] is True

    # A second operator account is refused.
    second = _tollgate("customers", "create", "staff", "--operator", env=env)
    assert second.returncode == 1
    assert "the operator account already exists: 'operator' (id 1)" in second.stderr

    # Staff keys: for the operator account only, by --operator or by its name.
    staff = _tollgate("keys", "create", "--operator", "--scope", "admin", env=env)
    assert staff.returncode == 0, staff.stderr
    assert "for the operator account (id 1), scopes admin" in staff.stderr
    by_name = _tollgate("keys", "create", "--customer", "operator", "--scope", "finance", env=env)
    assert by_name.returncode == 0, by_name.stderr
    refused = _tollgate("keys", "create", "--customer", "acme", "--scope", "finance", env=env)
    assert refused.returncode == 1
    assert "only keys of the operator account may hold finance" in refused.stderr
    # Nothing of the refused command stayed (not even the customer it would have created).
    names = [
        json.loads(x)["name"] for x in _tollgate("customers", "list", env=env).stdout.splitlines()
    ]
    assert names == ["operator"]
    both = _tollgate("keys", "create", "--operator", "--customer", "x", env=env)
    assert both.returncode == 2


def test_migrate_never_makes_an_existing_customer_the_operator(tmp_path: Path) -> None:
    import json

    env = _sqlite_env(tmp_path / "clash.db")
    assert _tollgate("migrate", "a2a9ba0c146b", env=env).returncode == 0  # before operators
    assert _tollgate("customers", "create", "operator", env=env).returncode != 0  # no column yet
    import sqlite3

    with sqlite3.connect(tmp_path / "clash.db") as conn:
        conn.execute(
            "INSERT INTO customers (name, status, created_at) VALUES ('operator', 'active', "
            "'2026-01-01 00:00:00')"
        )
    clash = _tollgate("migrate", env=env)
    assert clash.returncode == 0, clash.stderr
    assert "no operator account: a customer named 'operator' exists" in clash.stderr
    assert "tollgate customers create NAME --operator" in clash.stderr
    customers = [json.loads(x) for x in _tollgate("customers", "list", env=env).stdout.splitlines()]
    assert [(c["name"], c["is_operator"]) for c in customers] == [("operator", False)]
    no_operator = _tollgate("keys", "create", "--operator", "--scope", "admin", env=env)
    assert no_operator.returncode == 1 and "no operator account yet" in no_operator.stderr

    made = _tollgate("customers", "create", "tollgate-staff", "--operator", env=env)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["is_operator"] is True
    staff = _tollgate("keys", "create", "--operator", "--scope", "admin", env=env)
    assert staff.returncode == 0, staff.stderr
    assert "(id 2), scopes admin" in staff.stderr


def test_models_add_list_unload_and_immutable_versions(tmp_path: Path) -> None:
    """``tollgate models add`` validates, compresses and registers an archive (a progress
    bar on stderr, the variants as JSON on stdout); the catalog lists it; a variant unloads
    on its own; the same version again is refused."""
    from tests.catalog.mlp import write_mlp

    env = {
        **os.environ,
        "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
        "TOLLGATE_MODEL_STORE_DIR": str(tmp_path / "store"),
        "TOLLGATE_MEASURE_SECONDS": "0.02",
    }
    migrated = _tollgate("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "cnn/1" in migrated.stdout and "linreg/1" in migrated.stdout
    made = write_mlp(tmp_path, "torch_export")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({**made.manifest, "name": "digits", "version": "2"}))
    add = ["models", "add", "digits", "2", str(made.archive), "--manifest", str(manifest)]
    added = _tollgate(*add, "--eval", str(made.eval_npz), env=env)
    assert added.returncode == 0, added.stderr
    assert "done" in added.stderr  # the progress bar's last state
    variants = {v["id"]: v for v in json.loads(added.stdout)["variants"]}
    assert set(variants) == {"digits", "digits:int8"}
    assert variants["digits:int8"]["published"]
    assert variants["digits:int8"]["metrics"]["accuracy"] > 0.9
    assert len(list((tmp_path / "store").rglob("*.pt*"))) == 2

    unloaded = _tollgate("models", "unload", "digits:int8", "2", env=env)
    assert unloaded.returncode == 0, unloaded.stderr
    listed = [json.loads(line) for line in _tollgate("models", "list", env=env).stdout.splitlines()]
    state = {(m["id"], m["version"]): m["loaded"] for m in listed}
    assert state[("digits", "2")] and not state[("digits:int8", "2")]
    assert state[("cnn:int8", "1")]

    again = _tollgate(*add, env=env)
    assert again.returncode == 1
    assert "already exists" in again.stderr

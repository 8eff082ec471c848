from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from app.config import DEV_SECRET, Settings


@pytest.mark.parametrize("env", ["production", "test"])
@pytest.mark.parametrize("secret", [DEV_SECRET, "", "short"])
def test_default_or_weak_secret_refused_outside_development(env: str, secret: str) -> None:
    with pytest.raises(ValidationError, match="TOLLGATE_SECRET_KEY"):
        Settings(env=env, secret_key=secret)  # type: ignore[arg-type]


def test_development_allows_the_default_secret() -> None:
    assert Settings(env="development").secret_key == DEV_SECRET


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_ENV", "production")
    monkeypatch.setenv("TOLLGATE_SECRET_KEY", "a-real-production-secret")
    monkeypatch.setenv("TOLLGATE_MAX_BATCH_ITEMS", "7")
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", "postgresql://db.internal/tollgate")
    settings = Settings()
    assert settings.env == "production" and settings.max_batch_items == 7


def test_production_refuses_sqlite_unless_allowed() -> None:
    secret = "a-real-production-secret"
    with pytest.raises(ValidationError, match="TOLLGATE_DATABASE_URL is SQLite"):
        Settings(env="production", secret_key=secret)
    allowed = Settings(env="production", secret_key=secret, allow_sqlite=True)
    assert allowed.is_sqlite
    Settings(env="production", secret_key=secret, database_url="postgresql://db/tollgate")
    Settings(env="test", secret_key=secret)  # only production refuses it


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command", [("serve", "--port", "1"), ("keys", "list"), ("migrate",)])
def test_configuration_errors_are_one_line_each_and_exit_2(command: tuple[str, ...]) -> None:
    result = _run(
        *command,
        TOLLGATE_ENV="production",
        TOLLGATE_MAX_BATCH_ITEMS="many",
        TOLLGATE_SECRET_KEY="short",
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    # A field that does not parse is reported first (the model's own checks need its fields).
    assert lines == [
        "configuration error: TOLLGATE_MAX_BATCH_ITEMS: Input should be a valid integer, "
        "unable to parse string as an integer (got 'many')",
    ]


def test_all_problems_of_the_model_are_listed_and_secrets_never_echoed() -> None:
    result = _run("keys", "list", TOLLGATE_ENV="production", TOLLGATE_SECRET_KEY="tiny-secret")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("configuration error: ") for line in lines)
    assert "tiny-secret" not in result.stderr


def test_the_seller_profile_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_SELLER_NAME", "Tollgate GmbH")
    monkeypatch.setenv("TOLLGATE_SELLER_ADDRESS", r"Torstr. 5\n10119 Berlin\nGermany")
    monkeypatch.setenv("TOLLGATE_SELLER_TAX_ID", "DE999999999")
    monkeypatch.setenv("TOLLGATE_PAYMENT_INSTRUCTIONS", "IBAN DE00 1234\r\nBIC TOLLDEFF")
    monkeypatch.setenv("TOLLGATE_SELLER_EMAIL", "  ")
    settings = Settings()
    assert settings.seller_name == "Tollgate GmbH"
    assert settings.seller_address == "Torstr. 5\n10119 Berlin\nGermany"
    assert settings.payment_instructions == "IBAN DE00 1234\nBIC TOLLDEFF"
    assert settings.seller_email is None  # blank is unset
    assert settings.payment_terms_days == 30


def test_defaults_of_the_seller_profile() -> None:
    settings = Settings()
    assert (settings.seller_name, settings.seller_address, settings.payment_terms_days) == (
        "Tollgate",
        None,
        30,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payment_terms_days", -1),
        ("seller_name", ""),
        ("seller_email", "not-an-email"),
        ("seller_address", "x" * 1001),
    ],
)
def test_a_bad_seller_profile_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})  # type: ignore[arg-type]

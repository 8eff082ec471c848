from __future__ import annotations

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
    settings = Settings()
    assert settings.env == "production" and settings.max_batch_items == 7

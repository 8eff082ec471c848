from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Scope(StrEnum):
    predict = "predict"
    admin = "admin"
    finance = "finance"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the resolved, validated API key. Carries no secret."""

    key_id: int
    customer_id: int
    prefix: str
    scopes: frozenset[str]
    allowed_models: frozenset[str] | None
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A freshly created key; ``secret`` exists only here and is shown once."""

    key_id: int
    customer_id: int
    prefix: str
    secret: str
    scopes: tuple[str, ...]
    expires_at: datetime | None

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.auth.principal import PlanSnapshot, Principal, Scope

__all__ = ["CreatedKey", "PlanSnapshot", "Principal", "Scope"]


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A freshly created key; ``secret`` exists only here and is shown once."""

    key_id: int
    customer_id: int
    prefix: str
    secret: str
    scopes: tuple[str, ...]
    expires_at: datetime | None

"""Who is calling: the resolved API key, its scopes and the plan it is rated on. A leaf:
imports no domain package."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from app.money.pricing import PriceComponent


class Scope(StrEnum):
    predict = "predict"
    admin = "admin"
    finance = "finance"
    # A customer's own plan, usage, spend and invoices (/v1/billing/...), nothing else's.
    billing = "billing"


STAFF_SCOPES = frozenset({Scope.admin.value, Scope.finance.value})
"""The operator's staff scopes: only keys of the operator account may hold them (and keys
marked ``legacy_staff``, grandfathered by the migration that introduced operator accounts)."""


@dataclass(frozen=True, slots=True)
class PlanSnapshot:
    """The plan version a customer is on now, as far as the request path needs it."""

    plan_version_id: int
    currency: str
    components: tuple[PriceComponent, ...]
    spend_cap: Decimal | None
    requests_per_minute: int | None
    items_per_minute: int | None
    effective_from: datetime


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the resolved, validated API key. Carries no secret."""

    key_id: int
    customer_id: int
    prefix: str
    scopes: frozenset[str]
    allowed_models: frozenset[str] | None
    expires_at: datetime | None
    # Effective per-minute limits: the key's own overrides, else its customer's plan's.
    requests_per_minute: int | None = None
    items_per_minute: int | None = None
    plan: PlanSnapshot | None = None
    # The key belongs to the operator account (its staff): admin and finance count.
    is_operator: bool = False
    # An admin or finance key of a customer, issued before operator accounts existed: its
    # staff scopes still count until an admin re-issues it (see STAFF_SCOPES).
    legacy_staff: bool = False

    @property
    def is_staff(self) -> bool:
        """Whether the key's admin and finance scopes count."""
        return self.is_operator or self.legacy_staff

"""The lifespan's resources: one typed object, built at start-up and closed on shutdown.

``create_app`` returns a :class:`Tollgate` (FastAPI plus this object). Code below the entry
points cannot import :class:`State` (it names every domain), so each package that needs a
resource reads it through its own small typed getter and protocol: ``app.db.session.database``,
``app.auth.deps.authenticator``, ``app.config.request_settings``,
``app.observability.endpoints``, ``app.billing.deps.stripe_gateway``,
``app.inference.deps``. :func:`_conforms` makes mypy prove that State satisfies each protocol.
Tests and scripts use :func:`resources`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.authenticator import Authenticator
from app.auth.deps import AuthResources
from app.auth.last_used import LastUsedTracker
from app.billing.deps import BillingResources
from app.billing.stripe_gateway import StripeGateway
from app.catalog.store import DirectoryStore
from app.clock import Clock
from app.clock.deps import ClockResources
from app.config import Settings, SettingsResources
from app.db.session import Database
from app.inference.deps import InferenceResources
from app.inference.registry import ModelRegistry
from app.inference.service import InferenceService
from app.inference.sync import CatalogSync
from app.limits.quota import SpendTracker
from app.limits.ratelimit import RateLimiter
from app.metering.month_to_date import MonthToDateGauges
from app.metering.writer import MeterWriter
from app.observability.endpoints import OpsResources
from app.observability.metrics import Metrics
from app.observability.openapi import complete_openapi


@dataclass(slots=True)
class State:
    settings: Settings
    clock: Clock
    metrics: Metrics
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    registry: ModelRegistry
    store: DirectoryStore
    catalog_sync: CatalogSync
    meter: MeterWriter
    last_used: LastUsedTracker
    authenticator: Authenticator
    limiter: RateLimiter
    spend: SpendTracker
    month_to_date: MonthToDateGauges
    inference: InferenceService
    stripe: StripeGateway | None


class Tollgate(FastAPI):
    """FastAPI with the lifespan's :class:`State` (``resources``, set while it runs)."""

    _resources: State | None = None

    @property
    def resources(self) -> State:
        if self._resources is None:
            raise RuntimeError("the app's lifespan is not running: no resources")
        return self._resources

    @resources.setter
    def resources(self, value: State | None) -> None:
        self._resources = value

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document with the parts every route shares (app.observability.openapi)."""
        if self.openapi_schema is None:
            self.openapi_schema = complete_openapi(super().openapi(), self.routes)
        return self.openapi_schema


def resources(app: FastAPI) -> State:
    """The running app's resources (for tests, scripts and the CLI)."""
    assert isinstance(app, Tollgate), "not an app built by create_app"
    return app.resources


def _conforms(
    state: State,
) -> tuple[
    Database,
    AuthResources,
    SettingsResources,
    OpsResources,
    BillingResources,
    InferenceResources,
    ClockResources,
]:
    """Never called: mypy checks here that State provides what each getter reads."""
    return state, state, state, state, state, state, state

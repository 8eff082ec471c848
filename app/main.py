"""Application factory. Every resource is built in the lifespan and closed on shutdown."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import torch
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.endpoints import router as audit_router
from app.auth.authenticator import Authenticator
from app.auth.deps import check_protected_routes
from app.auth.last_used import LastUsedTracker
from app.billing.corrections_endpoints import router as corrections_router
from app.billing.endpoints import router as finance_router
from app.billing.reports import router as reports_router
from app.billing.stripe_gateway import StripeGateway
from app.billing.webhooks import router as webhooks_router
from app.catalog.store import DirectoryStore
from app.clock import Clock, SystemClock
from app.config import ConfigurationError, Settings, get_settings, load_settings
from app.console import customer as console_customer
from app.console import finance as console_finance
from app.console import router as console
from app.console import staff as console_staff
from app.customers.endpoints import router as customers_router
from app.db.engine import build_engine, build_sessionmaker
from app.errors import install_error_handlers
from app.inference import v2_endpoints as v2
from app.inference.admin import router as models_admin_router
from app.inference.endpoints import predict
from app.inference.endpoints import router as inference_router
from app.inference.hot import install_hot_routes
from app.inference.predictor import LoadedModules
from app.inference.registry import ModelRegistry
from app.inference.service import InferenceService
from app.inference.sync import CatalogSync
from app.keys.endpoints import router as keys_router
from app.keys.repository import live_legacy_staff_keys
from app.limits.quota import SpendTracker
from app.limits.ratelimit import (
    FallbackRateLimiter,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from app.metering.endpoints import router as usage_router
from app.metering.month_to_date import MonthToDateGauges
from app.metering.partitions import PartitionMaintenance
from app.metering.writer import MeterWriter
from app.observability.endpoints import router as ops_router
from app.observability.logging import configure_logging
from app.observability.metrics import Metrics, ResponseCounter
from app.observability.middleware import RequestContextMiddleware
from app.plans.endpoints import router as plans_router
from app.portal.endpoints import router as billing_router
from app.resources import State, Tollgate

log = logging.getLogger("tollgate")


def build_limiter(settings: Settings, metrics: Metrics) -> RateLimiter:
    """Per-process limits by default; shared through Redis when TOLLGATE_REDIS_URL is set,
    falling back to per-process (logged, and visible in tollgate_ratelimit_backend)."""

    def on_change(backend: str) -> None:
        for name in ("redis", "memory"):
            metrics.ratelimit_backend.labels(name).set(1 if name == backend else 0)

    if not settings.redis_url:
        on_change("memory")
        return MemoryRateLimiter()
    on_change("redis")
    return FallbackRateLimiter(
        RedisRateLimiter(
            settings.redis_url,
            prefix=settings.redis_prefix,
            timeout_s=settings.redis_timeout_ms / 1000,
        ),
        MemoryRateLimiter(),
        on_change=on_change,
    )


async def warn_about_legacy_staff_keys(
    sessionmaker: async_sessionmaker[AsyncSession], now: datetime
) -> list[str]:
    """Log a WARNING naming the working legacy staff keys (admin or finance keys of customers,
    grandfathered by the migration that introduced operator accounts) until an admin
    re-issues them; ``GET /admin/keys?legacy_staff=true`` lists them. Returns their prefixes."""
    try:
        async with sessionmaker() as session:
            prefixes = await live_legacy_staff_keys(session, now)
    except Exception:  # the database may be down at start; /readyz tells, not this
        log.info("could not look for legacy staff keys", exc_info=True)
        return []
    if prefixes:
        log.warning(
            "%d API key(s) of customers that are not the operator account still hold admin or "
            "finance (legacy staff keys: %s); re-issue them to the operator account "
            "(`tollgate keys create --operator --scope ...`) and revoke these",
            len(prefixes),
            ", ".join(prefixes),
            extra={"legacy_staff_keys": prefixes},
        )
    return prefixes


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    modules: LoadedModules | None = None,
    freeze_gc: bool = False,
) -> Tollgate:
    """The app. ``clock`` is where every "now" comes from (the system clock by default);
    ``modules`` shares built models with other apps given the same instance (by default each
    app builds its own at start-up); ``freeze_gc`` (the server process, not tests that build
    many apps): once started, move every object so far into the collector's permanent
    generation."""
    settings = settings or get_settings()
    responses = ResponseCounter()  # the request middleware's; the lifespan attaches metrics
    app_clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: Tollgate) -> AsyncIterator[None]:
        torch.set_num_threads(settings.torch_threads)
        metrics = Metrics()
        responses.metrics = metrics
        engine = build_engine(settings.database_url)
        sessionmaker = build_sessionmaker(engine)
        store = DirectoryStore(settings.model_store_dir, settings.models_dir)
        registry = ModelRegistry(
            store,
            metrics,
            device=settings.device,
            max_batch_items=settings.max_batch_items,
            threads=settings.inference_threads,
            batch_max_items=settings.batch_max_items,
            batch_max_delay_s=settings.batch_max_delay_ms / 1000,
            batch_queue_size=settings.batch_queue_size,
            overrides=settings.model_overrides,
            cpu_graph=settings.cpu_graph,
            modules=modules,
        )
        sync = CatalogSync(
            sessionmaker,
            settings.database_url,
            registry,
            settings.models_dir,
            app_clock,
            poll_s=settings.catalog_poll_s,
            heartbeat_s=settings.catalog_heartbeat_s,
            listen=settings.catalog_listen,
        )
        await sync.start_up()
        registry.start()
        metrics.models_loaded.set(registry.loaded)
        meter = MeterWriter(
            engine,
            metrics,
            max_batch=settings.meter_max_batch,
            queue_size=settings.meter_queue_size,
            commit_timeout_s=settings.meter_commit_timeout_s,
            lanes=settings.meter_lanes,
        )
        meter.start()
        last_used = LastUsedTracker(engine, settings.last_used_flush_s, app_clock)
        last_used.start()
        limiter = build_limiter(settings, metrics)
        await limiter.warm()
        spend = SpendTracker(sessionmaker, settings.spend_reconcile_s, app_clock)
        spend.start()
        month_to_date = MonthToDateGauges(
            sessionmaker, metrics, settings.month_to_date_refresh_s, app_clock
        )
        month_to_date.start()
        partitions = PartitionMaintenance(
            engine, app_clock, settings.ledger_partitions_ahead, settings.ledger_retention_months
        )
        partitions.start()
        app.resources = State(
            settings=settings,
            clock=app_clock,
            metrics=metrics,
            engine=engine,
            sessionmaker=sessionmaker,
            registry=registry,
            store=store,
            catalog_sync=sync,
            meter=meter,
            last_used=last_used,
            authenticator=Authenticator(
                settings.secret_key, sessionmaker, settings.key_cache_ttl_s, last_used, app_clock
            ),
            limiter=limiter,
            spend=spend,
            month_to_date=month_to_date,
            inference=InferenceService(registry, meter, metrics, limiter, spend, app_clock),
            stripe=StripeGateway(
                settings.stripe_api_key,
                webhook_secret=settings.stripe_webhook_secret,
                api_base=settings.stripe_api_base,
                max_network_retries=settings.stripe_max_retries,
                retry_initial_delay_s=settings.stripe_retry_delay_s,
            )
            if settings.stripe_api_key
            else None,
        )
        await warn_about_legacy_staff_keys(sessionmaker, app_clock.now())
        sync.start()
        if freeze_gc:
            # Torch, the models and the routes are ~390k objects: a full collection scanned
            # them all (~160 ms on the bench VM, the p99 tail under load). Frozen, they are
            # never scanned again; what requests allocate is collected as usual.
            gc.collect()
            gc.freeze()
        log.info("tollgate started", extra={"models": registry.loaded, "env": settings.env})
        try:
            yield
        finally:
            await sync.stop()
            await meter.stop()  # drain: every queued usage row is committed before exit
            await last_used.stop()
            await spend.stop()
            await month_to_date.stop()
            await partitions.stop()
            responses.metrics = None
            await limiter.close()
            await registry.close()
            await engine.dispose()
            app.resources = None
            log.info("tollgate stopped")

    app = Tollgate(
        title="Tollgate",
        version="0.1.0",
        summary="Metered inference: PyTorch models behind API keys, with a usage ledger.",
        lifespan=lifespan,
        # /docs is served by the console from vendored files (no CDN); ReDoc is not shipped.
        docs_url=None,
        redoc_url=None,
        # Observability is Prometheus and JSON logs (app/observability). FastAPI's native
        # OpenTelemetry, on by default, asks the global OTEL providers on every request
        # (~6 us of a hot request, measured in process), so it is off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        responses=responses,
        upload_body_bytes=2 * settings.max_archive_bytes + settings.max_body_bytes,
    )
    install_error_handlers(app)
    app.include_router(inference_router)
    app.include_router(v2.router)
    app.include_router(usage_router)
    app.include_router(billing_router)
    app.include_router(customers_router)
    app.include_router(keys_router)
    app.include_router(plans_router)
    app.include_router(audit_router)
    app.include_router(models_admin_router)
    app.include_router(finance_router)
    app.include_router(reports_router)
    app.include_router(corrections_router)
    app.include_router(webhooks_router)
    app.include_router(ops_router)
    app.include_router(console.router)
    app.include_router(console_staff.router)
    app.include_router(console_customer.router)
    app.include_router(console_finance.router)
    console.install(app)
    if settings.hot_path:
        install_hot_routes(app, predict, v2.infer, v2.infer_version)
    check_protected_routes(app.router.routes)
    return app


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory app.main:app_factory``."""
    try:
        settings = load_settings()
    except ConfigurationError as exc:  # one line per problem, not a traceback
        for problem in exc.problems:
            print(f"configuration error: {problem}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    return create_app(settings, freeze_gc=True)

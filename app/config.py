"""Settings: one pydantic-settings object, read from ``TOLLGATE_*`` environment variables."""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import HTTPConnection

DEV_SECRET = "dev-insecure-secret-change-me"  # noqa: S105 - refused outside development
# How a float32 model runs on the CPU (app/catalog/graph.py).
CpuGraph = Literal["script", "channels_last", "eager"]


def shipped_models_dir() -> Path:
    """The weights and manifests shipped in the installed ``models`` package (the wheel
    carries them as package data), wherever it is installed: never the working directory."""
    location = files("models")
    if not isinstance(location, Path):  # e.g. imported from a zip: nothing to load from
        raise RuntimeError(f"the models package is not a folder on disk: {location}")
    return location


class ModelOverride(BaseModel):
    """Per-model serving settings, keyed by ``name`` or ``name:variant`` in
    ``TOLLGATE_MODEL_OVERRIDES`` (JSON), e.g. ``{"cnn": {"max_batch_items": 32,
    "max_queue_delay_ms": 2, "device": "cpu", "cpu_graph": "eager"}}``."""

    max_batch_items: int | None = Field(default=None, gt=0)
    max_queue_delay_ms: float | None = Field(default=None, ge=0)
    device: Literal["auto", "cpu", "cuda"] | None = None
    cpu_graph: CpuGraph | None = None


class CurrencyCostRates(BaseModel):
    """The margin report's cost model in one more currency, in ``TOLLGATE_COST_RATES``
    (JSON keyed by ISO 4217 code), e.g. ``{"eur": {"gpu_hour": "2.30", "cpu_hour": "0.05",
    "fixed_monthly": "0"}}``: what the operator's device hours and fixed costs attributed
    to that currency's business cost, in that currency. No exchange rate is ever applied."""

    model_config = ConfigDict(extra="forbid")

    gpu_hour: Decimal = Field(ge=0, allow_inf_nan=False)
    cpu_hour: Decimal = Field(ge=0, allow_inf_nan=False)
    fixed_monthly: Decimal = Field(default=Decimal(0), ge=0, allow_inf_nan=False)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", env_file=None, extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    # With nothing set: an embedded SQLite file under ./var of the working directory.
    database_url: str = "sqlite+aiosqlite:///var/tollgate.db"
    secret_key: str = DEV_SECRET
    models_dir: Path = Field(default_factory=shipped_models_dir)
    # Uploaded model archives and their variants (app/catalog/store.py): a directory every
    # replica shares (a volume or network file system), under ./var by default.
    model_store_dir: Path = Path("var/models")
    # Replicas re-read the model catalog when notified (Postgres LISTEN/NOTIFY) and at least
    # this often; each reports what it serves at least every heartbeat.
    catalog_poll_s: float = Field(default=2.0, gt=0)
    catalog_listen: bool = True  # false: polling only (e.g. behind a pooler without LISTEN)
    catalog_heartbeat_s: float = Field(default=10.0, gt=0)
    # Uploads (POST /admin/models/{name}/versions/{version}): the archive's size limit; the
    # validation child's time and address-space limits; how far a compressed variant's
    # accuracy (classification, 0.01 = 1 point) or R^2 (regression) may fall below the base
    # before it is kept unpublished; seconds per timing loop when measuring speed.
    max_archive_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    validation_timeout_s: float = Field(default=300.0, gt=0)
    validation_memory_bytes: int = Field(default=6 * 1024**3, gt=0)
    variant_tolerance: float = Field(default=0.01, ge=0)
    measure_seconds: float = Field(default=0.2, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    # Request limits.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_batch_items: int = Field(default=64, gt=0)
    # The HTTP server's own limits (app/server.py), checked before any route, key or body:
    # one header line (name + value), the request line and headers together, their count
    # (431 past any), and how long the headers and then the body may take to arrive (408).
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_headers_total_bytes: int = Field(default=64 * 1024, ge=1024)
    max_header_count: int = Field(default=100, ge=8)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)

    # Dynamic batching across requests, per model version: at most this many items per
    # forward pass; wait up to the delay for more (0: take only what is already queued).
    batch_max_items: int = Field(default=64, gt=0)
    batch_max_delay_ms: float = Field(default=0.0, ge=0)
    batch_queue_size: int = Field(default=1024, gt=0)
    model_overrides: dict[str, ModelOverride] = Field(default_factory=dict)

    # Serve the inference routes in front of the framework (app/inference/hot.py).
    hot_path: bool = True

    # Torch execution: a small pool of worker threads keeps torch off the event loop.
    inference_threads: int = Field(default=2, gt=0)
    torch_threads: int = Field(default=1, gt=0)
    # How float32 models run on the CPU (app/catalog/graph.py): an optimized TorchScript
    # graph checked against eager at load, channels-last eager, or plain eager.
    cpu_graph: CpuGraph = "script"

    # Auth: how long a resolved key is trusted before it is looked up again.
    key_cache_ttl_s: float = Field(default=1.0, ge=0)
    # last_used_at is written in batches this often, never per request.
    last_used_flush_s: float = Field(default=30.0, gt=0)

    # Metering (group commit).
    meter_max_batch: int = Field(default=512, gt=0)
    meter_queue_size: int = Field(default=10_000, gt=0)
    meter_commit_timeout_s: float = Field(default=5.0, gt=0)
    # Commits in flight at once, one connection each (SQLite: always 1).
    meter_lanes: int = Field(default=2, gt=0, le=16)
    # The ledger's monthly partitions (Postgres): months created ahead, and how many full
    # months before the current one stay attached (unset: keep every month attached).
    ledger_partitions_ahead: int = Field(default=3, ge=1, le=24)
    ledger_retention_months: int | None = Field(default=None, gt=0)

    # Rate limits: shared through Redis when set (else per process).
    redis_url: str | None = None
    redis_prefix: str = "tollgate:rl:"
    # A Redis call slower than this (connect + script) counts as Redis down: the limits fall
    # back to per process and Redis is probed again every 5 s.
    redis_timeout_ms: float = Field(default=250.0, gt=0)
    # Spend caps: period-to-date usage is reloaded from the ledger this often.
    spend_reconcile_s: float = Field(default=30.0, gt=0)
    # tollgate_billable_month_to_date is re-read from the ledger this often.
    month_to_date_refresh_s: float = Field(default=60.0, gt=0)

    # Billing: a month can be closed this long after it ends (late usage rows settle first).
    billing_grace_hours: float = Field(default=24.0, ge=0)

    # Web console (/console) sessions: signed out after this long without a page, and after
    # this long in all.
    console_idle_timeout_s: float = Field(default=1800.0, gt=0)
    console_max_age_s: float = Field(default=12 * 3600.0, gt=0)

    # The seller on every invoice and credit note (a finalized document keeps a snapshot).
    # Multi-line values (the address, the payment instructions) may be given with "\n"
    # escapes in one environment line, or with real newlines.
    seller_name: str = Field(default="Tollgate", min_length=1, max_length=200)
    seller_address: str | None = Field(default=None, max_length=1000)
    seller_email: str | None = Field(
        default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
    )
    seller_tax_id: str | None = Field(default=None, max_length=64)
    # Invoices are due this many days after they are issued (0: on receipt).
    payment_terms_days: int = Field(default=30, ge=0, le=3650)
    payment_instructions: str | None = Field(default=None, max_length=2000)

    # Cost model for the margin report (one currency): device hours and fixed monthly costs.
    cost_currency: str = Field(default="usd", pattern="^[a-z]{3}$")
    cost_gpu_hour: Decimal = Field(default=Decimal("2.50"), ge=0)
    cost_cpu_hour: Decimal = Field(default=Decimal("0.05"), ge=0)
    cost_fixed_monthly: Decimal = Field(default=Decimal(0), ge=0)
    # The cost model in other currencies (JSON, keyed by currency). A currency with revenue
    # and no rates here shows its revenue with cost and margin null: never converted.
    cost_rates: dict[str, CurrencyCostRates] = Field(default_factory=dict)

    # Stripe collection. Without an API key invoices stay local (and say so).
    stripe_api_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = None  # only for a local stand-in
    stripe_max_retries: int = Field(default=3, ge=0)
    stripe_retry_delay_s: float = Field(default=0.5, ge=0)

    log_level: str = "INFO"
    # Production refuses the embedded SQLite database unless this says otherwise.
    allow_sqlite: bool = False

    @field_validator("cost_rates", mode="after")
    @classmethod
    def _cost_rates_by_currency(
        cls, value: dict[str, CurrencyCostRates]
    ) -> dict[str, CurrencyCostRates]:
        out: dict[str, CurrencyCostRates] = {}
        for code, rates in value.items():
            currency = code.lower()
            if not re.fullmatch("[a-z]{3}", currency):
                raise ValueError(f"{code!r} is not a three-letter currency code")
            if currency in out:
                raise ValueError(f"{currency!r} is given twice")
            out[currency] = rates
        return out

    @model_validator(mode="after")
    def _cost_currency_rates_once(self) -> Settings:
        if self.cost_currency in self.cost_rates:
            raise ValueError(
                f"TOLLGATE_COST_RATES repeats the cost currency {self.cost_currency!r}, whose "
                "rates are TOLLGATE_COST_GPU_HOUR, _CPU_HOUR and _FIXED_MONTHLY: give them once"
            )
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_outside_development(self) -> Settings:
        problems: list[str] = []
        if self.env != "development" and (
            not self.secret_key or self.secret_key == DEV_SECRET or len(self.secret_key) < 16
        ):
            problems.append(
                "TOLLGATE_SECRET_KEY must be set to a non-default value of at least 16 "
                f"characters when TOLLGATE_ENV={self.env}"
            )
        if self.env == "production" and self.is_sqlite and not self.allow_sqlite:
            problems.append(
                "TOLLGATE_DATABASE_URL is SQLite, which production refuses (one process, one "
                "file): use postgresql://..., or set TOLLGATE_ALLOW_SQLITE=true to accept it"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @field_validator("seller_address", "payment_instructions", mode="before")
    @classmethod
    def _multi_line(cls, value: object) -> object:
        # An environment line cannot hold a newline: "\n" (backslash, n) stands for one.
        if isinstance(value, str):
            value = value.replace("\\n", "\n").replace("\r\n", "\n").strip()
            return value or None
        return value

    @field_validator("seller_email", "seller_tax_id", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return value.strip() or None if isinstance(value, str) else value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


class SettingsResources(Protocol):
    """The running app's settings (``app.resources.State`` provides them)."""

    @property
    def settings(self) -> Settings: ...


def request_settings(request: HTTPConnection) -> Settings:
    """The settings the running app was built with (not necessarily ``get_settings()``)."""
    resources: SettingsResources = request.app.resources
    return resources.settings


class ConfigurationError(Exception):
    """The environment does not make valid settings; ``problems`` has one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_settings() -> Settings:
    """``get_settings()``, with a :class:`ValidationError` turned into one readable line per
    problem, each naming its environment variable (the entry points print them, exit 2)."""
    try:
        return get_settings()
    except ValidationError as exc:
        raise ConfigurationError(describe(exc)) from None


def describe(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:
            var = "TOLLGATE_" + "_".join(str(p) for p in error["loc"]).upper()
            value = error.get("input")
            secret = any(s in var for s in ("SECRET", "KEY", "URL", "PASSWORD"))
            shown = (
                f" (got {value!r})" if isinstance(value, str | int | float) and not secret else ""
            )
            problems.append(f"{var}: {message}{shown}")
        else:
            problems.extend(message.splitlines())
    return problems

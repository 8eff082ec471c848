"""The ``tollgate`` command: serve, migrate, and manage keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import record as audit
from app.config import ConfigurationError, describe, get_settings, load_settings
from app.db.engine import build_engine, build_sessionmaker
from app.keys.schemas import CreatedKey, Scope
from app.keys.service import create_key, revoke_key
from app.orm import Customer

cli = typer.Typer(help="Tollgate: metered inference as a service.", no_args_is_help=True)
keys_cli = typer.Typer(help="Create and revoke API keys.", no_args_is_help=True)
plans_cli = typer.Typer(help="Price plans.", no_args_is_help=True)
billing_cli = typer.Typer(help="Close periods and inspect invoices.", no_args_is_help=True)
customers_cli = typer.Typer(help="Customers.", no_args_is_help=True)
cli.add_typer(customers_cli, name="customers")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(plans_cli, name="plans")
cli.add_typer(billing_cli, name="billing")

T = TypeVar("T")


def _in_transaction(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction on a short-lived engine."""

    async def runner() -> T:
        engine = build_engine(get_settings().database_url, pool_size=1)
        try:
            async with build_sessionmaker(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(runner())


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (migrate first). With several workers, /metrics merges every
    worker's samples (prometheus-client multiprocess mode)."""
    import os
    import shutil
    import tempfile

    import uvicorn

    load_settings()  # a configuration error stops here, before uvicorn starts
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tollgate-metrics-")
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if workers > 1 and metrics_dir:  # a fresh start: no samples from dead processes
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.makedirs(metrics_dir, exist_ok=True)
    uvicorn.run(
        "app.main:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        # Header limits and read timeouts (TOLLGATE_MAX_HEADER_*, *_TIMEOUT_S): app/server.py
        http="app.server:GuardedHttpProtocol",
    )


@cli.command()
def migrate(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply database migrations (``alembic upgrade``) to TOLLGATE_DATABASE_URL."""
    import logging

    from app.db.migrate import upgrade

    # Alembic names each revision it applies (INFO on the "alembic" logger), on stderr.
    logging.basicConfig(format="%(levelname)-5.5s [%(name)s] %(message)s")
    logging.getLogger("alembic").setLevel(logging.INFO)
    upgrade(get_settings().database_url, revision)
    typer.echo(f"database migrated to {revision}")


@keys_cli.command("create")
def keys_create(
    customer: Annotated[str, typer.Option(help="Customer name; created if missing.")],
    scope: Annotated[list[Scope], typer.Option(help="Repeat for several scopes.")] = [  # noqa: B006
        Scope.predict
    ],
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    expires_in_days: Annotated[
        float | None, typer.Option(help="Expire after this many days.", min=0)
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="Restrict the key to these models.")
    ] = None,
) -> None:
    """Create an API key. The secret is printed once, alone on the last line."""
    settings = get_settings()
    expires_at = (
        datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days is not None else None
    )

    async def work(session: AsyncSession) -> CreatedKey:
        created = await create_key(
            session,
            settings.secret_key,
            customer_name=customer,
            scopes=scope,
            name=name,
            expires_at=expires_at,
            allowed_models=model,
        )
        await audit(
            session,
            "cli",
            "key.create",
            "api_key",
            created.key_id,
            after={"prefix": created.prefix, "scopes": list(created.scopes)},
        )
        return created

    created = _in_transaction(work)
    typer.echo(
        f"created key {created.prefix}... for customer '{customer}' (id {created.customer_id}), "
        f"scopes {','.join(created.scopes)}"
        + (f", expires {created.expires_at.isoformat()}" if created.expires_at else ""),
        err=True,
    )
    typer.echo("store it now; it is not shown again:", err=True)
    typer.echo(created.secret)


@keys_cli.command("revoke")
def keys_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix, e.g. tg_AbCd1234")],
) -> None:
    """Revoke a key by its public prefix. Takes effect within the key cache TTL (1 s)."""

    async def work(session: AsyncSession) -> bool:
        revoked = await revoke_key(session, prefix)
        if revoked:
            await audit(session, "cli", "key.revoke", "api_key", prefix)
        return revoked

    if not _in_transaction(work):
        typer.echo(f"no active key with prefix {prefix}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {prefix}")


def _customer_json(customer: Customer) -> str:
    from app.audit.service import snapshot

    fields = ("id", "name", "email", "status", "stripe_customer_id", "created_at")
    return json.dumps(snapshot(customer, *fields))


@customers_cli.command("create")
def customers_create(
    name: Annotated[str, typer.Argument()],
    email: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create a customer; prints it as JSON."""
    from app.customers import service
    from app.customers.schemas import CustomerCreate

    async def work(session: AsyncSession) -> str:
        return _customer_json(
            await service.create_customer(session, "cli", CustomerCreate(name=name, email=email))
        )

    typer.echo(_run_or_exit(work))


@customers_cli.command("list")
def customers_list(
    status: Annotated[str | None, typer.Option(help="active | suspended")] = None,
) -> None:
    """List customers as JSON lines."""
    from app.customers import service

    async def work(session: AsyncSession) -> list[str]:
        return [_customer_json(c) for c in await service.list_customers(session, status)]

    for line in _run_or_exit(work):
        typer.echo(line)


@customers_cli.command("suspend")
def customers_suspend(customer_id: Annotated[int, typer.Argument()]) -> None:
    """Suspend a customer: its keys get 403 within 1 s."""
    _set_customer_status(customer_id, "suspended")


@customers_cli.command("reactivate")
def customers_reactivate(customer_id: Annotated[int, typer.Argument()]) -> None:
    """Reactivate a suspended customer."""
    _set_customer_status(customer_id, "active")


def _set_customer_status(customer_id: int, status: str) -> None:
    from app.customers import service

    async def work(session: AsyncSession) -> str:
        return _customer_json(await service.set_status(session, "cli", customer_id, status))

    typer.echo(_run_or_exit(work))


def _run_or_exit(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from app.errors import AppError

    try:
        return _in_transaction(work)
    except AppError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


@keys_cli.command("list")
def keys_list(
    customer_id: Annotated[int | None, typer.Option(help="Only this customer's keys")] = None,
) -> None:
    """List keys as JSON lines: prefix and last four only, never the secret."""
    from app.audit.service import snapshot
    from app.keys import admin

    async def work(session: AsyncSession) -> list[str]:
        return [
            json.dumps({"id": k.id, **snapshot(k, *admin.FIELDS, "last_used_at")})
            for k in await admin.list_keys(session, customer_id)
        ]

    for line in _run_or_exit(work):
        typer.echo(line)


@keys_cli.command("rotate")
def keys_rotate(
    key_id: Annotated[int, typer.Argument()],
    grace_seconds: Annotated[int, typer.Option(min=0, help="Old secret valid this long")] = 0,
) -> None:
    """Issue a new secret for a key; the old one stops after the grace period. The new
    secret is printed once, alone on the last line."""
    from app.keys import admin

    settings = get_settings()

    async def work(session: AsyncSession) -> tuple[str, str]:
        old, new, secret = await admin.rotate(
            session, "cli", settings.secret_key, key_id, timedelta(seconds=grace_seconds)
        )
        return f"rotated key {old.id} -> {new.id} ({new.prefix}...), old stops at " + (
            old.revoked_at.isoformat() if old.revoked_at else "?"
        ), secret

    info, secret = _run_or_exit(work)
    typer.echo(info, err=True)
    typer.echo(secret)


@plans_cli.command("list")
def plans_list() -> None:
    """List plans with their latest version, as JSON lines."""
    from app.plans import service

    async def work(session: AsyncSession) -> list[dict[str, object]]:
        return [
            {
                "id": plan.id,
                "name": plan.name,
                "archived": plan.archived_at is not None,
                "version": versions[-1].version,
                "currency": versions[-1].currency,
                "base_fee": str(versions[-1].base_fee),
                "components": versions[-1].components,
            }
            for plan, versions in await service.list_plans(session)
            if versions
        ]

    for row in _in_transaction(work):
        typer.echo(json.dumps(row))


@plans_cli.command("create")
def plans_create(
    file: Annotated[typer.FileText, typer.Argument(help="JSON plan definition ('-' for stdin)")],
) -> None:
    """Create a plan from JSON: {"name", "currency", "base_fee", "components": [...]}."""
    from pydantic import ValidationError

    from app.errors import AppError
    from app.plans import service
    from app.plans.schemas import PlanCreate

    try:
        data = PlanCreate.model_validate_json(file.read())
    except ValidationError as exc:
        typer.echo(f"invalid plan: {exc}", err=True)
        raise typer.Exit(2) from None

    async def work(session: AsyncSession) -> int:
        plan, _ = await service.create_plan(session, data)
        await audit(session, "cli", "plan.create", "plan", plan.id, after=data.model_dump())
        return plan.id

    try:
        typer.echo(f"created plan {_in_transaction(work)}")
    except AppError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


PARTIAL_CLOSE = 3  # exit status: some customers were invoiced, some could not be


@billing_cli.command("close")
def billing_close(period: Annotated[str, typer.Argument(help="YYYY-MM (UTC month)")]) -> None:
    """Close a month: write and finalize one invoice per customer. Safe to repeat. Exits 3
    if a customer's plan cannot be priced (the others are invoiced and committed; fix the
    plan and repeat), 1 if nothing was closed."""
    from app.billing.service import CloseResult, close_period
    from app.errors import AppError
    from app.money.periods import Period

    settings = get_settings()

    async def work(session: AsyncSession) -> CloseResult:
        result = await close_period(
            session, Period.parse(period), grace=timedelta(hours=settings.billing_grace_hours)
        )
        await audit(session, "cli", "period.close", "period", period, after=result.__dict__)
        return result

    try:
        result = _in_transaction(work)
    except AppError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result.__dict__))
    if result.not_ratable:  # the others are invoiced and committed; show the gap to cron
        for entry in result.not_ratable:
            typer.echo(f"not invoiced: {entry['reason']}", err=True)
        raise typer.Exit(PARTIAL_CLOSE)


def _gateway() -> object:
    from app.billing.stripe_gateway import StripeGateway

    settings = get_settings()
    if not settings.stripe_api_key:
        typer.echo("TOLLGATE_STRIPE_API_KEY is not set: invoices stay local", err=True)
        raise typer.Exit(2)
    return StripeGateway(
        settings.stripe_api_key,
        webhook_secret=settings.stripe_webhook_secret,
        api_base=settings.stripe_api_base,
        max_network_retries=settings.stripe_max_retries,
        retry_initial_delay_s=settings.stripe_retry_delay_s,
    )


@billing_cli.command("sync")
def billing_sync(
    period: Annotated[str | None, typer.Argument(help="Only this YYYY-MM")] = None,
) -> None:
    """Push finalized invoices to Stripe. Safe to re-run after any failure."""
    from app.billing.stripe_gateway import StripeGateway
    from app.billing.sync import SyncResult, sync_invoices
    from app.money.periods import Period

    gateway = _gateway()
    assert isinstance(gateway, StripeGateway)

    async def run() -> SyncResult:
        engine = build_engine(get_settings().database_url, pool_size=1)
        try:
            return await sync_invoices(
                build_sessionmaker(engine), gateway, Period.parse(period) if period else None
            )
        finally:
            await engine.dispose()

    result = asyncio.run(run())
    typer.echo(json.dumps({"pushed": result.pushed, "failed": result.failed}))
    if result.failed:
        raise typer.Exit(1)


@billing_cli.command("reconcile")
def billing_reconcile(period: Annotated[str, typer.Argument(help="YYYY-MM")]) -> None:
    """Compare local invoice totals with Stripe's; exit 1 on any difference."""
    from app.billing.stripe_gateway import StripeGateway
    from app.billing.sync import ReconcileRow, reconcile
    from app.money.periods import Period

    gateway = _gateway()
    assert isinstance(gateway, StripeGateway)

    async def work(session: AsyncSession) -> list[ReconcileRow]:
        return await reconcile(session, gateway, Period.parse(period))

    rows = _in_transaction(work)
    for row in rows:
        typer.echo(
            f"{row.number or row.invoice_id}\tcustomer {row.customer_id}\t"
            f"local {row.local_total_minor}\tstripe {row.stripe_total_minor}\t{row.result}"
        )
    if any(row.result != "match" for row in rows):
        raise typer.Exit(1)


def main() -> None:
    """``tollgate``: a configuration error is one line per problem and exit status 2, not a
    traceback."""
    try:
        cli()
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        _configuration_error(describe(exc))
    except ConfigurationError as exc:
        _configuration_error(exc.problems)


def _configuration_error(problems: list[str]) -> NoReturn:
    for problem in problems:
        typer.echo(f"configuration error: {problem}", err=True)
    raise SystemExit(2)


if __name__ == "__main__":
    main()

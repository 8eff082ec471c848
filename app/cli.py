"""The ``tollgate`` command: serve, migrate, and manage customers, keys, plans, billing and models.

Every write calls the same service function as its API endpoint, which does the write and
records its audit row (actor ``cli``) in one transaction; a command only parses its
arguments (with the API's own request models), calls it and renders the result."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import SystemClock
from app.config import ConfigurationError, describe, get_settings, load_settings
from app.db.engine import build_engine, build_sessionmaker
from app.keys.schemas import Scope
from app.orm import ApiKey, Customer, Plan, PlanVersion
from app.plans.schemas import Effective

cli = typer.Typer(help="Tollgate: metered inference as a service.", no_args_is_help=True)
keys_cli = typer.Typer(help="Create and revoke API keys.", no_args_is_help=True)
plans_cli = typer.Typer(help="Price plans.", no_args_is_help=True)
billing_cli = typer.Typer(help="Close periods and inspect invoices.", no_args_is_help=True)
customers_cli = typer.Typer(help="Customers.", no_args_is_help=True)
models_cli = typer.Typer(
    help="The model catalog: add versions from archives, load, unload, publish, default.",
    no_args_is_help=True,
)
cli.add_typer(customers_cli, name="customers")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(plans_cli, name="plans")
cli.add_typer(billing_cli, name="billing")
cli.add_typer(models_cli, name="models")
ledger_cli = typer.Typer(help="The usage ledger's storage.", no_args_is_help=True)
cli.add_typer(ledger_cli, name="ledger")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

CLI = "cli"
"""The audit log's actor for every write made from the command line."""


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


OPERATOR_NAME = "operator"
"""The name ``tollgate migrate`` gives the operator account it creates (``--operator-name``)."""


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument()] = "head",
    operator_name: Annotated[
        str, typer.Option(help="Name of the operator account, if one is created.")
    ] = OPERATOR_NAME,
) -> None:
    """Apply database migrations (``alembic upgrade``) to TOLLGATE_DATABASE_URL; at head,
    create the operator account (the customer whose keys may hold admin and finance) if
    there is none."""
    import logging

    from app.customers.schemas import CustomerCreate
    from app.db.migrate import upgrade

    _parse(CustomerCreate, name=operator_name)  # a customer name like any other
    # Alembic names each revision it applies (INFO on the "alembic" logger), on stderr.
    logging.basicConfig(format="%(levelname)-5.5s [%(name)s] %(message)s")
    logging.getLogger("alembic").setLevel(logging.INFO)
    upgrade(get_settings().database_url, revision)
    typer.echo(f"database migrated to {revision}")
    if revision == "head":
        _ensure_operator(operator_name)
        _seed_catalog()


def _seed_catalog() -> None:
    """Register the shipped models in the catalog (servers do it too, at start-up), so
    ``tollgate models list`` shows them from the start."""
    from app.catalog.service import seed_builtin

    added = _run_or_exit(lambda session: seed_builtin(session, get_settings().models_dir))
    if added:
        typer.echo(f"model catalog: registered the shipped {', '.join(added)}")


def _ensure_operator(name: str) -> None:
    from app.customers import service

    async def work(session: AsyncSession) -> service.OperatorAccount:
        return await service.ensure_operator_account(session, CLI, name)

    found = _run_or_exit(work)
    if found.customer is None:
        typer.echo(
            f"no operator account: a customer named {name!r} exists and is not made one (its "
            f"keys would become staff keys). Create it under another name: `tollgate migrate "
            f"--operator-name NAME` or `tollgate customers create NAME --operator`",
            err=True,
        )
        return
    state = "created" if found.created else "is"
    typer.echo(
        f"operator account {state} {found.customer.name!r} (id {found.customer.id}); admin "
        "and finance keys: `tollgate keys create --operator --scope admin`",
        err=True,
    )


def _parse(model: type[M], **data: object) -> M:
    """Options validated by the API's own request model: the same rules, the same limits.
    Invalid: exit 2, as for any other bad command line."""

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        typer.echo(f"invalid {model.__name__}: {problems}", err=True)
        raise typer.Exit(2) from None


def _parse_json(model: type[M], file: typer.FileText) -> M:

    try:
        return model.model_validate_json(file.read())
    except ValidationError as exc:
        typer.echo(f"invalid plan: {exc}", err=True)
        raise typer.Exit(2) from None


def _run_or_exit(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction; an expected failure (no such key, a name taken, a
    period not yet closable, ...) is its message on stderr and exit status 1."""
    from app.errors import AppError

    try:
        return _in_transaction(work)
    except AppError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


def _customer_json(customer: Customer) -> str:
    from app.customers.service import customer_record

    return json.dumps(customer_record(customer))


def _key_json(key: ApiKey) -> str:
    from app.audit.service import snapshot
    from app.keys.admin import FIELDS

    return json.dumps({"id": key.id, **snapshot(key, *FIELDS, "last_used_at", "legacy_staff")})


# -- customers ----------------------------------------------------------------------------


LegalName = Annotated[str | None, typer.Option(help="Legal name on invoices")]
BillingEmail = Annotated[str | None, typer.Option(help="Where invoices go")]
AddressOption = Annotated[
    str | None,
    typer.Option(help=r'Postal address; "\n" separates lines: "Hauptstr. 1\n10115 Berlin"'),
]
CountryOption = Annotated[str | None, typer.Option(help="ISO 3166-1 alpha-2 code, e.g. DE")]
TaxId = Annotated[str | None, typer.Option(help="Tax id, e.g. a VAT number")]
TaxRateOption = Annotated[str | None, typer.Option(help='Tax rate in percent, e.g. "19" or "7.25"')]
TaxExempt = Annotated[
    bool | None,
    typer.Option("--tax-exempt/--no-tax-exempt", help="Exempt from tax (needs --tax-note)"),
]
TaxNote = Annotated[str | None, typer.Option(help='Why exempt, e.g. "Reverse charge"')]


def _billing_options(**options: object) -> dict[str, object]:
    """The billing options given on the command line, as the API's body would carry them
    (an address's ``\\n`` escapes become line breaks)."""
    given = {name: value for name, value in options.items() if value is not None}
    address = given.get("address")
    if isinstance(address, str):
        given["address"] = address.replace("\\n", "\n")
    return given


@customers_cli.command("create")
def customers_create(
    name: Annotated[str, typer.Argument()],
    email: Annotated[str | None, typer.Option()] = None,
    legal_name: LegalName = None,
    billing_email: BillingEmail = None,
    address: AddressOption = None,
    country: CountryOption = None,
    tax_id: TaxId = None,
    tax_rate: TaxRateOption = None,
    tax_exempt: TaxExempt = None,
    tax_note: TaxNote = None,
    operator: Annotated[
        bool,
        typer.Option(
            help="The operator account: its keys may hold admin and finance (only while "
            "there is none; `tollgate migrate` creates one)."
        ),
    ] = False,
) -> None:
    """Create a customer (as POST /admin/customers), with its billing details if given;
    prints it as JSON."""
    from app.customers import service
    from app.customers.schemas import CustomerCreate

    data = _parse(
        CustomerCreate,
        name=name,
        email=email,
        **_billing_options(
            legal_name=legal_name,
            billing_email=billing_email,
            address=address,
            country=country,
            tax_id=tax_id,
            tax_rate=tax_rate,
            tax_exempt=tax_exempt,
            tax_note=tax_note,
        ),
    )

    async def work(session: AsyncSession) -> str:
        return _customer_json(await service.create_customer(session, CLI, data, operator=operator))

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


CLEARABLE = (
    "email",
    "legal_name",
    "billing_email",
    "address",
    "country",
    "tax_id",
    "tax_rate",
    "tax_note",
)


@customers_cli.command("update")
def customers_update(
    customer_id: Annotated[int, typer.Argument()],
    name: Annotated[str | None, typer.Option(help="A new name")] = None,
    email: Annotated[str | None, typer.Option(help="A new email address")] = None,
    clear_email: Annotated[bool, typer.Option(help="Remove the email address")] = False,
    legal_name: LegalName = None,
    billing_email: BillingEmail = None,
    address: AddressOption = None,
    country: CountryOption = None,
    tax_id: TaxId = None,
    tax_rate: TaxRateOption = None,
    tax_exempt: TaxExempt = None,
    tax_note: TaxNote = None,
    clear: Annotated[
        list[str] | None,
        typer.Option(help=f"Remove a field (repeat for several): {', '.join(CLEARABLE)}"),
    ] = None,
) -> None:
    """Change a customer's name, email or billing details (as PATCH /admin/customers/{id}):
    only the options given change; prints it."""
    from app.customers import service
    from app.customers.schemas import CustomerUpdate

    cleared = set(clear or ()) | ({"email"} if clear_email else set())
    if unknown := cleared - set(CLEARABLE):
        typer.echo(f"--clear takes one of {', '.join(CLEARABLE)}, not {sorted(unknown)}", err=True)
        raise typer.Exit(2)
    fields: dict[str, object] = {} if name is None else {"name": name}
    if email is not None:
        fields["email"] = email
    fields |= _billing_options(
        legal_name=legal_name,
        billing_email=billing_email,
        address=address,
        country=country,
        tax_id=tax_id,
        tax_rate=tax_rate,
        tax_exempt=tax_exempt,
        tax_note=tax_note,
    )
    if both := cleared & set(fields):
        typer.echo(f"give a value or clear it, not both: {', '.join(sorted(both))}", err=True)
        raise typer.Exit(2)
    data = _parse(CustomerUpdate, **fields, **dict.fromkeys(cleared))

    async def work(session: AsyncSession) -> str:
        return _customer_json(await service.update_customer(session, CLI, customer_id, data))

    typer.echo(_run_or_exit(work))


@customers_cli.command("suspend")
def customers_suspend(customer_id: Annotated[int, typer.Argument()]) -> None:
    """Suspend a customer: its keys get 403 within 1 s."""
    from app.customers import service

    async def work(session: AsyncSession) -> str:
        return _customer_json(await service.suspend_customer(session, CLI, customer_id))

    typer.echo(_run_or_exit(work))


@customers_cli.command("reactivate")
def customers_reactivate(customer_id: Annotated[int, typer.Argument()]) -> None:
    """Reactivate a suspended customer."""
    from app.customers import service

    async def work(session: AsyncSession) -> str:
        return _customer_json(await service.reactivate_customer(session, CLI, customer_id))

    typer.echo(_run_or_exit(work))


# -- keys ---------------------------------------------------------------------------------

KEY_REF_HELP = "The key's id, or its public prefix (tg_ + 8 characters)"


@keys_cli.command("create")
def keys_create(
    customer: Annotated[str | None, typer.Option(help="Customer name; created if missing.")] = None,
    customer_id: Annotated[
        int | None, typer.Option(help="An existing customer's id (as the API takes it).")
    ] = None,
    operator: Annotated[
        bool,
        typer.Option(
            "--operator", help="For the operator account (admin and finance keys are its only)."
        ),
    ] = False,
    scope: Annotated[list[Scope], typer.Option(help="Repeat for several scopes.")] = [  # noqa: B006
        Scope.predict
    ],
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    expires_in_days: Annotated[
        float | None, typer.Option(help="Expire after this many days.", min=0)
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option(help="Expire at this ISO 8601 moment (UTC if no zone).")
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="Restrict the key to these models.")
    ] = None,
    requests_per_minute: Annotated[
        int | None, typer.Option(help="Rate limit override (requests per minute).")
    ] = None,
    items_per_minute: Annotated[
        int | None, typer.Option(help="Rate limit override (items per minute).")
    ] = None,
) -> None:
    """Create an API key (as POST /admin/keys). The secret is printed once, alone on the
    last line."""
    from app.keys import admin
    from app.keys.schemas import KeyCreate, KeyOptions

    if [customer is not None, customer_id is not None, operator].count(True) != 1:
        typer.echo("give one of --customer NAME, --customer-id ID or --operator", err=True)
        raise typer.Exit(2)
    if expires_in_days is not None and expires_at is not None:
        typer.echo("give --expires-in-days or --expires-at, not both", err=True)
        raise typer.Exit(2)
    options: dict[str, object] = {
        "scopes": scope,
        "name": name,
        "expires_at": (
            SystemClock().now() + timedelta(days=expires_in_days)
            if expires_in_days is not None
            else expires_at
        ),
        "allowed_models": model,
        "requests_per_minute": requests_per_minute,
        "items_per_minute": items_per_minute,
    }
    settings = get_settings()
    if operator:
        for_operator = _parse(KeyOptions, **options)

        async def work(session: AsyncSession) -> tuple[ApiKey, str]:
            return await admin.issue_operator_key(
                session, CLI, settings.secret_key, for_operator, now=SystemClock().now()
            )

    elif customer_id is not None:
        by_id = _parse(KeyCreate, customer_id=customer_id, **options)

        async def work(session: AsyncSession) -> tuple[ApiKey, str]:
            return await admin.issue_key(
                session, CLI, settings.secret_key, by_id, now=SystemClock().now()
            )

    else:
        from app.customers.schemas import CustomerCreate

        assert customer is not None
        _parse(CustomerCreate, name=customer)  # the rules of a customer created by the API
        by_name = _parse(KeyOptions, **options)

        async def work(session: AsyncSession) -> tuple[ApiKey, str]:
            return await admin.issue_key_for_customer_name(
                session, CLI, settings.secret_key, customer, by_name, now=SystemClock().now()
            )

    key, secret = _run_or_exit(work)
    typer.echo(
        f"created key {key.prefix}... (id {key.id}) for "
        + ("the operator account " if operator else "customer ")
        + (f"'{customer}' " if customer is not None else "")
        + f"(id {key.customer_id}), scopes {','.join(key.scopes)}"
        + (f", expires {key.expires_at.isoformat()}" if key.expires_at else ""),
        err=True,
    )
    typer.echo("store it now; it is not shown again:", err=True)
    typer.echo(secret)


@keys_cli.command("list")
def keys_list(
    customer_id: Annotated[int | None, typer.Option(help="Only this customer's keys")] = None,
) -> None:
    """List keys as JSON lines: prefix and last four only, never the secret."""
    from app.keys import admin

    async def work(session: AsyncSession) -> list[str]:
        return [_key_json(k) for k in await admin.list_keys(session, customer_id)]

    for line in _run_or_exit(work):
        typer.echo(line)


@keys_cli.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help=KEY_REF_HELP)]) -> None:
    """Revoke a key now, also one still in the grace period of a rotation (as POST
    /admin/keys/{id_or_prefix}/revoke). Takes effect within the key cache TTL (1 s). Exits 1
    if the key does not exist or was already revoked. Prints the key as JSON."""
    from app.keys import admin

    async def work(session: AsyncSession) -> tuple[str, str, bool]:
        revoked, changed = await admin.revoke(session, CLI, key, now=SystemClock().now())
        return revoked.prefix, _key_json(revoked), changed

    prefix, rendered, changed = _run_or_exit(work)
    if not changed:
        typer.echo(f"error: key {prefix} was already revoked", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {prefix}", err=True)
    typer.echo(rendered)


@keys_cli.command("expire")
def keys_expire(
    key: Annotated[str, typer.Argument(help=KEY_REF_HELP)],
    at: Annotated[
        str | None, typer.Option(help="ISO 8601 moment (UTC if no zone); default now")
    ] = None,
    in_days: Annotated[float | None, typer.Option(min=0, help="This many days from now")] = None,
) -> None:
    """Set when a key stops working (as POST /admin/keys/{id_or_prefix}/expire); prints it."""
    from app.keys import admin
    from app.keys.schemas import KeyExpire

    if at is not None and in_days is not None:
        typer.echo("give --at or --in-days, not both", err=True)
        raise typer.Exit(2)
    when = SystemClock().now() + timedelta(days=in_days) if in_days is not None else at
    data = _parse(KeyExpire, expires_at=when)

    async def work(session: AsyncSession) -> str:
        return _key_json(
            await admin.expire(session, CLI, key, data.expires_at, now=SystemClock().now())
        )

    typer.echo(_run_or_exit(work))


@keys_cli.command("rotate")
def keys_rotate(
    key: Annotated[str, typer.Argument(help=KEY_REF_HELP)],
    grace_seconds: Annotated[int, typer.Option(help="Old secret valid this long")] = 0,
) -> None:
    """Issue a new secret for a key (as POST /admin/keys/{id_or_prefix}/rotate); the old one
    stops after the grace period. The new secret is printed once, alone on the last line."""
    from app.keys import admin
    from app.keys.schemas import Rotate

    data = _parse(Rotate, grace_seconds=grace_seconds)
    settings = get_settings()

    async def work(session: AsyncSession) -> tuple[str, str]:
        old, new, secret = await admin.rotate(
            session,
            CLI,
            settings.secret_key,
            key,
            timedelta(seconds=data.grace_seconds),
            now=SystemClock().now(),
        )
        return f"rotated key {old.id} -> {new.id} ({new.prefix}...), old stops at " + (
            old.revoked_at.isoformat() if old.revoked_at else "?"
        ), secret

    info, secret = _run_or_exit(work)
    typer.echo(info, err=True)
    typer.echo(secret)


# -- plans --------------------------------------------------------------------------------


def _plan_row(plan: Plan, versions: list[PlanVersion]) -> dict[str, object]:
    from app.money.display import plain

    return {
        "id": plan.id,
        "name": plan.name,
        "archived": plan.archived_at is not None,
        "version": versions[-1].version,
        "currency": versions[-1].currency,
        "base_fee": plain(versions[-1].base_fee),  # "5", as the API shows it
        "components": versions[-1].components,
    }


@plans_cli.command("list")
def plans_list() -> None:
    """List plans with their latest version, as JSON lines."""
    from app.plans import service

    async def work(session: AsyncSession) -> list[dict[str, object]]:
        return [_plan_row(p, v) for p, v in await service.list_plans(session) if v]

    for row in _run_or_exit(work):
        typer.echo(json.dumps(row))


@plans_cli.command("create")
def plans_create(
    file: Annotated[typer.FileText, typer.Argument(help="JSON plan definition ('-' for stdin)")],
) -> None:
    """Create a plan from JSON (as POST /admin/plans): {"name", "currency", "base_fee",
    "components": [...]}."""
    from app.plans import service
    from app.plans.schemas import PlanCreate

    data = _parse_json(PlanCreate, file)

    async def work(session: AsyncSession) -> int:
        plan, _ = await service.create_plan(session, CLI, data)
        return plan.id

    typer.echo(f"created plan {_run_or_exit(work)}")


@plans_cli.command("edit")
def plans_edit(
    plan_id: Annotated[int, typer.Argument()],
    file: Annotated[typer.FileText, typer.Argument(help="JSON definition ('-' for stdin)")],
) -> None:
    """Write the plan's next version from JSON (as PUT /admin/plans/{id}): {"currency",
    "base_fee", "components": [...], ...}; earlier versions, customers and invoices keep
    theirs. Prints the plan with its new version as JSON."""
    from app.plans import service
    from app.plans.schemas import PlanDefinition

    data = _parse_json(PlanDefinition, file)

    async def work(session: AsyncSession) -> dict[str, object]:
        return _plan_row(*await service.update_plan(session, CLI, plan_id, data))

    typer.echo(json.dumps(_run_or_exit(work)))


@plans_cli.command("archive")
def plans_archive(plan_id: Annotated[int, typer.Argument()]) -> None:
    """Archive a plan nobody uses (as DELETE /admin/plans/{id}); exits 1 if it is in use."""
    from app.plans import service

    async def work(session: AsyncSession) -> None:
        await service.archive_plan(session, CLI, plan_id, now=SystemClock().now())

    _run_or_exit(work)
    typer.echo(f"archived plan {plan_id}", err=True)


@plans_cli.command("assign")
def plans_assign(
    customer_id: Annotated[int, typer.Argument()],
    plan_id: Annotated[int, typer.Argument()],
    version: Annotated[int | None, typer.Option(help="Default: the plan's latest")] = None,
    effective: Annotated[
        Effective, typer.Option(help="From the next period (default) or now")
    ] = Effective.next_period,
) -> None:
    """Put a customer on a plan version (as PUT /admin/customers/{id}/plan); prints the
    assignment as JSON."""
    from app.plans import service
    from app.plans.schemas import PlanAssign

    data = _parse(PlanAssign, plan_id=plan_id, version=version, effective=effective)

    async def work(session: AsyncSession) -> dict[str, object]:
        assignment, plan, chosen = await service.assign_plan(
            session, CLI, customer_id, data, now=SystemClock().now()
        )
        return {
            "customer_id": customer_id,
            "plan_id": plan.id,
            "plan_name": plan.name,
            "version": chosen.version,
            "plan_version_id": chosen.id,
            "effective_from": assignment.effective_from.isoformat(),
        }

    typer.echo(json.dumps(_run_or_exit(work)))


# -- billing ------------------------------------------------------------------------------

PARTIAL_CLOSE = 3  # exit status: some customers were invoiced, some could not be


@billing_cli.command("close")
def billing_close(
    period: Annotated[str, typer.Argument(help="YYYY-MM (UTC month)")],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Show the invoices a close would write now (any month) and write nothing",
        ),
    ] = False,
) -> None:
    """Close a month: write and finalize one invoice per customer (as POST
    /finance/periods/{YYYY-MM}/close), printed as JSON with the invoices written. Safe to
    repeat. Exits 3 if a customer's plan cannot be priced (the others are invoiced and
    committed; fix the plan and repeat), 1 if nothing was closed. With --dry-run nothing is
    written: the same JSON shows the invoices a close would write now (number "(draft)")."""
    from app.billing.parties import seller_snapshot
    from app.billing.schemas import close_out
    from app.billing.service import close_period
    from app.money.periods import Period

    settings = get_settings()

    async def work(session: AsyncSession) -> str:
        result = await close_period(
            session,
            CLI,
            Period.parse(period),
            grace=timedelta(hours=settings.billing_grace_hours),
            seller=seller_snapshot(settings),
            now=SystemClock().now(),
            dry_run=dry_run,
        )
        shown = close_out(result, stripe_enabled=bool(settings.stripe_api_key))
        return shown.model_dump_json()

    rendered = _run_or_exit(work)
    typer.echo(rendered)
    not_ratable = json.loads(rendered)["not_ratable"]
    if not_ratable:  # the others are invoiced and committed; show the gap to cron
        for entry in not_ratable:
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
    """Push finalized invoices, voids and credit notes to Stripe. Safe to re-run after any
    failure."""
    from app.billing.stripe_gateway import StripeGateway
    from app.billing.sync import SyncResult, sync_invoices
    from app.errors import AppError
    from app.money.periods import Period

    try:
        only = Period.parse(period) if period else None
    except AppError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    gateway = _gateway()
    assert isinstance(gateway, StripeGateway)

    async def run() -> SyncResult:
        # Not one transaction: each invoice is pushed and committed (with its audit row) on
        # its own, so a failure leaves the others done.
        engine = build_engine(get_settings().database_url, pool_size=1)
        try:
            return await sync_invoices(build_sessionmaker(engine), gateway, CLI, only)
        finally:
            await engine.dispose()

    result = asyncio.run(run())
    typer.echo(
        json.dumps(
            {
                "pushed": result.pushed,
                "failed": result.failed,
                "voided": result.voided,
                "credit_notes_pushed": result.credit_notes_pushed,
                "credit_notes_failed": result.credit_notes_failed,
            }
        )
    )
    if result.failed or result.credit_notes_failed:
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


@billing_cli.command("void")
def billing_void(
    invoice_id: Annotated[int, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why the invoice is void (kept on it)")],
) -> None:
    """Void an issued, unpaid invoice without credit notes; the next sync voids it in
    Stripe."""
    from app.billing.corrections import void_invoice
    from app.billing.credit_schemas import VoidIn

    body = _parse(VoidIn, reason=reason)

    async def work(session: AsyncSession) -> dict[str, object]:
        invoice = await void_invoice(session, CLI, invoice_id, body.reason, now=SystemClock().now())
        return {
            "id": invoice.id,
            "number": invoice.number,
            "status": invoice.status,
            "voided_at": invoice.voided_at.isoformat() if invoice.voided_at else None,
            "void_reason": invoice.void_reason,
        }

    typer.echo(json.dumps(_run_or_exit(work)))


def _credit_line(text: str) -> dict[str, object]:
    position, sep, amount = text.partition("=")
    if not sep or not position.strip().isdigit() or not amount.strip().lstrip("-").isdigit():
        typer.echo(
            f"invalid --line {text!r}: expected POSITION=AMOUNT_MINOR, e.g. 2=1250", err=True
        )
        raise typer.Exit(2)
    return {"invoice_line_position": int(position), "amount_minor": int(amount)}


@billing_cli.command("credit")
def billing_credit(
    invoice_id: Annotated[int, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why the credit is given (printed on it)")],
    line: Annotated[
        list[str] | None,
        typer.Option(help="POSITION=AMOUNT_MINOR: credit an invoice line (before tax); repeatable"),
    ] = None,
    amount: Annotated[
        int | None,
        typer.Option(help="Credit the invoice as a whole, in minor units before tax"),
    ] = None,
) -> None:
    """Issue a credit note (CN-YYYY-NNNNNN) on an issued or paid invoice, never more than
    what remains creditable; the next sync creates it in Stripe."""
    from app.billing.corrections import create_credit_note, get_credit_note
    from app.billing.credit_schemas import CreditNoteCreate

    data: dict[str, object] = {"reason": reason}
    if line:
        data["lines"] = [_credit_line(text) for text in line]
    if amount is not None:
        data["amount_minor"] = amount
    body = _parse(CreditNoteCreate, **data)

    async def work(session: AsyncSession) -> dict[str, object]:
        note = await create_credit_note(session, CLI, invoice_id, body, now=SystemClock().now())
        view = await get_credit_note(session, note.id)
        return {
            "id": note.id,
            "number": note.number,
            "invoice_id": note.invoice_id,
            "subtotal_minor": note.subtotal_minor,
            "tax_minor": note.tax_minor,
            "total_minor": note.total_minor,
            "lines": [
                {"invoice_line_position": position, "amount_minor": cn_line.amount_minor}
                for cn_line, position in view.lines
            ],
        }

    typer.echo(json.dumps(_run_or_exit(work)))


UPLOAD_STAGES = ("hashing", "validating", "storing", "registering")


@models_cli.command("add")
def models_add(
    name: Annotated[str, typer.Argument(help="The model's name, as the manifest gives it")],
    version: Annotated[str, typer.Argument(help="The new version (versions are immutable)")],
    archive: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="torch.jit.save file or torch.export .pt2"
        ),
    ],
    manifest: Annotated[
        Path, typer.Option("--manifest", exists=True, dir_okay=False, help="Manifest JSON")
    ],
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval",
            exists=True,
            dir_okay=False,
            help=".npz with inputs and labels (classification) or targets (regression)",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr")] = True,
) -> None:
    """Add a model version from an archive: validated in a child process, int8 (and on a
    GPU host fp16) variants built and measured, stored and registered; running replicas
    load it within seconds. Prints the version and its variants as JSON."""
    from tqdm import tqdm

    from app.catalog import uploads
    from app.catalog.records import ModelCard
    from app.catalog.repository import snapshot
    from app.catalog.store import DirectoryStore
    from app.errors import AppError

    settings = get_settings()
    store = DirectoryStore(settings.model_store_dir, settings.models_dir)
    limits = uploads.UploadLimits(
        max_archive_bytes=settings.max_archive_bytes,
        timeout_s=settings.validation_timeout_s,
        memory_bytes=settings.validation_memory_bytes,
        tolerance=settings.variant_tolerance,
        measure_seconds=settings.measure_seconds,
    )
    bar = tqdm(total=len(UPLOAD_STAGES), disable=not progress, unit="step", file=sys.stderr)

    def stage(what: str) -> None:
        done = next((i for i, s in enumerate(UPLOAD_STAGES) if what.startswith(s)), 0)
        bar.n = done
        bar.set_description(what)
        bar.refresh()

    async def run() -> list[ModelCard]:
        engine = build_engine(settings.database_url, pool_size=1)
        try:
            async with build_sessionmaker(engine)() as session:
                added = await uploads.add_version(
                    session,
                    CLI,
                    store,
                    limits,
                    name=name,
                    version=version,
                    archive=archive,
                    manifest_raw=manifest.read_bytes(),
                    eval_path=eval_data,
                    progress=stage,
                )
                try:
                    await session.commit()
                except BaseException:
                    uploads.discard(store, added)
                    raise
                catalog = await snapshot(session)
                return [c for c in catalog.cards if (c.name, c.version) == (name, version)]
        finally:
            await engine.dispose()

    try:
        cards = asyncio.run(run())
    except AppError as exc:
        bar.close()
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    bar.n = len(UPLOAD_STAGES)
    bar.set_description("done")
    bar.close()
    typer.echo(
        json.dumps({"model": name, "version": version, "variants": [_card(c) for c in cards]})
    )


def _card(card: object) -> dict[str, object]:
    from app.catalog.records import ModelCard

    assert isinstance(card, ModelCard)
    return {
        "id": card.ref,
        "version": card.version,
        "published": card.published,
        "unpublished_reason": card.unpublished_reason,
        "loaded": card.loaded,
        "sha256": card.sha256,
        "size_bytes": card.size_bytes,
        "metrics": card.metrics,
        "measured": card.measured,
    }


@models_cli.command("list")
def models_list() -> None:
    """Every model, version and variant in the catalog, one JSON object per line."""
    from app.catalog.repository import snapshot

    catalog = _in_transaction(snapshot)
    for card in catalog.cards:
        row = _card(card)
        row["default"] = card.version == catalog.default_version(card.name)
        typer.echo(json.dumps(row))


def _catalog_write(action: str, ref: str, version: str) -> None:
    from app.catalog import service

    async def work(session: AsyncSession) -> object:
        if action in ("load", "unload"):
            return await service.set_loaded(session, CLI, ref, version, action == "load")
        if action in ("publish", "unpublish"):
            return await service.set_published(session, CLI, ref, version, action == "publish")
        return await service.set_default_version(session, CLI, ref, version)

    result = _run_or_exit(work)
    typer.echo(
        json.dumps(_card(result))
        if action != "default"
        else json.dumps({"model": ref, "default_version": version})
    )


REF_HELP = "name (the base model) or name:variant"


@models_cli.command("load")
def models_load(
    ref: Annotated[str, typer.Argument(help=REF_HELP)], version: Annotated[str, typer.Argument()]
) -> None:
    """Have every replica load exactly this variant of this version."""
    _catalog_write("load", ref, version)


@models_cli.command("unload")
def models_unload(
    ref: Annotated[str, typer.Argument(help=REF_HELP)], version: Annotated[str, typer.Argument()]
) -> None:
    """Have every replica unload exactly this variant (others keep serving)."""
    _catalog_write("unload", ref, version)


@models_cli.command("publish")
def models_publish(
    ref: Annotated[str, typer.Argument(help=REF_HELP)],
    version: Annotated[str, typer.Argument()],
    off: Annotated[bool, typer.Option("--off", help="Take it out of service instead")] = False,
) -> None:
    """Publish a variant (or with --off, unpublish it)."""
    _catalog_write("unpublish" if off else "publish", ref, version)


@models_cli.command("default")
def models_default(
    name: Annotated[str, typer.Argument()], version: Annotated[str, typer.Argument()]
) -> None:
    """Serve this version to requests that name none."""
    _catalog_write("default", name, version)


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


@ledger_cli.command("partitions")
def ledger_partitions(
    detach_before: Annotated[
        str | None,
        typer.Option(
            help="YYYY-MM: detach (for archive) every monthly partition that ends before "
            "this month starts. Detached partitions stay as plain tables of the same name."
        ),
    ] = None,
) -> None:
    """Create the ledger's monthly partitions ahead (Postgres), optionally detach old ones,
    and list what is attached. On SQLite (one table) it lists nothing."""
    from datetime import UTC, datetime

    from app.metering import partitions

    cutoff = None
    if detach_before is not None:
        try:
            cutoff = datetime.strptime(detach_before, "%Y-%m").replace(tzinfo=UTC)
        except ValueError:
            typer.echo("error: --detach-before must be YYYY-MM", err=True)
            raise typer.Exit(2) from None
    settings = get_settings()

    async def run() -> dict[str, list[str]]:
        engine = build_engine(settings.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                now = SystemClock().now()
                created = await partitions.ensure_partitions(
                    conn, now, settings.ledger_partitions_ahead
                )
                detached = (
                    await partitions.detach_before(conn, cutoff) if cutoff is not None else []
                )
                attached = [p.name for p in await partitions.list_partitions(conn)]
            return {"created": created, "detached": detached, "attached": attached}
        finally:
            await engine.dispose()

    typer.echo(json.dumps(asyncio.run(run())))


if __name__ == "__main__":
    main()

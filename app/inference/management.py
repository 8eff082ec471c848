"""Model management writes: load, unload and default version, each with its audit row.

The registry lives in this process's memory, not in the database, so the change cannot share
the audit row's transaction: the registry changes first, then the row is written in the
caller's transaction (a failed change records nothing). The CLI cannot reach a running
server's registry; these are the API's only write path until the registry moves into the
database.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, record
from app.inference.registry import ModelRegistry, ServedModel


async def load_model(
    session: AsyncSession, actor: Actor, registry: ModelRegistry, name: str, version: str
) -> list[ServedModel]:
    """Load (or reload) every variant of name/version from the models directory."""
    loaded = await registry.load(name, version)
    await record(
        session,
        actor,
        "model.load",
        "model",
        f"{name}/{version}",
        after={"variants": [s.ref for s in loaded]},
    )
    return loaded


async def unload_model(
    session: AsyncSession, actor: Actor, registry: ModelRegistry, name: str, version: str
) -> list[ServedModel]:
    """New requests get 404 at once; requests already queued finish first."""
    removed = await registry.unload(name, version)
    await record(
        session,
        actor,
        "model.unload",
        "model",
        f"{name}/{version}",
        after={"variants": [s.ref for s in removed]},
    )
    return removed


async def set_default_version(
    session: AsyncSession, actor: Actor, registry: ModelRegistry, name: str, version: str
) -> ServedModel:
    """Route requests without a version to ``version`` of ``name``."""
    before = registry.default_version(name)
    registry.set_default(name, version)
    await record(
        session,
        actor,
        "model.default",
        "model",
        name,
        before={"version": before},
        after={"version": version},
    )
    return registry.find(name)

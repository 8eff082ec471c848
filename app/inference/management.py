"""Model management writes, as the admin API runs them: the catalog change (with its audit
row) commits first, then this replica applies it at once; the other replicas apply it when
notified (app/inference/sync.py), so the response can say what this replica now has."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor
from app.catalog import service as catalog
from app.catalog import uploads
from app.catalog.store import ModelStore
from app.catalog.uploads import Progress, UploadLimits
from app.inference.registry import ModelRegistry, ServedModel
from app.inference.sync import CatalogSync


async def _commit_and_apply(session: AsyncSession, sync: CatalogSync) -> None:
    # The endpoint's transaction ends here rather than after the response: the desired
    # state must be durable before any replica acts on it.
    await session.commit()
    await sync.reconcile(force_report=True)


async def set_loaded(
    session: AsyncSession,
    actor: Actor,
    sync: CatalogSync,
    registry: ModelRegistry,
    ref: str,
    version: str,
    loaded: bool,
) -> ServedModel:
    """Load or unload exactly ``ref`` (``cnn`` the base, ``cnn:int8`` that variant) of
    ``version`` on every replica."""
    await catalog.set_loaded(session, actor, ref, version, loaded)
    await _commit_and_apply(session, sync)
    return registry.find(ref, version)


async def set_published(
    session: AsyncSession,
    actor: Actor,
    sync: CatalogSync,
    registry: ModelRegistry,
    ref: str,
    version: str,
    published: bool,
) -> ServedModel:
    await catalog.set_published(session, actor, ref, version, published)
    await _commit_and_apply(session, sync)
    return registry.find(ref, version)


async def set_default_version(
    session: AsyncSession,
    actor: Actor,
    sync: CatalogSync,
    registry: ModelRegistry,
    name: str,
    version: str,
) -> ServedModel:
    """Route requests without a version to ``version`` of ``name``, on every replica."""
    await catalog.set_default_version(session, actor, name, version)
    await _commit_and_apply(session, sync)
    return registry.find(name)


async def add_version(
    session: AsyncSession,
    actor: Actor,
    sync: CatalogSync,
    registry: ModelRegistry,
    store: ModelStore,
    limits: UploadLimits,
    *,
    name: str,
    version: str,
    archive: Path,
    manifest_raw: bytes | str,
    eval_path: Path | None = None,
    progress: Progress | None = None,
) -> list[ServedModel]:
    """Upload a version (app/catalog/uploads.py), commit it, and have this replica load its
    published variants before answering; the others load them when notified."""
    added = await uploads.add_version(
        session,
        actor,
        store,
        limits,
        name=name,
        version=version,
        archive=archive,
        manifest_raw=manifest_raw,
        eval_path=eval_path,
        progress=progress,
    )
    try:
        await session.commit()
    except BaseException:
        uploads.discard(store, added)
        raise
    await sync.reconcile(force_report=True)
    return [v for v in registry.list() if v.name == name and v.version == version]

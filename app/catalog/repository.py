"""Catalog queries: the snapshot replicas reconcile to, the revision, replica state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.records import CatalogSnapshot, ModelCard, card_from
from app.orm import CatalogModel, CatalogRevision, ModelReplica, ModelVariant, ModelVersion

CHANNEL = "tollgate_models"


async def revision(session: AsyncSession) -> int:
    value = await session.scalar(select(CatalogRevision.revision).where(CatalogRevision.id == 1))
    return int(value or 0)


async def bump_revision(session: AsyncSession) -> int:
    """The next revision, in the caller's transaction; on Postgres the NOTIFY goes out
    when (and only if) that transaction commits."""
    value = await session.scalar(
        update(CatalogRevision)
        .where(CatalogRevision.id == 1)
        .values(revision=CatalogRevision.revision + 1)
        .returning(CatalogRevision.revision)
    )
    if value is None:  # the row is gone (a database emptied by hand): start it again
        session.add(CatalogRevision(id=1, revision=1))
        await session.flush()
        value = 1
    rev = int(value)
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :rev)"), {"channel": CHANNEL, "rev": str(rev)}
        )
    return rev


def to_card(version: ModelVersion, variant: ModelVariant) -> ModelCard:
    return card_from(
        version.manifest,
        version=version.version,
        variant=variant.variant or None,
        archive_format=variant.archive_format,
        archive_uri=variant.archive_uri,
        sha256=variant.archive_sha256,
        size_bytes=variant.archive_bytes,
        dtype=variant.dtype,
        requires_device=variant.requires_device,
        published=variant.published,
        unpublished_reason=variant.unpublished_reason,
        loaded=variant.loaded,
        metrics=variant.metrics,
        measured=variant.measured,
        compression=variant.compression,
        version_created_at=version.created_at,
    )


async def snapshot(session: AsyncSession) -> CatalogSnapshot:
    """The whole catalog, read in one transaction (the revision and rows agree)."""
    rev = await revision(session)
    defaults = {
        m.name: m.default_version for m in (await session.scalars(select(CatalogModel))).all()
    }
    rows = await session.execute(
        select(ModelVersion, ModelVariant)
        .join(ModelVariant, ModelVariant.version_id == ModelVersion.id)
        .order_by(ModelVersion.model_name, ModelVersion.id, ModelVariant.variant)
    )
    cards = tuple(to_card(version, variant) for version, variant in rows.all())
    return CatalogSnapshot(revision=rev, defaults=defaults, cards=cards)


async def find_version(session: AsyncSession, name: str, version: str) -> ModelVersion | None:
    result: ModelVersion | None = await session.scalar(
        select(ModelVersion).where(ModelVersion.model_name == name, ModelVersion.version == version)
    )
    return result


async def find_variant(
    session: AsyncSession, version_id: int, variant: str | None
) -> ModelVariant | None:
    result: ModelVariant | None = await session.scalar(
        select(ModelVariant)
        .where(ModelVariant.version_id == version_id, ModelVariant.variant == (variant or ""))
        .with_for_update()
    )
    return result


async def save_replica(
    session: AsyncSession,
    *,
    replica_id: str,
    hostname: str,
    pid: int,
    started_at: datetime,
    now: datetime,
    revision: int,
    models: list[dict[str, Any]],
) -> None:
    row = await session.get(ModelReplica, replica_id)
    if row is None:
        session.add(
            ModelReplica(
                replica_id=replica_id,
                hostname=hostname,
                pid=pid,
                started_at=started_at,
                seen_at=now,
                revision=revision,
                models=models,
            )
        )
    else:
        row.seen_at = now
        row.revision = revision
        row.models = models
    await session.flush()


async def replicas(session: AsyncSession, seen_since: datetime) -> list[ModelReplica]:
    rows = await session.scalars(
        select(ModelReplica)
        .where(ModelReplica.seen_at >= seen_since)
        .order_by(ModelReplica.started_at, ModelReplica.replica_id)
    )
    return list(rows.all())


async def forget_replica(session: AsyncSession, replica_id: str) -> None:
    row = await session.get(ModelReplica, replica_id)
    if row is not None:
        await session.delete(row)

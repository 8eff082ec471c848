"""The model catalog: every model, version and variant, and the state each replica is in.

The catalog is the registry every replica reconciles to (app/inference/sync.py): what is
published, which version is each model's default, and whether each variant should be
loaded. ``model_catalog.revision`` grows with every change, so a replica can tell in one
read whether it is behind; on Postgres every change also sends ``NOTIFY tollgate_models``.
Each replica writes what it actually serves into ``model_replicas``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.orm.base import Base, BigIntPK, UTCDateTime, utcnow


class CatalogModel(Base):
    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # None: the newest version (by number, then by upload time) is the default.
    default_version: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModelVersion(Base):
    """One immutable version: its archive manifest (the contract) and where it came from."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_name", "version"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(
        String(64), ForeignKey("models.name", ondelete="CASCADE")
    )
    version: Mapped[str] = mapped_column(String(32))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(16))  # builtin | upload
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModelVariant(Base):
    """The base model (``variant`` "") or a compressed variant of one version: its archive,
    what it measured, whether callers may use it and whether replicas should load it."""

    __tablename__ = "model_variants"
    __table_args__ = (UniqueConstraint("version_id", "variant"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    variant: Mapped[str] = mapped_column(String(32), default="")
    archive_format: Mapped[str] = mapped_column(String(16))  # torchscript | torch_export
    archive_uri: Mapped[str] = mapped_column(String(512))
    archive_sha256: Mapped[str] = mapped_column(String(64))
    archive_bytes: Mapped[int] = mapped_column(BigInteger)
    dtype: Mapped[str] = mapped_column(String(16))
    requires_device: Mapped[str | None] = mapped_column(String(8))
    published: Mapped[bool] = mapped_column(Boolean)
    unpublished_reason: Mapped[str | None] = mapped_column(Text)
    loaded: Mapped[bool] = mapped_column(Boolean, default=True)  # the desired state
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)  # quality: accuracy, r2, mae ...
    measured: Mapped[dict[str, Any]] = mapped_column(JSON)  # size, items/s
    # how it was built (method, notes; "description" overrides the version's, for variants)
    compression: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CatalogRevision(Base):
    """One row: the catalog's revision, bumped in the transaction of every change."""

    __tablename__ = "model_catalog"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


class ModelReplica(Base):
    """What one serving process actually has: written by that process after each
    reconcile and on a heartbeat; ``/admin/models`` shows it per replica."""

    __tablename__ = "model_replicas"

    replica_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revision: Mapped[int] = mapped_column(BigInteger)  # the catalog revision it applied
    models: Mapped[list[dict[str, Any]]] = mapped_column(JSON)

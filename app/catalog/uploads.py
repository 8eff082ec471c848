"""Adding a model version from an uploaded archive: one write path for the API and the CLI.

The manifest is checked first, then the version's absence (versions are immutable: the same
name and version again is 409), then the archive goes through validation and the compression
pipeline in a child process with a time and memory limit (app/catalog/isolate.py). Only a
version that passed is stored: the base archive and each built variant go into the model
store under keys that carry their sha256, and the catalog rows (with the audit row and the
revision bump) are added in the caller's transaction. Whatever fails leaves nothing: the
pipeline's scratch folder is removed, and :func:`discard` removes the stored files when the
transaction does not commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, record
from app.catalog import repository
from app.catalog.errors import ArchiveInvalid, ArchiveTooLarge, VersionExists
from app.catalog.isolate import process_archive_isolated
from app.catalog.pipeline import BuiltVariant, PipelineReport, ValidationFailed
from app.catalog.spec import ArchiveManifest, ManifestInvalid, parse_manifest
from app.catalog.store import ModelStore
from app.orm import CatalogModel, ModelVariant, ModelVersion

log = logging.getLogger("tollgate.catalog")

# What the pipeline measures that says how good a model is (the rest is size and speed).
QUALITY = frozenset({"accuracy", "r2", "mae"})
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_archive_bytes: int
    timeout_s: float
    memory_bytes: int
    tolerance: float
    measure_seconds: float


@dataclass(slots=True)
class AddedVersion:
    name: str
    version: str
    sha256: str
    report: PipelineReport
    stored: list[str] = field(default_factory=list)  # URIs written to the store


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_manifest(name: str, version: str, raw: bytes | str) -> ArchiveManifest:
    """The manifest, parsed and checked against the name and version it is uploaded as."""
    try:
        manifest = parse_manifest(raw)
    except ManifestInvalid as exc:
        raise ArchiveInvalid(
            f"invalid manifest: {exc}", details={"code": "manifest_invalid"}
        ) from None
    if (manifest.name, manifest.version) != (name, version):
        raise ArchiveInvalid(
            f"the manifest describes {manifest.name} version {manifest.version}, but it was "
            f"uploaded as {name} version {version}",
            details={"code": "manifest_mismatch"},
        )
    return manifest


async def add_version(
    session: AsyncSession,
    actor: Actor,
    store: ModelStore,
    limits: UploadLimits,
    *,
    name: str,
    version: str,
    archive: Path,
    manifest_raw: bytes | str,
    eval_path: Path | None = None,
    progress: Progress | None = None,
) -> AddedVersion:
    """Validate, compress, measure, store and register ``name``/``version``. Refusals:
    409 version_exists, 413 archive_too_large, 422 invalid_archive (``details.code`` says
    which check). The caller commits; on any failure after this returns, call
    :func:`discard`."""
    say = progress or (lambda _: None)
    manifest = check_manifest(name, version, manifest_raw)
    if await repository.find_version(session, name, version) is not None:
        raise VersionExists(
            f"model '{name}' version '{version}' already exists; versions are immutable, "
            "upload a new version",
            details={"model": name, "version": version},
        )
    size = await asyncio.to_thread(os.path.getsize, archive)
    if size > limits.max_archive_bytes:
        raise ArchiveTooLarge(
            f"the archive is {size} bytes; the limit is {limits.max_archive_bytes}",
            details={"limit": limits.max_archive_bytes},
        )
    say("hashing")
    sha256 = await asyncio.to_thread(_sha256, archive)
    with tempfile.TemporaryDirectory(prefix="tollgate-upload-") as scratch:
        say("validating and building variants (in a child process)")
        try:
            report = await asyncio.to_thread(
                process_archive_isolated,
                archive,
                manifest,
                eval_path,
                Path(scratch),
                tolerance=limits.tolerance,
                measure_seconds=limits.measure_seconds,
                threads=1,
                timeout_s=limits.timeout_s,
                memory_bytes=limits.memory_bytes,
            )
        except ValidationFailed as exc:
            raise ArchiveInvalid(exc.reason, details={"code": exc.code}) from None
        say("storing")
        added = AddedVersion(name, version, sha256, report)
        try:
            rows = []
            for built in report.variants:
                source = archive if built.variant is None else Path(scratch) / built.file
                suffix = ".pt2" if built.format == "torch_export" else ".pt"
                key = f"{name}/{version}/{built.variant or 'base'}-{built.sha256[:16]}{suffix}"
                uri = await asyncio.to_thread(store.put, key, source)
                added.stored.append(uri)
                rows.append((built, uri))
        except Exception:
            discard(store, added)
            raise
    say("registering")
    try:
        await _register(session, actor, manifest, report, rows, sha256)
    except IntegrityError:
        discard(store, added)
        raise VersionExists(
            f"model '{name}' version '{version}' was added meanwhile; versions are immutable",
            details={"model": name, "version": version},
        ) from None
    except BaseException:
        discard(store, added)
        raise
    return added


def discard(store: ModelStore, added: AddedVersion) -> None:
    """Remove what :func:`add_version` stored (its transaction did not commit)."""
    for uri in added.stored:
        try:
            store.delete(uri)
        except OSError:
            log.warning("could not remove %s from the model store", uri, exc_info=True)


async def _register(
    session: AsyncSession,
    actor: Actor,
    manifest: ArchiveManifest,
    report: PipelineReport,
    rows: list[tuple[BuiltVariant, str]],
    sha256: str,
) -> None:
    async with session.begin_nested():
        if await session.get(CatalogModel, manifest.name) is None:
            session.add(CatalogModel(name=manifest.name, default_version=None))
            await session.flush()
        version = ModelVersion(
            model_name=manifest.name,
            version=manifest.version,
            manifest=manifest.model_dump(mode="json"),
            source="upload",
            created_by=f"key:{actor.key_id}" if not isinstance(actor, str) else actor,
        )
        session.add(version)
        await session.flush()
        for built, uri in rows:
            compression: dict[str, Any] = dict(built.compression)
            if built.variant is None and report.skipped:
                compression["skipped_variants"] = [
                    {"variant": v, "reason": r} for v, r in report.skipped
                ]
            session.add(
                ModelVariant(
                    version_id=version.id,
                    variant=built.variant or "",
                    archive_format=built.format,
                    archive_uri=uri,
                    archive_sha256=built.sha256,
                    archive_bytes=built.bytes,
                    dtype=built.dtype,
                    requires_device=built.requires_device,
                    published=built.published,
                    unpublished_reason=built.unpublished_reason,
                    loaded=True,
                    metrics={k: v for k, v in built.measured.items() if k in QUALITY},
                    measured={k: v for k, v in built.measured.items() if k not in QUALITY},
                    compression=compression or None,
                )
            )
        await session.flush()
    await record(
        session,
        actor,
        "model.upload",
        "model",
        f"{manifest.name}/{manifest.version}",
        after={
            "sha256": sha256,
            "format": report.format,
            "variants": [
                {"variant": b.variant, "published": b.published, "reason": b.unpublished_reason}
                for b, _ in rows
            ],
            "skipped": [{"variant": v, "reason": r} for v, r in report.skipped],
        },
    )
    await repository.bump_revision(session)

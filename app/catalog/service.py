"""Catalog writes: each one changes the desired state, records its audit row and bumps the
revision in the caller's transaction. Replicas apply the change when it commits
(app/inference/sync.py), so the audit log says what was asked of every replica, and
``/admin/models`` says what each one did."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, record
from app.catalog import repository
from app.catalog.errors import ModelNotFound
from app.catalog.records import CatalogSnapshot, ModelCard, version_key
from app.catalog.store import BUILTIN
from app.orm import CatalogModel, ModelVariant, ModelVersion

log = logging.getLogger("tollgate.catalog")

BUILTIN_ACTOR = "builtin"
# Keys of a shipped manifest that describe one variant's file, not the version's contract.
_VARIANT_KEYS = ("archive", "weights", "variant", "base", "format", "dtype", "requires_device")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name`` or ``name:variant``; ``name:`` names an empty variant, which no model has."""
    name, colon, variant = ref.partition(":")
    return name, variant if colon else None


def _shipped(models_dir: Path) -> dict[str, dict[str, list[tuple[str, dict[str, Any]]]]]:
    """name -> version -> [(directory relative to models_dir, manifest)], base first."""
    found: dict[str, dict[str, list[tuple[str, dict[str, Any]]]]] = {}
    for path in sorted(models_dir.glob("*/*/manifest.json")):
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if "archive" not in manifest:
            continue
        rel = path.parent.relative_to(models_dir).as_posix()
        entries = found.setdefault(manifest["name"], {}).setdefault(manifest["version"], [])
        entries.append((rel, manifest))
    for versions in found.values():
        for entries in versions.values():
            entries.sort(key=lambda e: e[1].get("variant") or "")
    return found


async def seed_builtin(session: AsyncSession, models_dir: Path) -> list[str]:
    """Register each version shipped in the package that the catalog has never had (a
    version already there is left as the admins left it: load state, publication,
    default). Safe to run from every replica at once: the loser of a race sees the
    winner's rows. Returns the ``name/version`` pairs added."""
    added = []
    known = {
        (name, version)
        for name, version in await session.execute(
            select(ModelVersion.model_name, ModelVersion.version)
        )
    }
    for name, versions in _shipped(models_dir).items():
        for version in sorted(versions, key=version_key):
            if (name, version) in known:
                continue
            try:
                async with session.begin_nested():
                    if await session.get(CatalogModel, name) is None:
                        session.add(CatalogModel(name=name, default_version=None))
                        await session.flush()
                    await _add_builtin_version(session, name, version, versions[version])
            except IntegrityError:
                continue  # another replica seeded it first
            added.append(f"{name}/{version}")
    if added:
        await repository.bump_revision(session)
        log.info("shipped models registered", extra={"models": added})
    return added


def _contract(entries: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The version's contract: its base manifest without the keys that describe one file."""
    base = next((m for _, m in entries if m.get("variant") is None), entries[0][1])
    return {k: v for k, v in base.items() if k not in _VARIANT_KEYS}


def _builtin_variant(rel: str, manifest: dict[str, Any]) -> ModelVariant:
    """The catalog row of one shipped archive (not yet tied to its version's row)."""
    archive = manifest["archive"]
    variant = manifest.get("variant")
    compression = dict(manifest.get("compression") or {})
    if variant is not None:
        compression["description"] = manifest["description"]
    return ModelVariant(
        variant=variant or "",
        archive_format=archive["format"],
        archive_uri=f"{BUILTIN}{rel}/{archive['file']}",
        archive_sha256=archive["sha256"],
        archive_bytes=archive["bytes"],
        dtype=manifest.get("dtype", "float32"),
        requires_device=manifest.get("requires_device"),
        published=True,
        unpublished_reason=None,
        loaded=True,
        metrics=manifest.get("metrics", {}),
        measured=manifest.get("measured", {}),
        compression=compression or None,
    )


async def _add_builtin_version(
    session: AsyncSession, name: str, version: str, entries: list[tuple[str, dict[str, Any]]]
) -> None:
    row = ModelVersion(
        model_name=name,
        version=version,
        manifest=_contract(entries),
        source="builtin",
        created_by=BUILTIN_ACTOR,
    )
    session.add(row)
    await session.flush()
    for rel, manifest in entries:
        variant = _builtin_variant(rel, manifest)
        variant.version_id = row.id
        session.add(variant)
    await session.flush()


async def _variant(
    session: AsyncSession, ref: str, version: str
) -> tuple[ModelVersion, ModelVariant]:
    name, variant = parse_ref(ref)
    row = await repository.find_version(session, name, version)
    if row is None:
        raise ModelNotFound(
            f"model '{name}' has no version '{version}'",
            details={"model": name, "version": version},
        )
    found = await repository.find_variant(session, row.id, variant)
    if found is None:
        raise ModelNotFound(
            f"model '{name}' version {version} has no variant '{variant}'",
            details={"model": name, "version": version, "variant": variant},
        )
    return row, found


async def set_loaded(
    session: AsyncSession, actor: Actor, ref: str, version: str, loaded: bool
) -> ModelCard:
    """Ask every replica to load (or unload) exactly the variant ``ref`` of ``version``:
    ``cnn`` is the base model only, ``cnn:int8`` the int8 variant only."""
    version_row, variant_row = await _variant(session, ref, version)
    before = variant_row.loaded
    if before == loaded:  # already so: nothing to record, nothing for replicas to do
        return repository.to_card(version_row, variant_row)
    variant_row.loaded = loaded
    await session.flush()
    await record(
        session,
        actor,
        "model.load" if loaded else "model.unload",
        "model",
        f"{ref}/{version}",
        before={"loaded": before},
        after={"loaded": loaded},
    )
    await repository.bump_revision(session)
    return repository.to_card(version_row, variant_row)


async def set_published(
    session: AsyncSession, actor: Actor, ref: str, version: str, published: bool
) -> ModelCard:
    """Publish a variant (callers may use it; replicas load it) or take it out of service."""
    version_row, variant_row = await _variant(session, ref, version)
    before = {"published": variant_row.published, "reason": variant_row.unpublished_reason}
    if variant_row.published == published:
        return repository.to_card(version_row, variant_row)
    variant_row.published = published
    if published:
        variant_row.unpublished_reason = None
    elif variant_row.unpublished_reason is None:
        variant_row.unpublished_reason = "unpublished by an admin"
    await session.flush()
    await record(
        session,
        actor,
        "model.publish" if published else "model.unpublish",
        "model",
        f"{ref}/{version}",
        before=before,
        after={"published": published},
    )
    await repository.bump_revision(session)
    return repository.to_card(version_row, variant_row)


async def set_default_version(
    session: AsyncSession, actor: Actor, name: str, version: str
) -> str | None:
    """Serve ``version`` to requests that name no version. Returns the previous choice."""
    model = await session.get(CatalogModel, name, with_for_update=True)
    if model is None:
        raise ModelNotFound(f"model '{name}' does not exist", details={"model": name})
    if await repository.find_version(session, name, version) is None:
        raise ModelNotFound(
            f"model '{name}' has no version '{version}'",
            details={"model": name, "version": version},
        )
    before = model.default_version
    model.default_version = version
    await session.flush()
    await record(
        session,
        actor,
        "model.default",
        "model",
        name,
        before={"version": before},
        after={"version": version},
    )
    await repository.bump_revision(session)
    return before


def shipped_snapshot(models_dir: Path) -> CatalogSnapshot:
    """The shipped models as a fresh catalog would hold them, read from the package alone:
    what a replica serves when the database cannot be read at start-up (revision 0, so the
    first successful read of the real catalog replaces it)."""
    cards: list[ModelCard] = []
    for name, versions in _shipped(models_dir).items():
        for version, entries in versions.items():
            row = ModelVersion(model_name=name, version=version, manifest=_contract(entries))
            cards.extend(repository.to_card(row, _builtin_variant(rel, m)) for rel, m in entries)
    return CatalogSnapshot(revision=0, defaults={}, cards=tuple(cards))

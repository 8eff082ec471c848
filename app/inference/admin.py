"""Admin model management: the catalog (upload, load, unload, publish, default version) and
each replica's actual state. Every write changes the catalog, which every replica applies."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData, UploadFile

from app.audit.service import Actor
from app.auth.deps import Admin, ProtectedRoute
from app.catalog import repository
from app.catalog.errors import ArchiveTooLarge
from app.catalog.uploads import UploadLimits
from app.clock.deps import ClockDep
from app.config import request_settings
from app.db.session import SessionDep
from app.errors import BadRequest, error_schema
from app.inference import management
from app.inference.deps import catalog_sync, model_store
from app.inference.deps import registry as _registry
from app.inference.endpoints import _info
from app.inference.registry import ServedModel
from app.inference.schemas import ModelInfo
from app.inference.sync import CatalogSync, seen_since
from app.validation import MAX_VERSION, Text

router = APIRouter(prefix="/admin/models", tags=["models"], route_class=ProtectedRoute)

Sync = Annotated[CatalogSync, Depends(catalog_sync)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_schema("Missing or invalid API key"),
    403: error_schema("The key lacks the admin scope"),
    404: error_schema("No such model, version or variant"),
}


class DefaultVersion(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"version": "1"}]})

    version: Text = Field(min_length=1, max_length=MAX_VERSION)


class Published(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"published": False}]})

    published: bool


class ReplicaModel(BaseModel):
    model: str
    version: str
    state: str
    device: str
    graph: str
    reason: str | None


class Replica(BaseModel):
    """One serving process, as it last reported itself."""

    replica_id: str
    hostname: str
    pid: int
    started_at: datetime
    seen_at: datetime
    revision: int = Field(description="The catalog revision it has applied")
    models: list[ReplicaModel]


class AdminModelList(BaseModel):
    revision: int = Field(description="The catalog's current revision")
    data: list[ModelInfo] = Field(
        description="Every variant in the catalog, as this replica has it"
    )
    replicas: list[Replica] = Field(
        description="Every replica heard from in the last three heartbeats, with what it serves"
    )


@router.get("", responses=_ERRORS)
async def list_models(
    _: Admin, request: Request, session: SessionDep, clock: ClockDep
) -> AdminModelList:
    """The catalog (every model, version and variant, published or not) and each replica's
    actual state."""
    registry = _registry(request)
    heartbeat_s = request_settings(request).catalog_heartbeat_s
    rows = await repository.replicas(session, seen_since(clock.now(), heartbeat_s))
    return AdminModelList(
        revision=await repository.revision(session),
        data=[_info(s, registry) for s in registry.list()],
        replicas=[
            Replica(
                replica_id=r.replica_id,
                hostname=r.hostname,
                pid=r.pid,
                started_at=r.started_at,
                seen_at=r.seen_at,
                revision=r.revision,
                models=[ReplicaModel.model_validate(m) for m in r.models],
            )
            for r in rows
        ],
    )


@router.post("/{name}/versions/{version}/load", responses=_ERRORS)
async def load_model(
    actor: Admin, request: Request, session: SessionDep, sync: Sync, name: str, version: str
) -> ModelInfo:
    """Load exactly ``name`` (the base model) or ``name:variant`` of ``version`` on every
    replica. Audited; this replica has applied it when the response comes."""
    registry = _registry(request)
    served = await management.set_loaded(session, actor, sync, registry, name, version, True)
    return _info(served, registry)


@router.post("/{name}/versions/{version}/unload", responses=_ERRORS)
async def unload_model(
    actor: Admin, request: Request, session: SessionDep, sync: Sync, name: str, version: str
) -> ModelInfo:
    """Unload exactly ``name`` or ``name:variant`` of ``version`` on every replica: new
    requests get 404, requests already queued finish first. Other variants keep serving."""
    registry = _registry(request)
    served = await management.set_loaded(session, actor, sync, registry, name, version, False)
    return _info(served, registry)


@router.put("/{name}/versions/{version}/published", responses=_ERRORS)
async def publish_model(
    actor: Admin,
    request: Request,
    session: SessionDep,
    sync: Sync,
    name: str,
    version: str,
    body: Published,
) -> ModelInfo:
    """Publish a variant (callers may use it; replicas load it) or take it out of service
    (404 to callers; readiness no longer waits for it). Audited."""
    registry = _registry(request)
    served = await management.set_published(
        session, actor, sync, registry, name, version, body.published
    )
    return _info(served, registry)


@router.put("/{name}/default", responses=_ERRORS)
async def set_default_version(
    actor: Admin,
    request: Request,
    session: SessionDep,
    sync: Sync,
    name: str,
    body: DefaultVersion,
) -> ModelInfo:
    """Serve this version when a request names no version (every variant of it), on every
    replica. Audited."""
    registry = _registry(request)
    served = await management.set_default_version(
        session, actor, sync, registry, name, body.version
    )
    return _info(served, registry)


class SkippedVariant(BaseModel):
    variant: str
    reason: str


class UploadedVersion(BaseModel):
    model: str
    version: str
    sha256: str = Field(description="sha256 of the uploaded archive")
    format: str = Field(description="torchscript or torch_export")
    variants: list[ModelInfo] = Field(
        description="The base and every variant built, measured, published or not (with why)"
    )
    skipped: list[SkippedVariant] = Field(description="Variants not built, and why")


_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    400: error_schema("Not multipart/form-data with an archive and a manifest"),
    409: error_schema("That version exists already (versions are immutable): version_exists"),
    413: error_schema("The archive exceeds TOLLGATE_MAX_ARCHIVE_BYTES: archive_too_large"),
    422: error_schema(
        "The manifest, archive or eval data failed validation: invalid_archive, with "
        "details.code (manifest_invalid, manifest_mismatch, archive_rejected, load_failed, "
        "output_shape, output_dtype, nan_output, eval_invalid, timeout, memory_limit, crashed)"
    ),
}
_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["archive", "manifest"],
                    "properties": {
                        "archive": {
                            "type": "string",
                            "format": "binary",
                            "description": "torch.jit.save file or torch.export .pt2",
                        },
                        "manifest": {
                            "type": "string",
                            "format": "binary",
                            "description": "The manifest JSON (docs/models.md)",
                        },
                        "eval": {
                            "type": "string",
                            "format": "binary",
                            "description": ".npz with inputs and labels (classification) "
                            "or targets (regression)",
                        },
                    },
                }
            }
        },
    }
}
MODEL_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
VERSION = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"


async def _spool(part: UploadFile, target: Path, limit: int | None, what: str) -> None:
    """Copy an uploaded part to ``target``, refusing it past ``limit`` bytes."""
    written = 0
    with target.open("wb") as out:
        while chunk := await part.read(1 << 20):
            written += len(chunk)
            if limit is not None and written > limit:
                raise ArchiveTooLarge(f"the {what} exceeds {limit} bytes", details={"limit": limit})
            out.write(chunk)


async def upload_from_form(
    request: Request,
    session: AsyncSession,
    actor: Actor,
    sync: CatalogSync,
    name: str,
    version: str,
    form: FormData,
) -> list[ServedModel]:
    """Add ``name``/``version`` from a parsed multipart form (``archive``, ``manifest`` as a
    file or a field, optional ``eval``): the upload endpoint's and the console's."""
    settings = request_settings(request)
    archive_part, manifest_part, eval_part = (form.get(k) for k in ("archive", "manifest", "eval"))
    if not isinstance(archive_part, UploadFile) or manifest_part is None:
        raise BadRequest(
            "send multipart/form-data with an 'archive' file and a 'manifest' "
            "(file or field), and optionally an 'eval' .npz file"
        )
    scratch = Path(tempfile.mkdtemp(prefix="tollgate-upload-"))
    try:
        archive = scratch / "archive"
        await _spool(archive_part, archive, settings.max_archive_bytes, "archive")
        if isinstance(manifest_part, UploadFile):
            manifest_raw: bytes | str = await manifest_part.read(1 << 20)
        else:
            manifest_raw = manifest_part
        eval_path = None
        if isinstance(eval_part, UploadFile) and eval_part.filename:
            eval_path = scratch / "eval.npz"
            await _spool(eval_part, eval_path, settings.max_archive_bytes, "eval data")
        return await management.add_version(
            session,
            actor,
            sync,
            _registry(request),
            model_store(request),
            UploadLimits(
                max_archive_bytes=settings.max_archive_bytes,
                timeout_s=settings.validation_timeout_s,
                memory_bytes=settings.validation_memory_bytes,
                tolerance=settings.variant_tolerance,
                measure_seconds=settings.measure_seconds,
            ),
            name=name,
            version=version,
            archive=archive,
            manifest_raw=manifest_raw,
            eval_path=eval_path,
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)


@router.post(
    "/{name}/versions/{version}",
    status_code=201,
    responses=_UPLOAD_ERRORS,
    openapi_extra=_MULTIPART_BODY,
)
async def upload_version(
    actor: Admin,
    request: Request,
    session: SessionDep,
    sync: Sync,
    name: Annotated[str, PathParam(pattern=MODEL_NAME)],
    version: Annotated[str, PathParam(pattern=VERSION)],
) -> UploadedVersion:
    """Add a model version from a self-contained archive (multipart: ``archive``,
    ``manifest``, optional ``eval``). It is validated in a child process with a time and
    memory limit; int8 (and on a GPU host fp16) variants are built and measured; the
    version is stored, registered and loaded by every replica. Audited. Nothing is kept
    when it is refused."""
    # Read only after the key was checked (the Admin dependency): the body is not parsed
    # for a caller who may not upload.
    async with request.form(max_files=3, max_fields=3) as form:
        served = await upload_from_form(request, session, actor, sync, name, version, form)
    registry = _registry(request)
    base = served[0].manifest
    skipped = (base.compression or {}).get("skipped_variants", [])
    return UploadedVersion(
        model=name,
        version=version,
        sha256=base.sha256,
        format=base.archive_format,
        variants=[_info(s, registry) for s in served],
        skipped=[SkippedVariant.model_validate(item) for item in skipped],
    )

"""Admin model management: the catalog (upload, load, unload, publish, default version) and
each replica's actual state. Every write changes the catalog, which every replica applies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from app.auth.deps import Admin, ProtectedRoute
from app.catalog import repository
from app.clock.deps import ClockDep
from app.config import request_settings
from app.db.session import SessionDep
from app.errors import error_schema
from app.inference import management
from app.inference.deps import catalog_sync
from app.inference.deps import registry as _registry
from app.inference.endpoints import _info
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

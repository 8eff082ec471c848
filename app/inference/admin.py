"""Admin model management: list, load, unload, choose the default version; no restart."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app.auth.deps import Admin, ProtectedRoute
from app.db.session import SessionDep
from app.errors import error_schema
from app.inference import management
from app.inference.deps import registry as _registry
from app.inference.endpoints import _info
from app.inference.schemas import ModelInfo, ModelList
from app.validation import MAX_VERSION, Text

router = APIRouter(prefix="/admin/models", tags=["models"], route_class=ProtectedRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_schema("Missing or invalid API key"),
    403: error_schema("The key lacks the admin scope"),
    404: error_schema("No such model or version"),
}


class DefaultVersion(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"version": "1"}]})

    version: Text = Field(min_length=1, max_length=MAX_VERSION)


@router.get("", responses=_ERRORS)
async def list_loaded(_: Admin, request: Request) -> ModelList:
    """Every loaded model, version and variant, available or not."""
    registry = _registry(request)
    return ModelList(data=[_info(s, registry) for s in registry.list()])


@router.post("/{name}/versions/{version}/load", responses=_ERRORS)
async def load_model(
    actor: Admin, request: Request, session: SessionDep, name: str, version: str
) -> ModelList:
    """Load every variant of name/version from the models directory (sha256-checked)."""
    registry = _registry(request)
    loaded = await management.load_model(session, actor, registry, name, version)
    return ModelList(data=[_info(s, registry) for s in loaded])


@router.post("/{name}/versions/{version}/unload", responses=_ERRORS)
async def unload_model(
    actor: Admin, request: Request, session: SessionDep, name: str, version: str
) -> ModelList:
    """New requests get 404 at once; requests already queued finish first."""
    registry = _registry(request)
    removed = await management.unload_model(session, actor, registry, name, version)
    return ModelList(data=[_info(s, registry) for s in removed])


@router.put("/{name}/default", responses=_ERRORS)
async def set_default_version(
    actor: Admin, request: Request, session: SessionDep, name: str, body: DefaultVersion
) -> ModelInfo:
    """Serve this version when a request names no version (every variant of it). Audited."""
    registry = _registry(request)
    served = await management.set_default_version(session, actor, registry, name, body.version)
    return _info(served, registry)

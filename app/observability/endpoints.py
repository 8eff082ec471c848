from __future__ import annotations

from typing import Protocol

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response

from app.auth.deps import ProtectedRoute
from app.db.engine import ping
from app.db.session import database
from app.observability.metrics import Metrics, exposition_registry

router = APIRouter(tags=["operations"], route_class=ProtectedRoute)


class LoadedModels(Protocol):
    """The model registry, as readiness sees it."""

    def readiness(self) -> tuple[bool, str]: ...


class OpsResources(Protocol):
    """What the operations endpoints read from the running app (``app.resources.State``)."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def registry(self) -> LoadedModels: ...


def ops_resources(request: HTTPConnection) -> OpsResources:
    resources: OpsResources = request.app.resources
    return resources


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Ledger unreachable, or a published default model not loaded"}},
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the ledger database answers, and every published variant of every model's
    default version that the catalog wants loaded is loaded on this replica."""
    checks: dict[str, str] = {}
    try:
        await ping(database(request).engine)
        checks["ledger"] = "ok"
    except Exception as exc:
        checks["ledger"] = f"unreachable: {type(exc).__name__}"
    models_ready, checks["models"] = ops_resources(request).registry.readiness()
    ready = checks["ledger"] == "ok" and models_ready
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


# HEAD too (some load balancers probe with it); one operation each in the OpenAPI document.
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry = exposition_registry(ops_resources(request).metrics)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

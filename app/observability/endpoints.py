from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.responses import JSONResponse, Response

from app.auth.deps import ProtectedRoute
from app.observability.metrics import exposition_registry

router = APIRouter(tags=["operations"], route_class=ProtectedRoute)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Ledger unreachable or no models"}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the ledger database answers and models are loaded."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            async with request.app.state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        checks["ledger"] = "ok"
    except Exception as exc:
        checks["ledger"] = f"unreachable: {type(exc).__name__}"
    loaded = request.app.state.registry.loaded
    checks["models"] = f"{loaded} loaded" if loaded else "none loaded"
    ready = checks["ledger"] == "ok" and loaded > 0
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


# HEAD too (some load balancers probe with it); one operation each in the OpenAPI document.
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry = exposition_registry(request.app.state.metrics)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

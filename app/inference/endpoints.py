from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import JSONResponse

from app.auth.deps import BEARER_SECURITY, Authenticated, ProtectedRoute, authenticate_request
from app.catalog.records import TensorSpec
from app.errors import error_schema, read_body
from app.inference.deps import Registry, inference_service
from app.inference.registry import ModelRegistry, ServedModel
from app.inference.schemas import (
    ModelInfo,
    ModelList,
    PredictRequest,
    PredictResponse,
    TensorInfo,
    VariantCard,
)
from app.limits.policy import RATELIMIT_HEADERS, RETRY_AFTER_HEADER
from app.limits.quota import SPEND_HEADERS
from app.validation import MAX_MODEL_NAME, MAX_VERSION

router = APIRouter(prefix="/v1", tags=["inference"], route_class=ProtectedRoute)

# Longest model name and version the /v1 routes accept (app/inference/hot.py defers longer
# ones to the framework, which answers with its validation error).

_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_schema("Missing, invalid, expired or revoked API key"),
    403: error_schema("The key lacks the scope, or the customer is suspended"),
}


class JSONBytes(JSONResponse):
    """JSON rendered by orjson. A JSONResponse, so OpenAPI types the 200 with the route's
    response model (any other Response class is documented as a string)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _tensor(t: TensorSpec) -> TensorInfo:
    return TensorInfo(
        name=t.name,
        shape=list(t.shape),
        dtype=t.dtype,
        range=list(t.range) if t.range is not None else None,
    )


def _info(served: ServedModel, registry: ModelRegistry) -> ModelInfo:
    m = served.manifest
    return ModelInfo(
        id=served.ref,
        name=m.name,
        variant=served.variant,
        version=m.version,
        versions=registry.versions(m.name),
        default_version=registry.default_version(m.name),
        available=served.available,
        unavailable_reason=served.unavailable_reason,
        state=served.state,
        published=m.published,
        unpublished_reason=m.unpublished_reason,
        task=m.task,
        description=m.description,
        preprocessing=m.preprocessing,
        license=m.license,
        device=served.device,
        graph=served.graph,
        inputs=[_tensor(t) for t in m.inputs],
        outputs=[_tensor(t) for t in m.outputs],
        labels=list(m.labels) if m.labels is not None else None,
        archive_format=m.archive_format,
        archive_sha256=m.sha256,
        dtype=m.dtype,
        requires_device=m.requires_device,
        size_bytes=m.size_bytes,
        metrics=dict(m.metrics),
        measured=dict(m.measured),
        compression=m.compression,
        variants=[
            VariantCard(
                id=v.ref,
                variant=v.variant,
                published=v.manifest.published,
                unpublished_reason=v.manifest.unpublished_reason,
                state=v.state,
                dtype=v.manifest.dtype,
                requires_device=v.manifest.requires_device,
                size_bytes=v.manifest.size_bytes,
                metrics=dict(v.manifest.metrics),
                measured=dict(v.manifest.measured),
                compression=v.manifest.compression,
            )
            for v in registry.list()
            if v.name == m.name and v.version == m.version
        ],
    )


@router.get("/models", responses=_AUTH_ERRORS)
async def list_models(_: Authenticated, registry: Registry) -> ModelList:
    """Every published model and variant at its default version: contract, held-out
    metrics, size, measured speed, and whether this server can run it."""
    return ModelList(
        data=[
            _info(s, registry)
            for s in registry.list()
            if s.version == registry.default_version(s.name) and s.manifest.published
        ]
    )


@router.get(
    "/models/{model}",
    responses={**_AUTH_ERRORS, 404: error_schema("Unknown model or version")},
)
async def get_model(
    _: Authenticated,
    registry: Registry,
    model: Annotated[str, Path(max_length=MAX_MODEL_NAME)],
    version: Annotated[str | None, Query(max_length=MAX_VERSION)] = None,
) -> ModelInfo:
    """One model (name or name:variant) at its default or the given version: contract,
    metrics, size, measured speed and whether this server can run it."""
    return _info(registry.find(model, version), registry)


def _with_headers(response: dict[str, Any], *headers: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for h in headers:
        merged.update(h)
    return {**response, "headers": merged}


# A metered answer's headers: rate limits (when the key has any), spend (when the plan has a
# cap); a 429 adds Retry-After.
METERED_OK_HEADERS = {**RATELIMIT_HEADERS, **SPEND_HEADERS}
PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": PredictResponse,
        "description": "The outputs, after the request's usage row is committed",
        "headers": METERED_OK_HEADERS,
    },
    **_AUTH_ERRORS,
    400: error_schema("The body is not valid JSON (invalid_json)"),
    404: error_schema("Unknown model or version"),
    402: _with_headers(
        error_schema("The plan's spend cap is reached (quota_exceeded)"), SPEND_HEADERS
    ),
    413: error_schema("Body or batch too large, or a batch over the key's items/minute"),
    415: error_schema("Compressed request body (Content-Encoding other than identity)"),
    429: _with_headers(
        error_schema("Rate limit exceeded; see Retry-After and x-ratelimit-* headers"),
        RATELIMIT_HEADERS,
        RETRY_AFTER_HEADER,
    ),
    422: error_schema("Inputs of the wrong shape or dtype, or not finite"),
    503: _with_headers(
        error_schema("The usage ledger is unavailable: no prediction is returned"),
        RETRY_AFTER_HEADER,
    ),
}


@router.post(
    "/models/{model}/predict",
    summary="Predict",
    response_model=PredictResponse,
    response_class=JSONBytes,
    responses=PREDICT_RESPONSES,
    openapi_extra={
        **BEARER_SECURITY,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
        },
    },
)
async def predict(
    request: Request,
    model: Annotated[str, Path(max_length=MAX_MODEL_NAME)],
    version: Annotated[str | None, Query(max_length=MAX_VERSION)] = None,
) -> JSONBytes:
    """Run the model on one item or a batch. Metered: the response is sent only after the
    request's usage row is committed to the ledger."""
    # The hot path: auth and the service are taken directly rather than through
    # dependencies, which cost a measurable share of a small model's request (docs/benchmarks).
    principal = await authenticate_request(request)
    body, headers = await inference_service(request).predict(
        principal,
        request_id=request.state.request_id,
        started_ns=request.state.started_ns,
        model=model,
        version=version,
        read_body=partial(read_body, request),
    )
    return JSONBytes(body, headers=headers)

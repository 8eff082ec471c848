"""The OpenAPI document is a contract a client can be generated from: every operation says
what it does, every body has an example, the metered answers are typed and their headers
declared, and every error a route can give is in its responses, in the app's error form."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from app.auth.deps import ProtectedRoute, needs_key
from app.main import create_app
from tests.conftest import make_settings

METERED = {
    ("post", "/v1/models/{model}/predict"),
    ("post", "/v2/models/{model}/infer"),
    ("post", "/v2/models/{model}/versions/{version}/infer"),
}
RATELIMIT = {
    f"x-ratelimit-{part}-{name}"
    for name in ("requests", "items")
    for part in ("limit", "remaining", "reset")
}
SPEND = {"x-usage-spend-period-to-date", "x-usage-spend-cap", "x-usage-currency"}


@pytest.fixture(scope="module")
def built() -> Any:
    # Only the document is read: no lifespan, no database.
    return create_app(make_settings("sqlite:///unused.db"))


@pytest.fixture(scope="module")
def document(built: Any) -> dict[str, Any]:
    doc: dict[str, Any] = built.openapi()
    return doc


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()
    ]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        found: dict[str, Any] = document
        for part in ref.removeprefix("#/").split("/"):
            found = found[part]
        return found
    return schema


def _headers(op: dict[str, Any], status: str) -> set[str]:
    return set(op["responses"].get(status, {}).get("headers", {}))


def test_every_operation_has_a_summary_and_a_description(document: dict[str, Any]) -> None:
    missing = [
        f"{method.upper()} {path}: {field}"
        for method, path, op in _operations(document)
        for field in ("summary", "description")
        if not str(op.get(field, "")).strip()
    ]
    assert missing == []


def test_every_request_body_has_an_example(document: dict[str, Any]) -> None:
    missing = []
    for method, path, op in _operations(document):
        body = op.get("requestBody")
        if body is None:
            continue
        media = body["content"].get("application/json")
        upload = body["content"].get("multipart/form-data")
        if media is None and upload is not None:
            # A file upload has no meaningful example: each part says what it must hold.
            parts = _resolve(document, upload["schema"]).get("properties", {})
            undocumented = [name for name, part in parts.items() if not part.get("description")]
            if not parts or undocumented:
                missing.append(f"{method.upper()} {path}: parts {undocumented or 'none'}")
            continue
        if media is None:
            missing.append(f"{method.upper()} {path}: no JSON body")
            continue
        schema = _resolve(document, media.get("schema", {}))
        if not (media.get("example") or media.get("examples") or schema.get("examples")):
            missing.append(f"{method.upper()} {path}")
    assert missing == []


@pytest.mark.parametrize(("method", "path"), sorted(METERED))
def test_metered_answers_are_typed_and_declare_their_headers(
    document: dict[str, Any], method: str, path: str
) -> None:
    op = document["paths"][path][method]
    ok = op["responses"]["200"]
    schema = ok["content"]["application/json"]["schema"]
    resolved = _resolve(document, schema)
    assert "$ref" in schema and resolved.get("type") == "object", schema
    assert resolved["properties"], "an untyped 200"
    assert _headers(op, "200") >= RATELIMIT | SPEND
    assert RATELIMIT | {"Retry-After"} <= _headers(op, "429")
    assert _headers(op, "402") >= SPEND
    assert "Retry-After" in _headers(op, "503")


def test_every_response_declares_the_request_id(document: dict[str, Any]) -> None:
    missing = [
        f"{method.upper()} {path} {status}"
        for method, path, op in _operations(document)
        for status, response in op["responses"].items()
        if "x-request-id" not in response.get("headers", {})
    ]
    assert missing == []


def _routes(built: Any) -> dict[tuple[str, str], APIRoute]:
    found = {}
    for context in iter_route_contexts(list(built.routes)):
        route = context.original_route
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in route.methods:
                found[(method.lower(), context.path_format)] = route
    return found


def test_protected_operations_document_401_and_403(built: Any, document: dict[str, Any]) -> None:
    routes = _routes(built)
    missing = []
    protected = 0
    for method, path, op in _operations(document):
        route = routes[(method, path)]
        if "security" in op or (isinstance(route, ProtectedRoute) and needs_key(route)):
            protected += 1
            missing += [
                f"{method.upper()} {path} {status}"
                for status in ("401", "403")
                if status not in op["responses"]
            ]
    assert protected > 40  # the admin, finance and inference routes
    assert missing == []


def test_body_operations_document_400_413_and_422(built: Any, document: dict[str, Any]) -> None:
    routes = _routes(built)
    missing = []
    for method, path, op in _operations(document):
        if routes[(method, path)].dependant.body_params or "requestBody" in op:
            assert "requestBody" in op, f"{method.upper()} {path}: body not documented"
            missing += [
                f"{method.upper()} {path} {status}"
                for status in ("400", "413", "422")
                if status not in op["responses"]
            ]
    assert missing == []


def test_error_responses_use_the_documented_error_schema(document: dict[str, Any]) -> None:
    """The app's error form (or, on /v2, the protocol's ``{"error": "..."}``), never FastAPI's
    ``HTTPValidationError``, which the app never sends."""
    v2_error = {"$ref": "#/components/schemas/V2Error"}
    wrong = []
    for method, path, op in _operations(document):
        for status, response in op["responses"].items():
            if int(status) < 400:
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            if schema == v2_error and path.startswith("/v2"):
                continue
            if path == "/readyz" or path == "/v2/health/ready":
                continue  # a readiness body, not an error
            if schema != {"$ref": "#/components/schemas/Error"}:
                wrong.append(f"{method.upper()} {path} {status}")
    assert wrong == []
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert set(error["properties"]["error"]["required"]) == {"type", "message"}
    assert "HTTPValidationError" not in document["components"]["schemas"]

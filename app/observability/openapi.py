"""The cross-cutting parts of the OpenAPI document, added once rather than on 50 decorators.

FastAPI builds each operation from its decorator; what every route shares is added here, from
the routes themselves:

* ``x-request-id`` on every response (the request middleware sends it on all of them);
* 401 and 403 on every route that needs a key (its dependencies require one, see
  :class:`app.auth.deps.ProtectedRoute`; the hot routes declare ``security`` themselves);
* 400 ``invalid_json``, 413 and 422 on every route with a request body;
* FastAPI's own 422 (``HTTPValidationError``) replaced by the error body the app really sends
  (:func:`app.errors.error_schema`, with ``details``);
* the ``Error`` component that every error response of the app's own form refers to.

A status a route documents itself is kept as it is (the V2 routes document their own error
form).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from app.auth.deps import ProtectedRoute, needs_key
from app.errors import ERROR_BODY_SCHEMA, ERROR_COMPONENT, error_schema

REQUEST_ID_HEADER: dict[str, Any] = {
    "x-request-id": {
        "description": "This request's id: in the access log, the ledger and error bodies",
        "schema": {"type": "string"},
    }
}

_AUTH_ERRORS = {
    "401": "Missing, invalid, expired or revoked API key",
    "403": "The key lacks the scope, or the customer is suspended",
}
_BODY_ERRORS = {
    "400": "The body is not valid JSON (invalid_json)",
    "413": "The request body is too large",
    "422": "The request failed validation (invalid_request; see details)",
}
_VALIDATION_REF = "#/components/schemas/HTTPValidationError"


def _operations(routes: Iterable[BaseRoute]) -> dict[tuple[str, str], APIRoute]:
    found: dict[tuple[str, str], APIRoute] = {}
    for context in iter_route_contexts(list(routes)):
        route = context.original_route
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in route.methods or ():
                found[(method.lower(), str(context.path_format))] = route
    return found


def _is_fastapi_422(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref") == _VALIDATION_REF)


def complete_openapi(document: dict[str, Any], routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """Add the shared responses and headers to ``document`` (changed in place, returned)."""
    by_operation = _operations(routes)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            route = by_operation.get((method, path))
            responses: dict[str, Any] = operation.setdefault("responses", {})
            needs_auth = "security" in operation or (
                isinstance(route, ProtectedRoute) and needs_key(route)
            )
            has_body = "requestBody" in operation
            if needs_auth:
                for status, description in _AUTH_ERRORS.items():
                    responses.setdefault(status, error_schema(description))
            if has_body:
                for status, description in _BODY_ERRORS.items():
                    responses.setdefault(status, error_schema(description))
            for status, response in list(responses.items()):
                if status == "422" and _is_fastapi_422(response):
                    responses[status] = error_schema(_BODY_ERRORS["422"])
            for response in responses.values():
                headers = response.setdefault("headers", {})
                for name, header in REQUEST_ID_HEADER.items():
                    headers.setdefault(name, header)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_COMPONENT] = ERROR_BODY_SCHEMA
    if _VALIDATION_REF.rsplit("/", 1)[1] in schemas and _VALIDATION_REF not in str(document):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return document

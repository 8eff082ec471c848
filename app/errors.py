"""The one error tree and its handler.

Every failure a user can cause is an :class:`AppError` subclass with its own status and
machine-readable ``type``; the handler renders ``{"error": {"type", "message", "request_id"}}``.
Domain errors live next to their service and subclass the bases here.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("tollgate.errors")


class AppError(Exception):
    status_code: int = 400
    type: str = "bad_request"
    headers: dict[str, str] | None = None

    def __init__(
        self, message: str, *, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if headers is not None:
            self.headers = {**(type(self).headers or {}), **headers}


class BadRequest(AppError):
    status_code = 400
    type = "bad_request"


class InvalidJSON(AppError):
    status_code = 400
    type = "invalid_json"


class Unauthorized(AppError):
    status_code = 401
    type = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(AppError):
    status_code = 403
    type = "forbidden"


class NotFound(AppError):
    status_code = 404
    type = "not_found"


class PayloadTooLarge(AppError):
    status_code = 413
    type = "payload_too_large"


class Unprocessable(AppError):
    status_code = 422
    type = "invalid_request"


class ClientClosedRequest(AppError):
    """The client went away (or the server's body timeout closed it) before its request
    body arrived: nginx's 499. Nobody reads the answer, and the request, never whole, is
    not metered."""

    status_code = 499
    type = "client_closed_request"


class ServiceUnavailable(AppError):
    status_code = 503
    type = "service_unavailable"
    headers = {"Retry-After": "1"}


def error_body(
    type_: str, message: str, request_id: str | None, details: Any = None
) -> dict[str, Any]:
    err: dict[str, Any] = {"type": type_, "message": message, "request_id": request_id}
    if details is not None:
        err["details"] = details
    return {"error": err}


def error_response(
    status_code: int,
    type_: str,
    message: str,
    request_id: str | None,
    *,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = orjson.dumps(error_body(type_, message, request_id, details), default=str)
    return Response(body, status_code, headers=headers, media_type="application/json")


def app_error_response(exc: AppError, request_id: str | None) -> Response:
    return error_response(
        exc.status_code,
        exc.type,
        exc.message,
        request_id,
        details=exc.details,
        headers=exc.headers,
    )


class UnsupportedEncoding(AppError):
    status_code = 415
    type = "unsupported_content_encoding"


async def read_body(request: Request) -> bytes:
    """The whole request body, read once, straight from ``receive`` (Starlette's
    ``body()`` goes through an async generator, measurable on the hot path). A compressed
    body (any ``Content-Encoding`` but identity) is a 415: it would otherwise be parsed as
    if it were plain. A client that disconnects first is a 499, not a bug."""
    for name, value in request.scope["headers"]:
        if name == b"content-encoding":
            encoding = value.decode("latin-1").strip().lower()
            if encoding not in ("", "identity"):
                raise UnsupportedEncoding(f"Content-Encoding '{encoding}' is not supported")
    receive = request.receive
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientClosedRequest("the client closed the connection")
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# The body of every error answer (except on /v2, whose protocol has its own), as the
# OpenAPI component ``Error``; ``app.observability.openapi`` adds it to the document.
ERROR_COMPONENT = "Error"
ERROR_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": ERROR_COMPONENT,
    "description": "An error: a machine-readable type, a message, the request id.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "examples": ["invalid_request"]},
                "message": {"type": "string"},
                "request_id": {"type": ["string", "null"]},
                "details": {"description": "Machine-readable specifics, when any"},
            },
            "required": ["type", "message"],
        }
    },
    "required": ["error"],
}


def error_schema(description: str) -> dict[str, Any]:
    """An OpenAPI ``responses=`` entry for an error status (the ``Error`` body)."""
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}
        },
    }


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def install_error_handlers(app: FastAPI) -> None:
    async def on_app_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AppError)
        return app_error_response(exc, _request_id(request))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        broken = next((e for e in exc.errors() if e.get("type") == "json_invalid"), None)
        if broken is not None:  # the same answer as the predict routes give
            reason = (broken.get("ctx") or {}).get("error", "malformed")
            return app_error_response(
                InvalidJSON(f"the request body is not valid JSON: {reason}"), _request_id(request)
            )
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return error_response(
            422,
            "invalid_request",
            "request validation failed",
            _request_id(request),
            details=details,
        )

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc.__cause__, AppError):
            # FastAPI's body parsing turns any error while reading the body (e.g. the body
            # limit, raised from receive) into a 400 "error parsing the body": answer the cause.
            return app_error_response(exc.__cause__, _request_id(request))
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # FastAPI's "There was an error parsing the body" (UnicodeDecodeError: not UTF-8).
            return app_error_response(
                InvalidJSON("the request body is not valid JSON (not UTF-8 text)"),
                _request_id(request),
            )
        type_ = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code,
            type_,
            str(exc.detail),
            _request_id(request),
            headers=dict(exc.headers or {}),
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # Only bugs get here; the tests treat any 500 as a failure.
        log.exception("unhandled error", extra={"request_id": _request_id(request)})
        return error_response(500, "internal_error", "internal error", _request_id(request))

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)

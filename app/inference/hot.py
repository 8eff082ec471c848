"""The hot routes, served without the framework's per-request machinery.

For a small model, FastAPI's middleware stack, routing and dependency solving were about half
of a request's CPU time (py-spy, docs/benchmarks.md). The inference routes are therefore
matched here, in front of the framework, and their endpoint functions (the same functions
FastAPI declares, documents and can serve) are called directly with a Starlette ``Request``.
What the framework would add is kept: the request-context middleware (request id, body limit,
access log) wraps them, and errors render exactly as the app's exception handlers render
them. Anything unusual (an over-long model name or version, another query parameter, a
non-POST method) is left to the framework, which answers it the usual way.

``TOLLGATE_HOT_PATH=false`` turns this off; a parity test runs the same requests both ways.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.errors import AppError, app_error_response, error_response
from app.validation import MAX_MODEL_NAME, MAX_VERSION

log = logging.getLogger("tollgate.errors")

Endpoint = Callable[..., Awaitable[Response]]

_V1_PREDICT = re.compile(r"/v1/models/([^/]+)/predict")
_V2_INFER = re.compile(r"/v2/models/([^/]+)/infer")
_V2_INFER_VERSION = re.compile(r"/v2/models/([^/]+)/versions/([^/]+)/infer")
_SCOPE_KEY = "tollgate.hot"


class HotRoutes:
    """Matches the hot routes; ``app`` serves a matched request (wrap it in the request
    context middleware)."""

    def __init__(
        self, v1_predict: Endpoint, v2_infer: Endpoint, v2_infer_version: Endpoint
    ) -> None:
        self._v1_predict = v1_predict
        self._v2_infer = v2_infer
        self._v2_infer_version = v2_infer_version

    def match(self, scope: Scope) -> bool:
        """True (and the route noted in ``scope``) when this request is a hot route with
        arguments the declared route would accept unchanged."""
        if scope["method"] != "POST":
            return False
        path: str = scope["path"]
        query: bytes = scope["query_string"]
        if path.startswith("/v1/"):
            m = _V1_PREDICT.fullmatch(path)
            if m is None or len(m[1]) > MAX_MODEL_NAME:
                return False
            version: str | None = None
            if query:
                params = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
                if any(k != "version" for k, _ in params):
                    return False
                version = params[-1][1] if params else None
                if version is not None and len(version) > MAX_VERSION:
                    return False
            scope[_SCOPE_KEY] = (self._v1_predict, {"model": m[1], "version": version})
            return True
        if path.startswith("/v2/") and not query:
            m = _V2_INFER.fullmatch(path)
            if m is not None:
                scope[_SCOPE_KEY] = (self._v2_infer, {"model": m[1]})
                return True
            m = _V2_INFER_VERSION.fullmatch(path)
            if m is not None:
                scope[_SCOPE_KEY] = (self._v2_infer_version, {"model": m[1], "version": m[2]})
                return True
        return False

    @staticmethod
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        endpoint, kwargs = scope.pop(_SCOPE_KEY)
        request = Request(scope, receive)
        try:
            response = await endpoint(request, **kwargs)
        except AppError as exc:
            response = app_error_response(exc, scope["state"].get("request_id"))
        except Exception:
            request_id = scope["state"].get("request_id")
            log.exception("unhandled error", extra={"request_id": request_id})
            response = error_response(500, "internal_error", "internal error", request_id)
        await response(scope, receive, send)

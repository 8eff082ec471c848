"""Pure ASGI middleware on every HTTP request: request id, body-size limit, access log,
and the response count by status (tollgate_http_responses_total: 401s included, which never
reach the inference service's own counters).

Pure ASGI rather than ``BaseHTTPMiddleware`` because it sits on the hot path.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, error_response
from app.observability.ids import new_request_id
from app.observability.logging import log_access
from app.observability.metrics import ResponseCounter


class BodyTooLarge(PayloadTooLarge):
    type = "body_too_large"


def is_upload(scope: Scope) -> bool:
    """``POST /admin/models/{name}/versions/{version}`` or the console's upload form: a
    model archive upload."""
    if scope["method"] != "POST":
        return False
    if scope["path"] == "/console/models/upload":
        return True
    parts = scope["path"].split("/")
    return len(parts) == 6 and parts[1:3] == ["admin", "models"] and parts[4] == "versions"


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        responses: ResponseCounter | None = None,
        upload_body_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Model uploads (POST /admin/models/{name}/versions/{version}) carry an archive
        # far above a prediction's size: they get their own limit (the archive, an eval
        # set and the manifest); the archive's own limit is checked as it is read.
        self.upload_body_bytes = upload_body_bytes or max_body_bytes
        self.responses = responses or ResponseCounter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_ns = time.perf_counter_ns()
        request_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started_ns"] = started_ns
        header_id = request_id.encode()
        status = 500
        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = message["status"]
                responded = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", header_id)]
            await send(message)

        limit = self.upload_body_bytes if is_upload(scope) else self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    response = error_response(
                        413,
                        BodyTooLarge.type,
                        f"request body exceeds {limit} bytes",
                        request_id,
                    )
                    await response(scope, receive, send_with_id)
                    log_access(scope["method"], scope["path"], 413, request_id, started_ns)
                    self.responses.count(413)
                    return
                break

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"request body exceeds {limit} bytes")
            return message

        failed = False
        try:
            await self.app(scope, limited_receive, send_with_id)
        except Exception:
            failed = True  # the outermost error middleware answers 500
            raise
        finally:
            log_access(scope["method"], scope["path"], status, request_id, started_ns)
            if responded or failed:
                self.responses.count(status)

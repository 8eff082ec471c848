"""The HTTP server's own guard: header limits and read timeouts, before any route or key.

uvicorn's httptools protocol accepts headers of any size and count (1 GiB of headers was
buffered and answered 200) and has no read timeout (a request with partial headers, or one
byte of a 1,000-byte body, held its connection open indefinitely). ``GuardedHttpProtocol``
is that protocol with limits, all from settings:

- a header line (name + value) over ``max_header_bytes``, the request line and headers
  together over ``max_headers_total_bytes``, or more than ``max_header_count`` headers: 431.
  The bytes of an unfinished header block are counted as they arrive, so at most the limit
  plus one socket read (256 KiB) is ever buffered, whatever the client sends;
- headers not complete within ``header_timeout_s`` of the connection (or of the request's
  first byte on a kept-alive connection): 408; a body not complete within ``body_timeout_s``
  of its headers: 408, and the application sees the client disconnect (no ledger row: the
  request was never whole). A request only notes its deadlines; one sweep per server
  checks them (a timeout fires up to a quarter of it, at most 1 s, late).

Each refusal is the app's JSON error body with ``Connection: close``. The connection then
closes the way nginx's lingering close does: our side is shut for writing, what the client
still sends is read and dropped (never buffered) for at most ``LINGER_S``, so the client can
read the answer instead of a connection reset.

``tollgate serve`` runs uvicorn with ``http="app.server:GuardedHttpProtocol"``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import Settings, get_settings
from app.errors import error_body

LINGER_S = 2.0
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_header_bytes: int
    max_headers_total_bytes: int
    max_header_count: int
    header_timeout_s: float
    body_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers_total_bytes=settings.max_headers_total_bytes,
            max_header_count=settings.max_header_count,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
        )


class _Refused(Exception):
    """Raised from a parser callback; ``data_received`` answers it."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message


def refusal(status: int, type_: str, message: str) -> bytes:
    """A complete HTTP/1.1 response with the app's JSON error body; the connection closes."""
    body = orjson.dumps(error_body(type_, message, None))
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))
    )
    return head + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header limits and read timeouts (module doc)."""

    # Tests set this on a subclass; a served process reads its settings.
    limits: ClassVar[ServerLimits | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = self.limits or ServerLimits.from_settings(get_settings())
        self._in_headers = True  # waiting for (the rest of) a request's header block
        self._header_bytes = 0
        # Deadlines (loop time) instead of a timer per request: one sweep per server checks
        # every connection (_sweep), so a request costs two float stores, not two timers.
        self._header_deadline: float | None = None
        self._body_deadline: float | None = None
        self._refused = False

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline = self.loop.time() + self._limits.header_timeout_s
        key = id(self.connections)
        if key not in _SWEEPING:  # the first connection of this server starts its sweep
            _SWEEPING.add(key)
            every = _sweep_interval(self._limits)
            self.loop.call_later(every, _sweep, self.loop, self.connections, key, every)

    def connection_lost(self, exc: Exception | None) -> None:
        self._header_deadline = self._body_deadline = None
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if self._refused:  # the client has read our answer and closed: done lingering
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and drop
        if self._in_headers:
            self._header_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # as uvicorn: the app serves no WebSocket
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.status, refused.type, refused.message)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_headers and self._header_bytes > self._limits.max_headers_total_bytes:
            self._refuse(
                431,
                "headers_too_large",
                f"the request line and headers exceed {self._limits.max_headers_total_bytes} bytes",
            )

    # -- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        if self._header_deadline is None:
            self._header_deadline = self.loop.time() + self._limits.header_timeout_s

    def on_headers_complete(self) -> None:
        # Checked once per request, not per header (a Python call per header line costs on
        # the hot path); the byte count above already bounds what the parser holds.
        headers = self.headers
        if len(headers) > self._limits.max_header_count:
            raise _Refused(
                431, "too_many_headers", f"more than {self._limits.max_header_count} headers"
            )
        longest = self._limits.max_header_bytes
        for name, value in headers:
            if len(name) + len(value) > longest:
                raise _Refused(431, "header_too_large", f"a header exceeds {longest} bytes")
        self._in_headers = False
        self._header_bytes = 0
        self._header_deadline = None
        super().on_headers_complete()
        if not self.pipeline and self._expects_body():
            self._body_deadline = self.loop.time() + self._limits.body_timeout_s

    def on_message_complete(self) -> None:
        self._body_deadline = None
        super().on_message_complete()

    # -- helpers -----------------------------------------------------------------------

    def _expects_body(self) -> bool:
        for name, value in self.headers:
            if name == b"content-length":
                return value.strip() not in (b"", b"0")
            if name == b"transfer-encoding":
                return True
        return False

    def check_deadlines(self, now: float) -> None:
        """Called by the server's sweep: refuse what has waited too long."""
        if self._header_deadline is not None and now >= self._header_deadline:
            self._headers_timed_out()
        elif self._body_deadline is not None and now >= self._body_deadline:
            self._body_timed_out()

    def _headers_timed_out(self) -> None:
        self._header_deadline = None
        self._refuse(
            408,
            "request_timeout",
            f"the request headers did not arrive within {self._limits.header_timeout_s:g} s",
        )

    def _body_timed_out(self) -> None:
        self._body_deadline = None
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self.transport.close()  # the app answered already; just stop waiting
            return
        if cycle is not None:  # the application sees the client go away
            cycle.disconnected = True  # its receive() says http.disconnect, its send() is dropped
            cycle.message_event.set()
        self._refuse(
            408,
            "request_timeout",
            f"the request body did not arrive within {self._limits.body_timeout_s:g} s",
        )

    def _refuse(self, status: int, type_: str, message: str) -> None:
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._header_deadline = self._body_deadline = None
        self.transport.write(refusal(status, type_, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


# Servers (their connection sets, by id) whose deadline sweep is running.
_SWEEPING: set[int] = set()


def _sweep_interval(limits: ServerLimits) -> float:
    """How often the deadlines are checked: a timeout fires at most this late."""
    return min(1.0, limits.header_timeout_s / 4, limits.body_timeout_s / 4)


def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any], key: int, every: float) -> None:
    """Check every connection's deadlines; go on while the server has connections (the next
    connection starts a new sweep otherwise)."""
    now = loop.time()
    guarded = [c for c in connections if isinstance(c, GuardedHttpProtocol)]
    for connection in guarded:
        connection.check_deadlines(now)
    if guarded:
        loop.call_later(every, _sweep, loop, connections, key, every)
    else:
        _SWEEPING.discard(key)

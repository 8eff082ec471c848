"""The HTTP server's guard (app/server.py), over real sockets against the real app served
by uvicorn: header limits answer 431 before any key is looked at, slow headers or bodies
answer 408, and a body that never arrives costs no ledger row."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.engine import Engine

from app.config import Settings
from app.db.engine import build_engine, build_sessionmaker
from app.keys.schemas import Scope
from app.keys.service import create_key
from app.main import create_app
from app.server import GuardedHttpProtocol, ServerLimits

LIMITS = ServerLimits(
    max_header_bytes=2048,
    max_headers_total_bytes=8192,
    max_header_count=20,
    header_timeout_s=0.5,
    body_timeout_s=0.5,
)


class _TestProtocol(GuardedHttpProtocol):
    limits = LIMITS


class _Served:
    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, http=_TestProtocol, log_config=None, lifespan="on"
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> int:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            assert self.thread.is_alive(), "server thread died"
            time.sleep(0.05)
        sock = self.server.servers[0].sockets[0]
        return int(sock.getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[_Served, int]]:
    s = _Served(settings)
    port = s.start()
    try:
        yield s, port
    finally:
        s.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return status, headers, body


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return True


def _error(body: bytes) -> dict[str, object]:
    doc = json.loads(body)
    assert set(doc["error"]) >= {"type", "message"}
    return doc["error"]  # type: ignore[no-any-return]


PREDICT = b"POST /v1/models/linreg/predict HTTP/1.1\r\nHost: t\r\n"


def test_one_oversized_header_is_431_before_the_key(served: tuple[_Served, int]) -> None:
    _, port = served
    with _connect(port) as sock:  # no key: without the guard this would be a 401
        sock.sendall(PREDICT + b"X-Big: " + b"a" * 3000 + b"\r\nContent-Length: 0\r\n\r\n")
        status, headers, body = _read_response(sock)
        assert status == 431
        assert headers["connection"] == "close"
        assert headers["content-type"] == "application/json"
        assert _error(body)["type"] == "header_too_large"
        assert _closed(sock)


def test_too_many_headers_is_431(served: tuple[_Served, int]) -> None:
    _, port = served
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(21))
    with _connect(port) as sock:
        sock.sendall(PREDICT + many + b"\r\n")
        status, _, body = _read_response(sock)
        assert status == 431
        assert _error(body)["type"] == "too_many_headers"


def test_headers_within_the_limits_are_served(served: tuple[_Served, int]) -> None:
    _, port = served
    fine = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 300) for i in range(15))
    with _connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + fine + b"\r\n")
        status, _, _ = _read_response(sock)
        assert status == 200


def test_an_endless_header_block_is_cut_at_the_total_limit(
    served: tuple[_Served, int],
) -> None:
    """A header block that never ends is refused once it passes the total limit, while the
    client is still sending, and the client can still read the answer (lingering close)."""
    _, port = served
    with _connect(port) as sock:
        sock.sendall(PREDICT + b"X-Long: ")  # one header line that never ends
        sent = 0
        try:
            while sent < 1_000_000:
                sock.sendall(b"q" * 1024)
                sent += 1024
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = _read_response(sock)
        assert status == 431
        assert _error(body)["type"] == "headers_too_large"


def test_slow_headers_are_408(served: tuple[_Served, int]) -> None:
    _, port = served
    with _connect(port) as sock:
        sock.sendall(PREDICT + b"X-Partial: ")
        status, _, body = _read_response(sock)  # waits for the 0.5 s header timeout
        assert status == 408
        assert _error(body)["type"] == "request_timeout"
        assert _closed(sock)


def test_an_idle_connection_is_closed_by_the_header_timeout(
    served: tuple[_Served, int],
) -> None:
    _, port = served
    with _connect(port) as sock:
        status, _, _ = _read_response(sock)  # sends nothing at all
        assert status == 408
        assert _closed(sock)


async def test_a_body_that_never_arrives_is_408_and_not_metered(
    served: tuple[_Served, int], settings: Settings, pg_sync: object
) -> None:
    _, port = served
    assert isinstance(pg_sync, Engine)
    # A key in the served app's database (its sessionmaker lives on the server's loop).
    engine = build_engine(settings.database_url)
    async with build_sessionmaker(engine)() as session, session.begin():
        key = await create_key(
            session, settings.secret_key, customer_name="slow", scopes=[Scope.predict]
        )
    await engine.dispose()

    def slow_body() -> tuple[int, bytes]:
        with _connect(port) as sock:
            sock.sendall(
                PREDICT
                + b"Authorization: Bearer "
                + key.secret.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            status, _, body = _read_response(sock)
            assert _closed(sock)
            return status, body

    status, body = await asyncio.to_thread(slow_body)
    assert status == 408
    assert _error(body)["type"] == "request_timeout"

    def complete_request() -> int:
        with _connect(port) as sock:
            payload = b'{"inputs": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]}'
            sock.sendall(
                PREDICT
                + b"Authorization: Bearer "
                + key.secret.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload)
                + payload
            )
            return _read_response(sock)[0]

    # A whole request after it is served and metered: the ledger holds exactly that one.
    assert await asyncio.to_thread(complete_request) == 200
    with pg_sync.connect() as conn:
        statuses = [r[0] for r in conn.execute(text("SELECT status_code FROM usage_events"))]
    assert statuses == [200]

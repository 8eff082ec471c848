"""The Python load generator the GPU benchmark uses where wrk is absent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scripts.loadgen import http_request, run_load


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the servers under test
    seen = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Handler.seen += 1
        status = 503 if body == b"fail" else 200
        reply = b'{"ok": true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def test_counts_requests_latencies_and_errors(port: int) -> None:
    _Handler.seen = 0
    ok = run_load(port, http_request("/p", b"{}", {"X-Key": "k"}), 4, 0.5, processes=2)
    assert ok.requests > 0 and ok.non_2xx == 0
    assert ok.requests <= _Handler.seen  # every counted answer was served
    assert 0 < ok.p50_ms <= ok.p99_ms
    assert ok.rps == pytest.approx(ok.requests / 0.5)
    failing = run_load(port, http_request("/p", b"fail", {}), 2, 0.3, processes=1)
    assert failing.requests > 0 and failing.non_2xx == failing.requests

"""JSON logs through the queue listener, including the access log's tuple fast path."""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Iterator

import orjson
import pytest

from app.observability import logging as tg_logging


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """configure_logging writing to a buffer; the root logger and module state restored."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = (
        logging._srcfile,
        logging.logThreads,
        logging.logProcesses,
        logging.logMultiprocessing,
    )
    tg_logging.configure_logging("INFO")
    try:
        yield stream
    finally:
        tg_logging._stop_listener()
        root.handlers[:] = handlers
        root.setLevel(level)
        (
            logging._srcfile,
            logging.logThreads,
            logging.logProcesses,
            logging.logMultiprocessing,
        ) = saved


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    assert tg_logging._listener is not None
    tg_logging._stop_listener()  # writes out everything queued, then returns
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_access_log_goes_through_the_listener_as_json(json_logs: io.StringIO) -> None:
    started = time.perf_counter_ns()
    tg_logging.log_access("POST", "/v1/models/linreg/predict", 200, "rid-1", started)
    logging.getLogger("tollgate.test").warning("other", extra={"detail": 3})
    access, other = _lines(json_logs)
    assert access["logger"] == "tollgate.access"
    assert access["level"] == "info"
    assert access["msg"] == "request"
    assert (access["method"], access["path"], access["status"], access["request_id"]) == (
        "POST",
        "/v1/models/linreg/predict",
        200,
        "rid-1",
    )
    assert isinstance(access["duration_ms"], float) and access["duration_ms"] >= 0
    assert isinstance(access["ts"], str) and access["ts"].startswith("20")
    assert "thread" not in access and "process" not in access
    assert (other["logger"], other["msg"], other["detail"]) == ("tollgate.test", "other", 3)


def test_access_log_respects_the_level(json_logs: io.StringIO) -> None:
    logging.getLogger().setLevel("WARNING")
    tg_logging.log_access("POST", "/x", 200, "rid-2", time.perf_counter_ns())
    assert _lines(json_logs) == []


def test_access_line_matches_the_formatter_for_the_same_record(json_logs: io.StringIO) -> None:
    """The tuple fast path and JsonFormatter give the same line for the same request."""
    created = time.time()
    line = tg_logging._AccessFormatter(tg_logging.JsonFormatter())(
        (created, "POST", "/v1/x", 201, "rid-3", 1.5)
    )
    record = logging.LogRecord("tollgate.access", logging.INFO, "", 0, "request", None, None)
    record.created = created
    record.__dict__.update(
        request_id="rid-3", method="POST", path="/v1/x", status=201, duration_ms=1.5
    )
    assert orjson.loads(line) == orjson.loads(tg_logging.JsonFormatter().format(record))


class _CountingStream(io.StringIO):
    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_queued_lines_are_written_together_and_a_bad_record_does_not_stop_the_log(
    json_logs: io.StringIO,
) -> None:
    tg_logging._stop_listener()
    stream = _CountingStream()
    records = tg_logging._Buffer()
    for i in range(50):
        records.append((time.time(), "POST", "/p", 200, f"rid-{i}", 0.1))
    bad = logging.LogRecord("tollgate.test", logging.ERROR, "", 0, "%d", ("not a number",), None)
    records.put_nowait(bad)  # what logging's QueueHandler calls
    records.append((time.time(), "POST", "/p", 200, "rid-last", 0.1))
    writer = tg_logging._Writer(records, stream)
    writer.start()  # everything is already buffered: one drain, one write
    writer.stop()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry.get("request_id") for entry in lines if entry["logger"] == "tollgate.access"] == [
        *(f"rid-{i}" for i in range(50)),
        "rid-last",
    ]
    (error,) = [entry for entry in lines if entry["logger"] == "tollgate.logging"]
    assert error["level"] == "error" and "TypeError" in error["error"]
    assert stream.writes == 1


def test_the_writer_is_not_woken_per_line_and_flushes_on_its_interval() -> None:
    stream = _CountingStream()
    records = tg_logging._Buffer()
    writer = tg_logging._Writer(records, stream, interval_s=0.2)
    writer.start()
    try:
        for i in range(20):
            records.append((time.time(), "POST", "/p", 200, f"rid-{i}", 0.1))
        time.sleep(0.05)
        assert stream.writes == 0  # lines wait for the next flush
        deadline = time.monotonic() + 5
        while stream.writes == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stream.writes == 1
        assert len(stream.getvalue().splitlines()) == 20
    finally:
        writer.stop()

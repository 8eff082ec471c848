"""Structured JSON logs. Payloads and API keys are never passed to a logger.

Records are appended to a buffer and formatted and written by a writer thread, so the event
loop never blocks on (or formats for) stderr. The access log (one line per request) skips
the ``LogRecord`` altogether: the event loop appends a tuple and the writer turns it into
the same JSON line directly.

The writer is never woken per line: it wakes every ``FLUSH_INTERVAL_S`` (50 ms), takes
everything buffered and writes it with one call. Waking a blocked thread for each line
costs the event loop a preemption and a GIL hand-back when both share a core: on the
benchmark's pinned server this cut context switches per S3 binary request from 7.7 to 5.0
and CPU per request by 3-6% (docs/benchmarks.md). A line therefore reaches stderr up to
50 ms after it was logged; a normal exit (atexit) or :func:`_stop_listener` writes out
everything buffered.
"""

from __future__ import annotations

import atexit
import collections
import logging
import logging.handlers
import sys
import threading
import time
from typing import Any, TextIO

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}
_listener: _Writer | None = None
_records: _Buffer | None = None
access_log = logging.getLogger("tollgate.access")

# An access-log entry as enqueued: (time, method, path, status, request_id, duration_ms)
_Access = tuple[float, str | None, str | None, int, str, float]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class _AccessFormatter:
    """An access tuple to the JSON line ``JsonFormatter`` would give its ``LogRecord``."""

    def __init__(self, formatter: JsonFormatter) -> None:
        self._converter = formatter.converter
        self._second = -1
        self._ts = ""

    def __call__(self, entry: _Access) -> str:
        created, method, path, status, request_id, duration_ms = entry
        second = int(created)
        if second != self._second:  # one strftime per second, not per line
            self._second = second
            self._ts = time.strftime("%Y-%m-%dT%H:%M:%S", self._converter(created))
        return orjson.dumps(
            {
                "ts": self._ts,
                "level": "info",
                "logger": access_log.name,
                "msg": "request",
                "request_id": request_id,
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": duration_ms,
            }
        ).decode()


def log_access(
    method: str | None, path: str | None, status: int, request_id: str, started_ns: int
) -> None:
    """One access-log line for a finished request (never the key or the payload)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    duration_ms = round((time.perf_counter_ns() - started_ns) / 1e6, 3)
    if _records is not None:
        _records.append((time.time(), method, path, status, request_id, duration_ms))
        return
    access_log.info(
        "request",
        extra={
            "request_id": request_id,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
        },
    )


def _unformattable(exc: Exception) -> str:
    return orjson.dumps(
        {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "level": "error",
            "logger": "tollgate.logging",
            "msg": "a log record could not be formatted",
            "error": f"{type(exc).__name__}: {exc}"[:200],
        }
    ).decode()


FLUSH_INTERVAL_S = 0.05


class _Buffer(collections.deque[Any]):
    """Appending never wakes the writer (``deque.append`` is atomic); ``put_nowait`` is the
    name ``logging.handlers.QueueHandler`` enqueues with."""

    def put_nowait(self, item: Any) -> None:
        self.append(item)


class _Writer:
    """The thread that formats buffered records and writes them to the stream."""

    def __init__(
        self, records: _Buffer, stream: TextIO, interval_s: float = FLUSH_INTERVAL_S
    ) -> None:
        self._records = records
        self._stream = stream
        self._interval_s = interval_s
        self._formatter = JsonFormatter()
        self._access = _AccessFormatter(self._formatter)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write out everything buffered before this call, then end the thread."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        records, lines = self._records, []
        while records:
            item = records.popleft()
            try:
                if isinstance(item, tuple):
                    lines.append(self._access(item))
                else:
                    lines.append(self._formatter.format(item))
            except Exception as exc:  # one bad record must not stop the log
                lines.append(_unformattable(exc))
        if lines:
            try:
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()
            except (OSError, ValueError):  # closed or broken stream: nothing to do
                pass


class _EnqueueHandler(logging.handlers.QueueHandler):
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The stock prepare() formats the message eagerly; leave that to the listener.
        return record


def _stop_listener() -> None:
    """Write out what is queued and stop the listener thread (idempotent)."""
    global _listener, _records
    listener, _listener, _records = _listener, None, None
    if listener is not None:
        listener.stop()


atexit.register(_stop_listener)


def configure_logging(level: str) -> None:
    global _listener, _records
    # The JSON lines never show the caller's file/line, thread or process: skip computing
    # them for every record (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    _stop_listener()
    records = _Buffer()
    _listener = _Writer(records, sys.stderr)
    _records = records
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [_EnqueueHandler(records)]  # type: ignore[arg-type]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").disabled = True

"""Structured JSON logs. Payloads and API keys are never passed to a logger.

Records are handed to a queue and formatted and written by a listener thread, so the event
loop never blocks on (or formats for) stderr. The access log (one line per request) skips
even the ``LogRecord``: the event loop enqueues a tuple and the listener builds the record.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}
_listener: logging.handlers.QueueListener | None = None
_records: queue.SimpleQueue[Any] | None = None
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


def _access_record(entry: _Access) -> logging.LogRecord:
    created, method, path, status, request_id, duration_ms = entry
    record = logging.LogRecord(access_log.name, logging.INFO, "", 0, "request", None, None)
    record.created = created
    record.request_id = request_id
    record.method = method
    record.path = path
    record.status = status
    record.duration_ms = duration_ms
    return record


def log_access(
    method: str | None, path: str | None, status: int, request_id: str, started_ns: int
) -> None:
    """One access-log line for a finished request (never the key or the payload)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    duration_ms = round((time.perf_counter_ns() - started_ns) / 1e6, 3)
    if _records is not None:
        _records.put((time.time(), method, path, status, request_id, duration_ms))
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


class _Listener(logging.handlers.QueueListener):
    def prepare(self, record: Any) -> logging.LogRecord:
        if isinstance(record, tuple):
            return _access_record(record)
        prepared: logging.LogRecord = record
        return prepared


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
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JsonFormatter())
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    _listener = _Listener(records, stream, respect_handler_level=False)
    _records = records
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [_EnqueueHandler(records)]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").disabled = True

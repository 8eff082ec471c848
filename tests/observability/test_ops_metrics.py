"""What an operator's dashboard reads besides the inference counters: every response by
status (401s included), the process's own CPU, memory and file descriptors, and the
month-to-date billable usage read from the ledger."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest

from app.config import Settings
from app.db.engine import build_engine, build_sessionmaker
from app.metering.month_to_date import MonthToDateGauges
from app.money.periods import Period
from app.observability.metrics import Metrics, WorkerProcessCollector
from app.orm.base import utcnow
from tests.conftest import bearer, make_key


def _value(exposition: str, series: str) -> float:
    """The sample of one exact series (name and labels as exposed), 0 when absent."""
    m = re.search(rf"^{re.escape(series)} (\S+)$", exposition, re.M)
    return float(m.group(1)) if m else 0.0


async def test_unauthenticated_requests_are_counted(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    before = (await client.get("/metrics")).text
    key = await make_key(app, "counted")
    payload = {"inputs": [0.0] * 10}
    assert (await client.post("/v1/models/linreg/predict", json=payload)).status_code == 401
    bad = bearer("tg_" + "x" * 32)
    assert (
        await client.post("/v1/models/linreg/predict", json=payload, headers=bad)
    ).status_code == 401
    assert (await client.get("/admin/customers", headers=bad)).status_code == 401
    assert (await client.get("/admin/customers", headers=bearer(key))).status_code == 403
    ok = await client.post("/v1/models/linreg/predict", json=payload, headers=bearer(key))
    assert ok.status_code == 200
    after = (await client.get("/metrics")).text
    series = 'tollgate_http_responses_total{status="%s"}'
    assert _value(after, series % 401) - _value(before, series % 401) == 3
    assert _value(after, series % 403) - _value(before, series % 403) == 1
    assert _value(after, series % 200) - _value(before, series % 200) >= 2  # metrics + predict
    # The failed authentications never reach the inference service's own counter.
    assert 'tollgate_requests_total{model="linreg",status="401"' not in after


async def test_metrics_include_the_process_collectors(client: httpx.AsyncClient) -> None:
    exposition = (await client.get("/metrics")).text
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "python_info",
    ):
        assert re.search(rf"^{name}(\{{.*\}})? \S+$", exposition, re.M), name
    assert _value(exposition, "process_resident_memory_bytes") > 10 * 2**20


def test_worker_process_metrics_cover_every_live_worker(tmp_path: Path) -> None:
    # With several workers, /metrics is answered by one of them: the process series of
    # each worker that wrote to the multiprocess directory are exported, labelled by pid.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = 2**22 + 12345  # above pid_max's default range: no such process
        for pid in (os.getpid(), other.pid, dead):
            (tmp_path / f"counter_{pid}.db").write_bytes(b"")
        registry = CollectorRegistry()
        registry.register(WorkerProcessCollector(str(tmp_path)))
        exposition = generate_latest(registry).decode()
    finally:
        other.kill()
        other.wait()
    pids = set(re.findall(r'^process_resident_memory_bytes\{pid="(\d+)"\}', exposition, re.M))
    assert pids == {str(os.getpid()), str(other.pid)}
    assert re.search(rf'^process_open_fds\{{pid="{other.pid}"\}} \S+$', exposition, re.M)


async def test_month_to_date_billable_usage_is_read_from_the_ledger(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    engine = build_engine(settings.database_url)
    metrics = Metrics()
    gauges = MonthToDateGauges(build_sessionmaker(engine), metrics)

    def exposition() -> str:
        return generate_latest(metrics.registry).decode()

    try:
        await gauges.refresh()
        before = exposition()
        key = await make_key(app, "month-to-date")
        for payload in ({"inputs": [0.0] * 10}, {"inputs": [[0.0] * 10] * 3}, {"inputs": [1]}):
            await client.post("/v1/models/linreg/predict", json=payload, headers=bearer(key))
        series = 'tollgate_billable_month_to_date{model="linreg",unit="%s",variant=""}'
        # Set from the ledger, not by the request path: unchanged until the next refresh.
        assert _value(exposition(), series % "requests") == _value(before, series % "requests")
        await gauges.refresh()
        after = exposition()
        # Two billable requests (1 + 3 items); the 422 is in the ledger but not billable.
        assert _value(after, series % "requests") - _value(before, series % "requests") == 2
        assert _value(after, series % "items") - _value(before, series % "items") == 4
        compute = series % "compute_seconds"
        assert _value(after, compute) > _value(before, compute)
        stamp = _value(after, "tollgate_billable_month_to_date_refreshed_timestamp_seconds")
        assert abs(stamp - utcnow().timestamp()) < 3600
        # Later refreshes keep settled rows' totals and read only the recent rows: the same
        # rows are never counted twice, nor lost, as they pass from recent to settled.
        now = utcnow()
        if Period.containing(now + timedelta(minutes=21)) == Period.containing(now):
            for later in (timedelta(minutes=20), timedelta(minutes=21), timedelta(minutes=21)):
                await gauges.refresh(now + later)
                again = exposition()
                for unit in ("requests", "items", "compute_seconds"):
                    assert _value(again, series % unit) == _value(after, series % unit), later
        # A new month starts from zero.
        await gauges.refresh(Period.containing(utcnow()).end + timedelta(seconds=1))
        for unit in ("requests", "items", "compute_seconds"):
            assert _value(exposition(), series % unit) == 0
    finally:
        await engine.dispose()


async def test_the_app_exports_the_month_to_date_gauges(client: httpx.AsyncClient) -> None:
    exposition = (await client.get("/metrics")).text
    assert "# TYPE tollgate_billable_month_to_date gauge" in exposition
    assert "# TYPE tollgate_billable_month_to_date_refreshed_timestamp_seconds gauge" in exposition

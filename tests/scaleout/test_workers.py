"""Several worker processes on one host: /metrics is whole, whichever worker answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx

from tests.conftest import TEST_SECRET
from tests.scaleout.test_two_processes import _free_port, _make_key, _wait_ready


def _requests_total(exposition: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if re.match(r'tollgate_requests_total\{.*status="200"', line)
    )


async def test_two_workers_export_merged_metrics(
    pg_url: str, pg_sync: object, tmp_path: object
) -> None:
    _, secret = _make_key(pg_sync, "workers")
    port = _free_port()
    env = {
        **os.environ,
        "TOLLGATE_ENV": "test",
        "TOLLGATE_SECRET_KEY": TEST_SECRET,
        "TOLLGATE_DATABASE_URL": pg_url,
        "TOLLGATE_DEVICE": "cpu",
        "TOLLGATE_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": f"{tmp_path}/metrics",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        async with httpx.AsyncClient(timeout=10) as client:
            pids = set()
            for _ in range(40):
                r = await client.post(
                    f"{url}/v1/models/linreg/predict",
                    json={"inputs": [0.0] * 10},
                    headers={"Authorization": f"Bearer {secret}"},
                )
                assert r.status_code == 200
            # Fresh connections spread over both workers; every scrape sees all 40.
            for _ in range(6):
                async with httpx.AsyncClient(timeout=10) as fresh:
                    scrape = (await fresh.get(f"{url}/metrics")).text
                assert _requests_total(scrape) == 40
                pids.add(scrape.count("tollgate_meter_queue_depth"))
                # Process metrics of both workers, whichever answers (label pid).
                workers = set(
                    re.findall(r'^process_resident_memory_bytes\{pid="(\d+)"\}', scrape, re.M)
                )
                assert len(workers) == 2, workers
                assert re.search(
                    r'^tollgate_http_responses_total\{status="200"\} (\d+)', scrape, re.M
                )
    finally:
        proc.terminate()
        proc.wait(timeout=30)

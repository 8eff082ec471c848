"""The replica benchmark (scripts/bench_replicas.py) in a tiny run: 1 and 2 real server
processes on one Postgres, 2 s each. What is checked is the report a reader relies on, not
any speed: every N measured, the ledger numbers read from the servers' /metrics agree with
the client's count and with the database, and the scratch database is gone afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from scripts.bench_replicas import histogram_quantile
from tests.conftest import PG_HOST
from tests.paths import REPO_ROOT

CONNECTIONS = 8


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    # 10 commits under 1 ms, 10 more under 5 ms: the median is the 1 ms bound, the 75th
    # percentile halfway into (1, 5], the 99th near its top; beyond the last bound, that bound.
    buckets = {0.001: 10.0, 0.005: 20.0, float("inf"): 20.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.001)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.003)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.001 + 0.004 * 9.8 / 10)
    assert histogram_quantile(0.99, {0.001: 1.0, float("inf"): 5.0}) == pytest.approx(0.001)


def test_tiny_run_reports_every_replica_count_and_a_consistent_ledger(tmp_path: Path) -> None:
    db = f"tollgate_bench_replicas_test_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "TOLLGATE_BENCH_PG": PG_HOST}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.bench_replicas",
            "--replicas=1,2",
            "--seconds=2",
            "--warmup=0.5",
            "--rounds=1",
            f"--connections={CONNECTIONS}",
            "--fsync-seconds=0",
            f"--db={db}",
            f"--out={tmp_path}",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())

    assert [s["replicas"] for s in result["summary"]] == [1, 2]
    for sample in result["samples"]:
        assert sample["requests"] > 0 and sample["non_2xx"] == 0
        # The client waits for every answer it sends for, and a row is committed before its
        # answer: the servers' own count of rows in the window is the client's count.
        assert sample["rows"] == sample["requests"]
        assert sample["commits"] > 0
        assert sample["mean_batch"] == pytest.approx(sample["rows"] / sample["commits"])
        assert 0 < sample["commit_p50_ms"] <= sample["commit_p99_ms"]
        assert sample["db_commits"] >= sample["commits"]  # each group commit is a transaction
        assert sample["pg_connections"] >= sample["replicas"]  # each server holds its own
        assert 0 < sample["machine_busy"] <= 1
        assert sample["saturated"]
    ledger = result["ledger"]
    assert ledger["billable_rows"] == ledger["responses_2xx"]  # warm-ups included
    report = (tmp_path / "report.md").read_text()
    assert "| N | req/s" in report and "Ledger check" in report

    with psycopg.connect(f"postgresql://{PG_HOST}/postgres") as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone()
    assert left is None  # the scratch database was dropped

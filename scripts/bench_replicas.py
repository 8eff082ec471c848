"""``make bench-replicas``: 1, 2 and 4 Tollgate server processes sharing one Postgres and one
Redis, under one closed-loop load generator that spreads its connections over all of them.

Each server is a separate ``tollgate serve`` process (its own event loop, meter writer and
Postgres connections), as replicas behind a load balancer would be; the load generator holds
``--connections`` keep-alive connections in total, assigned round-robin to the servers, so the
offered concurrency is the same for every N. Rounds alternate N (1, 2, 4, 1, 2, 4, ...) so that
machine noise hits every N; servers restart each round.

Per N it reports what the capacity model in docs/scaling.md needs:

- req/s and p50/p99 from the client;
- from each server's ``/metrics`` (before and after the window, summed over servers): rows
  committed (``tollgate_meter_batch_size`` sum), commits, mean rows per commit, commit latency
  p50/p99 (``tollgate_meter_commit_seconds``, interpolated within its buckets as Prometheus's
  histogram_quantile does) and how busy the meter lanes were;
- CPU, as shares of the whole machine (all cores): the servers, Postgres (this database's
  backends plus the cluster's own processes: WAL writer, checkpointer, ...; other databases'
  backends are left out, they are other people's work), the client, and the machine as a
  whole from /proc/stat (which includes whatever else runs on it);
- Postgres's own counters: transactions committed in this database, WAL syncs and bytes
  (pg_stat_wal: cluster-wide), peak connections to this database;
- once per run, ``pg_test_fsync`` (if installed) on a file on the same disk: what one WAL
  flush costs here, the floor under a commit.

Results: a Markdown table on stdout and ``report.md`` / ``results.json`` under ``--out``
(default var/bench/replicas). The scratch database is created and dropped by the script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from glob import glob
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from scripts.harness import Server, migrate_and_create_key
from scripts.loadgen import _connection, http_request

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("TOLLGATE_BENCH_PG", "postgres@127.0.0.1:5432")
REDIS = os.environ.get("TOLLGATE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
SECRET = "bench-secret-0123456789abcdef"  # noqa: S105 - a throwaway bench database
TICK = os.sysconf("SC_CLK_TCK")
# One diabetes row (10 features), as scripts/bench.py's S1 sends.
ROW = json.dumps(
    {"inputs": [0.038, 0.050, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017]}
).encode()


# -- load: one closed loop spread over several servers --------------------------------------


def _spread_worker(
    args: tuple[list[int], bytes, int, int, float, float],
) -> tuple[list[float], int, float]:
    """A client process: ``connections`` keep-alive connections, the i-th to
    ``ports[(offset + i) % len(ports)]``, all starting at wall time ``start_at`` (so that the
    process's own start-up is outside the window). Returns latencies, non-2xx count and the
    process's CPU seconds spent in the window."""
    ports, request, connections, offset, start_at, seconds = args

    async def main() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors: list[int] = []
        await asyncio.sleep(max(0.0, start_at - time.time()))
        until = time.perf_counter() + seconds
        await asyncio.gather(
            *(
                _connection(ports[(offset + i) % len(ports)], request, until, latencies, errors)
                for i in range(connections)
            )
        )
        return latencies, len(errors)

    cpu = time.process_time()
    latencies, errors = asyncio.run(main())
    return latencies, errors, time.process_time() - cpu


@dataclass(frozen=True)
class Load:
    requests: int
    non_2xx: int
    p50_ms: float
    p99_ms: float
    client_cpu_s: float


def spread_tasks(
    ports: list[int], request: bytes, connections: int, processes: int, seconds: float
) -> list[tuple[list[int], bytes, int, int, float, float]]:
    """``connections`` in total over ``processes`` client processes, round-robin over ports,
    all starting together a moment from now."""
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    offsets = [sum(shares[:i]) for i in range(processes)]
    start_at = time.time() + 0.3
    return [
        (ports, request, n, off, start_at, seconds)
        for n, off in zip(shares, offsets, strict=True)
        if n
    ]


def combine(parts: list[tuple[list[float], int, float]]) -> Load:
    latencies = sorted(x for part, _, _ in parts for x in part)
    errors, cpu = sum(e for _, e, _ in parts), sum(c for _, _, c in parts)
    if not latencies:
        return Load(0, errors, math.nan, math.nan, cpu)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Load(len(latencies), errors, statistics.median(latencies) * 1e3, p99 * 1e3, cpu)


# -- what the servers say: /metrics ----------------------------------------------------------


@dataclass
class Meter:
    """The meter writer's histograms, summed over servers."""

    rows: float = 0.0
    commits: float = 0.0
    commit_seconds: float = 0.0
    commit_buckets: dict[float, float] | None = None  # upper bound -> cumulative count

    def __sub__(self, other: Meter) -> Meter:
        mine, theirs = self.commit_buckets or {}, other.commit_buckets or {}
        return Meter(
            self.rows - other.rows,
            self.commits - other.commits,
            self.commit_seconds - other.commit_seconds,
            {le: mine[le] - theirs.get(le, 0.0) for le in mine},
        )

    def add(self, other: Meter) -> None:
        self.rows += other.rows
        self.commits += other.commits
        self.commit_seconds += other.commit_seconds
        buckets = self.commit_buckets or {}
        for le, n in (other.commit_buckets or {}).items():
            buckets[le] = buckets.get(le, 0.0) + n
        self.commit_buckets = buckets


def scrape(port: int) -> Meter:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    meter = Meter(commit_buckets={})
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "tollgate_meter_batch_size_sum":
                meter.rows = s.value
            elif s.name == "tollgate_meter_commit_seconds_count":
                meter.commits = s.value
            elif s.name == "tollgate_meter_commit_seconds_sum":
                meter.commit_seconds = s.value
            elif s.name == "tollgate_meter_commit_seconds_bucket":
                assert meter.commit_buckets is not None
                meter.commit_buckets[float(s.labels["le"])] = s.value
    return meter


def scrape_all(ports: list[int]) -> Meter:
    total = Meter(commit_buckets={})
    for port in ports:
        total.add(scrape(port))
    return total


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus's estimate: linear within the bucket holding the q-th observation."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        if buckets[le] >= rank:
            if math.isinf(le):
                return lower  # beyond the last finite bound: the bound is all we know
            return lower + (le - lower) * (rank - below) / max(buckets[le] - below, 1e-12)
        lower, below = le, buckets[le]
    return lower


# -- what the machine and Postgres say --------------------------------------------------------


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def process_cpu_s(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass(frozen=True)
class PgCounters:
    xact_commit: int
    wal_records: int
    wal_bytes: int
    wal_sync: int
    wal_write: int
    cpu_by_pid: dict[int, float]  # this database's backends and the cluster's own processes


def pg_counters(conn: psycopg.Connection[Any], db: str) -> PgCounters:
    commits = conn.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (db,)
    ).fetchone()
    wal = conn.execute(
        "SELECT wal_records, wal_bytes, wal_sync, wal_write FROM pg_stat_wal"
    ).fetchone()
    pids = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s OR backend_type <> 'client backend'",
        (db,),
    ).fetchall()
    assert commits is not None and wal is not None
    return PgCounters(
        int(commits[0]),
        int(wal[0]),
        int(wal[1]),
        int(wal[2]),
        int(wal[3]),
        {int(p): process_cpu_s(int(p)) for (p,) in pids},
    )


def pg_cpu_between(before: PgCounters, after: PgCounters) -> float:
    """CPU seconds of the processes seen at the end (a backend born in the window counts
    from zero; one that ended in it is lost: the servers' connections live for the run)."""
    return sum(cpu - before.cpu_by_pid.get(pid, 0.0) for pid, cpu in after.cpu_by_pid.items())


def pg_connections(conn: psycopg.Connection[Any], db: str) -> tuple[int, int]:
    """(connections to this database, connections to the whole cluster)."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE datname = %s), count(*) FILTER "
        "(WHERE backend_type = 'client backend') FROM pg_stat_activity",
        (db,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def pg_settings(conn: psycopg.Connection[Any]) -> dict[str, str]:
    names = (
        "server_version",
        "synchronous_commit",
        "wal_sync_method",
        "commit_delay",
        "max_connections",
        "shared_buffers",
        "wal_buffers",
        "track_wal_io_timing",
    )
    return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]


def fsync_probe(seconds: int) -> dict[str, float] | None:
    """``pg_test_fsync`` on a scratch file on the disk this repository is on (the same
    device as Postgres's data directory here): one 8 kB write + flush, per method."""
    found = sorted(glob("/usr/lib/postgresql/*/bin/pg_test_fsync"))
    if not found:
        return None
    scratch = ROOT / "var" / "bench" / "pg_test_fsync.tmp"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        out = subprocess.run(
            [found[-1], "-s", str(seconds), "-f", str(scratch)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        scratch.unlink(missing_ok=True)
    section = out.split("Compare file sync methods using one 8kB write", 1)[-1]
    section = section.split("Compare file sync methods using two", 1)[0]
    probe: dict[str, float] = {}
    for method, usecs in re.findall(
        r"^\s+(\S+)\s+[\d.]+ ops/sec\s+([\d.]+) usecs/op", section, re.M
    ):
        probe[f"{method}_us"] = float(usecs)
    return probe


# -- one measured window -----------------------------------------------------------------------


@dataclass
class Sample:
    replicas: int
    round: int
    connections: int
    window_s: float
    load_before: float
    requests: int
    non_2xx: int
    rps: float
    p50_ms: float
    p99_ms: float
    rows: int
    rows_per_s: float
    commits: int
    mean_batch: float
    commit_p50_ms: float
    commit_p99_ms: float
    commit_mean_ms: float
    lane_busy: float  # share of the window the meter lanes (all servers) had a commit in flight
    db_commits: int
    wal_syncs: int
    wal_kb: float
    pg_connections: int
    cluster_connections: int
    machine_busy: float  # shares of all CPUs
    servers_cpu: float
    postgres_cpu: float
    client_cpu: float
    other_cpu: float  # the rest of the machine's busy time: other people's work
    pg_cpu_us_per_row: float
    pg_cpu_us_per_commit: float
    server_cpu_us_per_req: float
    saturated: str = ""


def verdict(s: Sample, lanes: int, max_connections: int) -> str:
    """The first limit reached, in the order they bind on this kind of box."""
    if s.machine_busy >= 0.9:
        parts = {
            "servers": s.servers_cpu,
            "postgres": s.postgres_cpu,
            "client": s.client_cpu,
            "other processes": s.other_cpu,
        }
        top = max(parts, key=lambda k: parts[k])
        return f"CPU: machine {s.machine_busy:.0%} busy, most in {top} ({parts[top]:.0%})"
    if s.cluster_connections >= 0.9 * max_connections:
        return f"connections ({s.cluster_connections}/{max_connections})"
    if s.lane_busy >= 0.8:
        return f"ledger commits: meter lanes {s.lane_busy:.0%} busy ({lanes} per server)"
    return f"nothing saturated (machine {s.machine_busy:.0%} busy)"


def measure(
    replicas: int,
    rnd: int,
    ports: list[int],
    server_pids: list[int],
    pool: Any,
    args: argparse.Namespace,
    request: bytes,
    pg: psycopg.Connection[Any],
    db: str,
    max_connections: int,
) -> tuple[Sample, int, PgCounters]:
    """Warm up, then one window. Returns the sample, the 2xx responses counted in all, and
    Postgres's counters at the window's start: its commit and WAL counts for the window are
    read once the servers have stopped (:func:`settle`)."""
    warm = combine(
        pool.map(
            _spread_worker,
            spread_tasks(ports, request, args.connections, args.clients, args.warmup),
        )
    )
    # A busy backend publishes its statistics (commits, WAL) once idle, and when it did so
    # less than 1 s before, only after 10 s more (Postgres 15, PGSTAT_IDLE_INTERVAL): wait
    # for the warm-up's to land before the window's start is read.
    time.sleep(args.stats_wait)
    load_before = os.getloadavg()[0]
    m0, p0 = scrape_all(ports), pg_counters(pg, db)
    s0 = [process_cpu_s(p) for p in server_pids]
    j0, t0 = machine_jiffies(), time.perf_counter()
    result = pool.map_async(
        _spread_worker, spread_tasks(ports, request, args.connections, args.clients, args.seconds)
    )
    peak_db = peak_cluster = 0
    while not result.ready():  # connections, sampled while the load runs
        conns = pg_connections(pg, db)
        peak_db, peak_cluster = max(peak_db, conns[0]), max(peak_cluster, conns[1])
        result.wait(0.5)
    load = combine(result.get())
    j1, t1 = machine_jiffies(), time.perf_counter()
    s1 = [process_cpu_s(p) for p in server_pids]
    m1, p1 = scrape_all(ports), pg_counters(pg, db)  # p1: its CPU times only (see above)
    # Rates and CPU shares are over the load's own seconds: everything measured happens in
    # them (the snapshots bracket the load by a fraction of a second, while nothing runs).
    window, busy = args.seconds, t1 - t0
    cores = os.cpu_count() or 1
    meter = m1 - m0
    pg_cpu = pg_cpu_between(p0, p1)
    server_cpu = sum(b - a for a, b in zip(s0, s1, strict=True))
    buckets = meter.commit_buckets or {}
    sample = Sample(
        replicas=replicas,
        round=rnd,
        connections=args.connections,
        window_s=busy,
        load_before=load_before,
        requests=load.requests,
        non_2xx=load.non_2xx,
        rps=load.requests / args.seconds,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        rows=int(meter.rows),
        rows_per_s=meter.rows / window,
        commits=int(meter.commits),
        mean_batch=meter.rows / meter.commits if meter.commits else math.nan,
        commit_p50_ms=histogram_quantile(0.5, buckets) * 1e3,
        commit_p99_ms=histogram_quantile(0.99, buckets) * 1e3,
        commit_mean_ms=meter.commit_seconds / meter.commits * 1e3 if meter.commits else math.nan,
        lane_busy=meter.commit_seconds / (window * args.lanes * replicas),
        db_commits=0,  # filled in by settle()
        wal_syncs=0,
        wal_kb=0.0,
        pg_connections=peak_db,
        cluster_connections=peak_cluster,
        machine_busy=(j1[0] - j0[0]) / max(j1[1] - j0[1], 1),
        servers_cpu=server_cpu / (window * cores),
        postgres_cpu=pg_cpu / (window * cores),
        client_cpu=load.client_cpu_s / (window * cores),
        other_cpu=0.0,
        pg_cpu_us_per_row=pg_cpu / meter.rows * 1e6 if meter.rows else math.nan,
        pg_cpu_us_per_commit=pg_cpu / meter.commits * 1e6 if meter.commits else math.nan,
        server_cpu_us_per_req=server_cpu / load.requests * 1e6 if load.requests else math.nan,
    )
    sample.other_cpu = max(
        0.0,
        sample.machine_busy - sample.servers_cpu - sample.postgres_cpu - sample.client_cpu,
    )
    sample.saturated = verdict(sample, args.lanes, max_connections)
    served = warm.requests - warm.non_2xx + load.requests - load.non_2xx
    return sample, served, p0


def settle(sample: Sample, start: PgCounters, pg: psycopg.Connection[Any], db: str) -> None:
    """Postgres's commit and WAL counts for the window, read after the servers stopped: a
    backend publishes its pending statistics when it exits, so nothing is left unpublished
    (the servers' shutdown adds a few commits of its own: catalog goodbyes)."""
    deadline = time.monotonic() + 10
    while pg_connections(pg, db)[0] > 1 and time.monotonic() < deadline:
        time.sleep(0.1)  # the servers' backends are still exiting
    end = pg_counters(pg, db)
    sample.db_commits = end.xact_commit - start.xact_commit
    sample.wal_syncs = end.wal_sync - start.wal_sync
    sample.wal_kb = (end.wal_bytes - start.wal_bytes) / 1024


# -- the run -------------------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", default="1,2,4", help="Comma-separated process counts.")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32, help="In total, over all servers.")
    parser.add_argument("--clients", type=int, default=2, help="Client processes.")
    parser.add_argument("--lanes", type=int, default=2, help="TOLLGATE_METER_LANES per server.")
    parser.add_argument("--fsync-seconds", type=int, default=1, help="0: skip pg_test_fsync.")
    parser.add_argument(
        "--stats-wait", type=float, default=11, help="Seconds for Postgres's statistics to land."
    )
    parser.add_argument("--db", default="tollgate_bench_replicas")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "replicas")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.replicas.split(",") if n.strip()]

    with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{args.db}"')
    db_url = f"postgresql://{PG}/{args.db}"
    env = {
        **os.environ,
        "TOLLGATE_DATABASE_URL": db_url,
        "TOLLGATE_SECRET_KEY": SECRET,
        "TOLLGATE_ENV": "production",
        "TOLLGATE_DEVICE": "cpu",
        "TOLLGATE_REDIS_URL": REDIS,
        "TOLLGATE_REDIS_PREFIX": f"tollgate-bench-replicas:{uuid.uuid4().hex}:",
        "TOLLGATE_METER_LANES": str(args.lanes),
        "TOLLGATE_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    try:
        key = migrate_and_create_key(env, "bench-replicas")
        request = http_request("/v1/models/linreg/predict", ROW, {"Authorization": f"Bearer {key}"})
        fsync = fsync_probe(args.fsync_seconds) if args.fsync_seconds > 0 else None
        samples: list[Sample] = []
        served = 0
        with (
            psycopg.connect(db_url, autocommit=True) as pg,
            multiprocessing.get_context("spawn").Pool(args.clients) as pool,
        ):
            settings = pg_settings(pg)
            max_connections = int(settings["max_connections"])
            for rnd in range(args.rounds):
                for n in counts:
                    ports = _free_ports(n)
                    with contextlib.ExitStack() as stack:
                        servers = [
                            stack.enter_context(
                                Server(
                                    [sys.executable, "-m", "app.cli", "serve", "--port", str(p)],
                                    env,
                                    f"http://127.0.0.1:{p}/readyz",
                                )
                            )
                            for p in ports
                        ]
                        pids = [s.proc.pid for s in servers if s.proc is not None]
                        sample, ok, start = measure(
                            n, rnd, ports, pids, pool, args, request, pg, args.db, max_connections
                        )
                    settle(sample, start, pg, args.db)
                    samples.append(sample)
                    served += ok
                    print(
                        f"round {rnd} N={n}: {sample.rps:7.0f} req/s p50 {sample.p50_ms:6.2f} "
                        f"p99 {sample.p99_ms:7.2f} ms | {sample.rows_per_s:7.0f} rows/s, "
                        f"{sample.mean_batch:5.1f} rows/commit, commit p50 "
                        f"{sample.commit_p50_ms:5.2f} p99 {sample.commit_p99_ms:6.2f} ms | CPU "
                        f"machine {sample.machine_busy:.0%} servers {sample.servers_cpu:.0%} "
                        f"pg {sample.postgres_cpu:.0%} client {sample.client_cpu:.0%} "
                        f"other {sample.other_cpu:.0%} | "
                        f"load {sample.load_before:.2f} | {sample.saturated}",
                        flush=True,
                    )
            rows = int(
                pg.execute("SELECT count(*) FROM usage_events WHERE billable").fetchone()[0]  # type: ignore[index]
            )
    finally:
        with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')

    result = {
        "machine": machine(),
        "postgres": settings,
        "fsync_probe": fsync,
        "args": {k: str(v) for k, v in vars(args).items()},
        "samples": [asdict(s) for s in samples],
        "summary": summarize(samples),
        "ledger": {"billable_rows": rows, "responses_2xx": served},
    }
    report = render(result)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (args.out / "report.md").write_text(report)
    return result


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version()}


_MEDIANS = (
    "rps",
    "p50_ms",
    "p99_ms",
    "rows_per_s",
    "mean_batch",
    "commit_p50_ms",
    "commit_p99_ms",
    "commit_mean_ms",
    "lane_busy",
    "machine_busy",
    "servers_cpu",
    "postgres_cpu",
    "client_cpu",
    "other_cpu",
    "pg_cpu_us_per_row",
    "pg_cpu_us_per_commit",
    "server_cpu_us_per_req",
    "pg_connections",
    "load_before",
)


def summarize(samples: list[Sample]) -> list[dict[str, Any]]:
    """Per N: the median of each field over rounds, the range of req/s, and each round's
    verdict."""
    out = []
    for n in dict.fromkeys(s.replicas for s in samples):
        mine = [s for s in samples if s.replicas == n]
        row: dict[str, Any] = {"replicas": n, "rounds": len(mine)}
        for name in _MEDIANS:
            row[name] = statistics.median(getattr(s, name) for s in mine)
        row["rps_min"], row["rps_max"] = min(s.rps for s in mine), max(s.rps for s in mine)
        row["saturated"] = [s.saturated for s in mine]
        out.append(row)
    return out


def render(result: dict[str, Any]) -> str:
    m, pg, fsync = result["machine"], result["postgres"], result["fsync_probe"]
    args = result["args"]
    lines = [
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}; Postgres "
        f"{pg['server_version']} on the same machine "
        f"(synchronous_commit={pg['synchronous_commit']}, "
        f"wal_sync_method={pg['wal_sync_method']}, commit_delay={pg['commit_delay']}, "
        f"max_connections={pg['max_connections']}); nothing pinned.",
        f"Load: linreg, 1 row/request, {args['connections']} connections in total spread "
        f"round-robin over the servers by {args['clients']} client processes; "
        f"{args['seconds']} s windows after {args['warmup']} s warm-up; {args['rounds']} "
        "rounds alternating N, median shown (req/s: min-max).",
    ]
    if fsync:
        lines.append(
            "pg_test_fsync (one 8 kB write + flush): "
            + ", ".join(f"{k[:-3]} {v:,.0f} µs" for k, v in fsync.items())
        )
    lines += [
        "",
        "| N | req/s (min-max) | p50 / p99 ms | rows/s committed | rows/commit | commit p50 / p99 "
        "ms | lanes busy | machine CPU | servers / postgres / client / other CPU | pg µs/row | "
        "pg µs/commit | server µs/req | pg conns | saturated first |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["summary"]:
        lines.append(
            f"| {r['replicas']} | {r['rps']:,.0f} ({r['rps_min']:,.0f}-{r['rps_max']:,.0f}) "
            f"| {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['rows_per_s']:,.0f} "
            f"| {r['mean_batch']:.1f} | {r['commit_p50_ms']:.2f} / {r['commit_p99_ms']:.2f} "
            f"| {r['lane_busy']:.0%} | {r['machine_busy']:.0%} | {r['servers_cpu']:.0%} / "
            f"{r['postgres_cpu']:.0%} / {r['client_cpu']:.0%} / {r['other_cpu']:.0%} "
            f"| {r['pg_cpu_us_per_row']:.0f} "
            f"| {r['pg_cpu_us_per_commit']:.0f} | {r['server_cpu_us_per_req']:.0f} "
            f"| {r['pg_connections']:.0f} | {'; '.join(dict.fromkeys(r['saturated']))} |"
        )
    ledger = result["ledger"]
    lines += [
        "",
        "CPU shares are of all CPUs (100% = the whole machine). Commit p50/p99 are estimated "
        "within tollgate_meter_commit_seconds buckets (0.5, 1, 2.5, 5, 10, 25 ms ...).",
        "",
        f"Ledger check: {ledger['billable_rows']:,} billable rows for "
        f"{ledger['responses_2xx']:,} 2xx responses counted by the client, warm-ups included "
        "(the client waits for every answer it asked for, so the two should be equal).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

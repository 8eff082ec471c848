"""Fault drills, for real and bounded, on loopback only.

1. kill -9 of a service process under concurrent load: every 2xx the clients received has
   exactly one ledger row, no row exists for a request that was never sent, and a restarted
   process serves cleanly.
2. Postgres cut mid-load (a TCP proxy in front of the real server drops every connection and
   refuses new ones, then comes back): calls fail with 503, never 500, no prediction is
   returned without its row, and the service recovers by itself once the database is back.
3. Postgres stopped for real mid-load and started again: the same promises. The server
   stopped is a private cluster the drill starts for itself (tests/drills/private_pg.py),
   never the Postgres the suite was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text

from app.config import Settings
from app.main import create_app
from tests.conftest import TEST_SECRET, bearer, make_key, run_migrations
from tests.drills import private_pg
from tests.scaleout.test_two_processes import _free_port, _make_key, _wait_ready

ROW = {"inputs": [0.3] * 10}


def _start(pg_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TOLLGATE_ENV": "test",
        "TOLLGATE_SECRET_KEY": TEST_SECRET,
        "TOLLGATE_DATABASE_URL": pg_url,
        "TOLLGATE_DEVICE": "cpu",
        "TOLLGATE_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextmanager
def _serving(pg_url: str) -> Iterator[tuple[str, subprocess.Popen[bytes], int]]:
    port = _free_port()
    proc = _start(pg_url, port)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        yield url, proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@pytest.fixture
def service(pg_url: str, pg_sync: object) -> Iterator[tuple[str, subprocess.Popen[bytes], int]]:
    with _serving(pg_url) as served:
        yield served


async def test_kill_9_under_load(
    service: tuple[str, subprocess.Popen[bytes], int], pg_url: str, pg_sync: object
) -> None:
    url, proc, port = service
    _, secret = _make_key(pg_sync, "drill")
    sent = 0
    ok_ids: list[str] = []
    failures = 0
    started = time.monotonic()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent, failures
        while time.monotonic() - started < 3:
            sent += 1
            try:
                r = await client.post(
                    f"{url}/v1/models/linreg/predict",
                    json=ROW,
                    headers={"Authorization": f"Bearer {secret}"},
                )
            except httpx.HTTPError:
                failures += 1
                await asyncio.sleep(0.05)
                continue
            if r.status_code == 200:
                ok_ids.append(r.json()["request_id"])

    async def killer() -> None:
        await asyncio.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)

    async with httpx.AsyncClient(timeout=5) as client:
        await asyncio.gather(*(worker(client) for _ in range(16)), killer())
    assert ok_ids and failures  # the kill happened under load
    with pg_sync.connect() as conn:  # type: ignore[attr-defined]
        rows = dict(
            conn.execute(
                text("SELECT request_id, count(*) FROM usage_events GROUP BY request_id")
            ).all()
        )
    assert all(rows.get(i) == 1 for i in ok_ids), "a 2xx without exactly one row"
    assert all(n == 1 for n in rows.values())
    assert len(rows) <= sent  # no row without a request

    restarted = _start(pg_url, port)
    try:
        _wait_ready(url, restarted)
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.post(
                f"{url}/v1/models/linreg/predict",
                json=ROW,
                headers={"Authorization": f"Bearer {secret}"},
            )
        assert r.status_code == 200
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)


class CuttableProxy:
    """A TCP proxy to Postgres that can drop all its connections and refuse new ones."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.up = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        self.up = False
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.up = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def proxied_app(
    settings: Settings, pg_url: str
) -> AsyncIterator[tuple[object, CuttableProxy]]:
    proxy = CuttableProxy(5432)
    await proxy.start()
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    app = create_app(
        settings.model_copy(update={"database_url": url, "meter_commit_timeout_s": 1.0})
    )
    async with app.router.lifespan_context(app):
        yield app, proxy
    await proxy.close()


async def test_postgres_cut_mid_load_gives_503_and_recovers(
    proxied_app: tuple[object, CuttableProxy], pg_sync: object
) -> None:
    app, proxy = proxied_app
    key = await make_key(app)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    statuses: list[int] = []
    ok_ids: list[str] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

        async def load(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                r = await client.post("/v1/models/linreg/predict", json=ROW, headers=bearer(key))
                statuses.append(r.status_code)
                if r.status_code == 200:
                    ok_ids.append(r.json()["request_id"])
                else:
                    assert "outputs" not in r.json()

        async def cut_and_restore() -> float:
            await asyncio.sleep(0.5)
            proxy.cut()
            await asyncio.sleep(1.5)
            proxy.restore()
            return time.monotonic()

        restored_at, *_ = await asyncio.gather(cut_and_restore(), *(load(4.0) for _ in range(8)))
        # After the database is back, the service recovers by itself.
        recovered = None
        for _ in range(50):
            r = await client.post("/v1/models/linreg/predict", json=ROW, headers=bearer(key))
            if r.status_code == 200:
                recovered = time.monotonic() - restored_at
                break
            await asyncio.sleep(0.1)
    assert set(statuses) <= {200, 503}, set(statuses)
    assert 503 in statuses and 200 in statuses
    assert recovered is not None and recovered < 5
    with pg_sync.connect() as conn:  # type: ignore[attr-defined]
        have = {r[0] for r in conn.execute(text("SELECT request_id FROM usage_events"))}
    assert set(ok_ids) <= have  # every prediction returned has its row


@pytest.fixture
def private_db() -> Iterator[tuple[private_pg.PrivateCluster, str, Engine]]:
    """A migrated database on a private cluster (the one the next drill stops), its URL and
    a sync engine on it."""
    with private_pg.private_cluster() as cluster:
        admin = create_engine(cluster.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE tollgate_drill"))
        admin.dispose()
        url = cluster.url("tollgate_drill")
        run_migrations(url)
        engine = create_engine(
            url.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True
        )
        try:
            yield cluster, url, engine
        finally:
            engine.dispose()


@pytest.mark.skipif(private_pg.unavailable() is not None, reason=str(private_pg.unavailable()))
async def test_postgres_stopped_mid_load_for_real(
    private_db: tuple[private_pg.PrivateCluster, str, Engine],
) -> None:
    """The database server is stopped for real (``pg_ctl stop -m fast``: every connection
    closed, new ones refused) under load and started again, on the drill's own cluster."""
    cluster, db_url, engine = private_db
    _, secret = _make_key(engine, "stopdrill")
    statuses: list[int] = []
    ok_ids: list[str] = []
    stop_at = start_at = 0.0

    async def load(client: httpx.AsyncClient, url: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            r = await client.post(
                f"{url}/v1/models/linreg/predict",
                json=ROW,
                headers={"Authorization": f"Bearer {secret}"},
            )
            statuses.append(r.status_code)
            if r.status_code == 200:
                ok_ids.append(r.json()["request_id"])
            else:
                assert "outputs" not in r.json()
            await asyncio.sleep(0.01)

    async def stop_and_start() -> None:
        nonlocal stop_at, start_at
        await asyncio.sleep(0.7)
        stop_at = time.monotonic()
        await asyncio.to_thread(cluster.stop)
        assert not cluster.is_up()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster.start)
        start_at = time.monotonic()

    with _serving(db_url) as (url, _proc, _port):
        async with httpx.AsyncClient(timeout=15) as client:
            await asyncio.gather(stop_and_start(), *(load(client, url, 5.0) for _ in range(6)))
            recovered = None
            for _ in range(100):
                r = await client.post(
                    f"{url}/v1/models/linreg/predict",
                    json=ROW,
                    headers={"Authorization": f"Bearer {secret}"},
                )
                if r.status_code == 200:
                    recovered = time.monotonic() - start_at
                    ok_ids.append(r.json()["request_id"])
                    break
                await asyncio.sleep(0.1)
    assert stop_at and start_at
    assert set(statuses) <= {200, 503}, set(statuses)
    assert 503 in statuses
    assert recovered is not None and recovered < 10, recovered
    with engine.connect() as conn:
        have = {r[0] for r in conn.execute(text("SELECT request_id FROM usage_events"))}
    assert set(ok_ids) <= have

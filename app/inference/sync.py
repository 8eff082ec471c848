"""Keeps this replica's models in step with the catalog, and tells the catalog what it has.

Every catalog change bumps ``model_catalog.revision`` and, on Postgres, sends ``NOTIFY
tollgate_models`` when its transaction commits. Each replica listens on that channel with a
connection of its own and re-reads the catalog when told; it also polls the revision every
``TOLLGATE_CATALOG_POLL_S`` (the fallback when a notification is lost, the listening
connection is down, or the database is SQLite), so a change reaches every replica within
about one poll interval even without notifications. After each reconcile, and on a
heartbeat, the replica writes what it actually serves to ``model_replicas``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.catalog import repository
from app.catalog.service import seed_builtin, shipped_snapshot
from app.clock import Clock
from app.inference.registry import ModelRegistry

log = logging.getLogger("tollgate.models.sync")


class CatalogSync:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        database_url: str,
        registry: ModelRegistry,
        models_dir: Path,
        clock: Clock,
        *,
        poll_s: float,
        heartbeat_s: float,
        listen: bool = True,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._database_url = database_url
        self._registry = registry
        self._models_dir = models_dir
        self._clock = clock
        self._poll_s = poll_s
        self._heartbeat_s = heartbeat_s
        self._listen_enabled = listen
        self.replica_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._started_at = clock.now()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_report = 0.0
        self._report_lock = asyncio.Lock()

    async def start_up(self) -> None:
        """Register the shipped models if the catalog lacks them, read it and load what it
        wants, before the replica serves. With the database unreachable, serve the shipped
        models as shipped and catch up when it answers."""
        try:
            async with self._sessionmaker() as session:
                await seed_builtin(session, self._models_dir)
                snapshot = await repository.snapshot(session)
                await session.commit()
        except Exception:
            log.warning(
                "could not read the model catalog at start-up; serving the shipped models "
                "until it can be read",
                exc_info=True,
            )
            snapshot = shipped_snapshot(self._models_dir)
        self._registry.apply_now(snapshot)

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="catalog-sync"))
        postgres = make_url(self._database_url).get_backend_name() == "postgresql"
        if postgres and self._listen_enabled:
            self._tasks.append(asyncio.create_task(self._listen(), name="catalog-listen"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a task stuck in a network call (a listener whose connection hangs)
            # must not hold up the shutdown; it is abandoned with the event loop.
            done, pending = await asyncio.wait(self._tasks, timeout=2.0)
            for task in done:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    task.result()
            if pending:
                log.warning("catalog sync tasks did not stop within 2 s; abandoning them")
        self._tasks.clear()
        # Best effort, and bounded: a replica that cannot say goodbye ages out of
        # /admin/models after three heartbeats anyway.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0), self._sessionmaker() as session:
                await repository.forget_replica(session, self.replica_id)
                await session.commit()

    async def reconcile(self, *, force_report: bool = False) -> int:
        """Read the catalog; apply it if it moved; report this replica's state. Returns the
        revision applied."""
        async with self._sessionmaker() as session:
            current = await repository.revision(session)
            snapshot = self._registry.snapshot
            if current != snapshot.revision:
                snapshot = await repository.snapshot(session)
        if snapshot is not self._registry.snapshot:
            await self._registry.apply(snapshot)
            force_report = True
        else:
            await self._registry.settled()  # another task may be applying this revision
        await self._report(force=force_report)
        return snapshot.revision

    async def _report(self, *, force: bool) -> None:
        """Write what this replica serves (one report at a time; a failed report is logged,
        never the caller's failure: the next one catches up)."""
        now = asyncio.get_running_loop().time()
        if not force and now - self._last_report < self._heartbeat_s:
            return
        self._last_report = now
        try:
            async with self._report_lock:
                await self._save_report()
        except Exception:
            log.warning("could not report this replica's models", exc_info=True)

    async def _save_report(self) -> None:
        async with self._sessionmaker() as session:
            await repository.save_replica(
                session,
                replica_id=self.replica_id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                started_at=self._started_at,
                now=self._clock.now(),
                revision=self._registry.snapshot.revision,
                models=self._registry.actual(),
            )
            await session.commit()

    async def _run(self) -> None:
        first = True
        while True:
            try:
                await self.reconcile(force_report=first)
                first = False
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("model catalog reconcile failed; retrying", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
            self._wake.clear()

    async def _listen(self) -> None:
        url = make_url(self._database_url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {repository.CHANNEL}")
                    self._wake.set()  # catch up on anything missed while not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.info("catalog listener disconnected; polling meanwhile", exc_info=True)
            await asyncio.sleep(self._poll_s)


def seen_since(now: datetime, heartbeat_s: float) -> datetime:
    """Replicas not heard from in three heartbeats are gone."""
    return now - timedelta(seconds=3 * heartbeat_s)

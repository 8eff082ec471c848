"""The request-scoped session: one transaction per request, committed on success."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Protocol

from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from app.errors import ServiceUnavailable


class DatabaseUnavailable(ServiceUnavailable):
    type = "database_unavailable"


def violates_unique(exc: IntegrityError, table: str, column: str) -> bool:
    """Whether ``exc`` is the unique index on ``table.column``, as Postgres (the constraint
    name, ``uq_<table>_<column>``) or SQLite (``UNIQUE constraint failed: table.column``)
    reports it: the loser of a race that a check before the write could not see."""
    message = str(exc.orig)
    return f"uq_{table}_{column}" in message or f"{table}.{column}" in message


class Database(Protocol):
    """The database resources of the running app (``app.resources.State`` provides them)."""

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]: ...


def database(request: HTTPConnection) -> Database:
    """The running app's engine and sessionmaker."""
    resources: Database = request.app.resources
    return resources


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    maker = database(request).sessionmaker
    async with maker() as session:
        try:
            yield session
            await session.commit()
        except (OperationalError, DBAPIError, OSError) as exc:
            await session.rollback()
            raise DatabaseUnavailable("the database is unavailable; retry shortly") from exc
        except BaseException:
            await session.rollback()
            raise


# scope="function": the commit (and a commit failure's 503) happens before the response is
# sent. FastAPI's default ends a yield dependency after the response: a 201 could go out for
# a write that then failed to commit, and a client could use a key before it existed.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

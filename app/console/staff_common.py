"""What the staff pages share: pagination, form parsing, and showing a service's refusal
on the page instead of a 500."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, Query
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.requests import Request

from app.auth.principal import Scope
from app.console.deps import ConsoleForbidden, ConsoleUser, Csrf
from app.errors import AppError

PER_PAGE = 50

PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pager:
    """Page ``page`` of ``total`` rows, ``per_page`` a page; links keep the other query
    parameters."""

    request: Request
    page: int
    total: int
    per_page: int = PER_PAGE

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    def url(self, page: int) -> str:
        params = [(k, v) for k, v in self.request.query_params.multi_items() if k != "page"]
        params.append(("page", str(page)))
        return f"{self.request.url.path}?{urlencode(params)}"

    @property
    def previous(self) -> str | None:
        return self.url(self.page - 1) if self.page > 1 else None

    @property
    def next(self) -> str | None:
        return self.url(self.page + 1) if self.page < self.pages else None


def chart(labels: list[str], datasets: list[dict[str, Any]], *, stacked: bool = False) -> str:
    """The ``data-chart`` attribute console.js draws with Chart.js (JSON, escaped by Jinja)."""
    spec: dict[str, Any] = {"type": "bar", "labels": labels, "datasets": datasets}
    if stacked:
        spec["stacked"] = True
    return json.dumps(spec, separators=(",", ":"))


def text(form: FormData | Mapping[str, Any], name: str) -> str | None:
    """A form field, stripped; None when missing or blank (a blank field clears a value)."""
    value = form.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def validation_messages(exc: ValidationError) -> list[str]:
    """A pydantic error as lines a person reads next to the form."""
    out = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        out.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return out


async def attempt(
    session: AsyncSession, action: Awaitable[T], *, read_only: bool = False
) -> tuple[T | None, AppError | None]:
    """Run a service call; when it refuses (an ``AppError``: 404, 409, 422 ...), roll back
    whatever it had started to change and hand the error to the page to show. A
    ``read_only`` call changed nothing: no rollback (which would expire the objects the page
    already holds)."""
    try:
        return await action, None
    except AppError as exc:
        if not read_only:
            await session.rollback()
        return None, exc


async def _admin_form(user: Csrf) -> ConsoleUser:
    """A state-changing admin form: the CSRF token first, then the admin scope."""
    if not user.can(Scope.admin):
        raise ConsoleForbidden("this page needs the admin scope")
    return user


AdminForm = Annotated[ConsoleUser, Depends(_admin_form)]

"""Who is signed in to the console, what they may open, and the CSRF check.

A page names the scopes that may open it (any one suffices), as an API route does; a key
without any gets the 403 page. The principal is the signing-in key's, re-checked on every
page by the authenticator (a revoked key, an expired one or a suspended customer signs the
session out)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request

from app.auth.deps import authenticator
from app.auth.principal import Principal, Scope
from app.clock.deps import get_clock
from app.config import request_settings
from app.console import sessions
from app.db.session import database
from app.errors import AppError, Forbidden, Unauthorized

COOKIE = "tollgate_console"
LOGIN_CSRF_COOKIE = "tollgate_console_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class SignInRequired(AppError):
    """No open session: pages redirect to the sign-in page (see ``app.console.router``)."""

    status_code = 401
    type = "console_sign_in_required"


class ConsoleForbidden(AppError):
    status_code = 403
    type = "console_forbidden"


class CsrfRejected(AppError):
    status_code = 403
    type = "csrf_rejected"


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    principal: Principal
    session_id: str
    csrf_token: str

    @property
    def is_staff(self) -> bool:
        return self.principal.is_staff

    def can(self, scope: Scope | str) -> bool:
        """Whether the key may act with ``scope`` (the staff scopes only on staff keys)."""
        scope = Scope(scope)
        if scope.value not in self.principal.scopes:
            return False
        return self.principal.is_staff or scope not in (Scope.admin, Scope.finance)


def may_sign_in(principal: Principal) -> bool:
    """Staff keys (admin, finance) and customers' billing keys open the console."""
    user = ConsoleUser(principal, "", "")
    return any(user.can(s) for s in (Scope.admin, Scope.finance, Scope.billing))


async def current_user(request: Request) -> ConsoleUser:
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired("sign in first")
    settings = request_settings(request)
    now = get_clock(request).now()
    async with database(request).sessionmaker() as session, session.begin():
        found = await sessions.resume(
            session,
            token,
            now,
            idle=timedelta(seconds=settings.console_idle_timeout_s),
            max_age=timedelta(seconds=settings.console_max_age_s),
        )
        if found is None:
            raise SignInRequired("your session has ended; sign in again")
        try:
            principal = await authenticator(request).authenticate_digest(found.key_hash)
        except (Unauthorized, Forbidden) as exc:
            await sessions.end(session, found.id, now)
            raise SignInRequired(f"signed out: {exc.message}") from None
    if not may_sign_in(principal):
        raise SignInRequired("this key no longer opens the console")
    user = ConsoleUser(principal, found.id, found.csrf_token)
    request.state.console_user = user
    return user


User = Annotated[ConsoleUser, Depends(current_user)]


def allow(*scopes: Scope) -> Callable[[ConsoleUser], Awaitable[ConsoleUser]]:
    """A page any of ``scopes`` may open; others get the 403 page."""

    async def dependency(user: User) -> ConsoleUser:
        if not any(user.can(s) for s in scopes):
            names = " or ".join(s.value for s in scopes)
            raise ConsoleForbidden(f"this page needs the {names} scope")
        return user

    dependency._console_scopes = scopes  # type: ignore[attr-defined] # the matrix test reads it
    return dependency


Staff = Annotated[ConsoleUser, Depends(allow(Scope.admin, Scope.finance))]
AdminUser = Annotated[ConsoleUser, Depends(allow(Scope.admin))]
FinanceUser = Annotated[ConsoleUser, Depends(allow(Scope.finance))]
Customer = Annotated[ConsoleUser, Depends(allow(Scope.billing))]


async def check_csrf(request: Request, user: User) -> ConsoleUser:
    """Every state-changing request carries the session's CSRF token, in the form field
    ``csrf_token`` or (htmx) the ``X-CSRF-Token`` header; anything else is refused (403)."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, user.csrf_token):
        raise CsrfRejected("the form's CSRF token is missing or wrong; reload the page")
    return user


Csrf = Annotated[ConsoleUser, Depends(check_csrf)]

"""Console routes: sign-in, sign-out, the home page of each kind of user, error pages. The
pages of each area live in their own module and join ``router`` here."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Request
from starlette.responses import RedirectResponse, Response

from app.auth.deps import authenticator
from app.clock.deps import ClockDep
from app.console import docs, sessions
from app.console.deps import (
    COOKIE,
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    ConsoleForbidden,
    Csrf,
    CsrfRejected,
    SignInRequired,
    User,
    may_sign_in,
)
from app.console.web import render, secure, static_files
from app.db.session import SessionDep
from app.errors import AppError, Forbidden, Unauthorized

router = APIRouter(prefix="/console", include_in_schema=False)


def _cookie_flags(request: Request) -> dict[str, object]:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/console",
    }


def home_of(user_is_staff: bool) -> str:
    return "/console/" if user_is_staff else "/console/me"


def _login_page(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        {"csrf_token": token, "error": error, "next": request.query_params.get("next", "")},
        status_code=status_code,
    )
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, **_cookie_flags(request))  # type: ignore[arg-type]
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
async def login(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    api_key: Annotated[str, Form(max_length=200)],
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Sign in with an API key. The key is checked like an API call and never stored: the
    browser gets a session cookie (HttpOnly, SameSite=Strict, Secure over https)."""
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf_token):
        raise CsrfRejected("the sign-in form expired; reload the page and try again")
    try:
        principal = await authenticator(request).authenticate(api_key.strip())
    except (Unauthorized, Forbidden) as exc:
        return _login_page(request, f"Sign-in refused: {exc.message}.", 401)
    if not may_sign_in(principal):
        return _login_page(
            request,
            "This key cannot open the console: it needs the admin, finance or billing scope.",
            403,
        )
    token, _ = await sessions.start(session, principal.key_id, clock.now())
    await session.commit()
    target = request.query_params.get("next") or home_of(principal.is_staff)
    if not target.startswith("/console") or target.startswith("//"):
        target = home_of(principal.is_staff)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, token, **_cookie_flags(request))  # type: ignore[arg-type]
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
    return secure(response)


@router.post("/logout")
async def logout(user: Csrf, session: SessionDep, clock: ClockDep) -> Response:
    """End the session on the server (the cookie alone no longer opens anything)."""
    await sessions.end(session, user.session_id, clock.now())
    await session.commit()
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return secure(response)


@router.get("")
async def console_root() -> Response:
    return secure(RedirectResponse("/console/", status_code=307))


def _redirect_to_login(request: Request, exc: Exception) -> Response:
    message = exc.message if isinstance(exc, AppError) else "sign in"
    target = "/console/login"
    if request.method == "GET" and request.url.path not in ("/console/login", "/console/logout"):
        target += "?next=" + quote(request.url.path)
    if request.headers.get("hx-request"):
        response: Response = Response(status_code=204, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    response.headers["X-Console-Reason"] = quote(message)
    return secure(response)


def _forbidden(request: Request, exc: Exception) -> Response:
    message = exc.message if isinstance(exc, AppError) else "forbidden"
    user = getattr(request.state, "console_user", None)
    return render(
        request, "error.html", {"user": user, "title": "Not allowed", "message": message}, 403
    )


def install(app: FastAPI) -> None:
    """Mount the console's static files, its error pages (HTML, not JSON) and ``/docs``
    (Swagger UI from those static files: create the app with ``docs_url=None``)."""
    app.mount("/console/static", static_files(), name="console-static")
    app.include_router(docs.router)
    app.add_exception_handler(SignInRequired, _redirect_to_login)
    app.add_exception_handler(ConsoleForbidden, _forbidden)
    app.add_exception_handler(CsrfRejected, _forbidden)


__all__ = ["CSRF_FIELD", "User", "home_of", "install", "router"]

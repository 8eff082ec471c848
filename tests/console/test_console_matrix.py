"""Every console page x every role, read off the routes themselves.

A page's dependencies say which scopes may open it (``allow(...)`` in app/console/deps.py);
this test signs in as each role and asserts: no session -> redirect to sign-in; a role the
page allows -> the page (200, or 404 for an id that does not exist); any other signed-in role
-> the 403 page. A page that declares no scope must be the sign-in page or one any signed-in
user may open. Every POST refuses a request without the CSRF token (403), whoever sends it.
"""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from app.keys.schemas import CreatedKey, Scope
from tests.conftest import make_key
from tests.console.helpers import sign_in

PUBLIC = {"/console/login", "/console"}
ROLES: dict[str, tuple[str, tuple[Scope, ...]]] = {
    "admin": ("operator", (Scope.admin,)),
    "finance": ("operator", (Scope.finance,)),
    "billing": ("acme", (Scope.billing,)),
    "legacy": ("legacy-co", (Scope.admin, Scope.finance)),
}


def _scopes(route: APIRoute) -> set[str] | None:
    """The scopes any of which opens the page; None when it needs only a session."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        marked = getattr(dep.call, "_console_scopes", None)
        if marked is not None:
            return {s.value for s in marked}
        stack.extend(dep.dependencies)
    return None


def _console_routes(app: FastAPI, method: str) -> list[APIRoute]:
    routes = [c.original_route for c in iter_route_contexts(list(app.router.routes))]
    return [
        r
        for r in routes
        if isinstance(r, APIRoute) and r.path.startswith("/console") and method in r.methods
    ]


def _concrete(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "999999", path)


async def _client_as(app: FastAPI, role: str) -> tuple[httpx.AsyncClient, CreatedKey]:
    customer, scopes = ROLES[role]
    key = await make_key(app, customer, scopes, legacy_staff=role == "legacy")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    signed = await sign_in(client, key)
    assert signed.status_code == 303, (role, signed.text)
    return client, key


@pytest.mark.parametrize("role", sorted(ROLES))
async def test_every_page_opens_for_its_roles_only(app: FastAPI, role: str) -> None:
    pages = _console_routes(app, "GET")
    assert len(pages) >= 3
    client, key = await _client_as(app, role)
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    effective = set(key.scopes)
    if role == "billing":
        effective &= {"billing", "predict"}
    try:
        for route in pages:
            path = _concrete(route.path)
            if route.path in PUBLIC:
                continue
            nobody = await anonymous.get(path)
            assert nobody.status_code == 303, (path, nobody.status_code)
            assert nobody.headers["location"].startswith("/console/login")
            allowed = _scopes(route)
            got = await client.get(path)
            if allowed is None or allowed & effective:
                assert got.status_code in (200, 404), (role, path, got.status_code, got.text[:300])
            else:
                assert got.status_code == 403, (role, path, got.status_code)
    finally:
        await client.aclose()
        await anonymous.aclose()


async def test_every_post_needs_the_csrf_token(app: FastAPI) -> None:
    posts = [r for r in _console_routes(app, "POST") if r.path != "/console/login"]
    assert any(r.path == "/console/logout" for r in posts)
    client, _ = await _client_as(app, "admin")
    try:
        for route in posts:
            response = await client.post(_concrete(route.path), data={"x": "1"})
            # 403 from the CSRF check (or from the page's scope check, which runs first and
            # refuses as well); never a change.
            assert response.status_code == 403, (route.path, response.status_code)
    finally:
        await client.aclose()

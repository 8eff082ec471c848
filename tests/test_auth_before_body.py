"""Authentication and scope come before the body: on every protected route, a request without
a key is 401 and one with the wrong scope is 403 whatever its body, and only an authorized
caller learns that its JSON is malformed (400 ``invalid_json``, as the predict routes say)."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from app.keys.schemas import CreatedKey, Scope
from tests.conftest import bearer, make_key

BAD_BODIES = {
    "truncated": b'{"name": ',
    "not-utf8": b'{"name": "\xff\xfe"}',
    "wrong-shape": b"[1, 2, 3]",
}


def _body_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) of the app that takes a JSON body, ids filled in."""
    found = []
    for context in iter_route_contexts(app.router.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not context.dependant.body_params:
            continue
        path = re.sub(r"\{[^}]+\}", "1", str(context.path))
        found.extend((method, path) for method in sorted(context.methods or ()))
    assert found, "no route with a body found: the tests below would prove nothing"
    return found


async def test_every_body_route_is_found(app: FastAPI) -> None:
    routes = _body_routes(app)
    assert ("POST", "/admin/plans") in routes
    assert ("POST", "/admin/keys") in routes
    assert len(routes) >= 8


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_no_key_is_401_before_any_body(
    app: FastAPI, client: httpx.AsyncClient, body: bytes
) -> None:
    for method, path in _body_routes(app):
        if path.startswith("/webhooks"):
            continue  # Stripe's signature, not a key, guards it (tests/billing/test_webhooks)
        if path.startswith("/console"):
            continue  # HTML forms behind a session and CSRF token (tests/console)
        response = await client.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["type"] == "missing_api_key"


async def test_the_wrong_scope_is_403_before_any_body(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    developer = await make_key(app, "acme", (Scope.predict,))
    for method, path in _body_routes(app):
        if path.startswith(("/webhooks", "/console")):
            continue
        response = await client.request(
            method,
            path,
            content=BAD_BODIES["truncated"],
            headers={**bearer(developer), "Content-Type": "application/json"},
        )
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["type"] == "insufficient_scope"


@pytest.fixture
async def admin(app: FastAPI) -> CreatedKey:
    return await make_key(app, "tollgate-ops", (Scope.admin,))


@pytest.mark.parametrize("name", ["truncated", "not-utf8"])
async def test_an_authorized_caller_gets_invalid_json(
    client: httpx.AsyncClient, admin: CreatedKey, name: str
) -> None:
    response = await client.post(
        "/admin/plans",
        content=BAD_BODIES[name],
        headers={**bearer(admin), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_json"
    assert error["request_id"]

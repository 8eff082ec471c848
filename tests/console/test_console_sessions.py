"""Console sign-in and its safety: cookie flags, CSRF, CSP, sign-out, revocation, timeouts,
and who may open what."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from app.clock import ManualClock
from app.keys.schemas import Scope
from tests.conftest import bearer, make_key
from tests.console.helpers import csrf_of, sign_in


def _assert_secure_headers(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_sign_in_issues_a_strict_session_cookie_and_never_keeps_the_key(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await make_key(app, "operator", (Scope.admin,))
    form = await client.get("/console/login")
    _assert_secure_headers(form)
    assert '<label for="api_key">' in form.text and "<script>" not in form.text
    signed = await sign_in(client, admin)
    assert signed.status_code == 303 and signed.headers["location"] == "/console/"
    cookie = next(
        c for c in signed.headers.get_list("set-cookie") if c.startswith("tollgate_console=")
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert admin.secret not in cookie and "Secure" not in cookie  # plain http here
    page = await client.get("/console/")
    assert page.status_code == 200 and "Overview" in page.text
    assert admin.secret not in page.text
    _assert_secure_headers(page)


async def test_a_wrong_key_or_a_predict_key_is_refused(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    developer = await make_key(app, "acme")
    refused = await sign_in(client, developer)
    assert refused.status_code == 403 and "cannot open the console" in refused.text
    form = await client.get("/console/login")
    wrong = await client.post(
        "/console/login",
        data={"api_key": "tg_" + "x" * 32, "csrf_token": csrf_of(form.text)},
    )
    assert wrong.status_code == 401 and "Sign-in refused" in wrong.text
    assert (await client.get("/console/")).status_code == 303


async def test_sign_in_without_the_forms_token_is_refused(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await make_key(app, "operator", (Scope.admin,))
    await client.get("/console/login")
    forged = await client.post("/console/login", data={"api_key": admin.secret})
    assert forged.status_code == 403
    assert "tollgate_console=" not in forged.headers.get("set-cookie", "")


async def test_pages_need_a_session_and_redirect_to_sign_in(client: httpx.AsyncClient) -> None:
    page = await client.get("/console/")
    assert page.status_code == 303 and page.headers["location"] == "/console/login?next=/console/"
    fragment = await client.get("/console/", headers={"HX-Request": "true"})
    assert fragment.headers["hx-redirect"].startswith("/console/login")


async def test_sign_out_needs_the_csrf_token_and_ends_the_session_on_the_server(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await make_key(app, "operator", (Scope.admin,))
    await sign_in(client, admin)
    page = await client.get("/console/")
    cookie = client.cookies.get("tollgate_console")
    assert cookie
    assert (await client.post("/console/logout")).status_code == 403
    assert (await client.post("/console/logout", data={"csrf_token": "nope"})).status_code == 403
    assert (await client.get("/console/")).status_code == 200  # still signed in
    out = await client.post("/console/logout", data={"csrf_token": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    # The old cookie, replayed, opens nothing: the session ended on the server.
    client.cookies.set("tollgate_console", cookie, path="/console")
    assert (await client.get("/console/")).status_code == 303


async def test_revoking_the_key_or_suspending_the_customer_signs_out(
    app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    admin = await make_key(app, "operator", (Scope.admin,))
    customer = await make_key(app, "acme", (Scope.billing,))
    await sign_in(client, customer)
    assert (await client.get("/console/me")).status_code == 200
    suspended = await client.post(
        f"/admin/customers/{customer.customer_id}/suspend", headers=bearer(admin)
    )
    assert suspended.status_code == 200
    clock.advance(seconds=2)  # past the key cache TTL
    assert (await client.get("/console/me")).status_code == 303

    client.cookies.clear()
    other = await make_key(app, "globex", (Scope.billing,))
    await sign_in(client, other)
    assert (await client.get("/console/me")).status_code == 200
    revoked = await client.post(f"/admin/keys/{other.key_id}/revoke", headers=bearer(admin))
    assert revoked.status_code == 200, revoked.text
    clock.advance(seconds=2)
    assert (await client.get("/console/me")).status_code == 303


async def test_an_idle_session_ends(
    app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    admin = await make_key(app, "operator", (Scope.admin,))
    await sign_in(client, admin)
    clock.advance(seconds=1700)
    assert (await client.get("/console/")).status_code == 200
    clock.advance(seconds=1700)  # seen 1700 s ago: still inside the 1800 s idle timeout
    assert (await client.get("/console/")).status_code == 200
    clock.advance(seconds=1801)
    assert (await client.get("/console/")).status_code == 303


async def test_a_customer_cannot_open_an_operator_page(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    customer = await make_key(app, "acme", (Scope.billing,))
    signed = await sign_in(client, customer)
    assert signed.headers["location"] == "/console/me"
    page = await client.get("/console/")
    assert page.status_code == 403 and "Not allowed" in page.text
    _assert_secure_headers(page)


async def test_assets_are_served_by_the_app(client: httpx.AsyncClient) -> None:
    for path in (
        "/console/static/vendor/htmx.min.js",
        "/console/static/vendor/chart.umd.min.js",
        "/console/static/vendor/pico.min.css",
        "/console/static/console.js",
    ):
        response = await client.get(path)
        assert response.status_code == 200, path
        _assert_secure_headers(response)

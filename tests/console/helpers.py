"""Signing in to the console from a test client, as a browser does."""

from __future__ import annotations

import re

import httpx

from app.keys.schemas import CreatedKey

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF field in the page"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, key: CreatedKey) -> httpx.Response:
    """GET the sign-in form, POST the key with the form's token; the client keeps the
    session cookie. Returns the POST's response (a 303 on success)."""
    form = await client.get("/console/login")
    assert form.status_code == 200
    return await client.post(
        "/console/login", data={"api_key": key.secret, "csrf_token": csrf_of(form.text)}
    )

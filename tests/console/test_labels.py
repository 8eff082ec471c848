"""Every form control of every console page has a label (a <label for>, an enclosing
<label>, or aria-label/aria-labelledby), so screen readers name each field."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from app.keys.schemas import Scope
from tests.conftest import make_key
from tests.console.helpers import sign_in

_UNLABELLED_TYPES = {"hidden", "submit", "button", "reset", "image"}


class _Controls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.label_for: set[str] = set()
        self.open_labels = 0
        self.controls: list[tuple[str, dict[str, str | None], bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "label":
            self.open_labels += 1
            if a.get("for"):
                self.label_for.add(str(a["for"]))
        elif tag in ("input", "select", "textarea"):
            if tag == "input" and (a.get("type") or "text") in _UNLABELLED_TYPES:
                return
            self.controls.append((tag, a, self.open_labels > 0))

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.open_labels -= 1

    def unlabelled(self) -> list[str]:
        return [
            f"<{tag} name={a.get('name')!r} id={a.get('id')!r}>"
            for tag, a, inside in self.controls
            if not inside
            and a.get("id") not in self.label_for
            and not a.get("aria-label")
            and not a.get("aria-labelledby")
        ]


def _pages(app: FastAPI) -> list[str]:
    routes = [c.original_route for c in iter_route_contexts(list(app.router.routes))]
    return sorted(
        r.path
        for r in routes
        if isinstance(r, APIRoute)
        and r.path.startswith("/console")
        and "GET" in r.methods
        and "{" not in r.path
    )


async def test_every_form_control_has_a_label(app: FastAPI) -> None:
    staff = await make_key(app, "operator", (Scope.admin, Scope.finance))
    customer = await make_key(app, "acme", (Scope.billing, Scope.predict))
    checked = 0
    for key in (staff, customer):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        try:
            await sign_in(client, key)
            for path in _pages(app):
                response = await client.get(path)
                if response.status_code != 200 or "text/html" not in response.headers.get(
                    "content-type", ""
                ):
                    continue
                parser = _Controls()
                parser.feed(response.text)
                checked += len(parser.controls)
                assert parser.unlabelled() == [], path
        finally:
            await client.aclose()
    assert checked >= 10  # the pages without an id in their path hold this many at least

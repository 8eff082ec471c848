"""``/docs`` and ``/console`` load with the network cut off: every page, stylesheet and script
they reference is served by the app itself, and none names another host. (The real-browser
counterpart, which watches every request Chromium makes, is in test_browser_flow.py.)"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from app.console.web import templates
from app.keys.schemas import Scope
from tests.conftest import make_key
from tests.console.helpers import sign_in
from tests.paths import REPO_ROOT

ORIGIN = "http://tollgate.test"  # the test client's base_url
STATIC = REPO_ROOT / "app" / "console" / "static"
REMOTE = re.compile(r"https?://", re.IGNORECASE)
# url("..."), url('...') (escaped quotes inside allowed) or url(...); @import "...".
CSS_URL = re.compile(
    r"""url\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([^)'"\s]*))\s*\)"""
    r"""|@import\s+(?:"([^"]*)"|'([^']*)')"""
)


class _References(HTMLParser):
    """Every URL a page names: ``loads`` (what a browser fetches to show it: scripts,
    stylesheets, images, icons) and ``links`` (anchors and form targets)."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.links: list[str] = []
        self.inline_styles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if "style" in values:
            self.inline_styles.append(values["style"])
        for name in ("src", "poster", "data"):
            if name in values:
                self.loads.append(values[name])
        if "srcset" in values:
            self.loads += [part.split()[0] for part in values["srcset"].split(",") if part.strip()]
        if "href" in values:
            (self.loads if tag == "link" else self.links).append(values["href"])
        for name in ("action", "formaction", "hx-get", "hx-post", "hx-put", "hx-delete"):
            if name in values:
                self.links.append(values[name])

    def handle_data(self, data: str) -> None:
        # <style> blocks are forbidden by the CSP; url()s in any text would still be loads.
        if "url(" in data:
            self.loads += css_urls(data)


def css_urls(css: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None) for m in CSS_URL.finditer(css)]


def references(html: str) -> _References:
    parser = _References()
    parser.feed(html)
    return parser


def _same_origin(url: str, base: str) -> bool:
    absolute = urlsplit(urljoin(base, url))
    return absolute.scheme in ("data", "blob") or (
        f"{absolute.scheme}://{absolute.netloc}" == ORIGIN
    )


async def assert_self_contained(client: httpx.AsyncClient, path: str) -> list[str]:
    """GET ``path`` (200), then every resource it and its stylesheets load: each is
    same-origin and answers 200. Anchors and forms must stay on this host (their pages may
    not exist yet). Returns what was fetched, for the caller's own checks."""
    page = await client.get(path)
    assert page.status_code == 200, (path, page.status_code)
    assert "text/html" in page.headers["content-type"]
    found = references(page.text)
    assert found.inline_styles == [], f"{path}: style= attributes break the CSP"
    base = ORIGIN + path
    elsewhere = [u for u in found.loads + found.links if not _same_origin(u, base)]
    assert elsewhere == [], f"{path} names another host: {elsewhere}"
    fetched: list[str] = []
    queue = [urljoin(base, u) for u in found.loads]
    while queue:
        url = queue.pop()
        if url in fetched or url.startswith("data:"):
            continue
        fetched.append(url)
        response = await client.get(url)
        assert response.status_code == 200, (path, url, response.status_code)
        if url.split("?")[0].endswith(".css"):
            nested = css_urls(response.text)
            remote = [u for u in nested if not _same_origin(u, url)]
            assert remote == [], f"{url} loads from another host: {remote}"
            queue += [urljoin(url, u) for u in nested if not u.startswith("data:")]
    return fetched


def test_the_reference_finder_sees_each_kind_of_load() -> None:
    found = references(
        '<link rel="stylesheet" href="https://cdn.example/x.css"><script src="//cdn.example/x.js">'
        '</script><img srcset="/a.png 1x, https://cdn.example/b.png 2x"><a href="/console/">'
        "</a><form action='https://evil.example/'></form><div style=\"color: red\"></div>"
    )
    assert found.loads == [
        "https://cdn.example/x.css",
        "//cdn.example/x.js",
        "/a.png",
        "https://cdn.example/b.png",
    ]
    assert found.links == ["/console/", "https://evil.example/"]
    assert not _same_origin("//cdn.example/x.js", ORIGIN + "/docs")
    assert _same_origin("vendor/pico.min.css", ORIGIN + "/console/static/console.css")
    assert css_urls(
        'a{background:url("data:image/svg+xml,<svg xmlns=\\"http://www.w3.org/2000/svg\\"/>")}'
        "b{background:url(https://cdn.example/i.png)} @import 'https://cdn.example/f.css';"
    ) == [
        'data:image/svg+xml,<svg xmlns=\\"http://www.w3.org/2000/svg\\"/>',
        "https://cdn.example/i.png",
        "https://cdn.example/f.css",
    ]


async def test_docs_loads_swagger_ui_from_the_app_itself(client: httpx.AsyncClient) -> None:
    fetched = await assert_self_contained(client, "/docs")
    assert {
        f"{ORIGIN}/console/static/vendor/swagger-ui-bundle.js",
        f"{ORIGIN}/console/static/vendor/swagger-ui.css",
        f"{ORIGIN}/console/static/swagger-init.js",
    } <= set(fetched)
    page = await client.get("/docs")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page.text  # the start-up script is a file
    init = (STATIC / "swagger-init.js").read_text()
    assert '"/openapi.json"' in init and "validatorUrl: null" in init
    assert (await client.get("/openapi.json")).status_code == 200
    assert (await client.get("/redoc")).status_code == 404  # ReDoc is not shipped


async def test_console_pages_load_nothing_from_another_host(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await assert_self_contained(client, "/console/login")
    admin = await make_key(app, "operator", (Scope.admin, Scope.finance))
    assert (await sign_in(client, admin)).status_code == 303
    await assert_self_contained(client, "/console/")

    customer = await make_key(app, "acme", (Scope.billing,))
    client.cookies.clear()
    assert (await sign_in(client, customer)).status_code == 303
    await assert_self_contained(client, "/console/me")


@pytest.mark.parametrize("name", ["console.js", "swagger-init.js", "console.css"])
def test_our_own_assets_name_no_host(name: str) -> None:
    """The vendored bundles carry URLs in strings (spec links, licences), which the browser
    test shows are never fetched; the app's own scripts and styles name none at all."""
    assert not REMOTE.search((STATIC / name).read_text()), name


def test_no_template_names_another_host() -> None:
    """Every template, including pages no test above renders: no http(s):// at all."""
    loader = templates.env.loader
    assert loader is not None
    offenders = []
    for name in templates.env.list_templates():
        source, _, _ = loader.get_source(templates.env, name)
        lines = source.splitlines()
        offenders += [f"{name}: {line.strip()}" for line in lines if REMOTE.search(line)]
    assert offenders == [], "\n".join(offenders)

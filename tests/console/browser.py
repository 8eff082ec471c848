"""A real browser against the real app: the app served by uvicorn on a free port (a thread of
this process) over a fresh Postgres database built by migrations, and headless Chromium
driven by Selenium (Debian's ``chromium`` and ``chromium-driver``; ``.ci/run`` installs
them). Without them the browser tests skip, saying why.

Everything Chromium fetches is read back from its DevTools performance log, so a test can
assert that a page asked no other host for anything (the console and ``/docs`` must work
with the network cut off)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from sqlalchemy.pool import NullPool

from app.clock import SystemClock
from app.config import Settings
from app.db.engine import build_engine, build_sessionmaker
from app.db.migrate import upgrade as run_migrations
from app.inference.predictor import LoadedModules
from app.keys.schemas import CreatedKey, Scope
from app.keys.service import create_key
from app.main import create_app
from tests.conftest import make_settings, scratch_database
from tests.paths import REPO_ROOT

CHROMIUM = os.environ.get("TOLLGATE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TOLLGATE_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = REPO_ROOT / "docs" / "console"
WAIT_S = 20  # a bound on a hung page, not a timing target


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for what, path in (("chromium", CHROMIUM), ("chromium-driver", CHROMEDRIVER)):
        if not os.access(path, os.X_OK):
            return f"{what} not found at {path} (apt-get install chromium chromium-driver)"
    return None


@dataclass
class LiveApp:
    """The app, served over a real socket."""

    settings: Settings
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc

    def make_key(self, customer: str, scopes: Sequence[Scope]) -> CreatedKey:
        """A key made directly in the database (unaudited), as the other tests' make_key."""

        async def create() -> CreatedKey:
            engine = build_engine(self.settings.database_url, pool_size=1)
            try:
                async with build_sessionmaker(engine)() as session, session.begin():
                    return await create_key(
                        session, self.settings.secret_key, customer_name=customer, scopes=scopes
                    )
            finally:
                await engine.dispose()

        return asyncio.run(create())

    def sql(self, statement: str, **params: object) -> list[Any]:
        """Run one SQL statement on the live app's database (test set-up: back-dating rows
        that only time could write); the rows it returns, if any."""
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        url = make_url(self.settings.database_url).set(drivername="postgresql+psycopg")
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(statement), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            engine.dispose()


@contextmanager
def live_app(pg_admin_url: str, modules: LoadedModules) -> Iterator[LiveApp]:
    """The real app (lifespan, models, meter writer) on 127.0.0.1:<free port>, in a thread,
    over a database of its own made by ``alembic upgrade head`` and dropped afterwards."""
    with scratch_database(pg_admin_url, "tollgate_browser") as database_url:
        run_migrations(database_url)
        settings = make_settings(database_url)
        app = create_app(settings, clock=SystemClock(), modules=modules)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="live-app", daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not server.started:
            assert thread.is_alive(), "the live app's thread died while starting"
            assert time.monotonic() < deadline, "the live app did not start"
            time.sleep(0.05)
        port = int(server.servers[0].sockets[0].getsockname()[1])
        try:
            yield LiveApp(settings, f"http://127.0.0.1:{port}", server, thread)
        finally:
            server.should_exit = True
            thread.join(60)


def new_driver() -> Any:
    """Headless Chromium with its console and DevTools network events recorded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root in a container
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-background-networking",  # no update or safe-browsing pings of its own
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # The page itself 1280x900, the size of the screenshots: the window's size counts the
    # browser's own bars too, so it grows by what they take.
    width, height = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * 1280 - width, 2 * 900 - height)
    return driver


def shoot(driver: Any, name: str, folder: Path = SCREENSHOTS) -> Path | None:
    """Save ``<folder>/<name>.png`` when TOLLGATE_SCREENSHOTS=1 (``make screenshots``), so
    that ordinary test runs leave the committed screenshots alone."""
    if os.environ.get("TOLLGATE_SCREENSHOTS") != "1":
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"screenshot {name} failed"
    return path


@dataclass
class Browser:
    """One Chromium, pointed at one live app; a test gets it with no cookies and empty logs."""

    driver: Any
    app: LiveApp
    requested: list[str] = field(default_factory=list)
    documents: list[tuple[str, int]] = field(default_factory=list)

    def open(self, path: str) -> None:
        self.driver.get(self.app.url + path)

    @property
    def path(self) -> str:
        return urlsplit(self.driver.current_url).path

    def wait_for_path(self, path: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, WAIT_S).until(lambda d: urlsplit(d.current_url).path == path)

    def wait_for(self, css: str) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, WAIT_S).until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, css))
        )

    def field(self, label: str) -> Any:
        """The form control a visible <label> names (as a person finds it)."""
        from selenium.webdriver.common.by import By

        (tag,) = [
            t for t in self.driver.find_elements(By.TAG_NAME, "label") if t.text.strip() == label
        ]
        return self.driver.find_element(By.ID, tag.get_attribute("for"))

    def button(self, text: str) -> Any:
        from selenium.webdriver.common.by import By

        (found,) = [
            b for b in self.driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == text
        ]
        return found

    def fill(self, element_id: str, value: str) -> Any:
        """Type ``value`` into the control with ``element_id``, replacing what it held."""
        from selenium.webdriver.common.by import By

        control = self.driver.find_element(By.ID, element_id)
        control.clear()
        control.send_keys(value)
        return control

    def wait_until(self, condition: Any) -> Any:
        """Until ``condition()`` holds; an element of the page being left (a form submitted
        and the next page loading) is stale for a moment: asked again."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(
            self.driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,)
        ).until(lambda _: condition())

    def chart_drawn(self, css: str = "canvas[data-chart]") -> Any:
        """The chart's canvas, once console.js has drawn it (Chart.js marks it)."""
        canvas = self.wait_for(css)
        self.wait_until(lambda: canvas.get_attribute("data-drawn") == "1")
        return canvas

    def cookies(self) -> dict[str, str]:
        """The browser's cookies for the app (the console session's), for a direct fetch."""
        return {c["name"]: c["value"] for c in self.driver.get_cookies()}

    def sign_in(self, key: CreatedKey | str) -> None:
        """Type the key into the sign-in form's labelled field and press the button."""
        secret = key if isinstance(key, str) else key.secret
        self.open("/console/login")
        box = self.field("API key")
        box.clear()
        box.send_keys(secret)
        self.button("Sign in").click()

    def sign_out(self) -> None:
        self.button("Sign out").click()
        self.wait_for_path("/console/login")

    def console_errors(self) -> list[str]:
        """SEVERE entries of the browser console since the last call (script errors, CSP
        violations, failed loads)."""
        return [
            str(entry["message"])
            for entry in self.driver.get_log("browser")
            if entry["level"] == "SEVERE"
        ]

    def read_network(self) -> None:
        """Drain the DevTools log into ``requested`` (every URL asked for) and ``documents``
        (each page navigated to, with its HTTP status)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message.get("method") == "Network.requestWillBeSent":
                self.requested.append(params["request"]["url"])
            elif message.get("method") == "Network.responseReceived" and (
                params.get("type") == "Document"
            ):
                self.documents.append((params["response"]["url"], params["response"]["status"]))

    def status_of(self, path: str) -> int:
        """The HTTP status of the last navigation to ``path``."""
        self.read_network()
        statuses = [s for url, s in self.documents if urlsplit(url).path == path]
        assert statuses, f"no page load of {path} in {self.documents}"
        return statuses[-1]

    def other_hosts(self) -> list[str]:
        """Every URL requested since the test began that is not the app's own."""
        self.read_network()
        return [
            url
            for url in self.requested
            if urlsplit(url).scheme not in ("data", "blob")
            and urlsplit(url).netloc != self.app.netloc
        ]

    def reset(self) -> None:
        self.driver.get("about:blank")
        self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
        self.driver.get_log("browser")
        self.driver.get_log("performance")
        self.requested.clear()
        self.documents.clear()

"""Fixtures of the real-browser tests (tests/console/browser.py): one live app and one
Chromium per module, a clean browser (no cookies, empty logs) per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.inference.predictor import LoadedModules
from tests.console.browser import Browser, LiveApp, live_app, missing_browser, new_driver


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    driver = new_driver()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def live(pg_admin_url: str, loaded_modules: LoadedModules) -> Iterator[LiveApp]:
    with live_app(pg_admin_url, loaded_modules) as served:
        yield served


@pytest.fixture
def browser(chromium: Any, live: LiveApp) -> Browser:
    """Chromium on the live app. ``chromium`` comes first so that a machine without it skips
    before the app is started."""
    session = Browser(chromium, live)
    session.reset()
    return session

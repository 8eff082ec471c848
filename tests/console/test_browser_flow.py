"""The console and ``/docs`` in a real browser (headless Chromium, tests/console/browser.py):
sign-in through the form, by mouse and by keyboard, sign-out, a customer kept off operator
pages, no console errors (CSP violations included) and no request to any other host.

``make screenshots`` runs these with TOLLGATE_SCREENSHOTS=1 to refresh docs/console/*.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.keys.schemas import Scope
from tests.console.browser import WAIT_S, Browser, LiveApp, shoot

pytestmark = pytest.mark.browser


def test_admin_signs_in_through_the_form_sees_the_overview_and_signs_out(
    browser: Browser, live: LiveApp
) -> None:
    admin = live.make_key("operator", (Scope.admin, Scope.finance))
    browser.open("/console/login")
    browser.wait_for("form")
    shoot(browser.driver, "login")
    assert browser.console_errors() == []

    browser.sign_in(admin)
    browser.wait_for_path("/console/")
    assert browser.status_of("/console/") == 200
    assert browser.wait_for("main h1").text == "Overview"
    assert admin.secret not in browser.driver.page_source
    assert browser.console_errors() == []
    shoot(browser.driver, "overview")

    browser.sign_out()
    browser.open("/console/")  # the session is over: back to the sign-in form
    browser.wait_for_path("/console/login")
    assert browser.other_hosts() == []
    assert browser.console_errors() == []


def test_a_customer_lands_on_its_own_page_and_is_refused_operator_pages(
    browser: Browser, live: LiveApp
) -> None:
    customer = live.make_key("acme", (Scope.billing,))
    browser.sign_in(customer)
    browser.wait_for_path("/console/me")
    assert browser.wait_for("main h1").text == "Usage"
    assert browser.console_errors() == []
    shoot(browser.driver, "customer-usage")

    browser.open("/console/")
    assert browser.status_of("/console/") == 403
    assert browser.wait_for("main h1").text == "Not allowed"
    assert browser.wait_for("[role=alert]").text
    # The 403 itself is the one expected console entry ("Failed to load resource: ... 403").
    expected = (
        f"{live.url}/console/ - Failed to load resource: the server responded with a status of 403"
    )
    assert [e for e in browser.console_errors() if not e.startswith(expected)] == []
    shoot(browser.driver, "forbidden")
    assert browser.other_hosts() == []


def test_a_wrong_key_is_refused_on_the_page(browser: Browser) -> None:
    browser.sign_in("tg_" + "x" * 32)
    alert = browser.wait_for("[role=alert]")
    assert "Sign-in refused" in alert.text
    assert browser.path == "/console/login"


def test_the_sign_in_form_works_from_the_keyboard(browser: Browser, live: LiveApp) -> None:
    """From the page's first focusable element (the skip link), Tab reaches the key field
    and then the button; Enter in the field submits the form."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    admin = live.make_key("operator", (Scope.admin,))
    browser.open("/console/login")
    driver = browser.driver
    box = browser.field("API key")
    assert driver.switch_to.active_element == box  # autofocus: ready to type

    first = driver.find_element(By.CSS_SELECTOR, "a.skip")
    driver.execute_script("arguments[0].focus()", first)  # the page's start
    reached: list[Any] = []
    for _ in range(6):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        reached.append(driver.switch_to.active_element)
        if reached[-1] == browser.button("Sign in"):
            break
    assert box in reached, "Tab never reached the key field"
    assert reached[-1] == browser.button("Sign in"), "Tab never reached the button"
    assert reached.index(box) < len(reached) - 1  # the field comes before the button

    box.send_keys(admin.secret)
    box.send_keys(Keys.ENTER)
    browser.wait_for_path("/console/")
    assert browser.wait_for("main h1").text == "Overview"


def test_docs_render_from_the_apps_own_files(browser: Browser) -> None:
    browser.open("/docs")
    title = browser.wait_for(".swagger-ui .info .title")
    assert "Tollgate" in title.text
    browser.wait_for(".opblock")  # the operations, from /openapi.json
    assert browser.console_errors() == []
    assert browser.other_hosts() == []
    assert any(url.endswith("/openapi.json") for url in browser.requested)
    shoot(browser.driver, "docs")


def test_the_browser_log_catches_another_host(browser: Browser) -> None:
    """The network check can fail: a request to another host is seen even when it fails
    (nothing listens on port 9 of 127.0.0.2)."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.open("/console/login")
    browser.driver.execute_script(
        "var i = new Image(); i.src = 'http://127.0.0.2:9/x.png'; document.body.append(i);"
    )
    WebDriverWait(browser.driver, WAIT_S).until(lambda _: browser.other_hosts())
    assert browser.other_hosts() == ["http://127.0.0.2:9/x.png"]
    assert any("Content Security Policy" in e for e in browser.console_errors())


def test_shoot_writes_only_when_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Driver:
        def save_screenshot(self, path: str) -> bool:
            Path(path).write_bytes(b"png")
            return True

    monkeypatch.delenv("TOLLGATE_SCREENSHOTS", raising=False)
    assert shoot(Driver(), "login", tmp_path) is None
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("TOLLGATE_SCREENSHOTS", "1")
    assert shoot(Driver(), "login", tmp_path) == tmp_path / "login.png"
    assert (tmp_path / "login.png").read_bytes() == b"png"

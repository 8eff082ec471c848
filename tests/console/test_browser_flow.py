"""The console and ``/docs`` in a real browser (headless Chromium, tests/console/browser.py):
sign-in through the form, by mouse and by keyboard, sign-out, a customer kept off operator
pages, no console errors (CSP violations included) and no request to any other host.

``make screenshots`` runs these with TOLLGATE_SCREENSHOTS=1 to refresh docs/console/*.png."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.keys.schemas import Scope
from app.metering.rollups import FILL_FROM_LEDGER_SQL
from tests.console.browser import WAIT_S, Browser, LiveApp, new_driver, shoot

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


# --- the whole story ---------------------------------------------------------------------

PLAN_NAME = "Graduated requests"
CUSTOMER_NAME = "Globex Corporation"
PREDICTIONS = 8  # this month: 5 x 7.00 + 3 x 6.50 = 54.50
BACKDATED = 6  # a past month: 5 x 7.00 + 1 x 6.50 = 41.50


def _month(months_back: int) -> tuple[str, datetime]:
    """A past month as YYYY-MM, and its first instant (UTC)."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - months_back
    start = datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
    return f"{start:%Y-%m}", start


def _quiet(browser: Browser, *refused: str) -> None:
    """No SEVERE entry in the browser console (script errors, CSP violations, failed loads)
    besides the 403 answers of ``refused`` paths, which the browser logs as failed loads."""
    expected = tuple(
        f"{browser.app.url}{path} - Failed to load resource: the server responded with a "
        "status of 403"
        for path in refused
    )
    assert [e for e in browser.console_errors() if not e.startswith(expected)] == []


def _eventually(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_whole_story_through_the_browser(browser: Browser, live: LiveApp) -> None:
    """An admin creates a customer, a key, a graduated plan (checked on the calculator) and
    assigns it; the customer's key calls the API; the customer sees the usage; finance
    previews, closes a month (dry run, then confirmed) and downloads the invoice PDF. A
    tampered CSRF token, sign-out, a revoked key's session and a customer on an operator
    page are refused along the way. Every page: no console error, no other host."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    admin = live.make_key("operator", (Scope.admin,))
    finance = live.make_key("operator", (Scope.finance,))
    driver = browser.driver

    # --- the admin signs in and creates a customer on the Customers page
    browser.sign_in(admin)
    browser.wait_for_path("/console/")
    browser.open("/console/customers")
    browser.field("Name").send_keys(CUSTOMER_NAME)
    browser.field("Email").send_keys("dev@globex.example")
    browser.button("Create customer").click()
    browser.wait_until(lambda: re.fullmatch(r"/console/customers/\d+", browser.path))
    customer_id = int(browser.path.rsplit("/", 1)[1])
    assert browser.wait_for("main h1").text == CUSTOMER_NAME
    assert (
        "In force: no plan"
        in driver.find_element(By.ID, "plan-heading").find_element(By.XPATH, "..").text
    )
    _quiet(browser)

    # --- a key with the predict and billing scopes, from the customer page's "New key"
    driver.find_element(By.LINK_TEXT, "New key").click()
    browser.wait_for_path("/console/keys")
    assert driver.find_element(By.ID, "k-customer").get_attribute("value") == str(customer_id)
    browser.fill("k-name", "globex production")
    assert driver.find_element(By.ID, "scope-predict").is_selected()
    driver.find_element(By.ID, "scope-billing").click()
    browser.button("Create key").click()
    shown = browser.wait_for("#new-secret")
    secret = shown.text.strip()
    assert secret.startswith("tg_")
    created = re.search(r"Key (\d+) \(.*scopes billing, predict\.", browser.wait_for("main").text)
    assert created, "the new key's id and scopes"
    key_id = int(created.group(1))
    driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": live.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    copy = browser.button("Copy")
    copy.click()
    browser.wait_until(lambda: copy.text == "Copied")
    pasted = driver.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], () => arguments[0](null))"
    )
    assert pasted == secret
    shoot(driver, "key-created")
    _quiet(browser)
    browser.open(f"/console/keys?customer_id={customer_id}")
    browser.wait_for("main table")
    assert secret not in driver.page_source  # shown once, never again
    assert secret[-4:] in driver.find_element(By.TAG_NAME, "tbody").text  # its last four only
    shoot(driver, "keys")

    # --- a graduated plan in the editor; the live calculator prices it
    browser.open("/console/plans")
    driver.find_element(By.LINK_TEXT, "New plan").click()
    browser.wait_for_path("/console/plans/new")
    browser.fill("p-name", PLAN_NAME)
    Select(driver.find_element(By.ID, "c0-unit")).select_by_value("request")
    Select(driver.find_element(By.ID, "c0-pricing")).select_by_value("graduated")
    for row, (up_to, price) in enumerate((("5", "7.00"), ("10", "6.50"), ("", "6.00"))):
        if up_to:
            browser.fill(f"c0-t{row}-up", up_to)
        browser.fill(f"c0-t{row}-price", price)
    browser.button("Create plan").click()
    browser.wait_until(lambda: re.fullmatch(r"/console/plans/\d+", browser.path))
    plan_id = browser.path.rsplit("/", 1)[1]
    assert browser.wait_for("main h1").text == PLAN_NAME
    quote = driver.find_element(By.ID, "quote")
    assert quote.text == ""  # nothing priced until asked
    browser.fill("quote-units", "20")  # 35.00 + 32.50 + 60.00
    browser.wait_until(lambda: "127.50" in quote.text)
    browser.fill("quote-units", "6")  # the htmx fragment again: 35.00 + 6.50
    browser.wait_until(lambda: "41.50" in quote.text)
    assert quote.text == "6 units cost 41.50 USD"
    shoot(driver, "plan")
    _quiet(browser)

    # --- assigned to the customer from its page, in force now
    browser.open(f"/console/customers/{customer_id}")
    Select(driver.find_element(By.ID, "assign-plan")).select_by_value(plan_id)
    Select(driver.find_element(By.ID, "assign-effective")).select_by_value("immediately")
    browser.button("Assign plan").click()
    browser.wait_until(
        lambda: f"In force: {PLAN_NAME} v1" in driver.find_element(By.TAG_NAME, "main").text
    )
    _quiet(browser)

    # --- the customer's key makes predictions through the HTTP API
    with httpx.Client(base_url=live.url, timeout=30) as api:
        for _ in range(PREDICTIONS):
            served = api.post(
                "/v1/models/linreg/predict",
                json={"inputs": [0.0] * 10},
                headers={"Authorization": f"Bearer {secret}"},
            )
            assert served.status_code == 200, served.text
    count = "SELECT count(*) FROM usage_events WHERE customer_id = :c"
    _eventually(lambda: live.sql(count, c=customer_id)[0][0] == PREDICTIONS, "the meter to write")
    # A past month that only time could make: the plan from its start, a few requests in it.
    past, start = _month(2)
    live.sql(
        "UPDATE customer_plans SET effective_from = :start WHERE customer_id = :c",
        start=start,
        c=customer_id,
    )
    live.sql(
        "INSERT INTO usage_events (request_id, api_key_id, customer_id, endpoint, model,"
        " version, variant, device, items, compute_us, latency_us, status_code, billable,"
        " created_at)"
        " SELECT 'backdated-' || n, api_key_id, customer_id, endpoint, model, version,"
        " variant, device, items, compute_us, latency_us, status_code, billable,"
        " :start + n * interval '1 day'"
        " FROM (SELECT * FROM usage_events WHERE customer_id = :c ORDER BY id LIMIT 1) AS e"
        " CROSS JOIN generate_series(1, :n) AS n",
        start=start,
        c=customer_id,
        n=BACKDATED,
    )
    # Written behind the meter's back, so the hourly rollups (what billing reads) are
    # rebuilt from the ledger, as a backfill would.
    live.sql("DELETE FROM usage_hourly")
    live.sql(FILL_FROM_LEDGER_SQL)

    # --- the customer signs in, in a browser of its own, and sees its usage
    customer = Browser(new_driver(), live)
    try:
        customer.reset()
        customer.sign_in(secret)
        customer.wait_for_path("/console/me")
        assert customer.wait_for("main h1").text == "Usage"
        assert customer.wait_for("#total-requests").text == str(PREDICTIONS)
        row = customer.driver.find_element(
            By.CSS_SELECTOR, '#usage-by-model tr[data-model="linreg"]'
        )
        assert row.find_elements(By.TAG_NAME, "td")[2].text == str(PREDICTIONS)
        canvas = customer.chart_drawn("#usage-chart")
        chart = json.loads(canvas.get_attribute("data-chart"))
        assert sum(sum(series["data"]) for series in chart["datasets"]) == PREDICTIONS
        assert any("linreg" in series["label"] for series in chart["datasets"])
        assert f"{PLAN_NAME}" in customer.driver.find_element(By.TAG_NAME, "main").text
        shoot(customer.driver, "customer-usage")
        _quiet(customer)

        # --- the admin's pages, now with data
        browser.open(f"/console/customers/{customer_id}")
        browser.chart_drawn()
        shoot(driver, "customer")
        browser.open("/console/")
        browser.chart_drawn()
        assert browser.wait_for("#stat-requests").text == str(PREDICTIONS)
        assert driver.find_element(By.ID, "stat-items").text == str(PREDICTIONS)
        shoot(driver, "overview")
        browser.open("/console/customers")
        browser.wait_for("main table")
        shoot(driver, "customers")
        browser.open("/console/models")
        browser.wait_for("main h1")
        shoot(driver, "models")
        browser.open("/console/audit")
        browser.wait_for("main table")
        assert "customer.plan" in driver.find_element(By.TAG_NAME, "main").text
        shoot(driver, "audit")
        _quiet(browser)
        browser.sign_out()

        # --- finance: preview this month, close the past month, download the PDF
        browser.sign_in(finance)
        browser.wait_for_path("/console/")
        browser.open("/console/billing")
        browser.fill("p-customer", CUSTOMER_NAME)
        browser.button("Preview").click()
        browser.wait_for_path("/console/billing/preview")
        assert "54.50" in browser.wait_for("main").text
        shoot(driver, "invoice-preview")
        _quiet(browser)

        browser.open("/console/billing")
        browser.fill("c-period", past)
        browser.button("Dry run").click()
        browser.wait_for_path("/console/billing/close")
        assert "nothing was written" in browser.wait_for("main").text
        assert f"{CUSTOMER_NAME} · 41.50 USD" in driver.find_element(By.TAG_NAME, "main").text
        # A forged CSRF token: refused with the 403 page, nothing closed.
        driver.execute_script(
            "document.querySelector('form.confirm input[name=csrf_token]').value = 'forged'"
        )
        driver.find_element(By.ID, "confirm").click()
        browser.button(f"Close {past}").click()
        browser.wait_until(lambda: browser.wait_for("main h1").text == "Not allowed")
        assert "CSRF" in browser.wait_for("[role=alert]").text
        assert browser.status_of("/console/billing/close") == 403
        assert (
            live.sql("SELECT count(*) FROM invoices WHERE customer_id = :c", c=customer_id)[0][0]
            == 0
        )
        _quiet(browser, "/console/billing/close")
        # The real thing: the dry run again, confirmed.
        browser.open(f"/console/billing/close?period={past}")
        driver.find_element(By.ID, "confirm").click()
        browser.button(f"Close {past}").click()
        status = browser.wait_for("[role=status]")
        assert f"{past} is closed" in status.text
        shoot(driver, "close")
        driver.find_element(By.CSS_SELECTOR, "main h2 a").click()  # the invoice written
        browser.wait_until(lambda: re.fullmatch(r"/console/billing/invoices/\d+", browser.path))
        facts = browser.wait_for("dl.facts").text
        assert "finalized" in facts and "41.50 USD" in facts
        shoot(driver, "invoice")
        pdf_link = driver.find_element(By.LINK_TEXT, "Download PDF").get_attribute("href")
        pdf = httpx.get(pdf_link, cookies=browser.cookies(), timeout=30)
        assert pdf.status_code == 200
        assert pdf.headers["content-type"].startswith("application/pdf")
        assert pdf.content.startswith(b"%PDF")
        assert httpx.get(pdf_link, timeout=30).status_code != 200  # the cookie opened it
        browser.open("/console/billing")
        browser.wait_for("main table")
        assert CUSTOMER_NAME in driver.find_element(By.TAG_NAME, "tbody").text
        shoot(driver, "billing")
        browser.open(f"/console/reports?period={past}")
        browser.chart_drawn()
        assert "41.50" in driver.find_element(By.TAG_NAME, "main").text
        shoot(driver, "reports")
        _quiet(browser)

        # --- the customer sees the invoice, and is refused an operator page
        customer.open("/console/me/invoices")
        invoices = customer.wait_for("#invoices").text
        assert past in invoices and "41.50" in invoices
        shoot(customer.driver, "customer-invoices")
        _quiet(customer)
        customer.open("/console/billing")
        assert customer.status_of("/console/billing") == 403
        assert customer.wait_for("main h1").text == "Not allowed"
        _quiet(customer, "/console/billing")

        # --- sign-out, then the admin revokes the customer's key: its session ends
        browser.sign_out()
        browser.open("/console/billing")
        browser.wait_for_path("/console/login")
        browser.sign_in(admin)
        browser.wait_for_path("/console/")
        browser.open(f"/console/keys?customer_id={customer_id}")
        driver.find_element(By.CSS_SELECTOR, f'button[aria-label="Revoke key {key_id}"]').click()
        browser.wait_until(lambda: "revoked" in driver.find_element(By.TAG_NAME, "tbody").text)
        _quiet(browser)

        def signed_out() -> bool:
            customer.open("/console/me")
            return customer.path == "/console/login"

        customer.wait_until(signed_out)  # the key cache holds a key for at most a second
        customer.wait_for("form")
        _quiet(customer)
        assert customer.other_hosts() == []
    finally:
        customer.driver.quit()
    assert browser.other_hosts() == []

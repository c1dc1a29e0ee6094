"""The explorer in a real browser: Playwright driving Debian Chromium against a live server.

Logs in, acts on an execution, checks that the diagram and timeline follow, uses the step
control, and takes a screenshot of every page into screenshots/ (with DM_UPDATE_SCREENSHOT=1
the execution page also replaces docs/screenshot.png, the one the README shows).
"""
import os
import shutil
from pathlib import Path

import pytest

from executions import services

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
MOCKS = {"http.request.json": "{'status': 200, 'body': {'n': 1}}"}


@pytest.fixture
def browser(monkeypatch):
    if not os.path.exists(CHROMIUM):
        pytest.skip("no Chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between page actions are still plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def orders(transactional_db, save_machine, admin_user):
    """A few order executions in different places; the first waits for fraud review."""
    save_machine("order.yaml")
    save_machine("shipment.yaml")
    waiting = services.start("order", mode="sync", actor="alice", mocks=MOCKS).execution
    for sku, qty in (("bns12", 2), ("x9", 1)):
        services.trigger(waiting.id, "add", input={"sku": sku, "qty": qty}, actor="alice")
    services.trigger(waiting.id, "remove", input={"sku": "bns12"}, actor="alice")
    services.trigger(waiting.id, "place", actor="alice")
    for _ in range(3):
        services.start("order", mode="sync", actor="bob")
    rejected = services.start("order", mode="sync", actor="bob").execution
    services.trigger(rejected.id, "place", actor="bob")
    services.trigger(rejected.id, "fraud-reject", actor="carol")
    services.trigger(rejected.id, "cancel", actor="carol")
    return waiting


def log_in(page, base):
    page.goto(f"{base}/login/")
    page.screenshot(path=SHOTS / "login.png")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-pass-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def classes(page, selector):
    return page.get_attribute(selector, "class").split()


def test_act_on_an_execution_and_step_through_its_history(browser, live_server, orders):
    base = live_server.url
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, base)
    page.screenshot(path=SHOTS / "machines.png", full_page=True)

    page.goto(f"{base}/executions/{orders.id}/")
    assert "current" in classes(page, "#state-submitted")
    assert page.locator(".banner-text").inner_text().startswith("Waiting for: fraud approve")
    before = page.locator(".timeline > li").count()

    page.click("button[data-action='fraud-approve']")
    page.wait_for_selector(".message.success")
    assert "current" not in classes(page, "#state-submitted")
    assert "visited" in classes(page, "#state-released")
    assert "taken" in classes(page, "#edge-submitted-fraud-approve")
    assert page.locator(".timeline > li").count() > before
    assert "chose fraud approve" in page.locator(".timeline").inner_text()
    page.screenshot(path=SHOTS / "execution-after-action.png", full_page=True)

    # The step control: back to the start, the diagram, timeline and context follow.
    page.focus("#step-range")
    page.keyboard.press("Home")
    assert "current" in classes(page, "#state-create")
    assert "faded" in classes(page, "#state-submitted")
    assert page.text_content("[data-step-context-title]") == "at the start"
    assert "is-selected" in classes(page, ".timeline > li[data-seq='1']")
    page.click("button[data-step='1']")
    assert "current" in classes(page, "#state-cart")
    assert page.text_content("[data-step-context-title]") == "after step 1"


def test_screenshots_of_every_page(browser, live_server, orders):
    base = live_server.url
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, base)
    for name, path in (("machine", "/machines/order/"), ("executions", "/executions/"),
                       ("admin-editor", "/admin/machines/machine/order/change/")):
        response = page.goto(base + path)
        assert response.status == 200, path
        page.screenshot(path=SHOTS / f"{name}.png", full_page=True)

    page.goto(f"{base}/executions/{orders.id}/")
    page.screenshot(path=SHOTS / "execution.png", full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1120})
    page.screenshot(path=SHOTS / "execution-top.png", type="png")
    assert (SHOTS / "execution-top.png").stat().st_size < 300_000
    if os.environ.get("DM_UPDATE_SCREENSHOT"):
        shutil.copy(SHOTS / "execution-top.png", ROOT / "docs" / "screenshot.png")

    phone = browser.new_page(viewport={"width": 375, "height": 812}, device_scale_factor=2)
    phone.context.add_cookies(page.context.cookies())
    phone.goto(f"{base}/executions/{orders.id}/")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, "the page scrolls sideways at phone width; only the diagram may"
    phone.screenshot(path=SHOTS / "execution-phone.png", full_page=True)


def test_keyboard_reaches_the_actions_with_a_visible_focus(browser, live_server, orders):
    base = live_server.url
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, base)
    page.goto(f"{base}/executions/{orders.id}/")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.action") == "fraud-approve":
            break
    else:
        pytest.fail("Tab never reached the first action button")
    shadow = page.evaluate("getComputedStyle(document.activeElement).boxShadow")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert shadow != "none" or outline != "none"


@pytest.fixture
def ticket(transactional_db, save_machine, admin_user):
    """A support ticket far along (12 steps and more), sleeping with a three-day timer."""
    for name in ("ticket-classifier", "incident", "customer-survey", "support-ticket"):
        save_machine(f"{name}.yaml")
    execution = services.start(
        "support-ticket", mode="sync", actor="support", mocks=MOCKS,
        input={"customer": "acme", "subject": "Checkout is down",
               "body": "Customers cannot pay since 10:00, urgent"}).execution
    for agent in ("heidi", "ivan", "judy", "ken", "lea", "mo", "ned", "olga", "pat"):
        services.trigger(execution.id, "reassign", input={"agent": agent}, actor=agent)
    services.trigger(execution.id, "resolve", input={"resolution": "restarted"}, actor="pat")
    return execution


def test_the_ticket_opens_fitted_on_where_it_is_in_the_browser_zone(browser, live_server, ticket):
    """Times in the browser's zone (after its first page), the countdown ticks, the diagram
    opens fitted with the current state in view, badges are digits, the last step is N of N."""
    base = live_server.url
    context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                  timezone_id="Asia/Tokyo")
    page = context.new_page()
    log_in(page, base)
    page.goto(f"{base}/executions/{ticket.id}/")
    page.goto(f"{base}/executions/{ticket.id}/")  # dm.js told the server the zone
    meta = page.locator(".page-meta").inner_text()
    assert " JST · " in meta, meta
    banner = page.locator(".banner-text")
    assert "Sleeping in" in banner.inner_text() and "JST" in banner.inner_text()
    countdown = page.locator("[data-countdown]").first
    before = countdown.inner_text()
    assert before.startswith("in ")

    page.screenshot(path=SHOTS / "execution-ticket-top.png")
    box = page.locator(".diagram").bounding_box()
    current = page.locator("g.node.current").bounding_box()
    assert box["x"] <= current["x"] and current["x"] + current["width"] <= box["x"] + box["width"]
    assert box["y"] <= current["y"] and current["y"] + current["height"] <= box["y"] + box["height"]
    end = page.locator("#state-closed").bounding_box()  # the end states are not cut
    assert end["x"] + end["width"] <= box["x"] + box["width"]

    badges = page.evaluate("Array.from(document.querySelectorAll('text.step-badge'))"
                           ".map(t => t.textContent)")
    numbers = sorted(int(b) for b in badges)
    assert numbers and numbers[-1] >= 11 and all(b.isdigit() for b in badges)
    last = numbers[-1]
    assert page.text_content("[data-step-count]") == f"step {last} of {last}"
    page.focus("#step-range")
    page.keyboard.press("ArrowLeft")
    assert page.text_content("[data-step-count]") == f"step {last - 1} of {last}"
    hidden = page.evaluate(f"getComputedStyle(document.querySelector("
                           f"'text.step-badge[data-step=\"{last}\"]')).visibility")
    assert hidden == "hidden"
    page.keyboard.press("End")
    page.screenshot(path=SHOTS / "execution-ticket.png", full_page=True)
    page.wait_for_timeout(1500)
    assert countdown.inner_text() != before or "days" in before  # ticks (days: per minute)

    phone = context.new_page()
    phone.set_viewport_size({"width": 375, "height": 812})
    phone.goto(f"{base}/executions/{ticket.id}/")
    box = phone.locator(".diagram").bounding_box()
    current = phone.locator("g.node.current").bounding_box()
    middle = current["x"] + current["width"] / 2
    assert box["x"] <= middle <= box["x"] + box["width"], "the current state is in view"
    phone.screenshot(path=SHOTS / "execution-ticket-phone.png", full_page=True)
    phone.screenshot(path=SHOTS / "execution-ticket-phone-top.png")
    phone.locator(".diagram-figure").screenshot(path=SHOTS / "execution-ticket-phone-diagram.png")
    page.locator(".execution-panels").screenshot(path=SHOTS / "execution-ticket-panels.png")
    context.close()

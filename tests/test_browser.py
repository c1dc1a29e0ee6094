"""The explorer in a real browser: Playwright driving Debian Chromium against a live server.

Logs in, acts on an execution, checks that the diagram and timeline follow, uses the step
control, and takes a screenshot of every page into screenshots/ in light and dark mode, on a
desktop and a phone (with DM_UPDATE_SCREENSHOT=1 the execution page also replaces
docs/screenshot.png, the one the README shows). Every page is checked with axe-core
(tests/vendor/axe.min.js, from the npm package axe-core, MPL-2.0): zero violations.
"""
import json
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
AXE = ROOT / "tests" / "vendor" / "axe.min.js"
SCHEMES = ("light", "dark")
PHONE = {"viewport": {"width": 375, "height": 812}, "device_scale_factor": 2, "is_mobile": True,
         "has_touch": True}


def check_axe(page, where):
    """axe-core over the whole page; fails listing each violation and where it is.

    axe is evaluated through the DevTools protocol, which the page's Content-Security-Policy
    does not govern, so the page is tested with its real policy."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ["violations"]});
        const where = n => n.target.join(" ") + " :: " + (n.failureSummary || "")
            .split("\\n").slice(1, 3).join(" ");
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       nodes: v.nodes.slice(0, 5).map(where)}));
    }""")
    assert not result, f"axe found violations on {where}:\n" + json.dumps(result, indent=1)


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


def log_in(page, base, *, shot="login.png"):
    page.goto(f"{base}/login/")
    check_axe(page, "the login page")
    page.screenshot(path=SHOTS / shot)
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
    check_axe(page, "the execution page after an action")

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


PAGES = [
    ("machines", "/machines/", 200),
    ("machine", "/machines/order/", 200),
    ("machine-shipment", "/machines/shipment/", 200),
    ("executions", "/executions/", 200),
    ("executions-filtered", "/executions/?status=waiting", 200),
    ("admin", "/admin/", 200),
    ("admin-machines", "/admin/machines/machine/", 200),
    ("admin-editor", "/admin/machines/machine/order/change/", 200),
    ("admin-add", "/admin/machines/machine/add/", 200),
    ("not-found", "/executions/no-such-execution/", 404),
    ("forbidden", "/test-denied/", 403),
    ("server-error", "/test-boom/", 500),
]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_screenshots_of_every_page(browser, live_server, orders, settings, scheme):
    """Every page, desktop and phone, in this colour scheme: a screenshot, axe with zero
    violations, and no page wider than a phone (only the diagram scrolls sideways)."""
    settings.ROOT_URLCONF = "tests.test_pages"  # the site's URLs + a 403 and a 500 to show
    base = live_server.url
    desktop = browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme=scheme)
    page = desktop.new_page()
    log_in(page, base, shot=f"login-{scheme}.png")
    phone = browser.new_context(color_scheme=scheme, **PHONE).new_page()
    phone.context.add_cookies(desktop.cookies())
    pages = [*PAGES, ("execution", f"/executions/{orders.id}/", 200)]
    for name, path, status in pages:
        for device, tab in (("desktop", page), ("phone", phone)):
            response = tab.goto(base + path)
            assert response.status == status, path
            assert tab.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") is (
                scheme == "dark")
            check_axe(tab, f"{path} ({device}, {scheme})")
            if device == "phone" and not path.startswith("/admin/"):
                width = tab.evaluate("document.documentElement.scrollWidth")
                assert width <= 375, f"{path} scrolls sideways at phone width; only the diagram may"
            tab.screenshot(path=SHOTS / f"{name}-{device}-{scheme}.png", full_page=True)

    phone.goto(f"{base}/executions/")  # a list of executions: one card per row on a phone
    assert phone.evaluate("""[...document.querySelectorAll('.executions-table')].every(
        table => table.parentElement.scrollWidth <= table.parentElement.clientWidth)"""), \
        "the list of executions scrolls sideways on a phone"
    phone.screenshot(path=SHOTS / f"executions-cards-phone-{scheme}.png", full_page=True)

    page.goto(f"{base}/executions/{orders.id}/")
    page.set_viewport_size({"width": 1400, "height": 1120})
    page.screenshot(path=SHOTS / f"execution-top-{scheme}.png", type="png")
    assert (SHOTS / f"execution-top-{scheme}.png").stat().st_size < 300_000
    if scheme == "light" and os.environ.get("DM_UPDATE_SCREENSHOT"):
        shutil.copy(SHOTS / "execution-top-light.png", ROOT / "docs" / "screenshot.png")
    if scheme == "dark":  # the diagram follows the theme: node fills dark, text light
        fill = page.evaluate("getComputedStyle(document.querySelector('#state-create path')).fill")
        text = page.evaluate("getComputedStyle(document.querySelector('#state-create text')).fill")
        assert fill != "rgb(255, 255, 255)" and text != "rgb(15, 23, 42)", (fill, text)


def test_timeline_sentences_select_their_step_by_keyboard(browser, live_server, orders):
    base = live_server.url
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, base)
    page.goto(f"{base}/executions/{orders.id}/")
    moved = page.locator(".timeline > li[data-seq]").nth(1)  # "① Moved create → cart"
    assert moved.get_attribute("tabindex") == "0"
    page.focus("#step-range")
    page.keyboard.press("Home")  # at the start
    moved.focus()
    page.keyboard.press("Enter")
    assert "is-selected" in moved.get_attribute("class").split()
    assert page.text_content("[data-step-context-title]") == "after step 1"
    assert "current" in classes(page, "#state-cart")


def test_the_machine_editor_highlights_numbers_lines_and_never_shows_a_stale_diagram(
    browser, live_server, orders
):
    base = live_server.url
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, base)
    page.goto(f"{base}/admin/machines/machine/add/")
    page.wait_for_selector(".CodeMirror")
    page.wait_for_selector("#diagram-preview svg")  # the starter, while it is the source
    assert page.locator(".CodeMirror-linenumber").count() > 5
    assert page.locator(".cm-atom, .cm-keyword, .cm-string").count() > 0  # YAML highlighted
    page.evaluate("""() => document.querySelector('.CodeMirror').CodeMirror.setValue(
        'id: broken\\nstart_at: nowhere\\nstates:\\n  a:\\n    return: null\\n')""")
    page.wait_for_selector("#diagram-preview .dm-fix")
    assert page.locator("#diagram-preview svg").count() == 0
    assert "fix" in page.text_content("#diagram-preview .dm-fix")
    page.wait_for_selector(".dm-inline-problem")  # the error under its line
    assert page.locator(".dm-bad-line").count() >= 1
    check_axe(page, "the machine editor with errors")
    page.screenshot(path=SHOTS / "admin-editor-errors.png", full_page=True)
    # the textarea submits what the editor shows
    assert "start_at: nowhere" in page.input_value("#machine-source")


def test_execution_lists_update_live(browser, live_server, orders):
    base = live_server.url
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script("window.dmListDelay = 300;")
    page = context.new_page()
    log_in(page, base)
    page.goto(f"{base}/executions/")
    fresh = services.start("order", mode="sync", actor="dora").execution
    page.wait_for_selector(f"text={fresh.short_id}", timeout=10_000)
    assert page.locator("[data-live-list] + [role=status]").text_content() == (
        "The list was updated.")


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

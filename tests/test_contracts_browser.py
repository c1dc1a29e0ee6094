"""The explorer's contracts in a real browser (issue 13): an action's generated form, the
browser's own checks and the server's beside the fields, and the header's search box.
Playwright driving Debian Chromium against a live server, as tests/test_browser.py."""
import pytest

from executions import services
from executions.models import Execution
from tests.test_browser import SHOTS, browser, check_axe, log_in  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser


@pytest.fixture
def refunds(transactional_db, save_machine, admin_user):
    save_machine("refund.yaml")
    made = [services.start("refund", input={"refund_id": f"R-{n}", "customer": customer,
                                            "amount": amount}, wait=True).execution
            for n, customer, amount in ((1, "c-17", 120), (2, "c-17", 30), (3, "c-4", 75))]
    return made


def test_an_action_form_checks_its_fields_and_sends_typed_input(browser, live_server,  # noqa: F811
                                                               refunds):
    base, refund = live_server.url, refunds[0]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, base, shot="contracts-login.png")
    page.goto(f"{base}/executions/{refund.id}/")
    assert page.locator("button[data-action='approve']").count() == 1  # takes nothing
    assert page.locator("button[data-action='adjust']").count() == 0  # takes input
    form = page.locator("#form-input-adjust")
    amount = form.locator("input[name='input-adjust-amount']")
    assert amount.get_attribute("type") == "number" and amount.get_attribute("required") is not None
    check_axe(page, "an execution page with action forms")
    page.screenshot(path=SHOTS / "contracts-forms.png", full_page=True)

    # The browser refuses an empty required field: nothing is posted.
    form.locator("button[type=submit]").click()
    assert page.evaluate("document.querySelector(\"[name='input-adjust-amount']\").validity"
                         ".valueMissing")
    # The schema's own bound (> 0) comes back from the server beside the field.
    amount.fill("-3")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#form-input-adjust .errorlist")
    assert "minimum of 0" in page.locator("#form-input-adjust .errorlist").inner_text()
    assert Execution.objects.get(pk=refund.pk).context["amount"] == 120

    page.locator("#form-input-adjust input[name='input-adjust-amount']").fill("99.5")
    page.locator("#form-input-adjust button[type=submit]").click()
    page.wait_for_selector(".message.success")
    assert Execution.objects.get(pk=refund.pk).context["amount"] == 99.5

    page.click("button[data-action='approve']")
    page.wait_for_selector("#form-input-paid")
    page.fill("#form-input-paid input[name='input-paid-provider_ref']", "p-77")
    assert page.input_value("#form-input-paid input[name='input-paid-fee']") == "0"
    page.click("#form-input-paid button[type=submit]")
    page.wait_for_selector(".message.success")
    done = Execution.objects.get(pk=refund.pk)
    assert done.status == "finished" and done.result == {"refund": 99.5, "net": 99.5,
                                                         "ref": "p-77"}


def test_the_search_box_finds_by_key_short_id_and_attribute(browser, live_server,  # noqa: F811
                                                            refunds):
    base = live_server.url
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, base, shot="contracts-login-2.png")
    page.fill("#search-box", "R-3")
    page.press("#search-box", "Enter")
    page.wait_for_url(f"{base}/executions/{refunds[2].id}/")

    page.fill("#search-box", refunds[1].short_id)
    page.press("#search-box", "Enter")
    page.wait_for_url(f"{base}/executions/{refunds[1].id}/")

    page.fill("#search-box", "c-17")
    page.press("#search-box", "Enter")
    page.wait_for_url(f"{base}/search/?q=c-17")
    rows = page.locator("table tbody tr")
    assert rows.count() == 2
    assert "attribute “customer”" in rows.first.inner_text()
    check_axe(page, "the search results")
    page.screenshot(path=SHOTS / "contracts-search.png", full_page=True)
    rows.nth(1).locator("a").first.click()
    page.wait_for_url(f"{base}/executions/{refunds[0].id}/")

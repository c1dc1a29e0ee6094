"""The operators' tools in a real browser (Playwright, Chromium, a live server): the dry-run
preview of a repair, the migration impact view, and a bulk retry of 1,000 failed executions
run by a real worker cluster. Every page is checked with axe-core."""
import pytest
from django.db.models import Count

from executions import engine, services
from executions.models import Execution, HistoryEntry
from tests.helpers import wait_until
from tests.test_browser import SHOTS, browser, check_axe  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser

REFUND = """
id: refund
execution_mode: sync
start_at: requested
context: "{'amount': input['amount'], 'small': input['amount'] <= 100}"
states:
  requested:
    label: Refund requested
    actions:
      - {id: approve, on: approve, state: approved}
  approved: {label: Approved, return: "ctx['amount']"}
"""
RENAMED = REFUND.replace("requested", "asked")


@pytest.fixture
def refunds(transactional_db, save_machine, admin_user):
    return save_machine(REFUND)


def log_in(page, base):
    page.goto(f"{base}/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-pass-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def failed(n):
    return [services.start("refund", input={"amount": "5"}, actor="user:bob").execution.pk
            for _ in range(n)]


def test_a_repair_is_previewed_before_it_can_be_confirmed(browser, live_server,  # noqa: F811
                                                          refunds):
    (execution_id,) = failed(1)
    services.start("refund", input={"amount": 1}, actor="user:bob")
    base = live_server.url
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    log_in(page, base)
    page.goto(f"{base}/machines/refund/")  # the heatmap: 2 in requested, 1 of them failed
    assert " ".join(page.text_content("#state-requested").split()).endswith("1 1 failed")
    page.screenshot(path=SHOTS / "heatmap-failed.png", full_page=True)
    page.click("#state-requested text >> nth=0")  # the state filters the list
    page.wait_for_url("**state=requested**")
    assert page.locator(".executions-table tbody tr").count() == 2
    page.goto(f"{base}/executions/{execution_id}/")
    page.click("text=Retry with edits…")
    assert page.locator("button[name=confirm]").count() == 0
    page.fill("#id_input", '{"amount": 5}')
    page.click("button[name=preview]")
    assert page.get_attribute("[data-verdict]", "data-verdict") == "applies"
    assert "after it: waiting in requested" in page.inner_text("[data-verdict]")
    assert Execution.objects.get(pk=execution_id).status == engine.FAILED
    check_axe(page, "the preview of a repair")
    page.screenshot(path=SHOTS / "operation-preview.png", full_page=True)
    page.fill("#id_reason", "the amount was typed as text")
    page.click("button[name=confirm]")
    page.wait_for_selector(".message.success")
    assert "waiting" in page.inner_text(".message.success")
    assert "edited the start input" in page.inner_text(".timeline")


def test_the_migration_impact_on_the_diagram_and_the_mapping(browser, live_server,  # noqa: F811
                                                            refunds, save_machine):
    for amount in (1, 2, 3):
        services.start("refund", input={"amount": amount}, actor="user:bob")
    save_machine(RENAMED)
    base = live_server.url
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    log_in(page, base)
    page.goto(f"{base}/machines/refund/?compare=1..2")
    assert "need a choice" in page.inner_text("[data-migration-impact]")
    page.click("text=Plan the migration")
    assert "3 have no mapping" in page.inner_text("[data-impact]")
    page.select_option("select[name='map.requested']", "asked")
    page.click("text=Show the impact of this mapping")
    assert "3 would move" in page.inner_text("[data-impact]")
    assert "heat-has" in page.get_attribute("#state-asked", "class").split()
    check_axe(page, "the migration impact")
    page.screenshot(path=SHOTS / "migration-impact.png", full_page=True)
    page.click("text=Preview the migration (dry run)")
    page.wait_for_selector("[data-previewed='applies']")
    assert page.inner_text("[data-previewed='applies']") == "3"
    assert Execution.objects.filter(machine_version__version=1).count() == 3  # not yet


def test_a_bulk_retry_of_a_thousand_failed_executions(browser, live_server,  # noqa: F811
                                                     refunds, cluster):
    ids = failed(1000)
    base = live_server.url
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    log_in(page, base)
    page.goto(f"{base}/failures/")
    assert page.inner_text(".failure-groups td.num") == "1000"
    check_axe(page, "the failure groups")
    page.click("text=Retry these…")
    assert "Act on 1000 executions" in page.inner_text("h1")
    page.fill("#id_input", '{"amount": 5}')
    page.click("text=Preview (dry run)")
    page.wait_for_selector("[data-previewed='applies']", timeout=120_000)
    assert page.inner_text("[data-previewed='applies']") == "1000"
    check_axe(page, "the dry run of a bulk retry")
    assert not HistoryEntry.objects.filter(kind=engine.EXECUTION_RETRIED).exists()
    page.fill("#id_reason", "the amounts were text")
    page.click("text=Confirm: run the retry on these executions")
    page.wait_for_selector("[data-bulk-status='done']", timeout=300_000)
    assert page.get_attribute("[data-done]", "data-done") == "1000"
    page.screenshot(path=SHOTS / "bulk-result.png", full_page=True)
    wait_until(lambda: Execution.objects.filter(pk__in=ids, status="waiting").count() == 1000,
               30, "not all were retried")
    retried = (HistoryEntry.objects.filter(kind=engine.EXECUTION_RETRIED)
               .values("execution_id").annotate(n=Count("id")))
    assert sorted(row["n"] for row in retried) == [1] * 1000

"""The operators' pages: preview before the button that acts, a reason for each operation,
failure groups, bulk pages and the migration impact."""
import re

import pytest
from django.test import Client

from executions import engine, operations, services
from executions.models import BulkOperation, Execution, HistoryEntry

REFUND = """
id: refund
execution_mode: sync
start_at: requested
context: "{'amount': input['amount'], 'small': input['amount'] <= 100}"
states:
  requested:
    actions:
      - {id: approve, on: approve, state: approved}
  approved: {return: "ctx['amount']"}
"""
V2 = REFUND.replace("requested", "asked")


@pytest.fixture
def refund(save_machine):
    return save_machine(REFUND)


def logged_in(make_user, name, role):
    client = Client()
    client.force_login(make_user(name, role))
    return client


def previewed(page: str) -> str:
    """The signed operation a preview page carries to its Confirm button."""
    return re.search(r'name="previewed" value="([^"]+)"', page).group(1)


def failed():
    return services.start("refund", input={"amount": "5"}, actor="user:x").execution


def test_a_retry_with_edited_input_is_previewed_then_confirmed_with_a_reason(refund, make_user):
    operator = logged_in(make_user, "olga", "operator")
    execution = failed()
    url = f"/executions/{execution.pk}/operate/"
    form = operator.get(url + "?operation=retry").content.decode()
    assert "Confirm: do it" not in form and "expression_error" in form
    body = {"operation": "retry", "input": '{"amount": 5}', "reason": ""}
    preview = operator.post(url, {**body, "preview": "1"}).content.decode()
    assert 'data-verdict="applies"' in preview and "Confirm: do it" in preview
    assert Execution.objects.get(pk=execution.pk).status == engine.FAILED
    body["previewed"] = previewed(preview)
    unsaid = operator.post(url, {**body, "confirm": "1"})
    assert unsaid.status_code == 400 and "a reason is required" in unsaid.content.decode()
    changed = operator.post(url, {**body, "confirm": "1", "reason": "typo",
                                  "input": '{"amount": 6}'}).content.decode()
    assert "changed since its preview" in changed and 'data-verdict="applies"' in changed
    unseen = operator.post(url, {**body, "confirm": "1", "reason": "typo", "previewed": "x"})
    assert "changed since its preview" in unseen.content.decode()
    assert Execution.objects.get(pk=execution.pk).status == engine.FAILED
    done = operator.post(url, {**body, "confirm": "1", "reason": "typo"}, follow=True)
    assert "the execution is now waiting" in done.content.decode()
    row = HistoryEntry.objects.get(execution=execution, kind=operations.INPUT_EDITED)
    assert row.actor == "user:olga" and row.detail["reason"] == "typo"


def test_bad_json_and_roles_on_the_operation_page(refund, make_user):
    execution = failed()
    url = f"/executions/{execution.pk}/operate/"
    operator = logged_in(make_user, "olga", "operator")
    bad = operator.post(url, {"operation": "retry", "input": '{"amount": NaN}', "preview": "1"})
    assert bad.status_code == 400 and "NaN" in bad.content.decode()
    edit = operator.post(url, {"operation": "edit", "context": "{}", "preview": "1"})
    assert edit.status_code == 403 and "editor" in edit.content.decode()
    viewer = logged_in(make_user, "victor", "viewer")
    assert viewer.post(url, {"operation": "cancel", "preview": "1"}).status_code == 403
    editor = logged_in(make_user, "edith", "editor")
    nowhere = editor.post(url, {"operation": "move", "state": "nowhere", "preview": "1"})
    page = nowhere.content.decode()
    assert 'data-verdict="not_available"' in page and "Confirm: do it" not in page
    assert Execution.objects.get(pk=execution.pk).status == engine.FAILED


def test_cancel_is_confirmed_on_its_own_page_with_a_reason(refund, make_user):
    execution = services.start("refund", input={"amount": 1}, actor="user:x").execution
    operator = logged_in(make_user, "olga", "operator")
    page = operator.get(execution.get_absolute_url()).content.decode()
    assert f'href="/executions/{execution.pk}/operate/?operation=cancel"' in page
    assert f'action="/executions/{execution.pk}/cancel/"' not in page
    url = f"/executions/{execution.pk}/operate/"
    preview = operator.post(url, {"operation": "cancel", "preview": "1"}).content.decode()
    operator.post(url, {"operation": "cancel", "confirm": "1", "reason": "duplicate",
                        "previewed": previewed(preview)})
    row = HistoryEntry.objects.get(execution=execution, kind=engine.EXECUTION_CANCELED)
    assert row.detail == {"reason": "duplicate"}


def test_failure_groups_lead_to_a_bulk_retry(refund, make_user):
    ids = [failed().pk for _ in range(3)]
    operator = logged_in(make_user, "olga", "operator")
    page = operator.get("/failures/").content.decode()
    assert "not supported between instances of" in page
    assert "/operations/new/?status=failed" in page
    group = operations.failure_groups()[0]
    query = "&".join(f"{k}={v}" for k, v in group["filters"].items() if k != "error_message")
    new = operator.get(f"/operations/new/?{query}").content.decode()
    assert "Act on 3 executions" in new
    created = operator.post(f"/operations/new/?{query}",
                            {"operation": "retry", "input": '{"amount": 7}'})
    bulk = BulkOperation.objects.get()
    assert created.status_code == 302 and created["Location"] == f"/operations/{bulk.pk}/"
    page = operator.get(f"/operations/{bulk.pk}/").content.decode()
    assert 'data-previewed="applies">3<' in page and "Confirm: run the retry" in page
    operator.post(f"/operations/{bulk.pk}/", {"reason": ""})
    assert BulkOperation.objects.get().status == "previewed"
    operator.post(f"/operations/{bulk.pk}/", {"reason": "fixed the amounts"})
    operations.bulk_job(str(bulk.pk))
    page = operator.get(f"/operations/{bulk.pk}/").content.decode()
    assert 'data-done="3"' in page and "Confirm" not in page
    assert Execution.objects.filter(pk__in=ids, status="waiting").count() == 3
    assert operator.get("/operations/nope/").status_code == 404
    bad = operator.get("/operations/new/?status=exploded").content.decode()
    assert "The filter <code>status</code> is not valid" in bad


def test_migration_page_shows_the_impact_and_previews_it(refund, save_machine, make_user):
    for amount in (1, 2):
        services.start("refund", input={"amount": amount}, actor="user:x")
    save_machine(V2)
    viewer = logged_in(make_user, "victor", "viewer")
    diff = viewer.get("/machines/refund/?compare=1..2").content.decode()
    assert "executions a migration would move here" not in diff  # none mapped yet
    assert "need a choice" in diff and "/machines/refund/migration/?from=1&amp;to=2" in diff
    page = viewer.get("/machines/refund/migration/?from=1&to=2").content.decode()
    assert "2 have no state to go to in version 2: choose one" in page
    mapped = viewer.get("/machines/refund/migration/?from=1&to=2&map.requested=asked")
    text = mapped.content.decode()
    assert "<strong>2</strong> would move" in text and "2 would move to asked" in text
    assert "2 executions a migration would move here" in text
    bad = viewer.get("/machines/refund/migration/?from=1&to=9", follow=True).content.decode()
    assert "refund has no version 9" in bad
    editor = logged_in(make_user, "edith", "editor")
    editor.post("/operations/new/?machine=refund&version=1",
                {"operation": "migrate", "version": "2", "map.requested": "asked"})
    bulk = BulkOperation.objects.get()
    assert bulk.request == {"kind": "migrate", "version": 2, "mapping": {"requested": "asked"}}
    assert operations.bulk_progress(bulk)["previewed"] == {"applies": 2}


def test_only_editors_are_offered_to_edit_or_move(refund, make_user):
    execution = services.start("refund", input={"amount": 1}, actor="user:x").execution
    operate = f"/executions/{execution.pk}/operate/?operation="
    operator = logged_in(make_user, "olga", "operator").get(execution.get_absolute_url())
    editor = logged_in(make_user, "edith", "editor").get(execution.get_absolute_url())
    assert f"{operate}move" not in operator.content.decode()
    assert f"{operate}cancel" in operator.content.decode()
    assert f"{operate}move" in editor.content.decode()
    assert f"{operate}edit" in editor.content.decode()


def test_rows_ticked_in_the_list_are_a_selection(refund, make_user):
    ids = [failed().pk for _ in range(3)]
    operator = logged_in(make_user, "olga", "operator")
    page = operator.get("/executions/").content.decode()
    assert 'form="selection"' in page and 'id="selection"' in page
    query = f"ids={ids[0]}&ids={ids[2]}"
    assert "the 2 selected in the list" in operator.get(f"/operations/new/?{query}").content \
        .decode()
    operator.post(f"/operations/new/?{query}", {"operation": "cancel"})
    bulk = BulkOperation.objects.get()
    assert bulk.selection == {"ids": [str(ids[0]), str(ids[2])]} and bulk.total == 2
    bad = operator.post("/operations/new/?ids=nope", {"operation": "cancel"})
    assert bad.status_code == 400 and "is not an execution id" in bad.content.decode()
    viewer = logged_in(make_user, "victor", "viewer").get("/executions/").content.decode()
    assert 'form="selection"' not in viewer

"""The explorer's lists (several statuses, a time range, an order, the state by label, the
bad filter named while the others apply, the error column), the diagram filtering them, the
heatmap's failed counts and open stays, and the admin's read-only list of executions."""
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from executions import selectors, services
from executions.models import Execution, HistoryEntry

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
  approved: {return: "ctx['amount']"}
"""


@pytest.fixture
def refund(save_machine):
    return save_machine(REFUND)


@pytest.fixture
def viewer(make_user):
    client = Client()
    client.force_login(make_user("victor", "viewer"))
    return client


def start(amount):
    return services.start("refund", input={"amount": amount}, actor="user:x").execution


def shown(page, executions):
    return [e.short_id for e in executions if e.short_id in page]


def test_several_statuses_a_time_range_and_an_order(refund, viewer):
    waiting, failed, done = start(1), start("1"), start(2)
    services.trigger(done.pk, "approve", actor="user:x")
    Execution.objects.filter(pk=waiting.pk).update(
        created_at=timezone.now() - timedelta(days=3))
    every = (waiting, failed, done)
    page = viewer.get("/executions/?status=failed&status=waiting").content.decode()
    assert shown(page, every) == [waiting.short_id, failed.short_id]
    since = (timezone.localtime() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    page = viewer.get(f"/executions/?created_after={since}").content.decode()
    assert shown(page, every) == [failed.short_id, done.short_id]
    newest = viewer.get("/executions/").content.decode()
    oldest = viewer.get("/executions/?sort=oldest").content.decode()
    assert newest.index(done.short_id) < newest.index(waiting.short_id)
    assert oldest.index(waiting.short_id) < oldest.index(done.short_id)


def test_the_bad_filter_is_named_and_the_others_still_apply(refund, viewer):
    waiting, failed = start(1), start("1")
    page = viewer.get("/executions/?status=failed&version=abc&sort=sideways").content.decode()
    assert "The filter <code>version</code> was left out" in page
    assert "The order <code>sideways</code> is not one of" in page
    assert shown(page, (waiting, failed)) == [failed.short_id]
    assert "not supported between instances of" in page  # the error column


def test_the_state_is_picked_by_its_label(refund, viewer):
    start(1)
    page = viewer.get("/executions/?machine=refund").content.decode()
    assert '<option value="requested">Refund requested</option>' in page
    assert viewer.get("/executions/").content.decode().count("any state") == 0


def test_status_counts_and_heatmap_rows_filter_the_list(refund, viewer):
    start(1)
    start("1")
    page = viewer.get("/machines/refund/").content.decode()
    assert 'href="?status=failed#executions-title">1 failed</a>' in page
    assert 'href="?state=requested#executions-title">2</a>' in page
    assert 'href="?state=requested&amp;status=failed#executions-title">1</a>' in page
    assert "data-filter-by-state" in page
    assert "1 of them failed here" in page  # the diagram's tooltip of the state
    home = viewer.get("/machines/").content.decode()
    assert 'href="/executions/?machine=refund&amp;status=failed">1 failed</a>' in home


def test_the_median_stay_counts_executions_still_in_the_state(refund):
    execution = start(1)
    assert selectors.median_stays(refund)["requested"] < 60  # there since it started
    HistoryEntry.objects.filter(execution=execution).update(
        at=timezone.now() - timedelta(hours=2))
    stays = selectors.median_stays(refund)
    assert 7100 < stays["requested"] < 7300
    start("1")  # failed there: no stay
    assert 7100 < selectors.median_stays(refund)["requested"] < 7300


def test_the_admin_lists_executions_read_only(refund, admin_user):
    failed = start("1")
    client = Client()
    client.force_login(admin_user)
    page = client.get("/admin/executions/execution/?status__exact=failed").content.decode()
    assert failed.short_id in page and f'href="/executions/{failed.pk}/"' in page
    assert "expression_error" in page
    assert client.get(f"/admin/executions/execution/{failed.pk}/change/").status_code == 200
    assert client.get("/admin/executions/execution/add/").status_code == 403
    assert client.post(f"/admin/executions/execution/{failed.pk}/delete/").status_code == 403

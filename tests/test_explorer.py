"""The explorer pages: who may see and do what, and what each page shows."""
import json
import re
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions import engine, selectors, services
from executions.models import Execution, HistoryEntry
from executions.steps import MAX_STEPS
from explorer import presenters

REVIEW = """
id: review
title: Document review
description: Someone submits, a reviewer approves or sends it back.
execution_mode: sync
start_at: draft
context: {n: 0}
states:
  draft:
    label: Draft
    actions:
      - {id: submit, on: submit, label: Submit for review, state: review,
         assign: {note: "input.get('note')"}}
  review:
    label: In review
    actions:
      - {id: approve, on: approve, state: done}
      - {id: reject, on: reject, state: draft}
  done: {return: "ctx['note']"}
"""

BROKEN = """
id: broken
execution_mode: sync
start_at: one
states:
  one:
    actions:
      - {id: divide, state: two, assign: {x: "1 / 0"}}
  two: {return: 1}
"""

COUNTER = """
id: counter
execution_mode: sync
start_at: counting
context: {n: 0}
states:
  counting:
    actions:
      - {id: tick, when: "ctx['n'] < 450", assign: {n: "ctx['n'] + 1"}}
      - {id: stop, state: stopped}
  stopped: {return: "ctx['n']"}
"""


@pytest.fixture
def review(save_machine):
    return save_machine(REVIEW)


@pytest.fixture
def started(review):
    return services.start("review", actor="alice").execution


@pytest.fixture
def operator(client, make_user):
    client.force_login(make_user("olga", "operator"))
    return client


@pytest.fixture
def viewer(client, make_user):
    client.force_login(make_user("victor", "viewer"))
    return client


def pages(execution):
    return ["/", "/machines/", "/machines/review/", "/machines/review/v/1/", "/executions/",
            f"/executions/{execution.id}/", f"/executions/{execution.id}/status.json"]


def posts(execution):
    base = f"/executions/{execution.id}"
    return [(f"{base}/trigger/", {"action": "submit", "input": "{}"}),
            (f"{base}/cancel/", {}), (f"{base}/retry/", {})]


# Who may see and do what -------------------------------------------------------------------
def test_anonymous_visitors_are_sent_to_the_login_page(client, started):
    for url in pages(started):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/login/?next="), url


def test_users_without_a_role_get_403_everywhere(client, make_user, started):
    client.force_login(make_user("nobody", "none"))
    for url in pages(started):
        response = client.get(url)
        assert response.status_code == 403, url
        assert b"no role" in response.content
    for url, data in posts(started):
        assert client.post(url, data).status_code == 403


def test_viewers_see_every_page_without_action_buttons(viewer, started):
    for url in pages(started):
        assert viewer.get(url).status_code == 200, url
    page = viewer.get(f"/executions/{started.id}/").content.decode()
    assert "Waiting for: <strong>Submit for review</strong>, in <strong>Draft</strong>." in page
    assert 'name="action"' not in page
    assert "Cancel execution" not in page


def test_viewers_cannot_act(viewer, started):
    for url, data in posts(started):
        assert viewer.post(url, data).status_code == 403, url
    started.refresh_from_db()
    assert (started.status, started.state) == (engine.WAITING, "draft")


def test_acting_needs_post(operator, started):
    assert operator.get(f"/executions/{started.id}/cancel/").status_code == 405


def test_the_login_page_logs_in(client, make_user, started):
    make_user("lena", "viewer")
    assert client.get("/login/").status_code == 200
    response = client.post("/login/", {"username": "lena", "password": "pass-123-pass",
                                       "next": f"/executions/{started.id}/"})
    assert response.status_code == 302
    assert client.get(response["Location"]).status_code == 200


# Operators act -------------------------------------------------------------------------------
def test_operator_sees_buttons_for_the_available_actions(operator, started):
    page = operator.get(f"/executions/{started.id}/").content.decode()
    assert re.search(r'name="action" value="submit"', page)
    assert "Submit for review" in page
    assert "Cancel execution" in page
    assert "Retry from here" not in page  # only a failed execution is retried


def test_operator_triggers_an_action_with_input(operator, started):
    response = operator.post(f"/executions/{started.id}/trigger/",
                             {"action": "submit", "input": '{"note": "v2 please"}'}, follow=True)
    assert response.redirect_chain[-1][0] == f"/executions/{started.id}/"
    started.refresh_from_db()
    assert (started.status, started.state) == (engine.WAITING, "review")
    assert started.context["note"] == "v2 please"
    page = response.content.decode()
    assert "was applied" in page
    assert "<strong>olga</strong> chose <strong>Submit for review</strong>" in page


@pytest.mark.parametrize("text, error", [
    ("{not json", "Malformed JSON"),
    ("[1, 2]", "must be a JSON object"),
])
def test_bad_input_is_a_clear_error_and_changes_nothing(operator, started, text, error):
    version = started.version
    response = operator.post(f"/executions/{started.id}/trigger/",
                             {"action": "submit", "input": text})
    assert response.status_code == 400
    page = response.content.decode()
    assert error in page
    assert 'aria-invalid="true"' in page
    started.refresh_from_db()
    assert (started.version, started.state) == (version, "draft")


@pytest.mark.parametrize("text, error", [
    ('{"n": NaN}', "Invalid JSON"),
    ('{"n": 1e999}', "Invalid JSON"),
    ('{"n": "\\ud800"}', "unpaired surrogate"),
    ('{"n": ' * 70 + "1" + "}" * 70, "nested too deeply"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_input_no_database_can_store_is_a_form_error_not_a_500(operator, started, text,
                                                                 error):
    response = operator.post(f"/executions/{started.id}/trigger/",
                             {"action": "submit", "input": text})
    assert response.status_code == 400
    assert error in response.content.decode()
    started.refresh_from_db()
    assert started.state == "draft"


def test_operators_are_written_like_the_api_writes_them(operator, started):
    operator.post(f"/executions/{started.id}/trigger/", {"action": "submit", "input": "{}"})
    assert started.history.filter(kind=engine.TRANSITION_TAKEN).get().actor == "user:olga"
    page = operator.get(f"/executions/{started.id}/").content.decode()
    assert "Started by <strong>alice</strong>" in page  # an older row: plain `alice`
    assert "<strong>olga</strong> chose" in page and "user:olga" not in page


def test_an_action_not_available_now_is_a_message_not_a_change(operator, started):
    response = operator.post(f"/executions/{started.id}/trigger/",
                             {"action": "approve", "input": "{}"}, follow=True)
    page = response.content.decode()
    assert "was not applied" in page
    assert "available now: submit" in page
    started.refresh_from_db()
    assert started.state == "draft"


def test_operator_cancels(operator, started):
    unsaid = operator.post(f"/executions/{started.id}/cancel/", follow=True)
    assert "say why" in unsaid.content.decode()
    started.refresh_from_db()
    assert started.status != engine.CANCELED
    response = operator.post(f"/executions/{started.id}/cancel/", {"reason": "duplicate"},
                             follow=True)
    assert "was canceled" in response.content.decode()
    started.refresh_from_db()
    assert started.status == engine.CANCELED
    again = operator.post(f"/executions/{started.id}/cancel/", {"reason": "again"},
                          follow=True)
    assert "Not canceled" in again.content.decode()


def test_operator_retries_a_failed_execution(operator, save_machine):
    save_machine(BROKEN)
    execution = services.start("broken").execution
    assert execution.status == engine.FAILED
    page = operator.get(f"/executions/{execution.id}/").content.decode()
    assert "Failed in <strong>one</strong>" in page
    # In plain words, with the transition and the expression; not "running for".
    assert ("Failed in <strong>one</strong>: The update of <code>x</code> in “divide” divided "
            "by zero (division by zero). The expression: <code>1 / 0</code>") in page
    assert "failed after " in page and "running for" not in page
    assert "Technical details" in page and "ZeroDivisionError" in page
    assert "Retry from here" in page
    response = operator.post(f"/executions/{execution.id}/retry/", follow=True)
    assert "Retried" in response.content.decode()
    kinds = list(execution.history.values_list("kind", flat=True))
    assert engine.EXECUTION_RETRIED in kinds


def test_unknown_ids_are_404(operator, review):
    for url in ["/machines/nope/", "/machines/review/v/9/", f"/executions/{uuid.uuid4()}/",
                "/executions/not-a-uuid/", f"/executions/{uuid.uuid4()}/status.json",
                "/machines/review/?compare=1..7"]:
        assert operator.get(url).status_code == 404, url
    assert operator.post(f"/executions/{uuid.uuid4()}/cancel/").status_code == 404


# What the pages show ----------------------------------------------------------------------------
def test_status_json_is_what_the_page_polls(viewer, started):
    data = viewer.get(f"/executions/{started.id}/status.json").json()
    assert data == {"version": started.version, "status": "waiting", "state": "draft"}
    services.trigger(started.id, "submit")
    assert viewer.get(f"/executions/{started.id}/status.json").json()["version"] > data["version"]


def test_execution_page_shows_path_steps_timeline_and_context(viewer, started):
    services.trigger(started.id, "submit", input={"note": "hi"}, actor="alice")
    services.trigger(started.id, "reject", actor="bob")
    page = viewer.get(f"/executions/{started.id}/").content.decode()
    steps = json.loads(re.search(r'<script id="steps-data" type="application/json">(.*?)'
                                 r"</script>", page, re.S).group(1))
    assert [s["n"] for s in steps] == [0, 1, 2]
    assert steps[1]["edges"] == ["edge-draft-submit"]
    assert steps[1]["changes"]["added"] == ["note"]
    assert steps[2]["current"] == "draft" and steps[2]["status"] == "waiting"
    assert 'id="state-draft" class="node state visited current status-waiting"' in page
    assert "<strong>bob</strong> chose <strong>reject</strong> → <strong>Draft</strong>" in page
    assert "  &quot;note&quot;: &quot;hi&quot;" in page
    assert '<ins class="ctx-added">  &quot;note' not in page  # the last step added nothing
    assert "Step 2: reject, In review to Draft" in page  # the path in words


def test_the_timeline_of_a_long_history_is_collapsed_and_bounded(viewer, save_machine):
    save_machine(COUNTER)
    execution = services.start("counter").execution
    assert execution.history.count() > 450
    page = viewer.get(f"/executions/{execution.id}/").content.decode()
    assert "× " in page and "timeline-group" in page
    steps = json.loads(re.search(r'<script id="steps-data" type="application/json">(.*?)'
                                 r"</script>", page, re.S).group(1))
    assert len(steps) <= MAX_STEPS
    assert steps[-1]["status"] == "finished"
    assert "Earlier history" in page
    earliest = viewer.get(f"/executions/{execution.id}/?from=1").content.decode()
    assert "Started by" in earliest and "Later history" in earliest


def test_parent_and_child_executions_link_to_each_other(viewer, save_machine):
    save_machine(REVIEW)
    save_machine("""
id: batch
execution_mode: sync
start_at: go
states:
  go:
    actions:
      - id: spawn
        invoke: {machine: review, async: true, success: {state: sent}}
  sent: {return: null}
""")
    parent = services.start("batch").execution
    child = Execution.objects.get(parent=parent)
    assert f'href="/executions/{child.id}/"' in viewer.get(
        f"/executions/{parent.id}/").content.decode()
    assert f'href="/executions/{parent.id}/"' in viewer.get(
        f"/executions/{child.id}/").content.decode()


def test_machine_list_counts_executions_by_status_in_one_query(viewer, save_machine, review):
    services.start("review")
    execution = services.start("review").execution
    services.cancel(execution.id, reason="test")

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert viewer.get("/machines/").status_code == 200
        return len(captured)

    few = queries()
    save_machine(BROKEN)
    services.start("broken")
    save_machine(COUNTER)
    assert queries() == few
    page = viewer.get("/").content.decode()
    assert "Document review" in page and "Someone submits" in page
    assert "1 waiting" in page and "1 canceled" in page


def test_machine_page_draws_the_heatmap(viewer, review):
    for _ in range(3):
        services.start("review")
    one = services.start("review").execution
    services.trigger(one.id, "submit")
    page = viewer.get("/machines/review/").content.decode()
    assert re.search(r'<g id="state-draft" class="node state heat-has">\n'
                     r'<title>[^<]*3 executions here now</title>', page)
    assert re.search(r'<g id="edge-draft-submit" class="edge action heat-used">.*?×1<', page, re.S)
    assert 'id="edge-review-approve" class="edge action heat-unused"' in page
    assert "Heatmap as a table" in page


def test_heat_counts_edges_with_aggregates(review):
    execution = services.start("review").execution
    services.trigger(execution.id, "submit")
    services.trigger(execution.id, "reject")
    services.trigger(execution.id, "submit")
    heat = presenters.heat(review)
    assert heat.on_edge == {"edge-draft-submit": 2, "edge-review-reject": 1}
    assert heat.in_state == {"review": 1}
    HistoryEntry.objects.filter(execution=execution, kind=engine.TRANSITION_TAKEN).update(
        at=execution.created_at)
    assert set(selectors.median_stays(review)) == {"draft", "review"}


def test_machine_page_compares_two_versions(viewer, review, save_machine):
    save_machine(REVIEW.replace("  done: {return", """  archived: {return: null}
  done: {return""").replace("state: done}", "state: archived}"))
    page = viewer.get("/machines/review/?compare=1..2").content.decode()
    assert 'id="state-archived" class="node state terminal diff-added"' in page
    assert 'id="edge-review-approve" class="edge action diff-changed"' in page
    assert "States added" in page and "Transitions changed" in page
    same = viewer.get("/machines/review/?from=1&to=1").content.decode()
    assert "No difference" in same


def test_execution_lists_filter_and_paginate(viewer, review):
    for _ in range(3):
        services.start("review")
    done = services.start("review").execution
    services.trigger(done.id, "submit")
    listed = viewer.get("/executions/?status=waiting&state=review").content.decode()
    assert done.short_id in listed and listed.count('class="mono"') == 1
    machine_page = viewer.get("/machines/review/?state=draft").content.decode()
    assert done.short_id not in machine_page
    assert "1–3 of 3" in machine_page
    assert "1–4 of 4" in viewer.get("/executions/?machine=review&version=1").content.decode()

"""Every stored value is checked once (expressions/values.py), whatever the surface: bad
input is a 400 naming where, a result the machine produces that cannot be stored fails
that execution with a clear `value_error`, an error text is cut, a far-future time is
refused at save; and after each of them the lists, the execution, its history and its
page still answer 200 for everyone. End to end through the API (SQLite by default; the
same file runs on PostgreSQL with DATABASE_URL)."""
import json

import pytest
from django.db import connection
from django.test import Client

from executions.models import Execution, HistoryEntry, InboxItem
from tests.helpers import assert_error

# An action whose assign is the expression under test (YAML single quotes: the Python
# source keeps its backslash escapes, so "\ud800" is a lone surrogate made by the sandbox).
ASSIGNING = """
id: maker
execution_mode: sync
start_at: s
context: {n: 0}
states:
  s:
    actions:
      - {id: go, on: go, assign: {x: 'EXPR'}, state: s}
      - {id: ok, on: ok, assign: {n: "ctx['n'] + 1"}, state: s}
"""
# 40 keys of 250,000 characters each: every result is under the sandbox's 256 KiB, the
# whole context is 10 MB.
BIG_CONTEXT = """
id: hoarder
execution_mode: sync
start_at: s
states:
  s:
    actions:
      - id: go
        on: go
        assign: {KEYS}
        state: s
""".replace("KEYS", ", ".join(f"k{i}: \"'x' * 250000\"" for i in range(40)))
SLEEPER = """
id: sleeper
execution_mode: sync
start_at: s
states:
  s:
    actions:
      - {id: nap, on: nap, state: w}
  w:
    actions:
      - {id: sleep, wait: {seconds: "SECONDS"}, state: t}
  t:
    actions:
      - {id: up, on: up, state: s}
"""
CALLING = """
id: calling
execution_mode: sync
start_at: s
states:
  s:
    actions:
      - id: fetch
        on: fetch
        invoke:
          call: "io('http.request.json', 'GET', 'http://127.0.0.1:9/x')"
          success: {state: done, assign: {got: "output"}}
          error: {state: broken, assign: {why: "error"}}
  done: {return: "ctx['got']"}
  broken:
    actions:
      - {id: again, on: again, state: s}
"""


def start(client, machine, **body):
    return client.post(f"/api/machines/{machine}/executions/", body, format="json")


def act(client, execution_id, action, **body):
    return client.post(f"/api/executions/{execution_id}/actions/",
                       {"action": action, "wait": True, **body}, format="json")


def raw_post(client, url, text):
    """A body sent as it is (JSON that a client library would not write)."""
    return client.post(url, data=text, content_type="application/json")


def assert_everything_answers(api, execution_id=None):
    """The unfiltered list, the execution, its history and its pages: 200 for everyone."""
    for role in ("viewer", "operator"):
        client = api(role)
        urls = ["/api/executions/"]
        if execution_id:
            urls += [f"/api/executions/{execution_id}/",
                     f"/api/executions/{execution_id}/history/"]
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200, (url, response.content[:500])
            json.loads(response.content)  # valid JSON, whatever is stored
        page = Client()
        page.force_login(client.user)
        pages = ["/executions/", "/"] + ([f"/executions/{execution_id}/",
                                     f"/executions/{execution_id}/status.json"]
                                    if execution_id else [])
        for url in pages:
            response = page.get(url)
            assert response.status_code == 200, (url, response.content[:500])
            response.content.decode("utf-8")


def failed_with_value_error(body, kind=None):
    assert body["status"] == "failed", body
    error = body["error"]
    assert error["type"] == "value_error", error
    if kind:
        assert error["kind"] == kind, error
    return error


# Input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, path", [
    ('{"input": {"name": "a\\ud800b"}}', "input.name"),
    ('{"input": {"name": "a\\u0000b"}}', "input.name"),
    ('{"input": {"n": 1' + "0" * 4999 + '}}', None),
    ('{"input": {"n": [0, -' + "9" * 309 + ']}}', "input.n[1]"),
    ('{"input": {"list": [1, NaN]}}', None),
])
def test_bad_input_is_a_400_naming_where_and_nothing_is_stored(api, save_machine, text,
                                                               path):
    save_machine(ASSIGNING.replace("EXPR", "1"))
    operator = api("operator")
    body = assert_error(raw_post(operator, "/api/machines/maker/executions/", text), 400)
    if path:
        assert path in json.dumps(body), body
    assert not Execution.objects.exists()
    started = start(operator, "maker").json()["id"]
    body = assert_error(raw_post(operator, f"/api/executions/{started}/actions/",
                                 text.replace('{"input"', '{"action": "go", "input"')), 400)
    assert InboxItem.objects.count() == 0
    assert_everything_answers(api, started)


def test_an_input_past_the_size_limit_is_refused(api, save_machine, settings):
    settings.DATA_MACHINES = {**settings.DATA_MACHINES, "MAX_INPUT_CHARS": 1000}
    save_machine(ASSIGNING.replace("EXPR", "1"))
    body = assert_error(start(api("operator"), "maker", input={"text": "x" * 2000}), 400)
    assert body["errors"][0]["path"] == "input"
    assert "more than the limit of 1,000" in body["errors"][0]["message"]
    assert not Execution.objects.exists()


# Results the machine produces ------------------------------------------------------------
@pytest.mark.parametrize("expr, kind, where", [
    ('"a\\ud800b"', "invalid", "context.x"),
    ('"a" + "\\x00" + "b"', "invalid", "context.x"),
    ("10 ** 4999", "too_large", "context.x"),
    ("[1, 2 ** 1100]", "too_large", "context.x[1]"),
])
def test_a_result_that_cannot_be_stored_fails_the_execution(api, save_machine, expr, kind,
                                                            where):
    save_machine(ASSIGNING.replace("EXPR", expr))
    operator = api("operator")
    execution_id = start(operator, "maker").json()["id"]
    assert act(operator, execution_id, "ok").json()["context"] == {"n": 1}
    response = act(operator, execution_id, "go")
    assert response.status_code == 200, response.content
    error = failed_with_value_error(response.json(), kind)
    assert error["path"] == where and where in error["message"]
    assert response.json()["context"] == {"n": 1}  # the last context stored, intact
    rows = list(HistoryEntry.objects.filter(execution_id=execution_id).order_by("seq"))
    assert [row.seq for row in rows] == list(range(1, len(rows) + 1))
    assert rows[-1].kind == "execution_failed" and rows[-1].error["type"] == "value_error"
    assert_everything_answers(api, execution_id)
    # Retry resumes from the last state stored: the execution is usable again.
    retried = operator.post(f"/api/executions/{execution_id}/retry/", format="json")
    assert retried.status_code == 200 and retried.json()["status"] == "waiting"
    assert act(operator, execution_id, "ok").json()["context"] == {"n": 2}


def test_a_result_with_a_huge_int_at_the_top_fails_on_start_too(api, save_machine):
    save_machine("""
id: maker
execution_mode: sync
start_at: a
states:
  a:
    actions:
      - {id: auto, assign: {n: "10 ** 4999"}, state: b}
  b:
    actions:
      - {id: ok, on: ok, state: b}
""")
    response = start(api("operator"), "maker")
    assert response.status_code == 201, response.content
    error = failed_with_value_error(response.json(), "too_large")
    assert error["path"] == "context.n"
    assert response.json()["context"] == {}
    assert_everything_answers(api, response.json()["id"])


def test_a_ten_megabyte_context_fails_the_execution_and_is_not_stored(api, save_machine):
    save_machine(BIG_CONTEXT)
    operator = api("operator")
    execution_id = start(operator, "hoarder").json()["id"]
    response = act(operator, execution_id, "go")
    error = failed_with_value_error(response.json(), "too_large")
    assert error["path"] == "context" and "more than the limit of 1,048,576" in error["message"]
    stored = Execution.objects.get(pk=execution_id)
    assert stored.context == {}
    biggest = max(len(json.dumps([row.context, row.input, row.error, row.detail]))
                  for row in HistoryEntry.objects.filter(execution_id=execution_id))
    assert biggest < 10_000
    assert_everything_answers(api, execution_id)


def test_an_io_output_that_cannot_be_stored_fails_the_call_not_the_service(api,
                                                                           save_machine):
    save_machine(CALLING)
    editor = api("editor")  # mocks need the editor role
    mocks = {"http.request.json": '{"body": "a\\ud800b", "n": 2 ** 70}'}
    execution_id = start(editor, "calling", mocks=mocks).json()["id"]
    response = act(editor, execution_id, "fetch")
    body = response.json()
    assert body["state"] == "broken", body
    assert body["context"]["why"]["type"] == "value_error"
    assert "cannot be stored" in body["context"]["why"]["message"]
    assert_everything_answers(api, execution_id)


def test_a_huge_error_text_is_cut_with_a_note(api, save_machine):
    huge = "{}[\"y\" * 900000]"  # a KeyError naming it
    save_machine(ASSIGNING.replace("EXPR", "1").replace(
        "state: s}\n      - {id: ok", "state: b}\n      - {id: ok") + f"""
  b:
    actions:
      - {{id: auto, assign: {{x: '{huge}'}}, state: s}}
""")
    operator = api("operator")
    execution_id = start(operator, "maker").json()["id"]
    body = act(operator, execution_id, "go").json()
    assert body["status"] == "failed", body
    message = body["error"]["message"]
    assert len(message) < 10_200 and "[cut: " in message, message[-200:]
    for row in HistoryEntry.objects.filter(execution_id=execution_id):
        assert len(json.dumps(row.error or {})) < 12_000
    assert_everything_answers(api, execution_id)


def test_a_rejected_action_with_a_huge_error_text_is_answered_and_stored_cut(api,
                                                                              save_machine):
    save_machine(ASSIGNING.replace("EXPR", "{}[\"y\" * 900000]"))
    operator = api("operator")
    execution_id = start(operator, "maker").json()["id"]
    refused = act(operator, execution_id, "go")
    assert refused.status_code == 409 and len(refused.content) < 20_000, len(refused.content)
    assert "[cut: " in refused.json()["detail"]
    assert Execution.objects.get(pk=execution_id).status == "waiting"
    assert_everything_answers(api, execution_id)


# Times -----------------------------------------------------------------------------------
@pytest.mark.parametrize("wait, path", [
    ({"seconds": 1e300}, "states.w.actions[0].wait.seconds"),
    ({"seconds": 400_000_000}, "states.w.actions[0].wait.seconds"),
    ({"until": 1e300}, "states.w.actions[0].wait.until"),
])
def test_a_far_future_time_is_refused_at_save(api, wait, path):
    source = {"id": "far", "start_at": "s", "states": {
        "s": {"actions": [{"id": "nap", "on": "nap", "state": "w"}]},
        "w": {"actions": [{"id": "sleep", "wait": wait, "state": "t"}]},
        "t": {"return": None}}}
    body = assert_error(api("editor").post("/api/machines/", {"source": source},
                                           format="json"), 400)
    assert [problem["path"] for problem in body["errors"]] == [path], body
    wait["seconds" if "seconds" in wait else "until"] = 3600
    assert api("editor").post("/api/machines/", {"source": source},
                              format="json").status_code == 201


def test_a_timeout_past_ten_years_is_refused_at_save(api):
    source = {"id": "far", "start_at": "s", "timeout_seconds": 1e300,
              "states": {"s": {"return": None}}}
    body = assert_error(api("editor").post("/api/machines/", {"source": source},
                                           format="json"), 400)
    assert "timeout_seconds" in json.dumps(body) and "10 years" in json.dumps(body)


def test_a_far_future_time_computed_at_run_time_fails_the_execution(api, save_machine):
    save_machine(SLEEPER.replace("SECONDS", "1e300"))
    operator = api("operator")
    execution_id = start(operator, "sleeper").json()["id"]
    error = failed_with_value_error(act(operator, execution_id, "nap").json(), "too_large")
    assert error["path"] == "timer.due"
    assert_everything_answers(api, execution_id)


@pytest.mark.parametrize("wait", ['{seconds: "10 ** 400"}', '{until: "10 ** 400"}'])
def test_a_time_past_any_float_is_an_expression_error_not_a_500(api, save_machine, wait):
    save_machine(SLEEPER.replace('{seconds: "SECONDS"}', wait))
    operator = api("operator")
    execution_id = start(operator, "sleeper").json()["id"]
    body = act(operator, execution_id, "nap").json()
    assert body["status"] == "failed" and "too large to be a time" in body["error"]["message"]
    assert_everything_answers(api, execution_id)


# What was stored before the checks existed -----------------------------------------------
@pytest.mark.skipif("connection.vendor != 'sqlite'",
                    reason="PostgreSQL never stored a lone surrogate or NUL in jsonb")
def test_rows_stored_before_the_checks_are_shown_escaped(api, save_machine):
    save_machine(ASSIGNING.replace("EXPR", "1"))
    operator = api("operator")
    execution_id = start(operator, "maker").json()["id"]
    act(operator, execution_id, "ok")
    bad = '{"x": "a\\ud800b", "y": "c\\u0000d"}'
    table = Execution._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET context = %s, result = %s WHERE id = %s",
                       [bad, bad, Execution._meta.pk.get_db_prep_value(execution_id,
                                                                        connection)])
        cursor.execute(f"UPDATE {HistoryEntry._meta.db_table} SET context = %s",
                       [bad])
    assert Execution.objects.get(pk=execution_id).context["x"] == "a\ud800b"
    assert_everything_answers(api, execution_id)
    shown = api("viewer").get(f"/api/executions/{execution_id}/").json()
    assert shown["context"]["x"] == "a\\ud800b"
    page = Client()
    page.force_login(operator.user)
    assert b"a\\ud800b" in page.get(f"/executions/{execution_id}/").content
    assert page.get("/machines/maker/").status_code == 200


# The explorer's form, the commands -------------------------------------------------------
@pytest.mark.parametrize("text", [
    '{"n": NaN}', '{"n": 1e999}', '{"s": "a\\ud800"}', '{"s": "\\u0000"}',
    '{"n": ' + "9" * 5000 + '}', '{"n": ' + "9" * 310 + '}',
])
def test_the_explorer_form_applies_the_same_checks(api, save_machine, text):
    save_machine(ASSIGNING.replace("EXPR", "1"))
    operator = api("operator")
    execution_id = start(operator, "maker").json()["id"]
    page = Client()
    page.force_login(operator.user)
    response = page.post(f"/executions/{execution_id}/trigger/",
                         {"action": "ok", "input": text})
    assert response.status_code == 400
    assert "Nothing was sent" in response.content.decode()
    assert Execution.objects.get(pk=execution_id).context == {"n": 0}
    assert_everything_answers(api, execution_id)


def test_the_commands_apply_the_same_checks(save_machine, db):
    from django.core.management import CommandError, call_command

    save_machine(ASSIGNING.replace("EXPR", "1"))
    for text in ('{"n": ' + "9" * 5000 + '}', '{"n": NaN}', '{"s": "\\ud800"}'):
        with pytest.raises(CommandError):
            call_command("start_execution", "maker", "--input", text)
    assert not Execution.objects.exists()


# Who may override the mode ---------------------------------------------------------------
def test_only_editors_may_override_the_execution_mode(api, save_machine):
    save_machine(ASSIGNING.replace("EXPR", "1").replace("execution_mode: sync",
                                                        "execution_mode: async-latency"))
    refused = assert_error(start(api("operator"), "maker", mode="sync"), 403)
    assert "editor" in refused["detail"]
    assert not Execution.objects.exists()
    response = start(api("editor"), "maker", mode="sync")
    assert response.status_code == 201, response.content
    assert response.json()["mode"] == "sync" and response.json()["status"] == "waiting"
    assert start(api("operator"), "maker").status_code == 201  # no override: fine
    assert_everything_answers(api, response.json()["id"])


# The check itself ------------------------------------------------------------------------
@pytest.mark.parametrize("value", [
    {"text": "\\u0000 is how JSON writes NUL"},  # looks like NUL in the JSON text: is not
    {"digits": "7" * 400},  # a long run of digits in a string, not a number
    {"n": 10**308, "m": -(10**308), "f": 1.5e308},
    {"é": "ünïcødé ✓ 🚀"},
])
def test_storable_values_pass_however_they_look(value):
    from expressions.values import Limits, check_context

    assert check_context(value, Limits()) > 0


@pytest.mark.parametrize("value, path", [
    ({"a": ["ok", "x\ud800"]}, "context.a[1]"),
    ({"a": {"b\x00": 1}}, "context.a"),
    ({"a": [1, 10**309]}, "context.a[1]"),
    ({"a": float("nan")}, "context.a"),
    ({"a": {1, 2}}, "context.a"),
])
def test_what_cannot_be_stored_is_named_where(value, path):
    from expressions.values import InvalidValue, Limits, check_context

    with pytest.raises(InvalidValue) as refused:
        check_context(value, Limits())
    assert refused.value.path == path

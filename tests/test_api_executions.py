"""The executions API: start, list with filters, read, history, trigger, cancel, retry."""
import uuid

import pytest
from rest_framework.test import APIClient

from executions import engine
from executions.models import Execution, HistoryEntry, InboxItem
from tests.helpers import CART, assert_error, wait_until

FRAGILE = """
id: fragile
execution_mode: sync
start_at: s
states:
  s:
    actions:
      - {id: go, on: go, assign: {given: "input"}, state: t}
  t:
    actions:
      # Automatic: its failure fails the execution (an action's own would only reject it).
      - {id: check, assign: {x: "ctx['given']['needed']"}, state: u}
  u: {return: "ctx['x']"}
"""
CALLER = """
id: caller
execution_mode: sync
start_at: calling
states:
  calling:
    actions:
      - id: fetch
        invoke:
          call: "io('http.request.json', 'GET', 'http://127.0.0.1:9/never')"
          success: {state: done, assign: {n: "output['body']['n']"}}
          error: {state: broken}
  done: {return: "ctx['n']"}
  broken: {return: null}
"""
SLOW_CART = CART.replace("id: cart", "id: slow-cart").replace(
    "execution_mode: sync", "execution_mode: async-throughput")


def start(client, machine="cart", **body):
    return client.post(f"/api/machines/{machine}/executions/", body, format="json")


def act(client, execution_id, action, **body):
    return client.post(f"/api/executions/{execution_id}/actions/", {"action": action, **body},
                       format="json")


@pytest.fixture
def cart(save_machine):
    return save_machine(CART)


# Start ------------------------------------------------------------------------------------
def test_start_returns_201_with_the_execution(api, cart):
    response = start(api("operator", "olga"), input={"customer": "c-1"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) >= {"id", "machine", "version", "status", "state", "context", "input",
                         "result", "error", "available_actions", "parent", "children",
                         "created_at", "updated_at", "finished_at", "url"}
    assert body["machine"] == "cart" and body["version"] == 1
    assert body["status"] == "waiting" and body["state"] == "open"
    assert body["context"] == {"items": []} and body["input"] == {"customer": "c-1"}
    assert sorted(body["available_actions"]) == ["add", "close"]
    assert body["parent"] is None and body["children"] == []
    execution = Execution.objects.get(pk=body["id"])
    assert execution.actor == "token:olga"
    assert execution.history.get(seq=1).actor == "token:olga"


def test_same_idempotency_key_returns_the_first_execution_with_200(api, cart):
    operator = api("operator")
    first = start(operator, idempotency_key="order-42")
    again = start(operator, idempotency_key="order-42", input={"other": True})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Execution.objects.count() == 1


def test_start_a_given_version(api, save_machine):
    save_machine(CART)
    save_machine(CART.replace("Cart", "Cart 2"))
    operator = api("operator")
    assert start(operator).json()["version"] == 2
    assert start(operator, version=1).json()["version"] == 1
    assert_error(start(operator, version=7), 404, "not_found")


def test_start_of_an_unknown_machine_is_404(api, db):
    assert_error(start(api("operator"), machine="nope"), 404, "not_found")


@pytest.mark.parametrize("body,path", [
    ({"input": [1]}, "input"), ({"input": "x"}, "input"), ({"version": 0}, "version"),
    ({"version": "two"}, "version"), ({"version": 2**40}, "version"),
    ({"wait": "maybe"}, "wait"), ({"timeout": -1}, "timeout"), ({"timeout": "soon"}, "timeout"),
    ({"mode": "turbo"}, "mode"), ({"idempotency_key": ""}, "idempotency_key"),
    ({"idempotency_key": "k" * 201}, "idempotency_key"), ({"inputs": {}}, "inputs"),
])
def test_bad_start_bodies_are_400_naming_the_field(api, cart, body, path):
    body = assert_error(start(api("operator"), **body), 400, "validation_error")
    assert [e["path"] for e in body["errors"]] == [path]
    assert not Execution.objects.exists()


def test_a_wait_that_runs_out_answers_202_with_the_execution_as_it_is(api, save_machine):
    save_machine(CALLER)  # its IO call is work the caller's process would do next
    response = start(api("operator"), machine="caller", wait=True, timeout=0)
    assert response.status_code == 202
    assert response.json()["status"] == "invoking" and response.json()["state"] == "calling"


def test_a_huge_timeout_is_capped_not_an_error(api, cart):
    response = start(api("operator"), wait=True, timeout=1e300)
    assert response.status_code == 201 and response.json()["status"] == "waiting"


def test_roles_for_starting(api, cart):
    assert_error(start(api("viewer")), 403, "permission_denied")
    assert_error(start(APIClient()), 401, "not_authenticated")
    assert not Execution.objects.exists()


def test_mocks_need_the_editor_role(api, save_machine):
    save_machine(CALLER)
    mocks = {"http.request.json": "{'status': 200, 'headers': {}, 'body': {'n': 7}}"}
    refused = assert_error(start(api("operator"), machine="caller", mocks=mocks), 403)
    assert "editor" in refused["detail"]
    response = start(api("editor"), machine="caller", mocks=mocks)
    assert response.status_code == 201
    assert response.json()["status"] == "finished" and response.json()["result"] == 7


# Trigger ----------------------------------------------------------------------------------
def test_trigger_with_wait_applies_the_action(api, cart):
    operator = api("operator")
    execution_id = start(operator).json()["id"]
    response = act(operator, execution_id, "add", input={"sku": "x9"}, wait=True)
    assert response.status_code == 200
    assert response.json()["context"] == {"items": ["x9"]}
    closed = act(operator, execution_id, "close", wait=True).json()
    assert closed["status"] == "finished" and closed["result"] == ["x9"]
    assert closed["finished_at"] and closed["available_actions"] == []


def test_an_unavailable_action_is_409_and_changes_nothing(api, cart):
    operator = api("operator")
    execution_id = start(operator).json()["id"]
    before = HistoryEntry.objects.filter(execution_id=execution_id).count()
    body = assert_error(act(operator, execution_id, "close", wait=True), 409, "not_available")
    assert sorted(body["available_actions"]) == ["add", "close"]
    assert body["errors"][0]["path"] == "action" and "add" in body["errors"][0]["hint"]
    unknown = assert_error(act(operator, execution_id, "fly"), 409, "not_available")
    assert "add" in unknown["available_actions"]
    assert HistoryEntry.objects.filter(execution_id=execution_id).count() == before
    assert not InboxItem.objects.filter(kind=InboxItem.ACTION).exists()


def test_trigger_without_wait_is_202_accepted(api, cart):
    operator = api("operator")
    execution_id = start(operator).json()["id"]
    response = act(operator, execution_id, "add", input={"sku": "a"})
    assert response.status_code == 202
    assert Execution.objects.get(pk=execution_id).context == {"items": ["a"]}  # sync mode


def test_the_same_idempotency_key_applies_an_action_once(api, cart):
    operator = api("operator")
    execution_id = start(operator).json()["id"]
    for _ in range(3):
        response = act(operator, execution_id, "add", input={"sku": "a"},
                       idempotency_key="add-1", wait=True)
        assert response.status_code == 200
    assert response.json()["context"] == {"items": ["a"]}


@pytest.mark.parametrize("body,path", [
    ({"action": ""}, "action"), ({"action": 5, "input": {}}, "action"),
    ({"action": "add", "input": [1]}, "input"), ({"action": "add", "wait": []}, "wait"),
    ({"action": "add", "extra": 1}, "extra"), ({}, "action"),
    ({"action": "add", "idempotency_key": 7}, "idempotency_key"),
])
def test_bad_trigger_bodies_are_400(api, cart, body, path):
    operator = api("operator")
    execution_id = start(operator).json()["id"]
    response = operator.post(f"/api/executions/{execution_id}/actions/", body, format="json")
    assert [e["path"] for e in assert_error(response, 400)["errors"]] == [path]


def test_trigger_roles_and_unknown_executions(api, cart):
    execution_id = start(api("operator")).json()["id"]
    assert_error(act(api("viewer"), execution_id, "add", input={"sku": "a"}), 403)
    assert_error(act(APIClient(), execution_id, "add"), 401)
    assert_error(act(api("operator"), uuid.uuid4(), "add"), 404, "not_found")
    assert_error(act(api("operator"), "not-a-uuid", "add"), 404, "not_found")


# Reading ----------------------------------------------------------------------------------
def test_get_one_execution(api, cart):
    execution_id = start(api("operator")).json()["id"]
    body = api("viewer").get(f"/api/executions/{execution_id}/").json()
    assert body["id"] == execution_id and body["status"] == "waiting"
    assert body["history_url"] == f"/api/executions/{execution_id}/history/"
    assert_error(api("viewer").get(f"/api/executions/{uuid.uuid4()}/"), 404, "not_found")


def test_history_rows_in_order_and_paginated(api, cart):
    operator = api("operator", "olga")
    execution_id = start(operator).json()["id"]
    for sku in "abc":
        act(operator, execution_id, "add", input={"sku": sku}, wait=True)
    viewer = api("viewer")
    rows = viewer.get(f"/api/executions/{execution_id}/history/").json()["results"]
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0]["kind"] == "execution_started" and rows[0]["actor"] == "token:olga"
    taken = [r for r in rows if r["kind"] == "transition_taken"]
    assert [r["input"] for r in taken] == [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}]
    assert taken[-1]["context"] == {"items": ["a", "b", "c"]}
    assert taken[0]["from_state"] == "open" and taken[0]["transition"] == "add"
    assert set(rows[0]) >= {"seq", "kind", "at", "actor", "transition", "from_state",
                            "to_state", "action", "input", "context", "output", "error",
                            "duration_ms"}
    seen, url = [], f"/api/executions/{execution_id}/history/?page_size=2"
    while url:
        page = viewer.get(url).json()
        seen += [r["seq"] for r in page["results"]]
        url = page["next"]
    assert seen == [r["seq"] for r in rows]
    assert_error(viewer.get(f"/api/executions/{uuid.uuid4()}/history/"), 404)


def test_list_newest_first_with_cursor_pages(api, cart):
    operator = api("operator")
    ids = [start(operator).json()["id"] for _ in range(5)]
    viewer = api("viewer")
    seen, url = [], "/api/executions/?page_size=2"
    while url:
        page = viewer.get(url).json()
        assert len(page["results"]) <= 2
        seen += [e["id"] for e in page["results"]]
        url = page["next"]
    assert seen == ids[::-1]
    assert_error(viewer.get("/api/executions/?cursor=garbage"), 404, "not_found")


def test_list_filters(api, save_machine):
    save_machine(CART)
    save_machine(CART.replace("Cart", "Cart 2"))
    save_machine(FRAGILE)
    operator = api("operator")
    v1 = start(operator, version=1).json()["id"]
    v2 = start(operator).json()["id"]
    act(operator, v2, "add", input={"sku": "a"}, wait=True)
    act(operator, v2, "close", wait=True)
    other = start(operator, machine="fragile").json()["id"]
    viewer = api("viewer")

    def ids(query):
        response = viewer.get(f"/api/executions/?{query}")
        assert response.status_code == 200, response.content
        return {e["id"] for e in response.json()["results"]}

    assert ids("machine=cart") == {v1, v2}
    assert ids("machine=cart&version=1") == {v1}
    assert ids("status=finished") == {v2}
    assert ids("state=open") == {v1}
    assert ids("state=s&machine=fragile") == {other}
    assert ids("created_after=2000-01-01T00:00:00Z") == {v1, v2, other}
    assert ids("created_before=2000-01-01") == set()
    assert ids(f"parent={uuid.uuid4()}") == set()


@pytest.mark.parametrize("query,path", [
    ("status=bogus", "status"), ("version=abc", "version"), ("version=0", "version"),
    ("version=99999999999999999999", "version"), ("created_after=yesterday", "created_after"),
    ("created_before=9999-12-31T23:59:59-23:00", "created_before"), ("parent=nope", "parent"),
    ("machine=Not%20An%20Id", "machine"), ("state=" + "s" * 201, "state"),
    ("state=a%00b", "state"),
])
def test_invalid_filters_are_400_never_500(api, db, query, path):
    body = assert_error(api("viewer").get(f"/api/executions/?{query}"), 400, "validation_error")
    assert [e["path"] for e in body["errors"]] == [path]


def test_invalid_filters_keep_drf_s_messages(api, db):
    body = assert_error(api("viewer").get("/api/executions/?status=done&version=x&parent=1"),
                        400, "validation_error")
    assert {e["path"]: e["message"] for e in body["errors"]} == {
        "status": '"done" is not a valid choice.', "version": "A valid integer is required.",
        "parent": "Must be a valid UUID."}


@pytest.mark.parametrize("name", ["machine", "status", "state", "version", "parent"])
def test_a_blank_filter_is_400_in_the_api(api, db, name):
    body = assert_error(api("viewer").get(f"/api/executions/?{name}=%20"), 400,
                        "validation_error")
    assert [e["path"] for e in body["errors"]] == [name]


def test_the_execution_filter_works_in_a_plain_django_view(api, save_machine):
    """The explorer's use: ExecutionFilter(request.GET or None, queryset=...) -> .qs, .form;
    blank fields (an HTML form's "any") and invalid values filter nothing."""
    from django.http import QueryDict

    from executions import selectors
    from executions.filters import ExecutionFilter

    save_machine(CART)
    save_machine(FRAGILE)
    operator = api("operator")
    cart = start(operator).json()["id"]
    fragile = start(operator, machine="fragile").json()["id"]

    def ids(query):
        filters = ExecutionFilter(QueryDict(query) if query is not None else None,
                                  queryset=selectors.executions())
        return {str(e.pk) for e in filters.qs}, filters

    assert ids(None)[0] == ids("machine=&status=&state=&version=")[0] == {cart, fragile}
    assert ids("machine=cart&status=waiting&state=open&version=1")[0] == {cart}
    assert ids("state=s")[0] == {fragile}
    found, filters = ids("status=bogus&machine=cart")
    assert found == {cart} and not filters.is_valid()  # the valid filter is kept
    assert set(filters.errors) == {"status"}
    assert {"machine", "status", "state", "version"} <= set(filters.form.fields)
    assert filters.form["status"].value() == ["bogus"]


def test_the_browsable_list_shows_the_filter_form(api, db):
    response = api("viewer").get("/api/executions/?status=waiting", HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    assert 'name="status"' in response.content.decode()


# Cancel and retry -------------------------------------------------------------------------
def test_cancel_then_cancel_again_is_409(api, cart):
    operator = api("operator")
    execution_id = start(operator).json()["id"]
    response = operator.post(f"/api/executions/{execution_id}/cancel/",
                             {"reason": "customer called"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    assert_error(operator.post(f"/api/executions/{execution_id}/cancel/",
                               {"reason": "again"}, format="json"), 409, "not_available")
    assert_error(api("viewer").post(f"/api/executions/{execution_id}/cancel/"), 403)
    assert_error(operator.post(f"/api/executions/{uuid.uuid4()}/cancel/", {"reason": "x"},
                               format="json"), 404)


def test_a_cancel_says_why_or_is_refused_and_nothing_changes(api, cart):
    operator = api("operator")
    execution_id = start(operator).json()["id"]
    for body in (None, {}, {"reason": ""}, {"reason": "   "}, {"reason": 3}):
        refused = operator.post(f"/api/executions/{execution_id}/cancel/", body, format="json")
        assert refused.status_code == 400, (body, refused.content)
        assert "reason" in refused.content.decode()
    execution = Execution.objects.get(pk=execution_id)
    assert execution.status != engine.CANCELED
    assert not execution.history.filter(kind=engine.EXECUTION_CANCELED).exists()
    said = operator.post(f"/api/executions/{execution_id}/cancel/",
                         {"reason": "the customer called"}, format="json")
    assert said.status_code == 200 and said.json()["status"] == "canceled"
    row = execution.history.get(kind=engine.EXECUTION_CANCELED)
    assert row.detail == {"reason": "the customer called"} and "operator" in row.actor, \
        (row.actor, row.detail)


def test_retry_resumes_a_failed_execution_and_refuses_others(api, save_machine):
    save_machine(FRAGILE)
    operator = api("operator")
    execution_id = start(operator, machine="fragile").json()["id"]
    failed = act(operator, execution_id, "go", input={}, wait=True).json()
    assert failed["status"] == "failed" and failed["error"]["type"] == "expression_error"
    retried = operator.post(f"/api/executions/{execution_id}/retry/")
    # Resumed where it failed: the same transition, and nothing fixed its context.
    assert retried.status_code == 200 and retried.json()["status"] == "failed"
    assert retried.json()["state"] == "t"
    operator.post(f"/api/executions/{execution_id}/cancel/", {"reason": "test"}, format="json")
    assert_error(operator.post(f"/api/executions/{execution_id}/retry/"), 409, "not_available")
    assert_error(operator.post(f"/api/executions/{execution_id}/retry/", {"x": 1},
                               format="json"), 400)
    kinds = HistoryEntry.objects.filter(execution_id=execution_id).values_list("kind", flat=True)
    assert engine.EXECUTION_RETRIED in kinds


# Diagram ----------------------------------------------------------------------------------
def test_execution_diagram_shows_its_path(api, cart):
    operator = api("operator")
    execution_id = start(operator).json()["id"]
    act(operator, execution_id, "add", input={"sku": "a"}, wait=True)
    response = api("viewer").get(f"/api/executions/{execution_id}/diagram.svg")
    assert response.status_code == 200 and response["Content-Type"].startswith("image/svg+xml")
    svg = response.content.decode()
    assert 'class="node state visited current status-waiting"' in svg
    assert 'class="edge action taken"' in svg
    assert_error(api("viewer").get(f"/api/executions/{uuid.uuid4()}/diagram.svg"), 404)


# Async mode with a real worker ------------------------------------------------------------
@pytest.mark.cluster
def test_async_start_and_trigger_are_accepted_then_applied_by_the_worker(cluster,
                                                                        api, save_machine):
    save_machine(SLOW_CART)
    operator = api("operator")
    started = start(operator, machine="slow-cart")
    assert started.status_code == 201
    execution_id = started.json()["id"]
    waited = act(operator, execution_id, "add", input={"sku": "a"}, wait=True, timeout=20)
    assert waited.status_code == 200 and waited.json()["context"] == {"items": ["a"]}
    accepted = act(operator, execution_id, "add", input={"sku": "b"})
    assert accepted.status_code == 202
    wait_until(lambda: Execution.objects.get(pk=execution_id).context == {"items": ["a", "b"]},
               20, "the worker never applied the action")
    assert Execution.objects.get(pk=execution_id).actor == "token:operator-user"


# The answer's representation ---------------------------------------------------------------
PARENT = """
id: parent
execution_mode: sync
start_at: a
states:
  a:
    actions:
      - {id: spawn, on: spawn, invoke: {machine: cart, async: true, success: {state: b}}}
  b: {return: "1"}
"""


def test_the_fast_representation_equals_drf_s(api, cart, save_machine):
    """executions.api.serializers.represent builds the answer without DRF's fields: it must
    say exactly what the ModelSerializer says, children (read fresh) and parent included."""
    from executions.api.serializers import ExecutionSerializer
    from executions.services import cancel

    save_machine(PARENT)
    client = api("operator", "olga")
    parent = start(client, "parent").json()
    spawned = act(client, parent["id"], "spawn", wait=True)
    assert spawned.status_code == 200, spawned.content
    child = Execution.objects.get(parent_id=parent["id"])
    assert spawned.json()["children"] == [str(child.pk)]
    finished = start(client, input={"customer": "c-2"}).json()
    cancel(finished["id"], actor="test", reason="test")
    for execution in Execution.objects.select_related("machine_version"):
        serializer = ExecutionSerializer(execution)
        assert serializer.data == serializer.generic_representation(execution)
    answered = client.get(f"/api/executions/{child.pk}/").json()
    assert answered["parent"] == parent["id"] and answered["children"] == []
    assert answered == ExecutionSerializer(child).generic_representation(child)


@pytest.mark.parametrize("body", [
    {"action": "add"}, {"action": "add", "input": {"sku": "x"}, "wait": True, "timeout": 3},
    {"action": "add", "timeout": 2.5, "idempotency_key": "k-1"}, {"action": " add "},
    {"action": ""}, {"action": "a\x00b"}, {"action": "é"}, {"action": 5}, {"action": "x" * 201},
    {"action": "add", "wait": "true"}, {"action": "add", "wait": 1}, {"action": "add",
                                                                       "timeout": -1},
    {"action": "add", "timeout": True}, {"action": "add", "timeout": "3"},
    {"action": "add", "input": []}, {"action": "add", "input": {"a": [1, {"b": None}]}},
    {"action": "add", "bogus": 1}, {"input": {}}, {}, {"mode": "sync"}, {"mode": "nope"},
    {"version": 2, "mocks": {"op": 1}}, {"version": 0}, {"version": 2.0}, {"version": True},
])
def test_plain_bodies_validate_as_drf_does(body):
    """strict() skips DRF for bodies already in their final form: the same result (or the
    same refusal, through DRF) either way."""
    from rest_framework.exceptions import ValidationError

    from executions.api import serializers as api_serializers

    def through_drf(cls, data):
        serializer = cls(data=data)
        if set(data) - set(serializer.fields) or not serializer.is_valid():
            return "refused"
        return dict(serializer.validated_data)

    for cls in (api_serializers.TriggerSerializer, api_serializers.StartSerializer):
        expected = through_drf(cls, body)
        try:
            got = dict(api_serializers.strict(cls, body))
        except ValidationError:
            got = "refused"
        assert got == expected, (cls.__name__, body)
        assert type(got.get("timeout")) is type(expected.get("timeout")) if got != "refused" \
            else True

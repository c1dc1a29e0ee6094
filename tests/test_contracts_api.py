"""Contracts end to end through the API (issue 13): input schemas, actions rejected by their
own expressions, business keys, searchable attributes, short ids, the machine's OpenAPI."""
import threading
import uuid

import pytest
from django.db import connection

from executions.models import Execution, ExecutionAttribute, HistoryEntry, InboxItem
from tests.helpers import CART, assert_error, wait_until

REFUND = "refund.yaml"
ANY_KEY_MACHINE = """
id: ticket
execution_mode: sync
start_at: open
key: "input['ref']"
input: {ref: string}
states:
  open:
    actions:
      - {id: close, on: close, state: closed}
      - {id: note, on: note, assign: {note: "input['text'].upper()"}}
  closed: {return: null}
"""

# Each variant under its own id: a process caches the latest version of each machine.
ASYNC_TICKET = ANY_KEY_MACHINE.replace("id: ticket", "id: async-ticket").replace(
    "execution_mode: sync", "execution_mode: async-throughput")
UNCHECKED_TICKET = ANY_KEY_MACHINE.replace("id: ticket", "id: unchecked-ticket").replace(
    "input: {ref: string}\n", "")


def start(client, machine="refund", **body):
    return client.post(f"/api/machines/{machine}/executions/", body, format="json")


def act(client, path, action, **body):
    return client.post(f"{path}actions/", {"action": action, **body}, format="json")


def refund_input(refund_id="R-1", **extra):
    return {"refund_id": refund_id, "customer": "c-17", "amount": 120, **extra}


@pytest.fixture
def refund(save_machine):
    return save_machine(REFUND)


@pytest.fixture
def operator(api):
    return api("operator", "olga")


# Input schemas ---------------------------------------------------------------------------
def test_a_start_input_that_breaks_the_schema_is_a_400_naming_every_path(operator, refund):
    response = start(operator, input={"refund_id": 7, "amount": -1, "currency": "YEN",
                                      "colour": "red"}, wait=True)
    body = assert_error(response, 400, "invalid_request")
    paths = {problem["path"] for problem in body["errors"]}
    assert {"input.refund_id", "input.amount", "input.currency", "input"} <= paths
    assert any("customer" in p["message"] for p in body["errors"] if p["path"] == "input")
    assert any("colour" in p["message"] for p in body["errors"] if p["path"] == "input")
    assert not Execution.objects.exists()


def test_defaults_fill_the_missing_fields_before_the_machine_sees_the_input(operator, refund):
    response = start(operator, input=refund_input(), wait=True)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["input"]["currency"] == "EUR" and body["context"]["currency"] == "EUR"


def test_an_action_input_that_breaks_its_schema_is_refused_before_anything_is_stored(
        operator, refund):
    execution = start(operator, input=refund_input(), wait=True).json()
    path = f"/api/executions/{execution['id']}/"
    rows = HistoryEntry.objects.count()
    for wait in (True, False):
        body = assert_error(act(operator, path, "reject", input={"why": 1}, wait=wait), 400)
        assert {p["path"] for p in body["errors"]} == {"input"}
        assert "reason" in body["detail"]
    assert HistoryEntry.objects.count() == rows and not InboxItem.objects.exists()
    assert_error(act(operator, path, "approve", input={"by": "me"}, wait=True), 400)
    applied = act(operator, path, "paid", input={}, wait=True)  # schema first, then state
    assert_error(applied, 400)
    approved = act(operator, path, "approve", input={}, wait=True)
    assert approved.status_code == 200 and approved.json()["state"] == "approved"
    paid = act(operator, path, "paid", input={"provider_ref": "p-1"}, wait=True).json()
    assert paid["status"] == "finished" and paid["result"]["net"] == 120  # fee defaulted


def test_an_action_not_available_is_still_a_409_whatever_its_input(operator, refund):
    execution = start(operator, input=refund_input(), wait=True).json()
    response = act(operator, f"/api/executions/{execution['id']}/", "paid",
                   input={"provider_ref": "x"}, wait=True)
    assert_error(response, 409, "not_available")


# An action never fails an execution by its own input ------------------------------------
def test_a_failing_expression_of_an_action_rejects_it_and_the_execution_stays(
        operator, save_machine):
    save_machine(ANY_KEY_MACHINE)
    execution = start(operator, "ticket", input={"ref": "T-1"}).json()
    path = f"/api/executions/{execution['id']}/"
    body = assert_error(act(operator, path, "note", input={}, wait=True), 409, "not_available")
    assert "KeyError" in body["detail"] and "states.open.actions[1].assign.note" in body["detail"]
    after = operator.get(path).json()
    assert after["status"] == "waiting" and after["state"] == "open"
    assert not HistoryEntry.objects.filter(kind="execution_failed").exists()
    ok = act(operator, path, "note", input={"text": "hi"}, wait=True).json()
    assert ok["context"]["note"] == "HI"


@pytest.mark.cluster
def test_an_async_action_whose_expression_fails_is_recorded_as_rejected(
        cluster, operator, save_machine):
    save_machine(ASYNC_TICKET)
    response = start(operator, "async-ticket", input={"ref": "T-2"}, wait=True)
    assert response.status_code == 201, response.content
    execution = response.json()
    path = f"/api/executions/{execution['id']}/"
    assert act(operator, path, "note", input={}).status_code == 202
    rejected = wait_until(lambda: HistoryEntry.objects.filter(
        execution_id=execution["id"], kind="action_rejected").first(), 30,
        "the worker never rejected the action")
    assert rejected.detail["error"]["exception"] == "KeyError"
    assert "KeyError" in rejected.detail["reason"]
    after = operator.get(path).json()
    assert after["status"] == "waiting" and after["state"] == "open"


# Business keys ---------------------------------------------------------------------------
def test_a_start_with_a_key_in_use_returns_that_execution(operator, refund):
    first = start(operator, input=refund_input("R-9"), wait=True)
    again = start(operator, input=refund_input("R-9", amount=5), wait=True)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["key"] == "R-9"
    assert Execution.objects.count() == 1


def test_a_key_unique_among_unfinished_executions_is_free_again_once_finished(
        operator, save_machine):
    save_machine(ANY_KEY_MACHINE)
    first = start(operator, "ticket", input={"ref": "T-5"}).json()
    assert start(operator, "ticket", input={"ref": "T-5"}).json()["id"] == first["id"]
    act(operator, f"/api/executions/{first['id']}/", "close", wait=True)
    second = start(operator, "ticket", input={"ref": "T-5"})
    assert second.status_code == 201 and second.json()["id"] != first["id"]
    # By key: the unfinished one, else the newest.
    found = operator.get("/api/machines/ticket/keys/T-5/").json()
    assert found["id"] == second.json()["id"]


def test_a_key_unique_for_all_time_keeps_returning_the_finished_execution(operator, refund):
    first = start(operator, input=refund_input("R-2"), wait=True).json()
    operator.post(f"/api/executions/{first['id']}/cancel/", {"reason": "test"},
                  format="json")
    again = start(operator, input=refund_input("R-2"), wait=True)
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    assert again.json()["status"] == "canceled"


def test_a_start_without_its_key_is_a_400(operator, refund, save_machine):
    save_machine(UNCHECKED_TICKET)
    body = assert_error(start(operator, "unchecked-ticket", input={"other": 1}), 400)
    assert body["errors"][0]["path"] == "input.ref"
    body = assert_error(start(operator, "unchecked-ticket", input={"ref": {"a": 1}}), 400)
    assert "text or an integer" in body["detail"]
    assert not Execution.objects.exists()


def test_actions_reads_and_cancels_address_an_execution_by_machine_and_key(operator, refund):
    execution = start(operator, input=refund_input("R/ok?"[:1] + "-77"), wait=True).json()
    by_key = "/api/machines/refund/keys/R-77/"
    assert operator.get(by_key).json()["id"] == execution["id"]
    approved = act(operator, by_key, "approve", input={}, wait=True)
    assert approved.status_code == 200 and approved.json()["state"] == "approved"
    history = operator.get(by_key + "history/").json()
    assert [row["kind"] for row in history["results"]][-1] == "transition_taken"
    canceled = operator.post(by_key + "cancel/", {"reason": "duplicate"}, format="json")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert_error(operator.get("/api/machines/refund/keys/R-404/"), 404)
    assert_error(operator.get("/api/machines/nope/keys/R-77/"), 404)


@pytest.mark.django_db(transaction=True)
def test_concurrent_starts_with_one_key_make_one_execution(save_machine):
    """The race the unique index settles: each INSERT but one is refused, and each of those
    starts answers with the one that won."""
    from executions import services

    save_machine(ASYNC_TICKET)
    answers, barrier = [], threading.Barrier(4)

    def start_one():
        try:
            barrier.wait()
            answers.append(services.start("async-ticket", input={"ref": "SAME"}))
        finally:
            connection.close()

    threads = [threading.Thread(target=start_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 4 and len({outcome.execution.pk for outcome in answers}) == 1
    assert sorted(outcome.created for outcome in answers) == [False, False, False, True]
    assert Execution.objects.filter(business_key="SAME").count() == 1


# Short ids -------------------------------------------------------------------------------
def test_short_ids_address_executions_and_an_ambiguous_one_lists_the_candidates(
        operator, save_machine):
    save_machine(CART)
    made = [start(operator, "cart").json()["id"] for _ in range(2)]
    short = made[0][:8]
    assert operator.get(f"/api/executions/{short}/").json()["id"] == made[0]
    twin = Execution.objects.get(pk=made[1])
    twin.pk = uuid.UUID(made[0][:8] + "-0000-4000-8000-000000000001")
    twin.save(force_insert=True)
    body = assert_error(operator.get(f"/api/executions/{short}/"), 400, "ambiguous_id")
    assert {c["id"] for c in body["candidates"]} == {made[0], str(twin.pk)}
    assert_error(operator.get("/api/executions/ffff0000/"), 404)


# Searchable attributes -------------------------------------------------------------------
def ids(response):
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_attributes_are_computed_after_each_step_and_filter_typed(operator, refund):
    small = start(operator, input=refund_input("R-10", amount=20, customer="c-1"),
                  wait=True).json()
    large = start(operator, input=refund_input("R-11", amount=500), wait=True).json()
    assert large["attributes"]["amount"] == 500 and large["attributes"]["customer"] == "c-17"
    assert large["attributes"]["paid"] is False
    listing = "/api/executions/?machine=refund&"
    assert ids(operator.get(listing + "attr.amount__gte=100")) == {large["id"]}
    assert ids(operator.get(listing + "attr.amount__lt=100")) == {small["id"]}
    assert ids(operator.get(listing + "attr.customer=c-1")) == {small["id"]}
    assert ids(operator.get(listing + "attr.requested_at__gt=2000-01-01T00:00:00Z")) == {
        small["id"], large["id"]}
    path = f"/api/executions/{large['id']}/"
    act(operator, path, "adjust", input={"amount": 50}, wait=True)
    assert ids(operator.get(listing + "attr.amount__gte=100")) == set()
    act(operator, path, "approve", input={}, wait=True)
    act(operator, path, "paid", input={"provider_ref": "p"}, wait=True)
    assert ids(operator.get(listing + "attr.paid=true")) == {large["id"]}
    assert ExecutionAttribute.objects.filter(execution_id=large["id"]).count() == 4


@pytest.mark.parametrize(("query", "path", "message"), [
    ("customer=c-17", "customer", "Unknown parameter"),
    ("machine=refund&attr.amount__gte=lots", "attr.amount__gte", "number"),
    ("attr.amount=1", "attr.amount", "needs `machine`"),
    ("machine=refund&attr.colour=red", "attr.colour", "no attribute 'colour'"),
    ("machine=refund&attr.paid__gt=true", "attr.paid__gt", "boolean"),
    ("machine=refund&attr.paid=yes", "attr.paid", "true or false"),
    ("machine=refund&attr.requested_at__lt=tuesday", "attr.requested_at__lt", "format"),
    ("machine=refund&attr.amount__gte=1e400", "attr.amount__gte", "number"),
    ("machine=refund&attr.amount__gte=nan", "attr.amount__gte", "number"),
    ("machine=refund&attr.customer=" + "x" * 201, "attr.customer", "no more than 200"),
    ("machine=refund&attr.=1", "attr.", "Unknown parameter"),
    ("machine=nope&attr.amount=1", "attr.amount", "has no attribute 'amount'"),
    ("machine=refund&attr.amount__gte=", "attr.amount__gte", "may not be blank"),
])
def test_unknown_parameters_and_bad_values_are_a_400_naming_them(operator, refund, query,
                                                                  path, message):
    body = assert_error(operator.get(f"/api/executions/?{query}"), 400, "validation_error")
    assert any(p["path"] == path and message in p["message"] for p in body["errors"]), body


def test_paging_parameters_are_not_refused(operator, refund):
    assert operator.get("/api/executions/?page_size=5").status_code == 200


# The machine's OpenAPI document ----------------------------------------------------------
def test_the_machine_openapi_document_carries_its_schemas(operator, refund):
    response = operator.get("/api/machines/refund/openapi.json")
    assert response.status_code == 200
    document = response.json()
    start_body = document["paths"]["/api/machines/refund/executions/"]["post"]["requestBody"]
    schema = start_body["content"]["application/json"]["schema"]["properties"]["input"]
    assert set(schema["required"]) == {"refund_id", "customer", "amount"}
    assert schema["properties"]["currency"] == {"type": "string", "enum": ["EUR", "USD", "GBP"],
                                                "default": "EUR"}
    trigger = document["paths"]["/api/executions/{execution_id}/actions/"]["post"]
    bodies = trigger["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    reject = next(b for b in bodies if b["title"] == "reject")
    assert reject["properties"]["input"]["required"] == ["reason"]
    assert "/api/machines/refund/keys/{key}/actions/" in document["paths"]
    assert_error(operator.get("/api/machines/nope/openapi.json"), 404)


KEYED_PARENT = """
id: keyed-parent
execution_mode: sync
start_at: go
states:
  go:
    actions:
      - id: child
        invoke:
          machine: ticket
          input: "{'ref': input['ref']}"
          success: {state: done}
          error: {state: refused, assign: {why: "error['type']"}}
  done: {return: "'started'"}
  refused: {return: "ctx['why']"}
"""


def test_a_child_whose_key_is_held_fails_the_invoke_instead_of_waiting_forever(
        operator, save_machine):
    save_machine(ANY_KEY_MACHINE)
    save_machine(KEYED_PARENT)
    start(operator, "ticket", input={"ref": "T-9"})
    held = start(operator, "keyed-parent", input={"ref": "T-9"}).json()
    assert held["status"] == "finished" and held["result"] == "key_in_use"
    fresh = start(operator, "keyed-parent", input={"ref": "T-10"}).json()
    assert fresh["status"] == "invoking"  # the new child waits in `open` for its close
    assert Execution.objects.get(business_key="T-10").parent_id == uuid.UUID(fresh["id"])

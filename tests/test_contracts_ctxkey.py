"""A business key read from the execution's context (issue 13): `key: "ctx['payment_id']"`.
What is refused when a machine is saved; the key set by the step that first holds it, then
fixed; another execution holding it fails the step's execution with `key_in_use` and
nothing of the step written; actions, reads and the search box find the execution by it;
the in-memory store and real workers (examples/provider-payment.yaml) do the same."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection

from executions import engine, services
from executions.models import Execution, HistoryEntry, InboxItem
from executions.runtime import advancing, queue, store
from executions.runtime.memstore import MemoryStore
from machines import contracts
from machines.language import check
from tests.helpers import ROOT, assert_error, wait_until

PAY = """
id: pay
execution_mode: sync
start_at: new
key: "ctx['payment_id']"
states:
  new:
    actions:
      - {id: create, on: created, assign: {payment_id: "input['id']"}, state: pending}
      - {id: note, on: note, assign: {note: "input['text']"}}
  pending:
    actions:
      - {id: settle, on: settled, state: settled}
      - {id: change, on: change, assign: {payment_id: "input['id']"}}
      - {id: drop, on: drop, assign: {payment_id: null}}
  settled: {return: "ctx['payment_id']"}
"""
PAY_ALWAYS = PAY.replace("id: pay\n", "id: pay-always\n").replace(
    "key: \"ctx['payment_id']\"", "key: {value: \"ctx['payment_id']\", unique: always}")
# Async, the key set by the start itself: starts are saved in batches (Store.save_starts).
BATCHED = """
id: batched
execution_mode: async-throughput
start_at: open
key: "ctx['ref']"
context: "{'ref': input['ref']}"
states:
  open:
    actions:
      - {id: close, on: close, state: closed}
  closed: {return: null}
"""


# The language ----------------------------------------------------------------------------
BASE = """
id: m
start_at: a
states:
  a:
    actions:
      - {id: go, on: go, state: b}
  b: {return: null}
"""


@pytest.mark.parametrize(("key", "path", "message"), [
    ("\"ctx\"", "key", "the key must be a path into the start input or the context"),
    ("\"context['a']\"", "key", "the key must be a path into the start input or the context"),
    ("\"ctx['a'].get('b')\"", "key", "the key must be a path into the start input or the"),
    ("\"ctx[ctx['a']]\"", "key", "only fixed names and numbers"),
    ("{value: \"ctx[True]\"}", "key.value", "only fixed names and numbers"),
    ("{value: 7}", "key.value", "the key must be a path into the start input or the context"),
    ("{value: \"ctx['a']\", unique: never}", "key.unique", "unknown uniqueness"),
])
def test_a_key_is_a_fixed_path_into_the_start_input_or_the_context(key, path, message):
    result = check(BASE + f"key: {key}\n")
    found = [(p.path, p.message, p.hint) for p in result.errors]
    assert any(p == path and message in m for p, m, _ in found), found
    assert all("ctx['payment_id']" in (hint or "") for p, m, hint in found
               if "must be a path" in m)


def test_a_context_key_is_read_from_the_context():
    key = contracts.key_of({"value": "ctx['payment']['id']", "unique": "always"}, "key")
    assert (key.path, key.unique, key.in_context) == (("payment", "id"), "always", True)
    assert contracts.key_of("input['order_id']", "key").in_context is False
    assert contracts.context_key(key, {}) is None  # missing: no key yet
    assert contracts.context_key(key, {"payment": None}) is None
    assert contracts.context_key(key, {"payment": {"id": None}}) is None
    assert contracts.context_key(key, {"payment": {"id": 42}}) == "42"
    for bad in (True, 1.5, {"a": 1}, "", "x" * 201):
        with pytest.raises(contracts.KeyUnavailable, match=r"ctx\['payment'\]\['id'\]"):
            contracts.context_key(key, {"payment": {"id": bad}})


# End to end through the API (SQLite or PostgreSQL, as DATABASE_URL says) ----------------
@pytest.fixture
def operator(api):
    return api("operator", "olga")


@pytest.fixture
def pay(save_machine):
    return save_machine(PAY)


def start(client, machine="pay", **body):
    return client.post(f"/api/machines/{machine}/executions/", {"input": {}, **body},
                       format="json")


def act(client, path, action, **body):
    return client.post(f"{path}actions/", {"action": action, "wait": True, **body},
                       format="json")


def by_id(execution_id):
    return f"/api/executions/{execution_id}/"


def created(client, payment_id, machine="pay"):
    """A started execution given the key `payment_id` by its second step."""
    execution = start(client, machine).json()
    answer = act(client, by_id(execution["id"]), "created", input={"id": payment_id})
    assert answer.status_code == 200, answer.content
    return answer.json()


def test_the_step_that_sets_the_key_makes_the_execution_addressable_by_it(operator, pay):
    response = start(operator)
    assert response.status_code == 201 and response.json()["key"] is None
    first = created(operator, "P-1")
    second = created(operator, "P-2")
    assert (first["key"], second["key"]) == ("P-1", "P-2")
    assert Execution.objects.get(pk=first["id"]).business_key == "P-1"
    assert operator.get("/api/machines/pay/keys/P-2/").json()["id"] == second["id"]
    settled = act(operator, "/api/machines/pay/keys/P-2/", "settled")
    assert settled.status_code == 200, settled.content
    assert (settled.json()["id"], settled.json()["result"]) == (second["id"], "P-2")
    assert Execution.objects.get(pk=first["id"]).state == "pending"
    assert_error(operator.get("/api/machines/pay/keys/P-404/"), 404)


def test_a_start_cannot_dedupe_on_a_context_key_but_an_idempotency_key_still_does(
        operator, pay):
    one, two = start(operator), start(operator)
    assert (one.status_code, two.status_code) == (201, 201)
    assert one.json()["id"] != two.json()["id"]
    keyed = start(operator, idempotency_key="k-1")
    again = start(operator, idempotency_key="k-1")
    assert (keyed.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == keyed.json()["id"]
    document = operator.get("/api/machines/pay/openapi.json").json()
    parameter = document["paths"]["/api/machines/pay/keys/{key}/"]["get"]["parameters"][0]
    assert "ctx['payment_id'] of the context" in parameter["description"]


def test_a_key_another_execution_holds_fails_the_step_and_writes_nothing_of_it(
        operator, pay):
    holder = created(operator, "P-1")
    holder_row = Execution.objects.get(pk=holder["id"])
    late = start(operator).json()
    act(operator, by_id(late["id"]), "note", input={"text": "before"})
    rows_before = list(HistoryEntry.objects.filter(execution_id=late["id"])
                       .values_list("seq", "kind"))

    answer = act(operator, by_id(late["id"]), "created", input={"id": "P-1"})
    assert answer.status_code == 200, answer.content
    failed = answer.json()
    assert failed["status"] == engine.FAILED and failed["key"] is None
    error = failed["error"]
    assert error["type"] == "key_in_use" and error["key"] == "P-1"
    assert holder_row.short_id in error["message"] and error["state"] == "new"
    assert error["holder"] == holder["id"]
    # The step is gone: the state and the context are those before it, one failure row.
    row = Execution.objects.get(pk=late["id"])
    assert (row.state, row.context, row.business_key) == ("new", {"note": "before"}, None)
    rows = list(HistoryEntry.objects.filter(execution_id=late["id"]).order_by("seq")
                .values_list("seq", "kind"))
    assert rows[:-1] == rows_before
    assert rows[-1] == (rows_before[-1][0] + 1, engine.EXECUTION_FAILED)
    assert not InboxItem.objects.filter(execution_id=late["id"], processed_at=None).exists()
    # The holder is untouched, and still the one the key finds.
    assert Execution.objects.get(pk=holder["id"]).version == holder_row.version
    assert operator.get("/api/machines/pay/keys/P-1/").json()["id"] == holder["id"]


def test_an_unfinished_key_is_free_once_its_holder_finishes_an_always_key_is_not(
        operator, save_machine, pay):
    first = created(operator, "P-5")
    act(operator, by_id(first["id"]), "settled")
    assert created(operator, "P-5")["key"] == "P-5"

    save_machine(PAY_ALWAYS)
    done = created(operator, "A-5", "pay-always")
    act(operator, by_id(done["id"]), "settled")
    refused = created(operator, "A-5", "pay-always")
    assert refused["error"]["type"] == "key_in_use"
    assert Execution.objects.get(pk=done["id"]).short_id in refused["error"]["message"]


def test_a_key_once_set_is_fixed(operator, pay):
    execution = created(operator, "P-7")
    path = by_id(execution["id"])
    assert act(operator, path, "change", input={"id": "P-7"}).json()["status"] == "waiting"
    dropped = act(operator, path, "drop").json()  # gone from the context: the key stays
    assert dropped["status"] == "waiting" and dropped["key"] == "P-7"
    assert "payment_id" in dropped["context"] and dropped["context"]["payment_id"] is None
    changed = act(operator, path, "change", input={"id": "P-8"}).json()
    assert changed["status"] == engine.FAILED and changed["key"] == "P-7"
    error = changed["error"]
    assert error["type"] == "key_changed" and (error["key"], error["value"]) == ("P-7", "P-8")
    assert "'P-7'" in error["message"] and "'P-8'" in error["message"]
    assert changed["context"]["payment_id"] is None  # as before the step
    assert operator.get("/api/machines/pay/keys/P-8/").status_code == 404


@pytest.mark.parametrize("value", [{"nested": 1}, True, "x" * 201])
def test_a_value_that_cannot_be_a_key_fails_the_execution_naming_the_path(
        operator, pay, value):
    execution = start(operator).json()
    failed = act(operator, by_id(execution["id"]), "created", input={"id": value}).json()
    assert failed["status"] == engine.FAILED and failed["key"] is None
    assert failed["error"]["type"] == "value_error"
    assert failed["error"]["path"] == "ctx['payment_id']"
    assert "ctx['payment_id']" in failed["error"]["message"]
    assert failed["state"] == "new" and failed["context"] == {}


def test_a_missing_key_is_no_key_and_no_error(operator, pay):
    execution = start(operator).json()
    noted = act(operator, by_id(execution["id"]), "note", input={"text": "hi"}).json()
    assert noted["status"] == "waiting" and noted["key"] is None
    assert Execution.objects.get(pk=execution["id"]).business_key is None


def test_the_search_box_finds_an_execution_by_its_context_key(client, make_user, operator,
                                                                pay):
    execution = created(operator, "P-42")
    client.force_login(make_user("vera", "viewer"))
    found = client.get("/search/?q=P-42")
    assert found.status_code == 302
    assert found["Location"] == Execution.objects.get(pk=execution["id"]).get_absolute_url()


@pytest.mark.django_db(transaction=True)
def test_two_executions_racing_for_one_key_one_holds_it(save_machine):
    """The race the unique index settles: both steps compute the key, one UPDATE wins, the
    other's execution fails with key_in_use (a savepoint keeps PostgreSQL's transaction)."""
    save_machine(PAY)
    ids = [services.start("pay").execution.pk for _ in range(4)]
    barrier = threading.Barrier(len(ids))

    def take(execution_id):
        try:
            barrier.wait()
            services.trigger(execution_id, "created", input={"id": "SAME"}, wait=True)
        finally:
            connection.close()

    threads = [threading.Thread(target=take, args=(pk,)) for pk in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = list(Execution.objects.filter(pk__in=ids))
    holders = [row for row in rows if row.business_key == "SAME"]
    assert len(holders) == 1 and holders[0].state == "pending"
    others = [row for row in rows if row is not holders[0]]
    assert all(row.status == engine.FAILED and row.error["type"] == "key_in_use"
               and holders[0].short_id in row.error["message"] for row in others)


def test_a_batch_of_starts_that_set_their_keys_is_saved_one_by_one(save_machine,
                                                                    monkeypatch):
    """Starts saved together (Store.save_starts) whose steps set keys: one refused by the
    unique index fails alone, the others start."""
    monkeypatch.setattr(queue, "wake_starter", lambda: None)
    save_machine(BATCHED)
    ids = [services.start("batched", input={"ref": ref}).execution.pk
           for ref in ("B-1", "B-2", "B-1")]
    assert advancing.start_waiting(deadline=time.monotonic() + 60) == 3
    rows = {row.pk: row for row in Execution.objects.filter(pk__in=ids)}
    assert rows[ids[1]].business_key == "B-2"
    holder, refused = sorted((rows[ids[0]], rows[ids[2]]), key=lambda row: row.business_key is None)
    assert (holder.business_key, holder.status) == ("B-1", engine.WAITING)
    assert refused.error["type"] == "key_in_use" and holder.short_id in refused.error["message"]
    assert HistoryEntry.objects.filter(execution=refused).count() == 1  # only the failure


# The in-memory store ---------------------------------------------------------------------
@pytest.fixture
def mem(monkeypatch):
    for name in ("enqueue_advance", "enqueue_advances", "enqueue_work", "wake_starter",
                 "clear_starter_marker"):
        monkeypatch.setattr(queue, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(queue, "queue_in_database", lambda: False)
    with store.using(MemoryStore()) as memory:
        yield memory


def test_the_in_memory_store_keeps_a_context_key_as_the_database_does(mem):
    mem.add_machine(PAY)
    first = services.start("pay").execution
    first = services.trigger(first.pk, "created", input={"id": "M-1"}).execution
    assert first.business_key == "M-1"
    second = services.start("pay").execution
    second = services.trigger(second.pk, "created", input={"id": "M-1"}).execution
    assert (second.status, second.error["type"]) == (engine.FAILED, "key_in_use")
    assert first.short_id in second.error["message"] and second.business_key is None
    assert mem.holding_key("pay", "M-1").pk == first.pk
    changed = services.trigger(first.pk, "change", input={"id": "M-2"}).execution
    assert changed.error["type"] == "key_changed"


# Real workers ----------------------------------------------------------------------------
class Provider(BaseHTTPRequestHandler):
    """POST /psp/payments answers {"id": ...}: the id the test asked for in `ids`, in
    order."""

    ids: list = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        data = json.dumps({"id": self.ids.pop(0), "status": "pending"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def provider():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/psp"
    server.shutdown()
    server.server_close()


def status_of(execution_id, *statuses, timeout=30):
    def reached():
        execution = Execution.objects.get(pk=execution_id)
        return execution if execution.status in statuses else None

    return wait_until(reached, timeout, lambda: f"{execution_id} is "
                      f"{Execution.objects.get(pk=execution_id).status}")


@pytest.mark.cluster
def test_workers_key_a_payment_by_the_providers_id_and_the_callback_finds_it(
        cluster, save_machine, provider, operator):
    save_machine("provider-payment.yaml")
    Provider.ids = ["psp_1", "psp_1"]  # the second payment is answered with a taken id
    first = services.start("provider-payment", input={"amount": 5, "provider_url": provider})
    first_row = status_of(first.execution.pk, engine.WAITING)
    assert (first_row.business_key, first_row.state) == ("psp_1", "pending")
    second = services.start("provider-payment", input={"amount": 7, "provider_url": provider})
    failed = status_of(second.execution.pk, engine.FAILED)
    assert failed.error["type"] == "key_in_use" and first_row.short_id in failed.error["message"]
    assert (failed.state, failed.business_key) == ("creating", None)

    callback = act(operator, "/api/machines/provider-payment/keys/psp_1/", "settled")
    assert callback.status_code == 200, callback.content
    assert callback.json()["id"] == str(first.execution.pk)
    paid = status_of(first.execution.pk, engine.FINISHED)
    assert paid.result == {"paid": True, "payment": "psp_1"}


@pytest.mark.cluster
def test_workers_save_a_batch_of_starts_that_set_their_keys(cluster, save_machine):
    save_machine(BATCHED)
    ids = [services.start("batched", input={"ref": ref}).execution.pk
           for ref in ("B-1", "B-2", "B-1")]
    rows = [status_of(pk, engine.WAITING, engine.FAILED) for pk in ids]
    assert rows[1].business_key == "B-2"
    holder, refused = sorted((rows[0], rows[2]), key=lambda row: row.business_key is None)
    assert holder.business_key == "B-1" and holder.status == engine.WAITING
    assert refused.status == engine.FAILED and refused.error["type"] == "key_in_use"
    assert holder.short_id in refused.error["message"]


def test_the_example_declares_its_key_in_the_context():
    machine = check((ROOT / "examples" / "provider-payment.yaml").read_text()).machine
    assert machine is not None and machine.key.in_context

"""The runtime side of the language's second edition, in process on the real database
(SQLite or PostgreSQL): an async invoke of a child that finishes during its own start,
sync runs bounded by timeout_seconds end to end, errors by type through real work.
The end-to-end walks with worker processes are in tests/test_lang_cluster.py."""
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from executions import engine, services
from executions.models import Execution, Work
from tests.helpers import wait_until

SYNC_CHILD = """
id: quick-child
execution_mode: sync
start_at: go
states:
  go: {return: "{'done': True}"}
"""

ASYNC_PARENT = """
id: async-parent
execution_mode: sync
start_at: starting
states:
  starting:
    actions:
      - id: spawn
        invoke:
          machine: quick-child
          async: true
          success: {state: started, assign: {child: "output['execution_id']"}}
  started: {return: "ctx['child']"}
"""


@pytest.mark.django_db(transaction=True)
def test_an_async_invoke_of_a_child_that_finishes_during_its_start_gets_the_execution_id(
        save_machine):
    save_machine(SYNC_CHILD)
    save_machine(ASYNC_PARENT)
    parent = services.start("async-parent", input={}, actor="test").execution
    assert parent.status == engine.FINISHED, parent.error
    child = Execution.objects.get(parent=parent)
    assert parent.result == str(child.pk)
    assert (child.status, child.result) == (engine.FINISHED, {"done": True})
    # the child's end was not delivered to the parent as a second result
    assert not parent.history.filter(kind=engine.WORK_SUCCEEDED, output={"done": True}).exists()


FAILING_CHILD = """
id: declining-child
execution_mode: sync
start_at: go
states:
  go:
    actions:
      - {id: decline, assign: {x: "fail('card_declined', 'the bank said no')"}}
"""

CATCHING_PARENT = """
id: catching-parent
execution_mode: sync
start_at: paying
states:
  paying:
    actions:
      - id: pay
        invoke:
          machine: declining-child
          error:
            - {on: "child_failed:card_declined", state: declined,
               assign: {why: "error['cause']['message']"}}
            - {state: broken}
  declined: {return: "ctx['why']"}
  broken: {return: "'broken'"}
"""


@pytest.mark.django_db(transaction=True)
def test_a_child_failing_on_purpose_is_caught_by_its_type_in_the_parent(save_machine):
    save_machine(FAILING_CHILD)
    save_machine(CATCHING_PARENT)
    parent = services.start("catching-parent", input={}, actor="test").execution
    assert (parent.status, parent.state, parent.result) == (
        engine.FINISHED, "declined", "the bank said no")
    child = Execution.objects.get(parent=parent)
    assert child.status == engine.FAILED and child.error["type"] == "card_declined"


class Slow(BaseHTTPRequestHandler):
    """Answers 200 after three seconds."""

    def do_GET(self):
        time.sleep(3)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/slow"
    server.shutdown()
    server.server_close()


def slow_child(url):
    return f"""
id: slow-child
execution_mode: sync
start_at: calling
states:
  calling:
    actions:
      - id: fetch
        invoke:
          call: "io('http.request', 'GET', '{url}', timeout=10)['status']"
          success: {{state: done, assign: {{status: output}}}}
  done: {{return: "ctx['status']"}}
"""


IMPATIENT_PARENT = """
id: impatient-parent
execution_mode: sync
timeout_seconds: 1
start_at: asking
states:
  asking:
    actions:
      - id: ask
        invoke:
          machine: slow-child
          success: {state: done, assign: {status: output}}
  done: {return: "ctx['status']"}
"""


@pytest.mark.django_db(transaction=True)
def test_a_sync_run_is_bounded_by_its_timeout_through_a_sync_child_calling_a_slow_service(
        save_machine, slow_service):
    """timeout_seconds: 1 on the parent; its sync child (timeout 30 s) calls a service that
    answers in 3 s. The caller is answered after about 1 s, not held by the child's call;
    the call goes on in its helper thread (a worker applies its result)."""
    save_machine(slow_child(slow_service))
    save_machine(IMPATIENT_PARENT)
    started = time.monotonic()
    parent = services.start("impatient-parent", input={}, actor="test").execution
    took = time.monotonic() - started
    assert took < 2.5, f"a sync run with timeout_seconds 1 held its caller {took:.1f} s"
    assert parent.status == engine.INVOKING
    child = Execution.objects.get(parent=parent)
    wait_until(lambda: Work.objects.filter(execution=child, kind=Work.CALL,
                                           status=Work.DONE).exists(), 10,
               "the child's call did not go on after its caller was answered")


CHALLENGE = """
id: challenge
execution_mode: sync
start_at: waiting
states:
  waiting:
    label: Waiting for the customer
    actions:
      - {id: answer, label: Answered, on: answer, assign: {answers: "ctx.get('answers', 0) + 1"}}
      - {id: done, label: Done, on: done, state: finished}
      - {id: remind, label: Reminder, after: 1h, assign: {reminded: "True"}}
      - {id: expire, label: Too late, after: P1D, state: expired}
  finished: {return: "'done'"}
  expired: {return: "'expired'"}
"""


@pytest.mark.django_db(transaction=True)
def test_state_timers_are_stored_and_shown_and_kept_by_an_action_that_stays(
        save_machine, client, make_user):
    from executions.models import HistoryEntry, Timer

    save_machine(CHALLENGE)
    execution = services.start("challenge", input={}, actor="test").execution
    timers = {t.token: t for t in Timer.objects.filter(execution=execution)}
    assert sorted(t.purpose for t in timers.values()) == ["after", "after"]
    services.trigger(execution.pk, "answer", input={}, actor="test", wait=True)
    assert {t.token: t.due_at for t in Timer.objects.filter(execution=execution)} == {
        token: timer.due_at for token, timer in timers.items()}  # the action kept both
    client.force_login(make_user("victor", "viewer"))
    page = client.get(f"/executions/{execution.pk}/").content.decode()
    assert "Its timer “Reminder” fires at" in page and "(1 more timer later)" in page
    assert "Timer <strong>Too late</strong> set: it fires at" in page
    assert "◷ P1D after entering" in page and "◷ every 1h" in page  # on the diagram
    services.trigger(execution.pk, "done", input={}, actor="test", wait=True)
    assert not Timer.objects.filter(execution=execution).exists()
    assert HistoryEntry.objects.filter(execution=execution, kind="timer_canceled").count() == 2


@pytest.mark.django_db
def test_saving_a_machine_over_the_api_names_what_would_fail_at_run_time(api):
    from tests.helpers import assert_error

    source = """
id: versions
start_at: a
states:
  a:
    actions:
      - {id: check, when: "io('http.request', 'GET', ctx['url'])['status'] == 200", state: b}
      - {id: other, on: other, state: b}
  b: {return: 'v2'}
"""
    body = assert_error(api("editor").post("/api/machines/", {"source": source}, format="json"),
                        400, "invalid_definition")
    found = {problem["path"]: problem["message"] for problem in body["errors"]}
    assert found == {
        "states.a.actions[0].when": "'io' is only available in 'invoke.call'; do the IO in an "
                                    "invoke: {invoke: {call: \"io(...)\", success: ...}}",
        "states.b.return": "name 'v2' is not defined; did you mean the text 'v2'? quote it as "
                           "\"'v2'\"",
    }
    assert [problem["line"] for problem in body["errors"]] == [1, 1]
    from machines.models import MachineVersion

    assert not MachineVersion.objects.filter(machine_id="versions").exists()  # nothing saved

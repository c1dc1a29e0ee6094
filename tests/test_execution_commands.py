"""start_execution, trigger, show_execution and run_demo, with good and bad input."""
from io import StringIO
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django_q.conf import Conf

from executions import services
from executions.models import Execution

CART = """
id: cart
execution_mode: sync
start_at: open
context: {items: []}
states:
  open:
    actions:
      - {id: add, on: add, assign: {items: "ctx['items'] + [input['sku']]"}}
      - {id: close, on: close, state: closed}
  closed: {return: "len(ctx['items'])"}
"""


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def cart(save_machine):
    save_machine(CART)


@pytest.mark.django_db(transaction=True)
def test_start_trigger_and_show(cart):
    shown = run("start_execution", "cart", "--input", "{}")
    assert "status   waiting" in shown and "actions  add, close" in shown
    execution = Execution.objects.get()
    prefix = str(execution.pk)[:8]
    assert '"items": ["x9"]' in run("trigger", prefix, "add", "--input", '{"sku": "x9"}')
    finished = run("trigger", str(execution.pk), "close")
    assert "status   finished" in finished and "result   1" in finished
    table = run("show_execution", prefix)
    assert "execution_started" in table and "transition_taken" in table
    assert "add: open -> open" in table and "close: open -> closed" in table


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("args, message", [
    (("start_execution", "nope"), "no machine 'nope'"),
    (("start_execution", "cart", "--input", "{bad"), "--input is not valid JSON"),
    (("start_execution", "cart", "--input", "[1]"), "must be a JSON object"),
    (("start_execution", "cart", "--machine-version", "7"), "no machine 'cart' version 7"),
    (("trigger", "0000", "add"), "no execution '0000'"),
    (("trigger", "zz-not-an-id", "add"), "zz-not-an-id"),
    (("show_execution", "ffffffff-ffff-ffff-ffff-ffffffffffff"), "no execution"),
])
def test_bad_input_is_a_clear_error(cart, args, message):
    with pytest.raises(CommandError, match=message.replace("[", r"\[")):
        run(*args)


@pytest.mark.django_db(transaction=True)
def test_trigger_of_an_action_not_available_lists_the_available_ones(cart):
    run("start_execution", "cart")
    execution = Execution.objects.get()
    with pytest.raises(CommandError, match="available now: add, close"):
        run("trigger", str(execution.pk), "ship")
    assert execution.history.count() == Execution.objects.get().history.count()


@pytest.mark.django_db(transaction=True)
def test_run_demo_drives_the_examples():
    run("load_machines", "examples")
    out = run("run_demo", "--url", "http://dm.example:8000/")
    assert "bob chose fraud-approve" in out
    orders = Execution.objects.filter(machine_id="order")
    assert {(o.status, o.state) for o in orders} == {
        ("finished", "shipped"), ("finished", "canceled"), ("waiting", "submitted")}
    shipment = Execution.objects.get(machine_id="shipment")
    assert shipment.result == {"delivered": True} and shipment.parent.state == "shipped"
    waiting = orders.get(status="waiting")
    assert f"http://dm.example:8000/executions/{waiting.pk}/" in out
    # The world it leaves is alive: approving the waiting order later (the explorer's
    # button, here the service it calls) ships it, with no stand-in server running.
    with mock.patch.object(Conf, "SYNC", True):
        services.trigger(waiting.pk, "fraud-approve", input={}, actor="user:bob", wait=True)
    waiting.refresh_from_db()
    assert (waiting.status, waiting.state) == ("finished", "shipped")
    assert Execution.objects.get(machine_id="employee-onboarding").status == "finished"
    assert Execution.objects.get(machine_id="document-approval").status == "sleeping"
    assert not Execution.objects.filter(status="failed").exists()


@pytest.mark.django_db(transaction=True)
def test_run_demo_needs_the_examples():
    with pytest.raises(CommandError, match="load the examples first"):
        run("run_demo")

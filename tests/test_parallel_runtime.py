"""parallel and map through the durable runtime, end to end: with a real qcluster and the
timer loop (SQLite or PostgreSQL, as DATABASE_URL says), and inline in sync mode.

Branch children are ordinary child executions: each keyed by its branch token, so a
worker killed while starting them starts none twice and loses none."""
import signal
from collections import Counter

import pytest

from executions import engine, services
from executions.models import Execution
from tests.helpers import wait_until

CHECK = """
id: kyc-check
start_at: checking
states:
  checking:
    actions:
      - {id: decide, if: "input['kind'] != 'sanctions' or not input.get('slow')",
         then: {state: done}, else: {state: pausing}}
  pausing:
    actions:
      - {id: later, wait: {seconds: 1}, state: done}
  done: {return: "{'kind': input['kind'], 'clear': input['kind'] != 'fails'}"}
"""

KYC = """
id: kyc-review
start_at: checking
context: {slow: false}
states:
  checking:
    actions:
      - id: run-checks
        invoke:
          parallel:
            identity: {machine: kyc-check, input: "{'kind': 'identity'}"}
            sanctions: {machine: kyc-check, input: "{'kind': 'sanctions', 'slow': True}"}
            address: {machine: kyc-check, input: "{'kind': input['third']}"}
          on_failure: collect
          success: {state: approved, assign: {checks: output}}
          error: {state: review, assign: {problem: error}}
  approved: {return: "ctx['checks']"}
  review: {return: "sorted(ctx['problem']['errors'])"}
"""

LINE = """
id: price-line
start_at: waiting
states:
  waiting:
    actions:
      - {id: priced, on: priced, state: done, assign: {price: "input['price']"}}
      # Its automatic step fails the branch (an action's own failure would only reject it).
      - {id: broken, on: broken, state: breaking}
  breaking:
    actions:
      - {id: divide, state: done, assign: {price: "1 / 0"}}
  done: {return: "ctx['price']"}
"""

ORDER = """
id: order-pricing
start_at: pricing
states:
  pricing:
    actions:
      - id: price-each
        invoke:
          map: {items: "input['lines']", machine: price-line, input: "{'sku': item}",
                max_concurrency: 2}
          success: {state: priced, assign: {prices: output}}
  priced: {return: "ctx['prices']"}
"""


def wait_for(execution_id, statuses, timeout=60):
    def settled():
        execution = Execution.objects.get(pk=execution_id)
        return execution if execution.status in statuses else None

    return wait_until(settled, timeout, lambda: f"{execution_id} never reached {statuses}: "
                      f"{Execution.objects.get(pk=execution_id).status}", interval=0.1)


def children_of(execution_id):
    return list(Execution.objects.filter(parent_id=execution_id).order_by("created_at"))


@pytest.mark.cluster
def test_parallel_checks_join_with_outputs_by_name(cluster, save_machine):
    save_machine(CHECK)
    save_machine(KYC)
    execution = services.start("kyc-review", input={"third": "address"}, actor="test").execution
    execution = wait_for(execution.pk, {engine.FINISHED})
    assert execution.state == "approved"
    assert execution.result == {"identity": {"kind": "identity", "clear": True},
                                "sanctions": {"kind": "sanctions", "clear": True},
                                "address": {"kind": "address", "clear": True}}
    children = children_of(execution.pk)
    assert len(children) == 3 and {c.status for c in children} == {engine.FINISHED}
    group = execution.history.get(kind=engine.WORK_STARTED).detail["token"]
    assert sorted(c.parent_token for c in children) == sorted(
        f"{group}/{key}" for key in ("identity", "sanctions", "address"))
    ended = list(execution.history.filter(kind=engine.BRANCH_ENDED).order_by("seq"))
    assert [e.detail["finished"] for e in ended] == [1, 2, 3]


@pytest.mark.cluster
def test_collect_names_every_failed_branch(cluster, save_machine):
    save_machine(CHECK)
    save_machine(KYC)
    save_machine(CHECK.replace("{'kind': input['kind'], 'clear': input['kind'] != 'fails'}",
                               "1 / 0 if input['kind'] == 'fails' else input")
                 .replace("id: kyc-check", "id: kyc-check\nversion: 2"))
    execution = services.start("kyc-review", input={"third": "fails"}, actor="test").execution
    execution = wait_for(execution.pk, {engine.FINISHED})
    assert execution.state == "review" and execution.result == ["address"]


@pytest.mark.cluster
def test_map_runs_at_most_max_concurrency_children_and_collects_by_index(cluster, save_machine):
    save_machine(LINE)
    save_machine(ORDER)
    skus = ["a", "b", "c", "d", "e"]
    execution = services.start("order-pricing", input={"lines": skus}, actor="test").execution
    priced = 0
    while priced < len(skus):
        waiting = wait_until(
            lambda: [c for c in children_of(execution.pk) if c.status == engine.WAITING],
            30, "no child waits to be priced")
        assert len(waiting) <= 2
        running = [c for c in children_of(execution.pk) if c.status != engine.FINISHED]
        assert len(running) <= 2, [(c.input, c.status) for c in running]
        child = waiting[0]
        services.trigger(child.pk, "priced", input={"price": ord(child.input["sku"])},
                         actor="test", wait=True)
        priced += 1
    execution = wait_for(execution.pk, {engine.FINISHED})
    assert execution.result == [ord(sku) for sku in skus]
    assert {c.parent_token.rsplit("/", 1)[1]: c.input["sku"]
            for c in children_of(execution.pk)} == {str(i): sku for i, sku in enumerate(skus)}


@pytest.mark.cluster
def test_canceling_the_parent_cancels_every_running_branch(cluster, save_machine):
    save_machine(LINE)
    save_machine(ORDER)
    execution = services.start("order-pricing", input={"lines": ["a", "b", "c"]},
                               actor="test").execution
    wait_until(lambda: len(children_of(execution.pk)) == 2, 30, "the branches never started")
    services.cancel(execution.pk, actor="test", reason="customer left")
    wait_until(lambda: {c.status for c in children_of(execution.pk)} == {engine.CANCELED},
               30, lambda: f"children: {[c.status for c in children_of(execution.pk)]}")
    assert len(children_of(execution.pk)) == 2  # the pending third never started


@pytest.mark.cluster
def test_fail_fast_cancels_the_other_branches_and_retry_runs_them_again(cluster, save_machine):
    save_machine(LINE)
    save_machine(ORDER)
    execution = services.start("order-pricing", input={"lines": ["a", "b", "c"]},
                               actor="test").execution
    first, second = wait_until(lambda: (lambda c: c if len(c) == 2 else None)(
        children_of(execution.pk)), 30, "the branches never started")
    services.trigger(first.pk, "broken", input={}, actor="test", wait=True)
    execution = wait_for(execution.pk, {engine.FAILED})
    assert execution.error["type"] == "invoke_failed"
    assert execution.error["cause"]["type"] == "branch_failed"
    wait_until(lambda: Execution.objects.get(pk=second.pk).status == engine.CANCELED, 30,
               "the other branch was not canceled")
    assert len(children_of(execution.pk)) == 2  # the third never started

    services.retry(execution.pk, actor="test")
    wait_until(lambda: len(children_of(execution.pk)) == 4, 30, "retry started no branches")
    for child in children_of(execution.pk)[2:]:
        services.trigger(child.pk, "priced", input={"price": 2}, actor="test", wait=True)
    wait_until(lambda: len(children_of(execution.pk)) == 5, 30, "the third never started")
    services.trigger(children_of(execution.pk)[4].pk, "priced", input={"price": 2},
                     actor="test", wait=True)
    assert wait_for(execution.pk, {engine.FINISHED}).result == [2, 2, 2]


@pytest.mark.cluster
def test_a_cluster_killed_while_starting_branches_starts_each_exactly_once(cluster,
                                                                          save_machine):
    save_machine(LINE)
    save_machine(ORDER.replace("max_concurrency: 2", "max_concurrency: 40"))
    skus = [f"s{i}" for i in range(40)]
    execution = services.start("order-pricing", input={"lines": skus}, actor="test").execution
    wait_until(lambda: children_of(execution.pk), 30, "no branch started")
    cluster.stop(signal.SIGKILL)
    started_before = len(children_of(execution.pk))
    cluster.start()  # the sweeper performs the child starts the dead workers left
    wait_until(lambda: len(children_of(execution.pk)) >= len(skus), 90,
               lambda: f"{len(children_of(execution.pk))} of {len(skus)} branches started "
                       f"({started_before} before the kill)")
    children = children_of(execution.pk)
    assert len(children) == len(skus)
    assert max(Counter(c.parent_token for c in children).values()) == 1
    for child in children:
        services.trigger(child.pk, "priced", input={"price": 1}, actor="test", wait=True)
    execution = wait_for(execution.pk, {engine.FINISHED})
    assert execution.result == [1] * len(skus)


SYNC_CHECK = CHECK.replace("id: kyc-check", "id: kyc-check\nexecution_mode: sync").replace(
    "'slow': True", "'slow': False")


def test_a_sync_parent_runs_its_sync_branches_inline(save_machine):
    save_machine(SYNC_CHECK)
    save_machine(KYC.replace("id: kyc-review", "id: kyc-review\nexecution_mode: sync")
                 .replace("'slow': True", "'slow': False"))
    outcome = services.start("kyc-review", input={"third": "address"}, actor="test",
                             wait=True)
    execution = outcome.execution
    assert execution.status == engine.FINISHED, execution.error
    assert set(execution.result) == {"identity", "sanctions", "address"}

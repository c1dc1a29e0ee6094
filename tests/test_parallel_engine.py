"""`parallel` and `map` invokes in the pure engine: branch children are started as
StartChild effects (within the concurrency cap), their results come back as
WorkSucceeded/WorkFailed events with the branch's token, and the join is decided in the
snapshot. The join decision itself is checked for every order of branch results with
hypothesis."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executions import engine as E
from executions import joins
from machines.language import check
from tests.helpers import (
    GROUP_NOW,
    begin,
    cancels,
    engine_env,
    json_round_trip,
    kyc,
    lines,
    report,
    starts,
)


def test_parallel_starts_every_branch_as_a_child_with_its_input_and_joins_all():
    machine = kyc()
    result, snapshot = begin(machine, {"who": "ada"})
    assert snapshot.status == E.INVOKING
    children = starts(result)
    assert [(c.machine_id, c.machine_version, c.input, c.is_async) for c in children] == [
        ("check", None, {"kind": "identity", "who": "ada"}, False),
        ("check", None, {"kind": "sanctions"}, False),
        ("check", 2, None, False)]
    tokens = [c.token for c in children]
    group = snapshot.work["token"]
    assert tokens == [f"{group}/identity", f"{group}/sanctions", f"{group}/address"]
    started = result.history[-1]
    assert started["kind"] == E.WORK_STARTED and started["detail"]["kind"] == "parallel"
    assert started["detail"]["started"] == ["identity", "sanctions", "address"]

    result, snapshot = report(machine, snapshot, tokens[1], output={"hit": False})
    assert snapshot.status == E.INVOKING
    assert result.history[-1]["detail"] | {} == {
        "token": group, "branch": "sanctions", "status": "finished", "finished": 1,
        "failed": 0, "total": 3}
    result, snapshot = report(machine, snapshot, tokens[0], output={"score": 9})
    result, snapshot = report(machine, snapshot, tokens[2], output=None)
    assert snapshot.status == E.FINISHED and snapshot.state == "approved"
    assert snapshot.result == {"identity": {"score": 9}, "sanctions": {"hit": False},
                               "address": None}
    assert [e["kind"] for e in result.history] == [
        E.BRANCH_ENDED, E.WORK_SUCCEEDED, E.TRANSITION_TAKEN, E.EXECUTION_FINISHED]


def test_fail_fast_cancels_the_running_branches_and_takes_the_error_branch():
    machine = kyc()
    result, snapshot = begin(machine, {"who": "ada"})
    tokens = [c.token for c in starts(result)]
    result, snapshot = report(machine, snapshot, tokens[0], output={"score": 9})
    result, snapshot = report(machine, snapshot, tokens[1], ok=False,
                              error={"type": "child_failed", "message": "list unavailable"})
    assert cancels(result) == [tokens[2]]
    assert snapshot.state == "review" and snapshot.status == E.FINISHED
    problem = snapshot.result
    assert problem["type"] == "branch_failed" and problem["branch"] == "sanctions"
    assert problem["message"] == "parallel branch sanctions failed: list unavailable"
    assert problem["outputs"] == {"identity": {"score": 9}}
    # A late result of the canceled branch is stale.
    late = E.transition(machine, snapshot, E.WorkSucceeded(tokens[2], 1), engine_env())
    assert late.rejected


def test_collect_waits_for_every_branch_and_reports_every_error():
    machine = kyc(on_failure="collect")
    result, snapshot = begin(machine, {"who": "ada"})
    tokens = [c.token for c in starts(result)]
    result, snapshot = report(machine, snapshot, tokens[0], ok=False,
                              error={"type": "child_failed", "message": "a"})
    assert snapshot.status == E.INVOKING and not cancels(result)
    result, snapshot = report(machine, snapshot, tokens[1], output=1)
    result, snapshot = report(machine, snapshot, tokens[2], ok=False,
                              error={"type": "child_canceled", "message": "b"})
    assert snapshot.state == "review"
    assert snapshot.result["type"] == "join_failed"
    assert snapshot.result["message"] == "1 of 3 branches finished; the join needs 3"
    assert set(snapshot.result["errors"]) == {"identity", "address"}
    assert snapshot.result["outputs"] == {"sanctions": 1}


def test_any_succeeds_with_the_first_result_and_cancels_the_rest():
    machine = kyc(join="any", on_failure="collect")
    result, snapshot = begin(machine, {"who": "ada"})
    tokens = [c.token for c in starts(result)]
    result, snapshot = report(machine, snapshot, tokens[2], ok=False)
    assert snapshot.status == E.INVOKING
    result, snapshot = report(machine, snapshot, tokens[1], output="clear")
    assert cancels(result) == [tokens[0]]
    assert snapshot.result == {"sanctions": "clear"}
    succeeded = next(e for e in result.history if e["kind"] == E.WORK_SUCCEEDED)
    assert succeeded["detail"]["canceled"] == ["identity"]


def test_collect_waits_for_the_last_branch_even_when_the_join_can_no_longer_be_met():
    machine = kyc(join={"at_least": 2}, on_failure="collect")
    result, snapshot = begin(machine, {"who": "ada"})
    tokens = [c.token for c in starts(result)]
    result, snapshot = report(machine, snapshot, tokens[0], ok=False)
    result, snapshot = report(machine, snapshot, tokens[1], ok=False)
    assert snapshot.status == E.INVOKING and not cancels(result)
    result, snapshot = report(machine, snapshot, tokens[2], output="ok")
    assert snapshot.state == "review" and snapshot.result["type"] == "join_failed"
    assert snapshot.result["message"] == "1 of 3 branches finished; the join needs 2"


def test_without_an_error_branch_a_failed_group_fails_the_execution_and_retry_restarts_it():
    machine = kyc(error_branch=False)
    result, snapshot = begin(machine, {"who": "ada"})
    tokens = [c.token for c in starts(result)]
    result, snapshot = report(machine, snapshot, tokens[0], ok=False)
    assert snapshot.status == E.FAILED and snapshot.error["type"] == "invoke_failed"
    assert snapshot.error["cause"]["type"] == "branch_failed"
    assert sorted(cancels(result)) == sorted(tokens[1:])
    result = E.transition(machine, snapshot, E.Retry(), engine_env())
    again = starts(result)
    assert len(again) == 3 and not set(c.token for c in again) & set(tokens)


def test_cancel_cancels_every_running_branch():
    machine = kyc()
    result, snapshot = begin(machine, {"who": "ada"})
    tokens = [c.token for c in starts(result)]
    result, snapshot = report(machine, snapshot, tokens[0], output=1)
    result = E.transition(machine, snapshot, E.Cancel("user:ann"), engine_env())
    assert result.snapshot.status == E.CANCELED and result.snapshot.work is None
    assert cancels(result) == sorted(tokens[1:])


def test_time_out_cancels_the_branches_and_counts_as_a_failure():
    machine = kyc(timeout=60)
    result, snapshot = begin(machine, {"who": "ada"})
    tokens = [c.token for c in starts(result)]
    timer = snapshot.timer
    assert timer["purpose"] == "timeout"
    result = E.transition(machine, snapshot, E.TimerFired(timer["token"]),
                          engine_env(GROUP_NOW + 60))
    assert cancels(result) == sorted(tokens)
    assert result.snapshot.state == "review"
    assert result.snapshot.result["type"] == "timeout"


def test_actions_received_while_the_branches_run_are_queued():
    machine = kyc()
    result, snapshot = begin(machine, {"who": "ada"})
    tokens = [c.token for c in starts(result)]
    queued = E.transition(machine, snapshot, E.Action("note", {}), engine_env())
    assert queued.snapshot.queued and queued.snapshot.status == E.INVOKING
    snapshot = json_round_trip(queued.snapshot)
    for token in tokens:
        result, snapshot = report(machine, snapshot, token, output=1)
    assert snapshot.status == E.FINISHED


def test_map_respects_the_concurrency_cap_and_collects_outputs_by_index():
    items = [{"sku": f"s{i}"} for i in range(5)]
    machine = lines(max_concurrency=2)
    result, snapshot = begin(machine, items)
    first = starts(result)
    assert [c.input for c in first] == [{"sku": "s0", "position": 0},
                                        {"sku": "s1", "position": 1}]
    running = {c.token: c for c in first}
    finished = 0
    while snapshot.status == E.INVOKING:
        token = sorted(running)[-1]  # the later one first: outputs stay in item order
        running.pop(token)
        position = int(token.rsplit("/", 1)[1])
        result, snapshot = report(machine, snapshot, token, output={"price": position * 10})
        finished += 1
        for child in starts(result):
            running[child.token] = child
        assert len(running) <= 2
        in_work = [b for b in (snapshot.work or {}).get("branches", [])
                   if b["status"] == joins.PENDING]
        assert all("input" in b for b in in_work)
    assert finished == 5
    assert snapshot.result == sum(i * 10 for i in range(5))
    assert result.history[-1]["kind"] == E.EXECUTION_FINISHED


def test_map_over_no_items_joins_at_once():
    machine = lines()
    result, snapshot = begin(machine, [])
    assert snapshot.status == E.FINISHED and snapshot.result == 0
    assert not starts(result)


def test_map_items_that_are_not_a_list_fail_the_execution_with_the_path():
    machine = lines(items="ctx['lines']")
    result, snapshot = begin(machine, {"sku": "x"})
    assert snapshot.status == E.FAILED
    assert snapshot.error["path"] == "states.pricing.actions[0].invoke.map.items"
    assert "must be a list, not dict" in snapshot.error["message"]
    assert not starts(result)


def test_map_refuses_more_items_than_it_may_start():
    machine = lines()
    result, snapshot = begin(machine, [{"sku": "x"}] * 1001)
    assert snapshot.status == E.FAILED and "at most 1000" in snapshot.error["message"]


def test_a_bad_input_expression_fails_before_any_child_starts():
    machine = lines(items="[{'sku': 1}, {}]")
    result, snapshot = begin(machine, [])
    assert snapshot.status == E.FAILED and not starts(result)
    assert snapshot.error["path"] == "states.pricing.actions[0].invoke.map.input"


def test_unknown_and_repeated_branch_results_are_rejected_without_change():
    machine = kyc()
    result, snapshot = begin(machine, {"who": "ada"})
    tokens = [c.token for c in starts(result)]
    assert E.transition(machine, snapshot, E.WorkSucceeded("nope/identity"), engine_env()).rejected
    result, after = report(machine, snapshot, tokens[0], output=1)
    again = E.transition(machine, after, E.WorkSucceeded(tokens[0], 2), engine_env())
    assert again.rejected and again.snapshot == after


def test_waits_for_names_the_running_branches_only():
    machine = lines(max_concurrency=1)
    result, snapshot = begin(machine, [{"sku": "a"}, {"sku": "b"}])
    group = snapshot.work["token"]
    assert E.waits_for(snapshot.work, f"{group}/0")
    assert not E.waits_for(snapshot.work, f"{group}/1")  # pending: not started yet
    assert not E.waits_for(snapshot.work, group)


def test_validation_reports_bad_groups_with_their_paths():
    document = {"id": "x", "start_at": "a", "states": {"a": {"actions": [{
        "id": "t", "invoke": {"map": {"items": 3, "machine": "m", "max_concurrency": 0},
                              "join": {"at_least": 0}, "on_failure": "later"}}]}}}
    problems = {p.path: p.message for p in check(document).errors}
    base = "states.a.actions[0].invoke"
    assert problems[f"{base}.map.items"] == "'items' must be an expression or a list, not a number"
    assert "from 1 to 1000" in problems[f"{base}.map.max_concurrency"]
    assert "from 1 to 1000" in problems[f"{base}.join.at_least"]
    assert problems[f"{base}.on_failure"] == (
        "'on_failure' must be 'fail_fast' or 'collect', not 'later'")
    document["states"]["a"]["actions"][0]["invoke"] = {
        "parallel": {"one": {"machine": "m"}}, "join": {"at_least": 2}, "async": True}
    problems = {p.path: p.message for p in check(document).errors}
    assert problems[f"{base}.join.at_least"] == "'at_least' is 2 but 'parallel' has only 1 branches"
    assert f"{base}.async" in problems


def test_saving_warns_about_branch_machines_that_do_not_exist():
    document = {"id": "x", "start_at": "a", "states": {"a": {"actions": [{
        "id": "t", "invoke": {"parallel": {"one": {"machine": "m1"}, "two": {"machine": "m2"}}}}]}}}
    checked = check(document, machine_exists=lambda name: name == "m1")
    assert [w.path for w in checked.warnings] == ["states.a.actions[0].invoke.parallel.two.machine"]


# The join decision, for any order of branch results --------------------------------------
joins_strategy = st.one_of(st.just("all"), st.just("any"), st.integers(1, 6))


@settings(max_examples=300, deadline=None)
@given(outcomes=st.lists(st.booleans(), min_size=1, max_size=6), join=joins_strategy,
       on_failure=st.sampled_from(("fail_fast", "collect")), data=st.data())
def test_the_join_is_decided_once_and_exactly_when_the_rule_says(outcomes, join, on_failure,
                                                                data):
    total = len(outcomes)
    if isinstance(join, int) and join > total:
        join = total
    order = data.draw(st.permutations(range(total)))
    statuses = [joins.RUNNING] * total
    need = joins.needed(join, total)
    decision = joins.WAIT
    for index in order:
        statuses[index] = joins.FINISHED if outcomes[index] else joins.FAILED
        decision = joins.decide(statuses, join, on_failure)
        finished = statuses.count(joins.FINISHED)
        failed = statuses.count(joins.FAILED)
        if decision != joins.WAIT:
            break
        # Waiting means: not enough finished, a branch still open, and no failure under
        # fail_fast.
        assert finished < need and joins.RUNNING in statuses
        assert not (on_failure == "fail_fast" and failed)
    if decision == joins.SUCCEEDED:
        assert statuses.count(joins.FINISHED) >= need
        assert on_failure == "collect" or joins.FAILED not in statuses
    else:
        assert decision == joins.GROUP_FAILED  # every branch has ended by now at the latest
        assert (on_failure == "fail_fast" and joins.FAILED in statuses) or (
            joins.RUNNING not in statuses and statuses.count(joins.FINISHED) < need)
    if on_failure == "collect":  # the outcome depends on the results, not on their order
        assert (decision == joins.SUCCEEDED) == (sum(outcomes) >= need)


@settings(max_examples=100, deadline=None)
@given(total=st.integers(0, 30), cap=st.one_of(st.none(), st.integers(1, 8)), data=st.data())
def test_never_more_than_the_cap_run_at_once(total, cap, data):
    statuses = [joins.PENDING] * total
    started = 0
    while True:
        for index in joins.to_start(statuses, cap):
            statuses[index] = joins.RUNNING
            started += 1
        running = [i for i, s in enumerate(statuses) if s == joins.RUNNING]
        assert cap is None or len(running) <= cap
        if not running:
            break
        statuses[data.draw(st.sampled_from(running))] = joins.FINISHED
    assert started == total and statuses.count(joins.FINISHED) == total


@settings(max_examples=60, deadline=None)
@given(outcomes=st.lists(st.booleans(), min_size=1, max_size=4), cap=st.integers(1, 3),
       on_failure=st.sampled_from(("fail_fast", "collect")), data=st.data())
def test_the_engine_ends_a_map_whatever_the_order_of_results(outcomes, cap, on_failure, data):
    machine = lines(max_concurrency=cap, on_failure=on_failure)
    result, snapshot = begin(machine, [{"sku": str(i)} for i in range(len(outcomes))])
    running = [c.token for c in starts(result)]
    while snapshot.status == E.INVOKING:
        assert 0 < len(running) <= cap
        token = data.draw(st.sampled_from(running))
        running.remove(token)
        ok = outcomes[int(token.rsplit("/", 1)[1])]
        result, snapshot = report(machine, snapshot, token, ok=ok, output={"price": 1})
        running += [c.token for c in starts(result)]
        for canceled in cancels(result):
            running.remove(canceled)
    assert not running
    if all(outcomes):
        assert snapshot.status == E.FINISHED and snapshot.result == len(outcomes)
    else:
        assert snapshot.status == E.FAILED
        assert snapshot.error["cause"]["type"] == (
            "branch_failed" if on_failure == "fail_fast" else "join_failed")


@pytest.mark.parametrize("join", ["all", "any", {"at_least": 2}])
def test_the_started_entry_says_how_the_group_joins(join):
    result, _ = begin(kyc(join=join), {"who": "ada"})
    detail = result.history[-1]["detail"]
    assert detail["join"] == (join["at_least"] if isinstance(join, dict) else join)
    assert detail["on_failure"] == "fail_fast" and detail["branches"] == [
        "identity", "sanctions", "address"]


def test_a_map_asked_for_more_than_it_has_fails_the_join_once_every_item_is_done():
    machine = lines(join={"at_least": 5})
    result, snapshot = begin(machine, [{"sku": "a"}, {"sku": "b"}])
    for child in starts(result):
        result, snapshot = report(machine, snapshot, child.token, output={"price": 1})
    assert snapshot.status == E.FAILED
    assert snapshot.error["cause"]["message"] == "2 of 2 branches finished; the join needs 5"

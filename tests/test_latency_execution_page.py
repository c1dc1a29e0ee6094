"""The execution page from aggregates (executions.selectors.step_moves, moves_before,
last_step_rows) instead of every step row: the same path, step numbers, step list and
sentences as from the whole history, on every timeline page, and every history row reachable
exactly once through "Earlier history" and "Later history"."""
import random
import re

import pytest

from executions import selectors, services, steps
from explorer import presenters, timeline
from machines import diagrams

MIX = """
id: mix
execution_mode: sync
start_at: a
context: {n: 0}
states:
  a:
    actions:
      - {id: inc, on: inc, assign: {n: "ctx['n'] + 1"}}
      - {id: go, on: go, state: b}
  b:
    actions:
      - {id: pick, on: pick, if: "ctx['n'] % 2 == 0", then: {state: a}, else: {state: c}}
      - {id: back, on: back, state: a}
  c:
    actions:
      - {id: back, on: back, state: a}
      - {id: inc, on: inc, assign: {n: "ctx['n'] + 1"}}
      - {id: end, on: end, state: z}
  z: {return: "ctx['n']"}
"""


@pytest.fixture
def mixed(save_machine):
    """An execution with self loops, a decision both ways, moves taken more than
    diagrams.MANY_STEPS times, and refused actions (rows that are not steps) between."""
    save_machine(MIX)
    execution = services.start("mix", actor="alice").execution
    rng = random.Random(16)
    for _ in range(160):
        action = rng.choice(["inc", "inc", "go", "pick", "back"])
        try:
            services.trigger(execution.pk, action, actor="bob")
        except services.NotAvailable:
            pass
    return selectors.execution(execution.pk)


def _all_step_rows(execution):
    return list(execution.history.filter(kind__in=steps.STEP_KINDS).order_by("seq")
                .values(*selectors.STEP_FIELDS))


def test_the_path_from_moves_is_drawn_like_the_path_from_every_step(mixed):
    machine = mixed.machine_version.parsed()
    every = steps.execution_path(machine, _all_step_rows(mixed), state=mixed.state,
                                 status=mixed.status)
    assert max(len(n) for n in every.edge_steps.values()) > diagrams.MANY_STEPS
    found_moves = selectors.moves(mixed, before=1)
    summed = presenters.execution_path(mixed, found_moves)
    assert summed.state_visits == every.state_visits
    assert summed.edge_steps.keys() == every.edge_steps.keys()
    assert diagrams.to_dot(machine, summed) == diagrams.to_dot(machine, every)
    moves = selectors.step_moves(mixed, diagrams.MANY_STEPS, found_moves)
    assert len(moves) < len(_all_step_rows(mixed)) / 2


@pytest.mark.parametrize("page_size", [7, 40])
def test_every_timeline_page_numbers_and_steps_like_the_whole_history(mixed, monkeypatch,
                                                                      page_size):
    monkeypatch.setattr(presenters, "HISTORY_PAGE", page_size)
    machine = mixed.machine_version.parsed()
    every_step = _all_step_rows(mixed)
    numbers = steps.numbered_steps(every_step)
    rows = list(mixed.history.order_by("seq").values())
    total = len(rows)
    for first in range(1, total + 1):
        shown = presenters.execution_page(mixed, asked_from=str(first), can_act=False)
        page_rows = rows[first - 1:first - 1 + page_size]
        state = machine.start_at  # where it was before the page, from every step row
        for row in every_step:
            if row["seq"] < first and row["kind"] == "transition_taken":
                state = row["to_state"] or row["from_state"]
        said = timeline.sentences(page_rows, machine, numbers, {}, state)
        assert [s.step for s in said] == [numbers.get(s.seq) for s in said]
        expected = steps.build_steps(
            every_step, page_rows, start_at=machine.start_at,
            context_before=selectors.context_before(mixed, first),
            final_status=mixed.status if first + page_size > total else None,
            captions={s.seq: s.text for s in said})
        assert shown["steps"] == expected, first
        flat = [i for item in shown["timeline"]
                for i in (item.items if isinstance(item, timeline.Group) else (item,))]
        assert [(s.seq, s.step, s.text) for s in flat] == [(s.seq, s.step, s.text)
                                                           for s in said]
    last_words = presenters.execution_page(mixed, asked_from=None, can_act=False)["path_words"]
    assert last_words[-1].startswith(f"Step {len(every_step)}: ")
    assert len(last_words) == 1 + min(len(every_step), steps.MAX_STEPS)


def _window(page: str) -> range:
    found = re.search(r"entries (\d+)–(\d+) of (\d+)", page)
    return range(int(found.group(1)), int(found.group(2)) + 1)


def _link(page: str, label: str) -> str | None:
    found = re.search(r'<a href="(\?[^"]+)">' + label, page)
    return found.group(1).replace("&amp;", "&") if found else None


@pytest.mark.parametrize("page_size", [7, 50])
def test_every_row_is_reached_exactly_once_both_ways(mixed, monkeypatch, client, make_user,
                                                     page_size):
    monkeypatch.setattr(presenters, "HISTORY_PAGE", page_size)
    client.force_login(make_user("victor", "viewer"))
    url = f"/executions/{mixed.pk}/"
    total = mixed.history.count()

    def walk(query, label):
        seen = []
        while query is not None:
            page = client.get(url + query).content.decode()
            seen += list(_window(page))
            query = _link(page, label)
        return seen

    assert sorted(walk("", "◀ Earlier history")) == list(range(1, total + 1))
    assert walk("?from=1", "Later history") == list(range(1, total + 1))
    # A page reached by "Earlier history" leads back with "Later history" to where it was.
    newest = client.get(url).content.decode()
    earlier = client.get(url + _link(newest, "◀ Earlier history")).content.decode()
    back = client.get(url + _link(earlier, "Later history")).content.decode()
    assert _window(back) == _window(newest)


@pytest.mark.parametrize("query", ["?to=0", "?to=-5", "?to=x", "?to=999999", "?from=999999",
                                   "?from=-3&to=2", "?to=1"])
def test_odd_windows_are_pages_not_errors(mixed, client, make_user, query):
    client.force_login(make_user("victor", "viewer"))
    response = client.get(f"/executions/{mixed.pk}/{query}")
    assert response.status_code == 200

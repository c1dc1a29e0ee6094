"""parallel and map as people see them: one node on the diagram, "N of M done" in the
timeline and the status line, on the execution page of a real execution."""
import html
import re

import pytest
from django.utils.html import strip_tags

from executions import engine, services
from explorer import timeline
from machines import diagrams
from machines.language import build, parse_text
from tests.helpers import begin, kyc, lines, report, starts

LINE = """
id: price-line
execution_mode: sync
start_at: waiting
states:
  waiting:
    actions:
      - {id: priced, on: priced, state: done, assign: {price: "input['price']"}}
  done: {return: "ctx['price']"}
"""

ORDER = """
id: order-pricing
title: Price an order
execution_mode: sync
start_at: pricing
states:
  pricing:
    actions:
      - id: price-each
        label: Price every line
        invoke:
          map: {items: "input['lines']", machine: price-line, input: "{'sku': item}",
                max_concurrency: 2}
          success: {state: priced, assign: {prices: output}}
  priced: {return: "ctx['prices']"}
"""


def said(rows, machine):
    return [html.unescape(strip_tags(str(s.html)) + " | " + strip_tags(str(s.why)))
            for s in timeline.sentences(rows, machine)]


def test_the_timeline_counts_branches_done_as_they_end():
    machine = kyc()
    result, snapshot = begin(machine, {"who": "ada"})
    rows = list(result.history)
    tokens = [c.token for c in starts(result)]
    for token, output in zip(tokens, ({"score": 9}, {"hit": False}, None), strict=True):
        result, snapshot = report(machine, snapshot, token, output=output)
        rows += result.history
    text = said(rows, machine)
    assert ("Run checks: started 3 branches together: identity, sanctions, address | "
            "all must finish; the first failure stops the rest") in text
    assert "identity finished: 1 of 3 done | returned {\"score\": 9}" in text
    assert "sanctions finished: 2 of 3 done | returned {\"hit\": false}" in text
    assert "address finished: 3 of 3 done | returned null" in text
    assert any(line.startswith("The join was met: 3 of 3 branches ended") for line in text)


def test_a_failed_branch_and_the_failed_join_read_as_such():
    machine = kyc()
    result, snapshot = begin(machine, {"who": "ada"})
    rows = list(result.history)
    tokens = [c.token for c in starts(result)]
    result, snapshot = report(machine, snapshot, tokens[1], ok=False,
                              error={"type": "child_failed", "message": "list down"})
    rows += result.history
    text = said(rows, machine)
    assert "sanctions failed: 0 of 3 done, 1 failed | list down" in text
    assert ("The join failed | parallel branch sanctions failed: list down; "
            "stopped identity, address") in text


def test_map_rows_say_the_machine_the_cap_and_what_started_next():
    machine = lines(max_concurrency=1)
    result, snapshot = begin(machine, [{"sku": "a"}, {"sku": "b"}])
    rows = list(result.history)
    result, snapshot = report(machine, snapshot, starts(result)[0].token, output={"price": 1})
    rows += result.history
    text = said(rows, machine)
    assert text[-2] == ("Price each: started price-line for each of 2 items, 1 at a time | "
                        "all must finish; the first failure stops the rest")
    assert text[-1] == "item 0 finished: 1 of 2 done | returned {\"price\": 1}; started item 1 next"


def test_the_status_line_counts_the_branches():
    machine = kyc()
    result, snapshot = begin(machine, {"who": "ada"})
    result, snapshot = report(machine, snapshot, starts(result)[0].token, output=1)
    line = strip_tags(str(timeline.status_line(
        machine, status=snapshot.status, state=snapshot.state, work=snapshot.work)))
    assert line == "Waiting in checking for run checks: 1 of 3 branches done, 2 running."


def test_the_diagram_draws_a_group_as_one_node_with_its_branches():
    source = diagrams.to_dot(kyc())
    group_nodes = [line for line in source.splitlines() if "run together" in line]
    assert len(group_nodes) == 1
    node = group_nodes[0]
    for key in ("identity", "sanctions", "address"):
        assert f"<B>{key}</B>" in node
    assert "all must finish · fail fast" in node
    mapped = diagrams.to_dot(lines(max_concurrency=3))
    assert re.search(r"for each of .*lines.*price-line.*3 at a time", mapped)
    assert "box3d" in mapped
    assert "identity, sanctions, address together (all must finish · fail fast)" in \
        diagrams.describe(kyc())


@pytest.mark.django_db
def test_the_execution_page_shows_the_branches_done(client, make_user, save_machine):
    save_machine(LINE)
    save_machine(ORDER)
    client.force_login(make_user("olga", "operator"))
    execution = services.start("order-pricing", input={"lines": ["a", "b", "c"]},
                               actor="test", wait=True).execution
    assert execution.status == engine.INVOKING
    first = execution.children.order_by("parent_token").first()
    services.trigger(first.pk, "priced", input={"price": 5}, actor="test", wait=True)
    page = client.get(f"/executions/{execution.pk}/")
    assert page.status_code == 200
    text = " ".join(html.unescape(strip_tags(page.content.decode())).split())
    assert "Waiting in pricing for Price every line: 1 of 3 items done, 2 running." in text
    assert re.search(rf"item 0 {str(first.pk)[:8]} finished: 1 of 3 done", text)
    assert "run together" not in text and "price-line" in text
    machine_page = client.get("/machines/order-pricing/")
    assert machine_page.status_code == 200 and b"for each of" in machine_page.content


def test_the_api_lists_a_groups_children(client, make_user, save_machine):
    save_machine(LINE)
    save_machine(ORDER)
    client.force_login(make_user("olga", "operator"))
    execution = services.start("order-pricing", input={"lines": ["a", "b", "c"]},
                               actor="test", wait=True).execution
    listed = client.get(f"/api/executions/{execution.pk}/").json()["children"]
    assert sorted(listed) == sorted(str(pk) for pk in
                                    execution.children.values_list("pk", flat=True))
    assert len(listed) == 2  # max_concurrency: 2 started, the third waits its turn


def test_parsing_the_examples_gives_groups():
    machine = build(parse_text(ORDER)[0])
    group = machine.states["pricing"].transitions[0].invoke.group
    assert (group.kind, group.machine_id, group.max_concurrency) == ("map", "price-line", 2)

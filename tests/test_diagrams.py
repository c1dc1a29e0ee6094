"""Diagrams: every state and edge carries a stable id/class, the path shows, input is escaped."""
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import graphviz
import pytest
from django.contrib.auth.models import User
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.utils.safestring import mark_safe

from machines import diagrams, language
from machines.definition import Expr, Machine, State, Transition, error_branch_name
from machines.diagrams import DiagramPath, edge_id, render_svg, state_id, step_mark, to_dot

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"


def build(text):
    return language.build(language.parse_text(text)[0])


ORDER = build("""
id: order
title: Order
start_at: create
context: "{'order': {'id': 'R1', 'line_items': []}, 'courier_url': input.get('courier_url')}"
states:
  create:
    actions:
      - {id: created, state: cart}
  cart:
    label: Shopping cart
    actions:
      - {id: add, on: add, assign: {order: "ctx['order']"}}
      - {id: remove, on: remove, context: "ctx"}
      - {id: place, on: place, state: submitted}
  submitted:
    actions:
      - {id: fraud-approve, on: fraud-approve, state: fraud-approved}
      - {id: fraud-reject, on: fraud-reject, state: fraud-rejected}
  fraud-approved:
    actions:
      - {id: release, state: released}
  fraud-rejected:
    actions:
      - {id: cancel, on: cancel, state: canceled}
  released:
    actions:
      - id: ship
        invoke:
          machine: shipment
          input: "{'order': ctx['order']['id'], 'courier_url': ctx['courier_url']}"
          success: {state: ship-finished, assign: {delivered: "output['delivered']"}}
          error: {state: canceled}
  ship-finished:
    actions:
      - {id: fulfilled, when: "ctx['delivered']", state: shipped}
      - {id: not-delivered, state: canceled}
  shipped: {return: true}
  canceled: {return: false}
""")

SHIPMENT = build("""
id: shipment
start_at: created
context: "{'order': input['order'], 'courier_url': input['courier_url'], 'attempt': 1}"
states:
  created:
    actions:
      - {id: fulfilled, state: outstanding}
  outstanding:
    actions:
      - {id: cancel, on: cancel, state: canceled}
      - id: fetch
        when: "ctx['attempt'] <= 3"
        invoke:
          call: "io('http.request.json', 'POST', ctx['courier_url'], json={'order': ctx['order']})"
          ok_if: "200 <= output['status'] < 300"
          retry: {max_attempts: 3}
          success: {state: fetched, assign: {n: "output['body']['n']"}}
          error: {state: failed}
      - {id: too-many-attempts, state: canceled}
  failed:
    actions:
      - {id: retry, wait: {seconds: 5}, state: outstanding, assign: {attempt: "ctx['attempt'] + 1"}}
  fetched:
    actions:
      - {id: deliver, when: "ctx['n'] < 3", state: delivered}
      - {id: retry, wait: {seconds: 5}, state: outstanding, assign: {attempt: "ctx['attempt'] + 1"}}
  canceled: {return: {delivered: false}}
  delivered: {return: {delivered: true}}
""")

DECIDER = build("""
id: decider
start_at: a
states:
  a:
    actions:
      - {id: check, on: check, if: "input['big']", then: {state: b}, else: {state: c}}
      - id: poke
        on: poke
        invoke:
          trigger: {execution: "ctx['other']", action: approve}
          success: {}
  b:
    actions:
      - {id: later, wait: {until: "ctx['deadline']"}, state: c}
  c: {return: null}
""")

EXAMPLES = sorted(Path(__file__).resolve().parent.parent.glob("examples/*.yaml"))


def groups(svg):
    """id -> class of every node and edge group in the SVG (which must be well-formed XML)."""
    root = ET.fromstring(svg)
    return {g.get("id"): g.get("class") for g in root.iter(f"{SVG}g")
            if g.get("class") in ("node", "edge") or " " in (g.get("class") or "")}


def expected_edges(m):
    """The edge ids a machine's diagram must hold, derived from the definition."""
    ids = {"edge-start"}
    for st in m.states.values():
        for tr in st.transitions:
            ids.add(edge_id(st.name, tr.id))
            if tr.invoke:
                ids |= {edge_id(st.name, tr.id, "success")} if tr.invoke.success else set()
                ids |= {edge_id(st.name, tr.id, error_branch_name(i))  # one per error type
                        for i in range(len(tr.invoke.errors))}
            if tr.decision:
                ids.add(edge_id(st.name, tr.id, "then"))
                if tr.decision.otherwise:
                    ids.add(edge_id(st.name, tr.id, "else"))
    return ids


@pytest.mark.parametrize("m", [ORDER, SHIPMENT, DECIDER], ids=lambda m: m.id)
def test_every_state_and_edge_has_a_stable_id_and_class(m):
    assert_ids_and_classes(m)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_renders_with_ids_and_classes(path):
    assert_ids_and_classes(build(path.read_text()))


def assert_ids_and_classes(m):
    found = groups(render_svg(m, machine_url=lambda mid: f"/machines/{mid}/"))
    for st in m.states.values():
        classes = found[state_id(st.name)].split()
        assert classes[:2] == ["node", "state"]
        assert ("terminal" in classes) == st.is_terminal
    edges = {i for i, c in found.items() if c.startswith("edge")}
    assert edges == expected_edges(m)


def test_edge_classes_say_what_moves_the_execution():
    found = groups(render_svg(ORDER))
    assert found["edge-cart-place"] == "edge action"
    assert found["edge-create-created"] == "edge auto"
    assert found["edge-released-ship"] == "edge invoke"
    assert found["edge-released-ship-success"] == "edge success"
    assert found["edge-released-ship-error"] == "edge error"
    shipment = groups(render_svg(SHIPMENT))
    assert shipment["edge-failed-retry"] == "edge timer"
    decider = groups(render_svg(DECIDER))
    assert decider["decision-a-check"] == "node decision"
    assert decider["edge-a-check-then"] == "edge then"
    assert decider["invoke-a-poke"] == "node invoke trigger"


def test_terminal_states_have_a_double_border():
    root = ET.fromstring(render_svg(ORDER))
    borders = {g.get("id"): len(g.findall(f".//{SVG}path")) for g in root.iter(f"{SVG}g")}
    assert borders["state-shipped"] == 2
    assert borders["state-cart"] == 1


def test_invoked_machine_is_a_linked_component_node():
    svg = render_svg(ORDER, machine_url=lambda mid: f"/machines/{mid}/?a=1&b=2")
    root = ET.fromstring(svg)
    node = next(g for g in root.iter(f"{SVG}g") if g.get("id") == "invoke-released-ship")
    assert node.get("class") == "node invoke machine"
    link = node.find(f".//{SVG}a")
    assert link.get(f"{XLINK}href") == "/machines/shipment/?a=1&b=2"
    assert "shipment" in "".join(node.itertext())
    assert len(node.findall(f".//{SVG}polyline")) == 2  # the component shape's two tabs


def test_guards_read_briefly_and_otherwise_follows_a_guard():
    dot = to_dot(ORDER)
    assert "<I>if delivered</I>" in dot
    assert "<I>otherwise</I>" in dot
    assert "rankdir=LR" in dot
    call = to_dot(SHIPMENT)
    assert "io http.request.json" in call and "retry ×3" in call
    assert f"{diagrams.CLOCK} 5 s" in call


ORDER_PATH = DiagramPath(
    state_visits={"create": 1, "cart": 1, "submitted": 1},
    edge_steps={"edge-create-created": (1,), "edge-cart-add": (2, 3),
                "edge-cart-remove": (4,), "edge-cart-place": (5,)},
    current="submitted", status="waiting",
)


def test_path_marks_visited_taken_current_and_fades_the_rest():
    svg = render_svg(ORDER, ORDER_PATH)
    found = groups(svg)
    assert found["state-cart"] == "node state visited"
    assert found["state-submitted"] == "node state visited current status-waiting"
    assert found["state-shipped"] == "node state terminal faded"
    assert found["edge-cart-add"] == "edge action taken"
    assert found["edge-start"] == "edge start taken"
    assert found["edge-submitted-fraud-approve"] == "edge action faded"
    root = ET.fromstring(svg)
    add = next(g for g in root.iter(f"{SVG}g") if g.get("id") == "edge-cart-add")
    badges = {el.get("data-step"): el.text for el in add.iter(f"{SVG}text")
              if el.get("class") == "step-badge"}
    assert badges == {"2": "2", "3": "3"}  # one marked text per number, for the step control


def test_many_steps_on_one_edge_are_summarised():
    path = DiagramPath({"cart": 1}, {"edge-cart-add": tuple(range(2, 26))}, "cart", "waiting")
    svg = render_svg(ORDER, path)
    assert "×24" in svg and 'data-step="25"' in svg and 'data-step="10"' not in svg


def test_step_marks_are_plain_digits_in_a_drawn_badge():
    """No circled-digit glyphs (missing from common fonts above 10): plain digits drawn
    inside a filled rounded cell, each badge marked for the step control."""
    assert [step_mark(n) for n in (1, 2, 20, 21, 130)] == ["1", "2", "20", "21", "130"]
    path = DiagramPath({"cart": 1}, {"edge-cart-add": (11, 12, 25)}, "cart", "waiting")
    svg = render_svg(ORDER, path)
    assert not any(0x2460 <= ord(ch) <= 0x24FF for ch in svg)
    for n in ("11", "12", "25"):
        assert re.search(rf'<path class="step-badge" data-step="{n}" fill="#1e3a8b"', svg)
        assert f'<text class="step-badge" style="fill:#fff" data-step="{n}"' in svg


def test_invoke_being_worked_on_is_current():
    path = DiagramPath({"create": 1, "released": 1},
                       {"edge-released-ship": (1,)}, "released", "invoking")
    found = groups(render_svg(ORDER, path))
    assert found["invoke-released-ship"] == "node invoke machine visited current status-invoking"


def test_definition_text_is_escaped():
    """Built directly: the diagram must be safe whatever names the language lets through."""
    evil = "<script>alert(1)</script>"
    go = Transition(id="x</text>", path="p", on=("go<img src=x>",), target="z",
                    when=Expr(path="w", source="ctx['<i>'] and '\\N'"))
    m = Machine(id="evil", start_at='a"&<b>', states={
        'a"&<b>': State(name='a"&<b>', label=evil, transitions=(go,)),
        "z": State(name="z", label="\\N \\G <b>", description=evil, is_terminal=True,
                   returns=Expr(path="r", literal=evil)),
    })
    svg = render_svg(m)
    root = ET.fromstring(svg)  # still well-formed XML
    assert "<script" not in svg and "<img" not in svg and "<b>" not in svg
    text = " ".join(root.itertext())
    assert evil in text and "\\N \\G <b>" in text and "▶ go<img src=x>" in text
    assert state_id('a"&<b>') in groups(svg)


def test_svg_is_ready_to_inline():
    svg = render_svg(ORDER)
    assert svg.startswith("<svg ") and "<!--" not in svg and "<?xml" not in svg
    assert 'width="100%"' in svg and "viewBox=" in svg and "&#45;" not in svg


def test_plain_diagram_is_cached_without_calling_dot(monkeypatch):
    first = render_svg(SHIPMENT)
    monkeypatch.setenv("PATH", "")  # dot cannot be found any more
    assert render_svg(SHIPMENT) is first
    with pytest.raises(graphviz.ExecutableNotFound):
        render_svg(SHIPMENT, DiagramPath({"created": 1}, {}, "created", "running"))


def test_a_changed_definition_under_the_same_version_is_rendered_again():
    renamed = build("{id: shipment, start_at: created, states: {created: {label: Renamed, "
                    "return: null}}}")
    assert "Renamed" in render_svg(renamed) and "Renamed" not in render_svg(SHIPMENT)


def test_text_alternative_reads_the_machine():
    text = diagrams.describe(ORDER, ORDER_PATH)
    assert text.startswith("Order: 9 states, starting at create.")
    assert "Shopping cart: on add goes to cart" in text
    assert "automatically invokes shipment, then ship-finished or canceled" in text
    assert text.endswith("Now in submitted, waiting.")


def test_diagram_partial_shows_legend_steps_and_a_text_alternative():
    steps = [{"seq": 1, "n": 0, "caption": "</script><script>alert(1)</script>",
              "states": ["create"], "edges": ["edge-start"], "current": "create",
              "status": "running", "context": {}, "changes": {}}]
    html = render_to_string("explorer/_diagram.html", {
        "svg": mark_safe(render_svg(ORDER, ORDER_PATH)), "steps_json": steps,
        "status": "waiting", "diagram_text": diagrams.describe(ORDER, ORDER_PATH),
    })
    assert 'role="img"' in html and 'aria-describedby="diagram-text"' in html
    assert 'id="state-submitted"' in html and "now (waiting)" in html
    assert 'id="steps-data"' in html and "data-steps" in html
    assert "</script><script>" not in html  # json_script escapes the step captions


def test_diagram_partial_without_a_path_has_no_step_control():
    html = render_to_string("explorer/_diagram.html", {"svg": mark_safe(render_svg(ORDER))})
    assert "data-steps" not in html and "now (" not in html and "automatic" in html


def test_base_layout_has_navigation_and_a_post_logout():
    request = RequestFactory().get("/machines/")
    request.user = User(username="alice", is_staff=True)
    html = render_to_string("base.html", request=request)
    assert 'href="#main"' in html and '<main id="main"' in html
    assert '<form method="post" action="/logout/">' in html and "csrfmiddlewaretoken" in html
    assert 'href="/machines/" aria-current="page"' in html and 'href="/admin/"' in html
    assert "dm.css" in html and 'dm.js" defer' in html


REVIEW_HEAT = diagrams.Heat(in_state={"cart": 1234}, on_edge={"edge-cart-add": 9,
                                                                "edge-cart-place": 1},
                            median_stay={"cart": 420.0})


def test_heat_is_drawn_by_dot_from_attributes():
    svg = render_svg(ORDER, heat=REVIEW_HEAT)
    classes = groups(svg)
    assert classes["state-cart"] == "node state heat-has"
    assert classes["state-create"] == "node state"
    assert classes["edge-cart-add"] == "edge action heat-used"
    assert classes["edge-cart-remove"] == "edge action heat-unused"
    root = ET.fromstring(svg)
    cart = next(g for g in root.iter(f"{SVG}g") if g.get("id") == "state-cart")
    text = " ".join(cart.itertext())
    assert "1,234" in text and "median 7 min" in text
    assert "1,234 executions here now" in cart.find(f"{SVG}title").text
    add = next(g for g in root.iter(f"{SVG}g") if g.get("id") == "edge-cart-add")
    assert "×9" in " ".join(add.itertext())
    widths = {g.get("id"): g.find(f".//{SVG}path").get("stroke-width")
              for g in root.iter(f"{SVG}g") if g.get("id") in ("edge-cart-add",
                                                               "edge-cart-place")}
    assert float(widths["edge-cart-add"]) > float(widths["edge-cart-place"])


def test_marks_add_classes_and_colours_by_diagram_id():
    marks = {state_id("shipped"): ["diff-added"], edge_id("cart", "place"): ["diff-changed"]}
    classes = groups(render_svg(ORDER, marks=marks))
    assert classes["state-shipped"] == "node state terminal diff-added"
    assert classes["edge-cart-place"] == "edge action diff-changed"
    assert classes["state-cart"] == "node state"
    shipped = next(g for g in ET.fromstring(render_svg(ORDER, marks=marks)).iter(f"{SVG}g")
                   if g.get("id") == "state-shipped")
    assert shipped.find(f".//{SVG}path").get("stroke") == diagrams.GREEN.lower()


def test_heat_and_marks_are_part_of_the_cache_key(monkeypatch):
    plain = render_svg(SHIPMENT)
    heated = render_svg(SHIPMENT, heat=diagrams.Heat(in_state={"created": 2}))
    marked = render_svg(SHIPMENT, marks={state_id("created"): ["diff-changed"]})
    assert len({plain, heated, marked}) == 3
    monkeypatch.setenv("PATH", "")  # dot cannot be found any more: all three are cached
    assert render_svg(SHIPMENT, heat=diagrams.Heat(in_state={"created": 2})) is heated
    assert render_svg(SHIPMENT, marks={state_id("created"): ["diff-changed"]}) is marked
    with pytest.raises(graphviz.ExecutableNotFound):
        render_svg(SHIPMENT, heat=diagrams.Heat(in_state={"created": 3}))


def test_wait_times_are_exact_and_time_passed_is_rounded():
    from machines.words import duration

    assert duration(90, exact=True) == "90 s" and duration(90) == "2 min"
    assert duration(0.25) == "250 ms" and duration(7200) == "2 h"
    assert duration(None) == ""


def test_one_io_finder_and_one_lru_serve_diagrams_timeline_and_definitions():
    from machines.lru import LRU

    assert language.io_operation("io('http.request.json', 'GET', u)") == "http.request.json"
    assert language.io_operation('x = io( "payments.charge", ctx)') == "payments.charge"
    assert language.io_operation("ctx['n'] + 1") is None
    cache, made = LRU(2), []
    for key in ("a", "b", "a", "c", "b"):
        cache.get(key, lambda key=key: made.append(key) or key.upper())
    assert made == ["a", "b", "c", "b"]  # "b" was the least recently used when "c" came
    assert len(cache) == 2 and "a" not in cache

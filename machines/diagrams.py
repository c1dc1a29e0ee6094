"""Machine diagrams: DOT built with the graphviz package, rendered to inline SVG by `dot`.

Every node and edge gets a stable ``id`` and ``class`` so pages can re-highlight the
path with CSS and JS without rendering again (spawning ``dot`` costs ~25 ms, so drawings
are cached by what they show). Everything taken from the definition is user
input: labels go into HTML-like labels escaped, tooltips and ids through
``graphviz.escape``, URLs XML-escaped (dot 2.43 does not escape ``URL``).

What a page marks on a diagram (an execution's path, the heatmap of a version, what
changed between two versions) is drawn by `dot` from DOT attributes set here (classes,
colours, widths, labels, tooltips): the SVG is never edited afterwards to add marks.
`dot` runs bounded (size cap checked first, wall-clock timeout, memory limit; see Limits):
what it cannot draw raises DiagramUnavailable, which pages show as "too large to draw" with
the text description. Visual language, classes, JSON shapes, bounds: docs/diagrams.md.
"""
from __future__ import annotations

import html
import os
import re
import resource
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from hashlib import sha256

import graphviz

from machines.definition import (
    Branch,
    Expr,
    Group,
    Machine,
    Schedule,
    State,
    Transition,
    error_branch_name,
)
from machines.language import io_operation
from machines.lru import LRU
from machines.schedules import explain
from machines.words import duration

FONT = "Helvetica,Arial,sans-serif"

INK, MUTED, FAINT = "#0F172A", "#64748B", "#94A3B8"
LINE, LINE_STRONG = "#E2E8F0", "#CBD5E1"
BLUE, AMBER, GREEN, RED, VIOLET = "#2563EB", "#D97706", "#16A34A", "#DC2626", "#7C3AED"
PATH_BLUE, PATH_TEXT, VISITED_FILL, VISITED_LINE = "#1E40AF", "#1E3A8A", "#DBEAFE", "#60A5FA"

# Edge kind -> (colour, colour when faded, text colour, text colour when faded, dashed)
EDGE_LOOKS = {
    "start": (INK, INK, INK, INK, False),
    "action": (BLUE, "#BFDBFE", "#1D4ED8", "#93C5FD", False),
    "auto": (MUTED, LINE_STRONG, "#475569", FAINT, False),
    "timer": (AMBER, "#FCD34D", "#B45309", "#F59E0B", True),
    "invoke": (VIOLET, "#DDD6FE", "#6D28D9", "#A78BFA", True),
    "success": (GREEN, "#BBF7D0", "#15803D", "#86EFAC", False),
    "error": (RED, "#FECACA", "#B91C1C", "#FCA5A5", False),
    "then": (MUTED, LINE_STRONG, "#475569", FAINT, False),
    "else": (MUTED, LINE_STRONG, "#475569", FAINT, False),
}

# Status of the current state -> (outline, fill)
STATUS_LOOKS = {
    "running": (BLUE, VISITED_FILL),
    "invoking": (BLUE, VISITED_FILL),
    "waiting": (AMBER, "#FEF3C7"),
    "sleeping": (AMBER, "#FEF3C7"),
    "finished": (GREEN, "#DCFCE7"),
    "failed": (RED, "#FEE2E2"),
    "canceled": (MUTED, "#F1F5F9"),
}

CLOCK = "◷"  # U+23F1 (stopwatch) is missing from common fonts (DejaVu, Liberation)
MANY_STEPS = 5  # more numbers than this on one edge: "1 2 … 9 ×9"
# The fill of a step badge: a colour used for nothing else, so _inline can find the badges
# in dot's SVG and mark them (class "step-badge", data-step) for the step control.
STEP_BADGE = "#1e3a8b"
MIN_SCALE = 0.7  # a page never shows the diagram smaller than this unless zoomed out


def state_id(name: str) -> str:
    return f"state-{name}"


def edge_id(state: str, transition_id: str, branch: str | None = None) -> str:
    """Id of a transition's edge; `branch` (success/error/then/else) for the edges after a
    helper node (invoke, decision)."""
    base = f"edge-{state}-{transition_id}"
    return f"{base}-{branch}" if branch else base


def helper_id(kind: str, state: str, transition_id: str) -> str:
    """Id of an invoke or decision node: same suffix as the edge leading to it."""
    return f"{kind}-{state}-{transition_id}"


def step_mark(step: int) -> str:
    """A step's number as plain digits ("7", "21"): drawn inside a badge (a filled rounded
    cell), never as a circled-digit glyph, which the fonts setup installs lack above ⑩."""
    return str(step)


@dataclass(frozen=True)
class DiagramPath:
    """An execution's path, computed by the runtime from history."""

    state_visits: dict[str, int] = field(default_factory=dict)  # state -> times entered
    edge_steps: dict[str, tuple[int, ...]] = field(default_factory=dict)  # edge id -> steps
    current: str | None = None
    status: str = "running"
    # edge id -> times taken, for an edge whose edge_steps hold only its first and last steps
    edge_times: dict[str, int] = field(default_factory=dict)

    def key(self) -> tuple:
        """Everything the drawing shows of the path: part of the cache key."""
        return (tuple(sorted(self.state_visits.items())),
                tuple(sorted((eid, tuple(steps)) for eid, steps in self.edge_steps.items())),
                tuple(sorted(self.edge_times.items())),
                self.current, self.status)


@dataclass(frozen=True)
class Heat:
    """Where a version's executions are now, which edges they took, how long they stay."""

    in_state: dict[str, int] = field(default_factory=dict)  # state -> executions there now
    failed_in_state: dict[str, int] = field(default_factory=dict)  # of them, failed there
    on_edge: dict[str, int] = field(default_factory=dict)  # edge id -> times taken
    median_stay: dict[str, float] = field(default_factory=dict)  # state -> seconds
    # What the count on a state means: a migration's impact shows where executions would
    # go, and then has no edges to weigh.
    in_state_words: str = "executions here now"
    weighs_edges: bool = True

    @property
    def busiest_edge(self) -> int:
        return max(self.on_edge.values(), default=0)

    def key(self) -> tuple:
        """What the drawing shows of it (stays in words): part of the cache key."""
        return (tuple(sorted(self.in_state.items())), tuple(sorted(self.on_edge.items())),
                tuple(sorted((name, duration(s)) for name, s in self.median_stay.items())),
                tuple(sorted(self.failed_in_state.items())), self.in_state_words,
                self.weighs_edges)


# Marks: extra classes by diagram id (the version diff), each with its look in the SVG.
# Mark class -> (outline, fill of a node)
MARK_LOOKS = {
    "diff-added": (GREEN, "#DCFCE7"),
    "diff-changed": (AMBER, "#FEF3C7"),
}
Marks = Mapping[str, list[str] | tuple[str, ...]]


# Text helpers -----------------------------------------------------------------------------

_CTX_KEY = re.compile(
    r"""\bctx(?:\[(['"])([^'"\]]+)\1\]|\.get\((['"])([^'"]+)\3(?:\s*,[^()]*)?\))""")
_SUBSCRIPT = re.compile(r"""(\w)\[(['"])(\w+)\2\]""")


def short_code(expr: Expr, limit: int = 30) -> str:
    """A guard as a person reads it: ``ctx['order']['id'] == 1`` -> ``order.id == 1``."""
    text = expr.brief(400)
    text = _CTX_KEY.sub(lambda m: m.group(2) or m.group(4), text)
    while _SUBSCRIPT.search(text):
        text = _SUBSCRIPT.sub(r"\1.\3", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _delay(transition: Transition) -> str:
    wait = transition.wait
    if wait.written is not None:  # a duration text: drawn as the author wrote it
        return f"{CLOCK} {wait.written}"
    if wait.until is not None:
        return f"{CLOCK} until " + short_code(wait.until, 24)
    if not wait.seconds.is_code and isinstance(wait.seconds.literal, (int, float)):
        return f"{CLOCK} " + duration(wait.seconds.literal, exact=True)
    return f"{CLOCK} " + short_code(wait.seconds, 24)


def _after(state: State, transition: Transition) -> str:
    """A state timer as written, and when it restarts: one that stays fires again each time
    ("every P1D"); one that leaves counts from entering the state ("P3D after entering")."""
    after = transition.after
    written = after.written
    if not any(c.isalpha() for c in written):  # a number of seconds
        written = duration(after.seconds, exact=True)
    if (transition.target or state.name) == state.name:
        return f"{CLOCK} every {written}"
    return f"{CLOCK} {written} after entering"


def _esc(text: str) -> str:
    """Text for an HTML-like label: XML-escaped, and backslashes doubled because dot
    still expands escString sequences (\\N = node name, \\G = graph name) inside them."""
    return html.escape(text, quote=False).replace("\\", "\\\\")


def _html(*lines: str) -> str:
    """An HTML-like label from already-escaped lines."""
    return "<" + "<BR/>".join(line for line in lines if line) + ">"


def _italic(text: str) -> str:
    return f"<I>{_esc(text)}</I>"


def _small(text: str, colour: str | None = None) -> str:
    colour_attr = f' COLOR="{colour}"' if colour else ""
    return f'<FONT POINT-SIZE="8.5"{colour_attr}>{_esc(text)}</FONT>'


def _badge(step: int) -> str:
    """A fixed-size cell (as wide as its digits), so a long label above does not stretch it."""
    width = max(14, 5 + 6 * len(step_mark(step)))
    return (f'<TD BGCOLOR="{STEP_BADGE}" STYLE="rounded" CELLPADDING="1" FIXEDSIZE="TRUE" '
            f'WIDTH="{width}" HEIGHT="13"><FONT COLOR="white" POINT-SIZE="8.5"><B>'
            f'{step_mark(step)}</B></FONT></TD>')


def _step_marks(steps: tuple[int, ...], times: int | None = None) -> str:
    """A row of badges, one cell per number (plain digits in a filled rounded cell), so
    dm.js can hide the numbers after the selected step; many: "1 2 … 9 ×9". `times`: how
    often the edge was taken when `steps` holds only its first and last numbers."""
    times = times or len(steps)
    if times > MANY_STEPS:
        more = f'<TD><FONT COLOR="{PATH_TEXT}"><B>…</B></FONT></TD>'
        cells = [_badge(steps[0]), _badge(steps[1]), more, _badge(steps[-1]),
                 f'<TD><FONT COLOR="{PATH_TEXT}"><B>×{times}</B></FONT></TD>']
    else:
        cells = [_badge(s) for s in steps]
    # Empty cells either side take the width the label above leaves, not the badges.
    return ('<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="0"><TR><TD></TD>'
            + "".join(cells) + "<TD></TD></TR></TABLE>")


def _with_badges(text: list[str], steps: tuple[int, ...], times: int | None = None) -> str:
    """An edge label (escaped lines) with the step badges under it, as one HTML-like label
    (a table: a label cannot mix text and a table)."""
    rows = "".join(f"<TR><TD>{line}</TD></TR>" for line in text if line)
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0">' + rows
            + f"<TR><TD>{_step_marks(steps, times)}</TD></TR></TABLE>>")


def _tooltip(*lines: str | None) -> str:
    return graphviz.escape("\n".join(line for line in lines if line))


# Building the graph -----------------------------------------------------------------------


@dataclass
class _Build:
    machine: Machine
    path: DiagramPath | None
    machine_url: Callable[[str], str] | None
    graph: graphviz.Digraph
    names: dict[str, str]  # state name -> DOT node name (states may hold any character)
    heat: Heat | None = None
    marks: Marks = field(default_factory=dict)
    helpers: int = 0

    def steps(self, eid: str) -> tuple[int, ...]:
        return self.path.edge_steps.get(eid, ()) if self.path else ()

    def marked(self, did: str, classes: list[str], attrs: dict, *, edge: bool) -> dict:
        """Add the marks of diagram id `did` to its classes, and their look to `attrs`."""
        for mark in self.marks.get(did, ()):
            classes.append(mark)
            if mark in MARK_LOOKS:
                outline, fill = MARK_LOOKS[mark]
                attrs = attrs | {"color": outline, "penwidth": "2.6"}
                if not edge:
                    attrs["fillcolor"] = fill
        return attrs


# The heatmap ------------------------------------------------------------------------------
HEAT_TEXT = "#1E3A8A"  # "×N" beside a used edge
HEAT_BADGE = "#B45309"  # the count of executions in a state
RED_BADGE = "#B91C1C"  # how many of them failed there


def _heat_badge(count: int, failed: int = 0) -> str:
    """An external label: the number of executions in the state, white on amber, and
    beside it how many of them failed there, white on red."""
    cells = [(f"{count - failed:,}", HEAT_BADGE)] if count > failed else []
    if failed:
        cells.append((f"{failed:,} failed", RED_BADGE))
    if len(cells) == 1:
        (text, color), = cells
        return ('<<TABLE BORDER="0" CELLBORDER="0" CELLPADDING="2" CELLSPACING="0" '
                f'BGCOLOR="{color}" STYLE="rounded"><TR><TD><FONT COLOR="white" '
                f'POINT-SIZE="10"><B>{text}</B></FONT></TD></TR></TABLE>>')
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLPADDING="2" CELLSPACING="1"><TR>'
            + "".join(f'<TD BGCOLOR="{color}"><FONT COLOR="white" POINT-SIZE="10"><B>{text}'
                      '</B></FONT></TD>' for text, color in cells) + '</TR></TABLE>>')


def _heat_edge(b: _Build, eid: str, classes: list[str], attrs: dict,
               text: list[str]) -> tuple[dict, list[str]]:
    """A used edge as thick as it is used with "×N" after its label; unused ones fade."""
    n = b.heat.on_edge.get(eid, 0) if b.heat else 0
    busiest = b.heat.busiest_edge if b.heat else 0
    if not n or not busiest:
        classes.append("heat-unused")
        return attrs, text
    classes.append("heat-used")
    width = 1.2 + 5 * (n / busiest) ** 0.5
    count = f'<FONT COLOR="{HEAT_TEXT}" POINT-SIZE="9.5"><B>×{n:,}</B></FONT>'
    text = [*text[:-1], f"{text[-1]} {count}"] if text else [count]
    return attrs | {"penwidth": f"{width:.1f}", "color": PATH_BLUE}, text


def _new_graph(machine: Machine) -> graphviz.Digraph:
    return graphviz.Digraph(
        name="machine",
        graph_attr={
            "rankdir": "LR", "bgcolor": "transparent", "pad": "0.3", "nodesep": "0.32",
            "ranksep": "0.42", "fontname": FONT, "outputorder": "edgesfirst",
            "tooltip": _tooltip(machine.display, machine.description),
        },
        node_attr={
            "fontname": FONT, "fontsize": "12", "shape": "box", "style": "rounded,filled",
            "fillcolor": "white", "color": FAINT, "fontcolor": INK, "penwidth": "1.2",
            "height": "0.4", "margin": "0.16,0.07",
        },
        edge_attr={
            "fontname": FONT, "fontsize": "10", "arrowsize": "0.65", "penwidth": "1.2",
            "arrowhead": "vee",
        },
    )


def _state_node(b: _Build, state: State) -> None:
    path = b.path
    classes = ["state"] + (["terminal"] if state.is_terminal else [])
    attrs = {"peripheries": "2"} if state.is_terminal else {}
    label = "<BR/>".join(_esc(line) for line in textwrap.wrap(state.display, 24) or [""])
    visits = path.state_visits.get(state.name, 0) if path else 0
    if path and path.current == state.name:
        outline, fill = STATUS_LOOKS.get(path.status, (BLUE, VISITED_FILL))
        classes += ["visited", "current", f"status-{path.status}"]
        style = "rounded,filled,dashed" if path.status == "sleeping" else "rounded,filled"
        attrs |= {"color": outline, "fillcolor": fill, "penwidth": "2.4", "style": style}
        label = f"<B>{label}</B>"
    elif visits:
        classes.append("visited")
        attrs |= {"color": VISITED_LINE, "fillcolor": VISITED_FILL}
    elif path:
        classes.append("faded")
        attrs |= {"color": LINE_STRONG, "fontcolor": FAINT}
    returns = f"returns {state.returns.brief(80)}" if state.is_terminal and state.returns else None
    here = b.heat.in_state.get(state.name, 0) if b.heat else 0
    failed = b.heat.failed_in_state.get(state.name, 0) if b.heat else 0
    lines = [label]
    if here:
        classes.append("heat-has")
        attrs["xlabel"] = _heat_badge(here, failed)
    if b.heat and state.name in b.heat.median_stay:
        lines.append(_small(f"median {duration(b.heat.median_stay[state.name])}", MUTED))
    attrs = b.marked(state_id(state.name), classes, attrs, edge=False)
    b.graph.node(
        b.names[state.name], label=_html(*lines), id=graphviz.escape(state_id(state.name)),
        tooltip=_tooltip(
            f"{state.display} ({state.name})" if state.label else state.name,
            state.description, returns, f"entered {visits}×" if visits > 1 else None,
            f"{here:,} {b.heat.in_state_words}" if here and b.heat else None,
            f"{failed:,} of them failed here" if failed else None,
        ),
        **{"class": " ".join(classes)}, **attrs,
    )


def _edge(b: _Build, tail: str, head: str, eid: str, kind: str, text: list[str],
          tooltip: str, extra_class: str = "") -> None:
    """An edge of `kind` (a key of EDGE_LOOKS); `text` holds escaped label lines."""
    colour, faded, fontcolour, faded_font, dashed = EDGE_LOOKS[kind]
    steps = b.steps(eid)
    classes = [kind] + ([extra_class] if extra_class else [])
    attrs = {"color": colour, "fontcolor": fontcolour}
    if steps or (b.path and kind == "start"):
        classes.append("taken")
        attrs = {"color": PATH_BLUE, "fontcolor": PATH_TEXT, "penwidth": "2.4",
                 "arrowsize": "0.75"}
    elif b.path:
        classes.append("faded")
        attrs = {"color": faded, "fontcolor": faded_font}
    if dashed:
        attrs["style"] = "dashed"
    if b.heat and b.heat.weighs_edges:
        attrs, text = _heat_edge(b, eid, classes, attrs, text)
    attrs = b.marked(eid, classes, attrs, edge=True)
    times = b.path.edge_times.get(eid) if b.path else None
    label = ({"label": _with_badges(text, steps, times)} if steps
             else {"label": _html(*text)} if text else {})
    b.graph.edge(tail, head, id=graphviz.escape(eid), tooltip=tooltip,
                 **{"class": " ".join(classes)}, **label, **attrs)


def _helper_node(b: _Build, nid: str, kind_class: str, label: str, tooltip: str,
                 attrs: dict, in_edge: str) -> str:
    """An invoke or decision node, visited when the edge leading to it was taken."""
    b.helpers += 1
    name = f"h{b.helpers}"
    classes = [kind_class]
    steps = b.steps(in_edge)
    if steps:
        classes.append("visited")
        attrs = attrs | {"fillcolor": VISITED_FILL}
        last_step = max(s for steps_ in b.path.edge_steps.values() for s in steps_)
        if steps[-1] == last_step and b.path.status in ("invoking", "running"):
            classes += ["current", f"status-{b.path.status}"]
            attrs |= {"penwidth": "2.4", "color": BLUE}
    elif b.path:
        classes.append("faded")
        attrs = attrs | {"color": LINE_STRONG, "fontcolor": FAINT, "fillcolor": "white"}
    attrs = b.marked(nid, classes, attrs, edge=False)
    b.graph.node(name, label=label, id=graphviz.escape(nid), tooltip=tooltip,
                 **{"class": " ".join(classes)}, **attrs)
    return name


def _first_lines(t: Transition, after_guard: bool, default: str | None) -> list[str]:
    """Label lines naming a transition: "▶ action" or its label/guard/"otherwise"."""
    lines = []
    if t.on:
        lines.append(_esc("▶ " + (t.label or " / ".join(t.on))))
    elif t.label:
        lines.append(_esc(t.label))
    elif not t.when and default:
        lines.append(_italic("otherwise") if after_guard else _esc(default))
    if t.when:
        lines.append(_italic("if " + short_code(t.when)))
    return lines


def _transition_tooltip(state: State, t: Transition, target: str | None = None) -> str:
    return _tooltip(
        f"{state.name} → {target}" if target else state.name,
        f"transition '{t.id}'" + (f" ({t.label})" if t.label else ""),
        f"on {', '.join(t.on)}" if t.on else "automatic",
        f"when {t.when.brief(200)}" if t.when else None,
    )


def _branch(b: _Build, helper: str, state: State, t: Transition, which: str,
            branch: Branch | None, text: str, tip: str) -> None:
    if branch is None:
        return
    target = branch.state or state.name
    kind = which.split("-")[0]  # error-1, error-2: error branches by type
    _edge(b, helper, b.names[target], edge_id(state.name, t.id, which), kind, [text],
          _tooltip(f"{tip} → {target}", f"transition '{t.id}' of {state.name}"))


def _invoke(b: _Build, state: State, t: Transition, lines: list[str]) -> None:
    inv = t.invoke
    eid = edge_id(state.name, t.id)
    if inv.group is not None:
        label, attrs, tip = _group_look(inv.group)
    elif inv.kind == "machine":
        version = f" v{inv.machine_version}" if inv.machine_version else ""
        label = _html(f"<B>{_esc(inv.machine_id)}</B>",
                      _small(f"machine{version}" + (" · async" if inv.is_async else "")))
        attrs = {"shape": "component", "style": "filled", "fillcolor": "#F5F3FF",
                 "color": VIOLET, "fontcolor": "#5B21B6"}
        if b.machine_url:
            attrs["URL"] = graphviz.escape(html.escape(b.machine_url(inv.machine_id)))
            attrs["target"] = "_top"
        tip = f"starts machine {inv.machine_id}{version}" + (" (async)" if inv.is_async else "")
    elif inv.kind == "call":
        operation = io_operation(inv.call.source)
        brief = f"io {operation}" if operation else short_code(inv.call, 28)
        attempts = max((policy.max_attempts for policy in inv.retries), default=1)
        typed = " by type" if any(policy.on for policy in inv.retries) else ""
        label = _html(_esc(brief), _small(f"retry ×{attempts}{typed}") if attempts > 1 else "")
        attrs = {"style": "rounded,filled,dashed", "fillcolor": "#F5F3FF", "color": VIOLET,
                 "fontcolor": "#5B21B6", "fontsize": "10"}
        tip = f"call: {inv.call.brief(200)}" + (f"\nok if {inv.ok_if.brief(120)}" if inv.ok_if
                                                 else "")
    else:
        label = _html(_esc(f"▶ {inv.action}"), _small("→ other execution"))
        attrs = {"style": "rounded,filled,dashed", "fillcolor": "#F5F3FF", "color": VIOLET,
                 "fontcolor": "#5B21B6", "fontsize": "10"}
        tip = f"sends action {inv.action} to another execution"
    nid = helper_id("invoke", state.name, t.id)
    helper = _helper_node(b, nid, f"invoke {inv.kind}", label, _tooltip(tip), attrs, eid)
    _edge(b, b.names[state.name], helper, eid, "invoke", lines, _transition_tooltip(state, t),
          "action" if t.on else "")
    _branch(b, helper, state, t, "success", inv.success, "✓ success", "success")
    for index, branch in enumerate(inv.errors):  # by type, in order: "✗ card_declined"
        text = ("✗ " + ", ".join(branch.on) if branch.on
                else "✗ other errors" if index else "✗ error")
        _branch(b, helper, state, t, error_branch_name(index), branch, text, text[2:])


def _schedule_words(schedule: Schedule) -> str:
    """How a schedule starts executions, as drawn on the start arrow: "◷ At 07:00 on
    Monday through Friday (Europe/Amsterdam)" or "◷ every 1 h"."""
    if schedule.cron is not None:
        return f"{CLOCK} {explain(schedule.cron)} ({schedule.time_zone})"
    return f"{CLOCK} every {duration(schedule.every or 0, exact=True)}"


def _join_words(group: Group) -> str:
    join = {"all": "all must finish", "any": "first to finish wins"}.get(
        group.join, f"{group.join} must finish") if isinstance(group.join, str) \
        else f"{group.join} must finish"
    return join + (" · fail fast" if group.on_failure == "fail_fast" else " · collect errors")


def _group_look(group: Group) -> tuple[str, dict, str]:
    """One node for the whole parallel/map: a row of branch cells side by side under
    "run together" (parallel), or a stack of copies of one machine (map)."""
    cell = ('<TD BGCOLOR="white" COLOR="{c}" STYLE="rounded"><B>{key}</B><BR/>'
            '<FONT POINT-SIZE="8.5">{machine}</FONT></TD>')
    if group.kind == "parallel":
        cells = "".join(cell.format(c=VIOLET, key=_esc(b.key), machine=_esc(
            b.machine_id + (f" v{b.machine_version}" if b.machine_version else "")))
            for b in group.branches)
        head = f"{len(group.branches)} run together"
        label = (f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="4" CELLPADDING="3">'
                 f'<TR><TD COLSPAN="{len(group.branches)}" BORDER="0">{_esc(head)}<BR/>'
                 f'{_small(_join_words(group))}</TD></TR><TR>{cells}</TR></TABLE>>')
        tip = "runs together: " + ", ".join(
            f"{b.key} ({b.machine_id})" for b in group.branches)
        shape = "box"
    else:
        assert group.items is not None and group.machine_id is not None
        cap = f" · {group.max_concurrency} at a time" if group.max_concurrency else ""
        version = f" v{group.machine_version}" if group.machine_version else ""
        label = _html(_esc(f"for each of {short_code(group.items, 26)}"),
                      f"<B>{_esc(group.machine_id + version)}</B>",
                      _small(_join_words(group) + cap))
        tip = f"starts {group.machine_id} for each item of {group.items.brief(200)}"
        shape = "box3d"
    attrs = {"shape": shape, "style": "rounded,filled", "fillcolor": "#F5F3FF",
             "color": VIOLET, "fontcolor": "#5B21B6",
             "peripheries": "2" if group.kind == "parallel" else "1"}
    return label, attrs, tip + f"\n{_join_words(group)}"


def _decision(b: _Build, state: State, t: Transition, lines: list[str]) -> None:
    d = t.decision
    eid = edge_id(state.name, t.id)
    attrs = {"shape": "diamond", "style": "filled", "fillcolor": "white", "color": MUTED,
             "fontcolor": MUTED, "width": "0.32", "height": "0.32", "fixedsize": "true",
             "fontsize": "9"}
    nid = helper_id("decision", state.name, t.id)
    helper = _helper_node(b, nid, "decision", "?", _tooltip(f"if {d.condition.brief(200)}"),
                          attrs, eid)
    _edge(b, b.names[state.name], helper, eid, "action" if t.on else "auto", lines,
          _transition_tooltip(state, t))
    condition = " " + _italic("if " + short_code(d.condition, 24))
    _branch(b, helper, state, t, "then", d.then, "then" + condition, "then")
    _branch(b, helper, state, t, "else", d.otherwise, "else", "else")


def _transitions(b: _Build, state: State) -> None:
    after_guard = False  # an unguarded automatic transition after a guarded one: "otherwise"
    for t in state.transitions:
        if t.invoke and t.after:  # a timer that starts work (a reminder sent)
            lines = [_esc(t.label or t.id), _esc(_after(state, t))]
            if t.when:
                lines.append(_italic("if " + short_code(t.when)))
            _invoke(b, state, t, lines)
        elif t.invoke:
            _invoke(b, state, t, _first_lines(t, after_guard, t.id))
        elif t.decision:
            _decision(b, state, t, _first_lines(t, after_guard, t.id))
        else:
            target = t.target or state.name
            if t.wait or t.after:
                lines = [_esc(t.label) if t.label else "",
                         _esc(_delay(t) if t.wait else _after(state, t))]
                lines += _first_lines(Transition(id=t.id, path=t.path, when=t.when),
                                      after_guard, None)
                kind = "timer"
            else:
                lines = _first_lines(t, after_guard, t.id)
                kind = "action" if t.on else "auto"
            _edge(b, b.names[state.name], b.names[target], edge_id(state.name, t.id), kind,
                  lines, _transition_tooltip(state, t, target))
        if not t.on:
            after_guard = after_guard or t.when is not None


def to_dot(machine: Machine, path: DiagramPath | None = None, *,
           machine_url: Callable[[str], str] | None = None, heat: Heat | None = None,
           marks: Marks | None = None) -> str:
    """The DOT source of the machine's diagram, with `path` highlighted when given, the
    `heat` map drawn on it (a count badge on each state with executions in it, the median
    stay under each state, edges as thick as they are used with "×N", unused ones faded),
    and `marks` (diagram id -> extra classes such as diff-added / diff-changed)."""
    b = _Build(machine, path, machine_url, _new_graph(machine),
               {name: f"s{i}" for i, name in enumerate(machine.states)}, heat, marks or {})
    if heat and heat.in_state:
        b.graph.attr(forcelabels="true")  # every count badge is drawn
    b.graph.node("start", label="", shape="point", width="0.13", color=INK, fillcolor=INK,
                 id="start", tooltip=_tooltip("start"),
                 **{"class": "start" + (" visited" if path else "")})
    for state in machine.states.values():
        _state_node(b, state)
    _edge(b, "start", b.names[machine.start_at], "edge-start", "start",
          [_small(_schedule_words(s)) for s in machine.schedules],
          _tooltip(f"starts at {machine.start_at}",
                   *(f"schedule {s.id}: {_schedule_words(s)}" for s in machine.schedules)))
    for state in machine.states.values():
        _transitions(b, state)
    return b.graph.source


# Rendering --------------------------------------------------------------------------------

_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_COMMENT = re.compile(r"<!--.*?-->\n?", re.S)
# A step badge in dot's SVG: its rounded cell (filled STEP_BADGE), then its number.
_BADGE = re.compile(r'<path( fill="' + STEP_BADGE + r'"[^>]*/>\n)<text([^>]*)>(\d+)</text>',
                    re.IGNORECASE)
_SIZE = re.compile(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"')
_TITLE = re.compile(r'<title>[^<]*</title>(\n<g id="a_[^"]*"><a (?:[^>]*? )?xlink:title="([^"]*)")')


def _inline(svg: str) -> str:
    """SVG ready to inline in HTML: no prolog/doctype/comments; step badges marked (their
    number white inline, above any page style for edge text); it shrinks to fit its
    container down to MIN_SCALE (below that the text is too small: the box scrolls
    instead); tooltips in <title> where browsers show them."""
    svg = _COMMENT.sub("", _PROLOG.sub("", svg)).replace("&#45;", "-")
    svg = _SIZE.sub(
        lambda m: f'<svg width="100%" style="max-width:{m.group(1)}pt;'
                  f'min-width:{float(m.group(1)) * MIN_SCALE:.0f}pt" class="dm-svg" '
                  f'data-width="{m.group(1)}" data-height="{m.group(2)}"', svg, count=1)
    svg = _BADGE.sub(lambda m: f'<path class="step-badge" data-step="{m.group(3)}"'
                               f'{m.group(1)}<text class="step-badge" style="fill:#fff" '
                               f'data-step="{m.group(3)}"{m.group(2)}>{m.group(3)}</text>', svg)
    return _TITLE.sub(r"<title>\2</title>\1", svg)


# Bounds -----------------------------------------------------------------------------------
# A machine is written by editors, so its diagram is user input for `dot`: layout time grows
# much faster than the size (a 100-state machine with three random edges per state takes
# 17 s; the chain of bench/diagrams.py draws 250 states in 0.3 s), so both bounds are needed:
# the size cap is checked before any `dot` starts, the time and memory limits hold for the
# ones that start.


@dataclass(frozen=True)
class Limits:
    """What a diagram may cost (docs/diagrams.md "Bounds"; settings DATA_MACHINES
    ["DIAGRAMS"], applied by machines.apps through `configure`)."""

    max_states: int = 200  # states drawn, checked before the DOT is built
    max_edges: int = 1000  # arrows drawn (transitions, invoke/decision branches, start)
    max_dot_bytes: int = 512 * 1024  # the DOT source given to `dot`
    timeout_seconds: float = 5.0  # wall clock of one `dot`; killed past it
    memory_bytes: int = 512 * 1024 * 1024  # address space of one `dot` (RLIMIT_AS)
    retry_after_seconds: float = 600.0  # a timeout or crash is remembered this long
    max_concurrent: int = 2  # `dot` processes at once in this process (memory: x memory_bytes)


LIMITS = Limits()


def configure(**changes) -> Limits:
    """Set the process-wide limits (from settings, by machines.apps); returns them."""
    global LIMITS
    LIMITS = replace(Limits(), **{k: v for k, v in changes.items() if v is not None})
    return LIMITS


TOO_LARGE, TIMEOUT, FAILED, BUSY = "too_large", "timeout", "failed", "busy"


class DiagramUnavailable(Exception):
    """The diagram is not drawn: too large to draw (`reason` TOO_LARGE), `dot` ran out of
    time (TIMEOUT) or stopped on an error or its memory limit (FAILED). `detail` is a
    sentence for people; pages show it with the text description instead of the picture."""

    title = "Too large to draw"

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class DiagramBusy(DiagramUnavailable):
    """Not drawn now: this process already runs `max_concurrent` dots and none finished in
    time. Never cached; the next view tries again."""

    title = "Not drawn right now"

    def __init__(self):
        super().__init__(BUSY, "The server is busy drawing other diagrams: reload the page "
                               "in a moment.")


@dataclass(frozen=True)
class _Failure:
    """A remembered DiagramUnavailable (the exception itself is not kept: raising one
    object again and again would grow its traceback)."""

    reason: str
    detail: str
    until: float  # time.monotonic() after which `dot` is tried again (inf: never)

    def error(self) -> DiagramUnavailable:
        return DiagramUnavailable(self.reason, self.detail)


def size(machine: Machine) -> tuple[int, int]:
    """(states, arrows) of the drawing, counted from the definition without building it."""
    edges = 1  # the start arrow
    for state in machine.states.values():
        for t in state.transitions:
            edges += 1
            if t.invoke:
                edges += (t.invoke.success is not None) + len(t.invoke.errors)
            elif t.decision:
                edges += (t.decision.then is not None) + (t.decision.otherwise is not None)
    return len(machine.states), edges


def check_size(machine: Machine, limits: Limits | None = None) -> None:
    """Raise DiagramUnavailable(TOO_LARGE) when the machine has more states or arrows than a
    diagram is drawn for. Cheap: run before anything else, on every request."""
    limits = limits or LIMITS
    states, edges = size(machine)
    if states > limits.max_states:
        raise DiagramUnavailable(TOO_LARGE, f"This machine has {states:,} states; diagrams "
                                            f"are drawn for up to {limits.max_states:,}.")
    if edges > limits.max_edges:
        raise DiagramUnavailable(TOO_LARGE, f"This machine has {edges:,} transitions and "
                                            f"branches; diagrams are drawn for up to "
                                            f"{limits.max_edges:,}.")


def _limit_child(pid: int, limits: Limits) -> None:
    """Address space and CPU time of the `dot` just started. Set from the parent with
    prlimit (Linux): a preexec_fn is not safe in a threaded server. `dot` is blocked reading
    its input until we write it, so the limits hold before it lays anything out."""
    cpu = int(limits.timeout_seconds) + 2  # backstop if this process dies mid-render
    resource.prlimit(pid, resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.prlimit(pid, resource.RLIMIT_CPU, (cpu, cpu))


def _limits_in_child(limits: Limits) -> Callable[[], None]:
    """Where prlimit is missing (not Linux): the same limits from a preexec_fn."""
    def limit() -> None:
        cpu = int(limits.timeout_seconds) + 2
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    return limit


DOT_COMMAND = ("dot", "-Kdot", "-Tsvg")  # what graphviz.Source.pipe(format="svg") runs
_dot_runs = 0  # `dot` processes started by this process (tests and bench read it)
_slots: tuple[int, threading.BoundedSemaphore] | None = None  # (size, semaphore)
_slots_lock = threading.Lock()


def _slots_for(limits: Limits) -> threading.BoundedSemaphore:
    global _slots
    with _slots_lock:
        if _slots is None or _slots[0] != limits.max_concurrent:
            _slots = (limits.max_concurrent, threading.BoundedSemaphore(limits.max_concurrent))
        return _slots[1]


def dot_runs() -> int:
    return _dot_runs


def run_dot(source: str, limits: Limits | None = None) -> str:
    """SVG drawn by a bounded `dot`: the source size checked first, then one process in its
    own session with RLIMIT_AS and RLIMIT_CPU, killed (its whole group) past
    `timeout_seconds` of wall clock, waiting for a slot included (at most `max_concurrent`
    at once in this process). Raises DiagramUnavailable (DiagramBusy when no slot freed in
    time); graphviz.ExecutableNotFound when there is no `dot` at all (a broken install, not
    a property of the diagram)."""
    limits = limits or LIMITS
    data = source.encode("utf-8")
    if len(data) > limits.max_dot_bytes:
        raise DiagramUnavailable(TOO_LARGE, f"Its diagram would be {len(data) // 1024:,} KiB "
                                            f"of Graphviz source; diagrams are drawn up to "
                                            f"{limits.max_dot_bytes // 1024:,} KiB.")
    began = time.monotonic()
    slots = _slots_for(limits)
    if not slots.acquire(timeout=limits.timeout_seconds / 2):  # leaves dot half or more
        raise DiagramBusy()
    try:
        waited = time.monotonic() - began  # the whole answer stays within the timeout
        out, err, returncode = _run(data, limits, limits.timeout_seconds - waited)
    except subprocess.TimeoutExpired:
        if waited > limits.timeout_seconds / 10:  # not given its full time: not its fault
            raise DiagramBusy() from None
        raise DiagramUnavailable(TIMEOUT, f"Graphviz did not finish drawing it within "
                                          f"{limits.timeout_seconds:g} s.") from None
    finally:
        slots.release()
    if returncode != 0:
        why = (f"was stopped by signal {-returncode}" if returncode < 0
               else f"stopped with exit status {returncode}")
        memory = " (out of memory?)" if b"alloc" in err.lower() or returncode < 0 else ""
        raise DiagramUnavailable(FAILED, f"Graphviz could not draw it: `dot` {why}{memory}.")
    return out.decode("utf-8")


def _run(data: bytes, limits: Limits, timeout: float) -> tuple[bytes, bytes, int]:
    """One `dot` on `data`: (stdout, stderr, exit status); TimeoutExpired once it is killed."""
    global _dot_runs
    in_child = None if hasattr(resource, "prlimit") else _limits_in_child(limits)
    try:
        process = subprocess.Popen(
            DOT_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, preexec_fn=in_child)  # noqa: PLW1509 - only without prlimit
    except FileNotFoundError as exc:
        raise graphviz.ExecutableNotFound(DOT_COMMAND) from exc
    _dot_runs += 1
    try:
        if in_child is None:
            try:
                _limit_child(process.pid, limits)
            except ProcessLookupError:
                pass  # it has already stopped: communicate() says how
        out, err = process.communicate(data, timeout=max(timeout, 0.01))
    finally:
        if process.returncode is None:  # timed out, or anything else went wrong
            _kill(process)
    return out, err, process.returncode
def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()  # reaps it and closes the pipes


def _dot_to_svg(source: str, limits: Limits | None = None) -> str:
    return _inline(run_dot(source, limits))


# Cache ------------------------------------------------------------------------------------
CACHE_SIZE = 256
CACHE_BYTES = 64 * 1024 * 1024  # of SVG text (a 100-state machine's is ~370 KiB)
_svgs: LRU[str | _Failure] = LRU(  # full key -> SVG or what stopped it
    CACHE_SIZE, max_weight=CACHE_BYTES, weigh=lambda v: len(v) if isinstance(v, str) else 0)
_slow: LRU[_Failure] = LRU(CACHE_SIZE)  # (id, version, content) -> timeout or crash
_drawing: dict[tuple, threading.Event] = {}  # keys a thread of this process is drawing
_drawing_lock = threading.Lock()


def _cache_key(machine: Machine, machine_url: Callable[[str], str] | None,
               heat: Heat | None = None, marks: Marks | None = None,
               path: DiagramPath | None = None) -> tuple:
    """(id, version, content, heat, marks, path): the definition itself, not the DOT,
    because building the DOT of a 100-state machine takes ~100 ms and hashing its repr
    ~5 ms. The first three name the machine as drawn (see `_slow`)."""
    invoked = sorted({t.invoke.machine_id for st in machine.states.values()
                      for t in st.transitions if t.invoke and t.invoke.machine_id})
    links = [machine_url(mid) for mid in invoked] if machine_url else []
    content = sha256(repr((machine, links)).encode()).hexdigest()
    marked = tuple(sorted((did, tuple(classes)) for did, classes in (marks or {}).items()))
    return (machine.id, machine.version, content, heat.key() if heat else None, marked,
            path.key() if path else None)


def clear_cache() -> None:
    _svgs.clear()
    _slow.clear()


def _remembered(key: tuple) -> str | None:
    """The SVG drawn for `key`, None when unknown; raises a remembered failure, also one of
    another drawing of the same machine that ran out of time or memory (with a path, a
    heatmap or marks it would not be cheaper)."""
    for cache, k in ((_svgs, key), (_slow, key[:3])):
        found = cache.find(k)
        if isinstance(found, _Failure):
            if time.monotonic() < found.until:
                raise found.error()
            cache.forget(k)
        elif found is not None:
            return found
    return None


def _draw_once(key: tuple, draw: Callable[[], str], limits: Limits) -> str:
    """Draw `key` unless remembered; threads asking for a key being drawn wait for that
    drawing (at most the timeout) instead of starting a second `dot`."""
    found = _remembered(key)
    if found is not None:
        return found
    with _drawing_lock:
        event = _drawing.get(key)
        mine = event is None
        if mine:
            event = _drawing[key] = threading.Event()
    if not mine:
        event.wait(limits.timeout_seconds + 1)
        found = _remembered(key)
        if found is not None:
            return found
    try:
        svg = draw()
    except DiagramBusy:
        raise  # nothing learnt about the diagram
    except DiagramUnavailable as exc:
        forever = exc.reason == TOO_LARGE  # the same source is always too large
        failure = _Failure(exc.reason, exc.detail, float("inf") if forever
                           else time.monotonic() + limits.retry_after_seconds)
        _svgs.put(key, failure)
        if not forever:
            _slow.put(key[:3], failure)
        raise
    else:
        _svgs.put(key, svg)
        return svg
    finally:
        if mine:
            with _drawing_lock:
                _drawing.pop(key, None)
            event.set()


def render_svg(machine: Machine, path: DiagramPath | None = None, *,
               machine_url: Callable[[str], str] | None = None, heat: Heat | None = None,
               marks: Marks | None = None, limits: Limits | None = None) -> str:
    """Inline-ready SVG (see to_dot), drawn by at most one bounded `dot` (run_dot) and
    cached (LRU) per machine id, version, content, heat, marks and path, so a draft edited
    under the same version is never stale and a heatmap or an execution's path is drawn
    again only when what it shows changes. Raises DiagramUnavailable when the machine is
    too large (checked before building anything), or `dot` ran out of time or memory: that
    outcome is cached too, and a timeout or crash stands for every drawing of the machine
    for `limits.retry_after_seconds`."""
    limits = limits or LIMITS
    check_size(machine, limits)
    key = _cache_key(machine, machine_url, heat, marks, path)
    return _draw_once(key, lambda: _dot_to_svg(
        to_dot(machine, path, machine_url=machine_url, heat=heat, marks=marks), limits), limits)


def cached_svg(machine: Machine, path: DiagramPath | None = None, *,
               machine_url: Callable[[str], str] | None = None, heat: Heat | None = None,
               marks: Marks | None = None, limits: Limits | None = None) -> str | None:
    """The SVG render_svg would answer if it is known without running `dot`, else None.
    Raises DiagramUnavailable like render_svg for a machine too large or remembered as
    failed. For pages that show many diagrams (the machine list's thumbnails)."""
    check_size(machine, limits or LIMITS)
    return _remembered(_cache_key(machine, machine_url, heat, marks, path))


def notice_svg(detail: str, title: str = DiagramUnavailable.title) -> str:
    """A small SVG that says the diagram is not drawn, for where a picture is expected
    (the admin's live preview, thumbnails loaded as images)."""
    lines = textwrap.wrap(detail, 52)[:4]
    text = "".join(
        f'<text x="16" y="{58 + 18 * i}" font-size="13" fill="{MUTED}">{html.escape(line)}</text>'
        for i, line in enumerate(lines))
    height = 72 + 18 * len(lines)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 420 {height}" '
            f'style="max-width:420px" class="dm-svg dm-notice" role="img" '
            f'aria-label="{html.escape(title)}">'
            f'<rect x="1" y="1" width="418" height="{height - 2}" rx="8" fill="#F8FAFC" '
            f'stroke="{LINE_STRONG}" stroke-dasharray="6 4"/>'
            f'<text x="16" y="32" font-family="{FONT}" font-size="16" font-weight="bold" '
            f'fill="{INK}">{html.escape(title)}</text>'
            f'<g font-family="{FONT}">{text}</g></svg>')


def describe(machine: Machine, path: DiagramPath | None = None) -> str:
    """A text alternative to the diagram, for screen readers and the "as text" view."""
    states = machine.states
    parts = [f"{machine.display}: {len(states)} states, starting at "
             f"{states[machine.start_at].display}."]
    if machine.schedules:
        parts.append("Started on schedules: " + "; ".join(
            f"{s.id} ({_schedule_words(s)[2:]})" for s in machine.schedules) + ".")
    for state in states.values():
        moves = []
        for t in state.transitions:
            how = f"on {' / '.join(t.on)}" if t.on else "automatically"
            if t.after:
                how = f"{_after(state, t)[2:]} (a timer kept while it stays)"
            if t.when:
                how += f" if {short_code(t.when, 60)}"
            if t.invoke:
                what = t.invoke.machine_id or t.invoke.action or "a call"
                group = t.invoke.group
                if group is not None:
                    what = (f"{', '.join(b.key for b in group.branches)} together"
                            if group.kind == "parallel"
                            else f"{group.machine_id} for each item") + \
                        f" ({_join_words(group)})"
                targets = [br.state or state.name for br in (t.invoke.success, *t.invoke.errors)
                           if br]
                moves.append(f"{how} invokes {what}, then {' or '.join(targets) or 'stays'}")
            elif t.decision:
                targets = [br.state or state.name for br in (t.decision.then,
                                                              t.decision.otherwise) if br]
                moves.append(f"{how} goes to {' or '.join(targets)}")
            else:
                delay = f" after {_delay(t)[2:]}" if t.wait else ""
                moves.append(f"{how}{delay} goes to {t.target or state.name}")
        end = " (final)" if state.is_terminal else ""
        parts.append(f"{state.display}{end}" + (": " + "; ".join(moves) if moves else "") + ".")
    if path and path.current:
        parts.append(f"Now in {states[path.current].display}, {path.status}.")
    return " ".join(parts)

"""What an execution's history means on the diagram: the path, the steps, the heatmap.

The pure functions take history rows as plain dicts (``values()`` rows or engine entries);
the few functions that take an Execution or a MachineVersion only fetch the columns they
need, with aggregate queries where the answer is a count. A "step" is one move on the
diagram: a transition taken, or work started (the edge into an invoke node), numbered
1, 2, ... in history order; the timeline uses the same numbers.
"""
from __future__ import annotations

import html
import re
import statistics
from dataclasses import asdict, dataclass, field, is_dataclass

from django.db.models import Count

from executions import engine
from machines.definition import Machine
from machines.diagrams import DiagramPath, edge_id

STEP_KINDS = (engine.TRANSITION_TAKEN, engine.WORK_STARTED)
PATH_FIELDS = ("seq", "kind", "transition", "branch", "from_state", "to_state")
DECISION_BRANCHES = ("then", "else")


def step_edges(row: dict) -> tuple[str, ...]:
    """The diagram edges one step row lights up."""
    source, tid, branch = row["from_state"], row["transition"], row.get("branch") or ""
    if row["kind"] == engine.WORK_STARTED or not branch:
        return (edge_id(source, tid),)
    if branch in DECISION_BRANCHES:  # the edge into the decision, then the branch taken
        return (edge_id(source, tid), edge_id(source, tid, branch))
    return (edge_id(source, tid, branch),)  # success/error after an invoke node


def numbered_steps(rows) -> dict[int, int]:
    """history seq -> step number, for the rows that are steps."""
    numbers, n = {}, 0
    for row in rows:
        if row["kind"] in STEP_KINDS:
            n += 1
            numbers[row["seq"]] = n
    return numbers


def path_from_rows(rows, *, start_at: str, current: str | None, status: str) -> DiagramPath:
    """The path of an execution from its history rows (in seq order)."""
    visits: dict[str, int] = {start_at: 1}
    edges: dict[str, list[int]] = {}
    n = 0
    for row in rows:
        if row["kind"] not in STEP_KINDS:
            continue
        n += 1
        for eid in step_edges(row):
            edges.setdefault(eid, []).append(n)
        if row["kind"] == engine.TRANSITION_TAKEN:
            target = row["to_state"] or row["from_state"]
            visits[target] = visits.get(target, 0) + 1
    return DiagramPath(state_visits=visits, edge_steps={k: tuple(v) for k, v in edges.items()},
                       current=current, status=status)


def path_rows(execution):
    """Only the step rows and only the columns a path needs: cheap even for long histories."""
    return execution.history.filter(kind__in=STEP_KINDS).order_by("seq").values(*PATH_FIELDS)


def diagram_path(execution) -> DiagramPath:
    """The path to draw on `execution`'s diagram (see machines.diagrams.render_svg)."""
    machine = execution.machine_version.parsed()
    return path_from_rows(path_rows(execution), start_at=machine.start_at,
                          current=execution.state, status=execution.status)


# The step control --------------------------------------------------------------------------
MAX_STEPS = 120  # steps sent to the page's step control: bounded JSON on long histories
PAUSES = {
    engine.ACTION_RECEIVED: engine.WAITING, engine.ACTION_REJECTED: engine.WAITING,
    engine.EXECUTION_STUCK: engine.WAITING, engine.TIMER_ARMED: engine.SLEEPING,
    engine.WORK_RETRY_SCHEDULED: engine.SLEEPING, engine.EXECUTION_FINISHED: engine.FINISHED,
    engine.EXECUTION_FAILED: engine.FAILED, engine.EXECUTION_CANCELED: engine.CANCELED,
}


def context_changes(before: dict | None, after: dict | None) -> dict:
    """Top-level keys added, changed and removed (with their old values)."""
    before, after = before or {}, after or {}
    return {
        "added": [key for key in after if key not in before],
        "changed": [key for key in after if key in before and before[key] != after[key]],
        "removed": {key: value for key, value in before.items() if key not in after},
    }


def build_steps(step_rows, page_rows, *, start_at: str, context_before: dict | None,
                final_status: str | None, captions: dict[int, str],
                limit: int = MAX_STEPS) -> list:
    """The step list of docs/diagrams.md for the history rows shown on a page.

    `step_rows`: every step row of the execution (path_rows), for what was visited before
    the page; `page_rows`: the full rows of the page, in seq order; `context_before`: the
    context just before the page's first row; `final_status`: the execution's status when
    the page ends its history (None otherwise). Only the last `limit` steps are kept, and
    each step lists the distinct edges taken so far (last taken last), so the JSON stays
    small however long the history is.
    """
    if not page_rows:
        return []
    numbers = numbered_steps(step_rows)
    states, edges, current = {start_at}, {}, start_at

    def take(row):
        nonlocal current
        for eid in step_edges(row):
            edges.pop(eid, None)
            edges[eid] = None
        if row["kind"] == engine.TRANSITION_TAKEN:
            current = row["to_state"] or row["from_state"]
            states.add(current)

    for row in step_rows:  # what the diagram showed before the page
        if row["seq"] >= page_rows[0]["seq"]:
            break
        take(row)
    steps, context = [], context_before or {}
    for row in page_rows:
        previous = context
        if row.get("context") is not None:
            context = row["context"]
        is_step = row["kind"] == engine.STARTED or row["seq"] in numbers
        if is_step:
            if row["kind"] != engine.STARTED:
                take(row)
            steps.append({
                "n": numbers.get(row["seq"], 0), "seq": row["seq"], "states": sorted(states),
                "edges": list(edges), "current": current,
                "caption": captions.get(row["seq"], ""),
                "status": engine.INVOKING if row["kind"] == engine.WORK_STARTED
                else engine.RUNNING,
            })
        elif steps and row["kind"] in PAUSES:
            steps[-1]["status"] = PAUSES[row["kind"]]
        if steps:
            steps[-1]["context"] = context
            if is_step or row.get("context") is not None:
                steps[-1]["changes"] = context_changes(previous, context)
    if steps and final_status:
        steps[-1]["status"] = final_status
    return steps[-limit:]


# The heatmap -------------------------------------------------------------------------------
STAY_WINDOW = 8_000  # newest history rows (all machines) whose stays feed the medians


@dataclass
class Heat:
    """Where a version's executions are now, which edges they took, how long they stay."""

    in_state: dict[str, int] = field(default_factory=dict)  # state -> executions there now
    on_edge: dict[str, int] = field(default_factory=dict)  # edge id -> times taken
    median_stay: dict[str, float] = field(default_factory=dict)  # state -> seconds

    @property
    def busiest_edge(self) -> int:
        return max(self.on_edge.values(), default=0)


def heat(machine_version) -> Heat:
    """The heatmap of one machine version, from aggregate queries on indexed columns."""
    machine = machine_version.parsed()
    return Heat(
        in_state=executions_in_states(machine_version),
        on_edge=edge_counts(machine, machine_version),
        median_stay=median_stays(machine_version),
    )


def executions_in_states(machine_version) -> dict[str, int]:
    """Served by the (machine_version, state) index alone."""
    from executions.models import Execution

    counts = (Execution.objects.filter(machine_version=machine_version).order_by()
              .values_list("state").annotate(n=Count("pk")))
    return dict(counts)


def edge_counts(machine: Machine, machine_version) -> dict[str, int]:
    """Times each edge was taken. Counting by (kind, transition) is served by the
    (machine_version, kind, transition) index; only transitions whose id is not unique in
    the machine, or that branch (decision, invoke), need a second look at their rows."""
    from executions.models import HistoryEntry

    owners: dict[str, list[str]] = {}
    branching = set()
    for state in machine.states.values():
        for transition in state.transitions:
            owners.setdefault(transition.id, []).append(state.name)
            if transition.invoke or transition.decision:
                branching.add(transition.id)
    rows = HistoryEntry.objects.filter(machine_version=machine_version, kind__in=STEP_KINDS)
    counts: dict[str, int] = {}

    def add(row, n):
        for eid in step_edges(row):
            counts[eid] = counts.get(eid, 0) + n

    unclear = set()
    for kind, tid, n in rows.order_by().values_list("kind", "transition").annotate(
            n=Count("pk")):
        states = owners.get(tid, [])
        if len(states) == 1 and (tid not in branching or kind == engine.WORK_STARTED):
            add({"kind": kind, "transition": tid, "from_state": states[0]}, n)
        else:
            unclear.add((kind, tid))
    for kind in {kind for kind, _ in unclear}:
        tids = [tid for k, tid in unclear if k == kind]
        detailed = (rows.filter(kind=kind, transition__in=tids).order_by()
                    .values_list("transition", "from_state", "branch").annotate(n=Count("pk")))
        for tid, source, branch, n in detailed:
            add({"kind": kind, "transition": tid, "from_state": source, "branch": branch}, n)
    return counts


def stays(rows) -> dict[str, list[float]]:
    """Seconds spent in each state, from history rows of many executions (any order).
    A stay runs from entering a state to leaving it for another; staying put (a self loop)
    continues it. Stays cut off by the start of `rows` are left out."""
    by_execution: dict = {}
    for row in rows:
        by_execution.setdefault(row["execution_id"], []).append(row)
    out: dict[str, list[float]] = {}
    for history in by_execution.values():
        history.sort(key=lambda r: r["seq"])
        entered = None  # (state, when)
        for row in history:
            if row["kind"] == engine.STARTED:
                entered = (row.get("state"), row["at"])
            elif row["kind"] == engine.TRANSITION_TAKEN:
                source, target = row["from_state"], row["to_state"] or row["from_state"]
                if target == source:
                    continue
                if entered is not None and entered[0] in (None, source):
                    out.setdefault(source, []).append((row["at"] - entered[1]).total_seconds())
                entered = (target, row["at"])
    return out


def median_stays(machine_version, window: int = STAY_WINDOW) -> dict[str, float]:
    """Median seconds per state over the newest `window` history rows: a primary-key range,
    so the cost does not grow with the number of executions. (The version is checked in
    Python: given it, databases prefer its index and read every row of the version.)"""
    from executions.models import HistoryEntry

    newest = HistoryEntry.objects.order_by("-pk").values_list("pk", flat=True).first()
    if newest is None:
        return {}
    rows = HistoryEntry.objects.filter(
        pk__gt=newest - window, kind__in=(engine.STARTED, engine.TRANSITION_TAKEN),
    ).order_by().values(
        "machine_version_id", "execution_id", "seq", "kind", "at", "from_state", "to_state")
    start_at = machine_version.parsed().start_at
    found = stays({**row, "state": start_at} for row in rows
                  if row["machine_version_id"] == machine_version.pk)
    return {state: statistics.median(seconds) for state, seconds in found.items()}


# Drawing on the rendered SVG ------------------------------------------------------------------
_NODE = re.compile(r'(<g id="((?:state|invoke|decision)-[^"]*)" class="([^"]*)">)(.*?)'
                   r'(</a>\n</g>\n)(</g>)', re.S)
_EDGE = re.compile(r'(<g id="(edge-[^"]*)" class="([^"]*)">)(.*?</a>\n</g>\n)'
                   r'((?:<text[^>]*>[^<]*</text>\n)*)(</g>)', re.S)
_D = re.compile(r' d="([^"]*)"')
_POINTS = re.compile(r' points="([^"]*)"')
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_TEXT = re.compile(r'<text text-anchor="(\w+)" x="([-\d.]+)" y="([-\d.]+)"[^>]*>([^<]*)</text>')
LETTER_WIDTH = 5.6  # average width of a 10px Helvetica letter, to place "×N" after a label


def _box(shape: str):
    """(left, top, right, bottom) of a node's first outline."""
    found = _D.search(shape) or _POINTS.search(shape)
    numbers = [float(n) for n in _NUMBER.findall(found.group(1))] if found else [0, 0]
    xs, ys = numbers[0::2], numbers[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def _with_class(head: str, extra: list[str]) -> str:
    return re.sub(r'class="([^"]*)"', lambda m: f'class="{m.group(1)} {" ".join(extra)}"',
                  head, count=1) if extra else head


def mark_svg(svg: str, classes: dict[str, list[str]]) -> str:
    """Add CSS classes to nodes and edges by their diagram id (the version diff)."""
    def add(m):
        extra = classes.get(html.unescape(m.group(2)), [])
        return _with_class(m.group(1), extra) + "".join(m.group(i) for i in (4, 5, 6))

    return _EDGE.sub(add, _NODE.sub(add, svg))


def heat_svg(svg: str, heat: Heat, describe_stay=None) -> str:
    """Draw the heatmap on a plain diagram: a count badge on each state with executions in
    it, the median stay under each state, edges as thick as they are used with "×N"."""
    from machines.diagrams import state_id

    in_state = {state_id(name): n for name, n in heat.in_state.items()}
    stays = {state_id(name): s for name, s in heat.median_stay.items()}
    busiest = heat.busiest_edge

    def node(m):
        nid, inner = html.unescape(m.group(2)), m.group(4)
        left, top, right, bottom = _box(inner)
        extra = ""
        if nid in in_state:
            label = f"{in_state[nid]:,}"
            width = 8 + 6.5 * len(label)
            extra += (f'<g class="heat-badge"><title>{in_state[nid]:,} executions here now'
                      f'</title><rect x="{right - width / 2:.1f}" y="{top - 9:.1f}" '
                      f'width="{width:.1f}" height="16" rx="8"/><text x="{right:.1f}" '
                      f'y="{top + 3:.1f}" text-anchor="middle">{label}</text></g>\n')
        if nid in stays and describe_stay:
            extra += (f'<text class="heat-stay" x="{(left + right) / 2:.1f}" '
                      f'y="{bottom + 11:.1f}" text-anchor="middle">median '
                      f'{html.escape(describe_stay(stays[nid]))}</text>\n')
        classes = ["heat-has"] if nid in in_state else []
        return _with_class(m.group(1), classes) + inner + m.group(5) + extra + m.group(6)

    def edge(m):
        eid = html.unescape(m.group(2))
        n = heat.on_edge.get(eid, 0)
        body, texts = m.group(4), m.group(5)
        if not n or not busiest:
            return _with_class(m.group(1), ["heat-unused"]) + body + texts + m.group(6)
        width = 1.2 + 5 * (n / busiest) ** 0.5
        body = body.replace("<path ", f'<path style="stroke-width:{width:.1f}" ', 1)
        placed = _TEXT.findall(texts)
        if placed:  # after the label's last line
            anchor, x, y, words = placed[-1]
            width = len(html.unescape(words)) * LETTER_WIDTH
            x = float(x) + (width / 2 if anchor == "middle" else width) + 4
            y, anchor = float(y), "start"
        else:  # no label: beside the middle of the line
            numbers = [float(v) for v in _NUMBER.findall(_D.search(body).group(1))]
            middle = (len(numbers) // 4) * 2
            x, y, anchor = numbers[middle], numbers[middle + 1] - 4, "middle"
        count = (f'<text class="heat-count" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">'
                 f"×{n:,}</text>\n")
        return (_with_class(m.group(1), ["heat-used"]) + body + texts + count + m.group(6))

    return _EDGE.sub(edge, _NODE.sub(node, svg))


# Differences between two versions -------------------------------------------------------------
@dataclass
class Diff:
    """What changed from one version to another, by state name and transition."""

    states: dict[str, list[str]] = field(default_factory=dict)  # added/removed/changed
    transitions: dict[str, list[tuple]] = field(default_factory=dict)  # (state, id, words)

    @property
    def is_empty(self) -> bool:
        return not any(self.states.values()) and not any(self.transitions.values())

    def classes(self) -> dict[str, list[str]]:
        """Diagram id -> class, for mark_svg on the newer version's diagram."""
        from machines.diagrams import edge_id, state_id

        out = {}
        for how in ("added", "changed"):
            for name in self.states.get(how, []):
                out[state_id(name)] = [f"diff-{how}"]
            for state, tid, _ in self.transitions.get(how, []):
                for branch in (None, "success", "error", "then", "else"):
                    out[edge_id(state, tid, branch)] = [f"diff-{how}"]
        return out


def _plain(value):
    """A definition object as plain data without document paths (moving an item is not a
    change of meaning)."""
    if is_dataclass(value):
        value = asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "path"}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _transitions(machine: Machine) -> dict[tuple, tuple]:
    return {(state.name, t.id): (_plain(t), _words(machine, state, t))
            for state in machine.states.values() for t in state.transitions}


def _words(machine: Machine, state, transition) -> str:
    target = machine.states.get(transition.target or state.name)
    where = "…" if transition.invoke or transition.decision else (
        target.display if target else transition.target)
    how = f"on {', '.join(transition.on)}" if transition.on else "automatic"
    return f"{state.display} → {where} ({transition.display}, {how})"


def definition_diff(old: Machine, new: Machine) -> Diff:
    """States and transitions added, removed and changed from `old` to `new`."""
    def state_facts(state):
        return _plain({"label": state.label, "description": state.description,
                       "returns": state.returns, "terminal": state.is_terminal})

    diff = Diff(states={
        "added": [n for n in new.states if n not in old.states],
        "removed": [n for n in old.states if n not in new.states],
        "changed": [n for n in new.states if n in old.states
                    and state_facts(new.states[n]) != state_facts(old.states[n])],
    })
    before, after = _transitions(old), _transitions(new)
    diff.transitions = {
        "added": [(*key, words) for key, (_, words) in after.items() if key not in before],
        "removed": [(*key, words) for key, (_, words) in before.items() if key not in after],
        "changed": [(*key, words) for key, (plain, words) in after.items()
                    if key in before and before[key][0] != plain],
    }
    return diff

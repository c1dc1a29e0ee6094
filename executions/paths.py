"""What an execution's history means on the diagram: the path, the steps, the heatmap.

The pure functions take history rows as plain dicts (``values()`` rows or engine entries);
the few functions that take an Execution or a MachineVersion only fetch the columns they
need, with aggregate queries where the answer is a count. A "step" is one move on the
diagram: a transition taken, or work started (the edge into an invoke node), numbered
1, 2, ... in history order; the timeline uses the same numbers.
"""
from __future__ import annotations

from executions import engine
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

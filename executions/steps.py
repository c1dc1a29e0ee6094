"""An execution's history as moves on its diagram: the path, the numbered steps, the
step control's list, and the edge counts of the heatmap.

Pure functions of history rows as plain dicts (``values()`` rows or engine entries): the
rows are read by executions.selectors. A "step" is one move on the diagram: a transition
taken, or work started (the edge into an invoke node), numbered 1, 2, ... in history
order; the timeline uses the same numbers.
"""
from __future__ import annotations

from executions import engine
from machines.diagrams import DiagramPath, edge_id

STEP_KINDS = (engine.TRANSITION_TAKEN, engine.WORK_STARTED)  # the history rows that move
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


def execution_path(machine, step_rows, *, state: str, status: str) -> DiagramPath:
    """The path to draw on an execution's diagram, from its step rows."""
    return path_from_rows(step_rows, start_at=machine.start_at, current=state, status=status)


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


def path_from_moves(moves, *, start_at: str, current: str | None, status: str,
                    keep: int) -> DiagramPath:
    """The path of path_from_rows from the execution's moves (executions.selectors
    .step_moves with the same `keep`): an edge taken more than `keep` times lists the
    numbers of its first `keep` steps and of its last, and how often it was taken in
    `edge_times`, which is all its badges show (machines.diagrams.MANY_STEPS)."""
    visits: dict[str, int] = {start_at: 1}
    numbers: dict[str, list[int]] = {}
    times: dict[str, int] = {}
    for row in moves:
        for eid in step_edges(row):
            numbers.setdefault(eid, []).append(row["n"])
            if row["k"] == 1:
                times[eid] = times.get(eid, 0) + row["times"]
        if row["k"] == 1 and row["kind"] == engine.TRANSITION_TAKEN:
            target = row["to_state"] or row["from_state"]
            visits[target] = visits.get(target, 0) + row["times"]
    edge_steps, edge_times = {}, {}
    for eid, found in numbers.items():
        found.sort()
        if times[eid] > keep:
            edge_steps[eid] = (*found[:keep], found[-1])
            edge_times[eid] = times[eid]
        else:
            edge_steps[eid] = tuple(found)
    return DiagramPath(state_visits=visits, edge_steps=edge_steps, edge_times=edge_times,
                       current=current, status=status)


def numbers_from(first: int, step_rows) -> dict[int, int]:
    """history seq -> step number for consecutive step rows (in seq order), the first of
    them step number `first`."""
    return {row["seq"]: n for n, row in enumerate(step_rows, start=first)}


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
                limit: int = MAX_STEPS, numbers: dict[int, int] | None = None) -> list:
    """The step list of docs/diagrams.md for the history rows shown on a page.

    `step_rows`: every step row of the execution (executions.selectors.step_rows), for
    what was visited before the page; `page_rows`: the full rows of the page, in seq
    order; `context_before`: the context just before the page's first row;
    `final_status`: the execution's status when the page ends its history (None
    otherwise). Only the last `limit` steps are kept, and each step lists the distinct
    edges taken so far (last taken last), so the JSON stays small however long the
    history is. Given the page's step `numbers`, `step_rows` need only hold each move
    taken before the page once, at its last time (executions.selectors.moves_before).
    """
    if not page_rows:
        return []
    if numbers is None:
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


def edge_counts(step_counts) -> dict[str, int]:
    """Times each diagram edge was taken, from (step row, times) pairs
    (executions.selectors.step_counts)."""
    counts: dict[str, int] = {}
    for row, n in step_counts:
        for eid in step_edges(row):
            counts[eid] = counts.get(eid, 0) + n
    return counts

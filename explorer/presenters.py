"""What the explorer's templates show, made from what the selectors read: diagrams with
their marks, the heatmap, rows of execution lists, the execution page's path, steps,
timeline and context. No request, no response, no ORM: the views pass what the request
asked for and render what comes back.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable

from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from executions import engine, selectors, steps
from explorer import timeline
from machines import diagrams, diffs
from machines.definition import Machine
from machines.words import duration

HISTORY_PAGE = 100  # history rows per timeline page: more than a screenful, read whole


def machine_url(machine_id: str) -> str:
    return reverse("explorer:machine", args=[machine_id])


def execution_url(execution_id) -> str:
    return reverse("explorer:execution", args=[execution_id])


def svg(text: str) -> SafeString:
    """SVG rendered by machines.diagrams, where every label from a definition is escaped."""
    return mark_safe(text)  # noqa: S308 - escaped when the DOT was built


def drawn(draw: Callable[[], str]) -> dict:
    """What explorer/_diagram.html needs: {"svg"} drawn by `draw()`, or no SVG and why
    ("diagram_notice", "diagram_notice_title") when the diagram is too large to draw, `dot`
    ran out of time or memory (machines.diagrams remembers that: the next view does not
    wait again) or the server is busy drawing others."""
    try:
        return {"svg": svg(draw()), "diagram_notice": "", "diagram_notice_title": ""}
    except diagrams.DiagramUnavailable as exc:
        return {"svg": "", "diagram_notice": exc.detail, "diagram_notice_title": exc.title}


# Machines --------------------------------------------------------------------------------
_IDS = re.compile(r' id="[^"]*"')
_TITLES = re.compile(r"<title>[^<]*</title>")


def thumbnail_svg(text: str) -> SafeString:
    """A diagram without ids and titles: a picture inside a link, several a page (ids would
    repeat, tooltips would cover the link)."""
    return svg(_TITLES.sub("", _IDS.sub("", text)))


def thumbnail(version) -> SafeString:
    """The machine list's picture of a version, drawn by no `dot` in the list's request: the
    cached diagram inline, else an <img> of the thumbnail URL (one `dot` per image
    request, cached for the next list), or "too large to draw"."""
    machine = version.parsed()
    try:
        found = diagrams.cached_svg(machine)
    except diagrams.DiagramUnavailable as exc:
        return format_html('<span class="thumb-notice">{}</span>', exc.title)
    if found is not None:
        return thumbnail_svg(found)
    url = reverse("explorer:machine-thumbnail", args=[version.machine_id, version.version])
    return format_html('<img src="{}" alt="" loading="lazy" decoding="async">', url)


def machine_cards(versions) -> list:
    """The latest version of each machine with its executions by status and a thumbnail."""
    counts = selectors.counts_by_status()
    for version in versions:
        by_status = counts.get(version.machine_id, {})
        version.status_counts = list(by_status.items())
        version.executions_total = sum(by_status.values())
        version.thumbnail = thumbnail(version)
    return versions


def heat(machine_version) -> diagrams.Heat:
    """The heatmap of one machine version, from aggregate queries on indexed columns."""
    machine = machine_version.parsed()
    return diagrams.Heat(
        in_state=selectors.executions_in_states(machine_version),
        failed_in_state=selectors.failed_in_states(machine_version),
        on_edge=steps.edge_counts(selectors.step_counts(machine, machine_version)),
        median_stay=selectors.median_stays(machine_version),
    )


def heat_diagram(machine: Machine, shown_heat: diagrams.Heat) -> dict:
    """{"svg", "diagram_notice"} (see drawn) of the heatmap."""
    return drawn(lambda: diagrams.render_svg(machine, machine_url=machine_url, heat=shown_heat))


def diff_diagram(new: Machine, diff: diffs.Diff) -> dict:
    """The newer version's diagram with what was added and changed marked (see drawn)."""
    return drawn(lambda: diagrams.render_svg(new, machine_url=machine_url, marks=diff.marks()))


def heat_rows(machine: Machine, shown_heat: diagrams.Heat) -> list[dict]:
    """The heatmap as a table (its text alternative), states in definition order."""
    return [{
        "name": name, "label": state.display, "now": shown_heat.in_state.get(name, 0),
        "failed": shown_heat.failed_in_state.get(name, 0),
        "stay": duration(shown_heat.median_stay.get(name)),
        "terminal": state.is_terminal,
    } for name, state in machine.states.items()]


# Execution lists -------------------------------------------------------------------------
def schedule_rows(schedules: list[dict]) -> list[dict]:
    """The machine's schedules with their start input as JSON text, for the page's table."""
    return [{**schedule, "input_json": json.dumps(schedule["input"], ensure_ascii=False)}
            for schedule in schedules]


def execution_rows(page) -> list[dict]:
    rows = []
    for execution in page.object_list:
        machine = execution.machine_version.parsed()
        rows.append({"execution": execution, "title": machine.display,
                     "state": timeline.state_name(machine, execution.state),
                     "actor": timeline.who(execution.actor) if execution.actor else ""})
    return rows


# One execution ---------------------------------------------------------------------------
def execution_path(execution, found_moves: list[dict]) -> diagrams.DiagramPath:
    """The path to draw on `execution`'s diagram (see machines.diagrams.render_svg), from
    its moves (executions.selectors.moves), not from its every step row."""
    moves = selectors.step_moves(execution, diagrams.MANY_STEPS, found_moves)
    return steps.path_from_moves(moves, start_at=execution.machine_version.parsed().start_at,
                                 current=execution.state, status=execution.status,
                                 keep=diagrams.MANY_STEPS)


def history_window(asked_from: str | None, total: int,
                   asked_to: str | None = None) -> tuple[int, int]:
    """Seq range of the timeline page: `?from=N` (the page starting there), `?to=N` (the
    page ending there: "earlier history" never repeats a row of the page it came from),
    or the newest HISTORY_PAGE rows."""
    try:
        first = max(1, int(asked_from or ""))
    except ValueError:
        try:
            end = min(total, max(0, int(asked_to or "")))
        except ValueError:
            end = total
        first = max(1, end - HISTORY_PAGE + 1)
        return first, end
    return first, min(total, first + HISTORY_PAGE - 1)


def execution_page(execution, *, asked_from: str | None, can_act: bool,
                   asked_to: str | None = None) -> dict:
    """Everything the execution page shows (docs/explorer.md, top to bottom). However long
    the history, it reads one page of rows, the last steps (for the path in words) and
    aggregates: the moves with their counts and step numbers, and the moves before the
    page (what the diagram showed then, how many steps came before)."""
    machine = execution.machine_version.parsed()
    total = selectors.history_total(execution)
    first, last = history_window(asked_from, total, asked_to)
    found_moves = selectors.moves(execution, before=first)
    path = execution_path(execution, found_moves)
    page_rows = selectors.history_rows(execution, first, last)
    before = selectors.moves_before(found_moves)
    numbers = steps.numbers_from(sum(row["times"] for row in before) + 1,
                                 [row for row in page_rows if row["kind"] in steps.STEP_KINDS])
    last_steps = selectors.last_step_rows(
        execution, steps.MAX_STEPS, through=max((move["last"] for move in found_moves),
                                                default=0))
    steps_total = sum(move["times"] for move in found_moves)
    numbers.update(steps.numbers_from(steps_total - len(last_steps) + 1, last_steps))
    children = selectors.children(execution)
    child_links = {c["parent_token"]: (c["id"], execution_url(c["id"])) for c in children}
    said = timeline.sentences(page_rows, machine, numbers, child_links,
                              state_before(machine, before))
    captions = {s.seq: s.text for s in said}
    shown_steps = steps.build_steps(
        before, page_rows, start_at=machine.start_at,
        context_before=selectors.context_before(execution, first),
        final_status=execution.status if last >= total else None, captions=captions,
        numbers=numbers)
    shown_context = shown_steps[-1]["context"] if shown_steps else execution.context
    changes = shown_steps[-1]["changes"] if shown_steps else steps.context_changes({}, {})
    work = execution.engine_state.get("work") or {}
    waiting_child = child_links.get(work.get("token")) if work.get("kind") == "machine" else None
    actions = engine.available_actions(machine, execution.snapshot()) if can_act else ()
    return {
        "execution": execution, "machine": machine,
        "title": f"{machine.display} {execution.short_id}",
        "status_line": timeline.status_line(
            machine, status=execution.status, state=execution.state,
            timer=execution.engine_state.get("timer"), work=work, error=execution.error,
            result=execution.result, child=waiting_child,
            started=bool(execution.engine_state),
            ended=timeline.ending(machine, last_steps[-1] if last_steps else None),
            timers=execution.engine_state.get("timers") or ()),
        "actions": [(name, timeline.action_label(machine, execution.state, name))
                    for name in actions],
        "can_cancel": can_act and execution.status not in engine.TERMINAL_STATUSES,
        "can_retry": can_act and execution.status == engine.FAILED,
        **drawn(lambda: diagrams.render_svg(machine, path, machine_url=machine_url)),
        "diagram_text": diagrams.describe(machine, path),
        "path_words": path_words(machine, last_steps, numbers),
        "steps": shown_steps,
        "timeline": timeline.collapse(said),
        "history_total": total, "history_first": first, "history_last": last,
        "earlier": first - 1 if first > 1 else None,
        "later": last + 1 if last < total else None,
        "context_lines": context_lines(shown_context, changes),
        "context_step": shown_steps[-1]["n"] if shown_steps else None,
        "children": children, "running_for": running_for(execution),
        "started_by": timeline.who(execution.actor),
        "idle_for": duration((timezone.now() - page_rows[-1]["at"]).total_seconds())
        if page_rows and execution.status in engine.PAUSED_STATUSES else "",
        "result_json": json.dumps(execution.result, indent=2, ensure_ascii=False, default=str),
        "error_text": timeline.error_message(execution.error) if execution.error else "",
        "error_words": timeline.plain_error(machine, execution.error) if execution.error else "",
    }


def state_before(machine: Machine, moves_before) -> str:
    """Where the execution was just before the moves of executions.selectors.moves_before
    (each at its last time, in that order) brought it."""
    state = machine.start_at
    for row in moves_before:
        if row["kind"] == engine.TRANSITION_TAKEN:
            state = row["to_state"] or row["from_state"]
    return state


def running_for(execution) -> str:
    """How long it has lasted, in words true for its status: "took 3 s" (finished),
    "canceled after 2 min", "failed after 24.1 s" (a failed execution is not running; it
    stopped when it last changed), "open for 3 days" (waiting, sleeping or calling),
    "running for 1.2 s"."""
    status = execution.status
    if status == engine.FAILED:
        end = execution.updated_at or timezone.now()
    else:
        end = execution.finished_at or timezone.now()
    lasted = duration(max(0.0, (end - execution.created_at).total_seconds()))
    return {engine.FINISHED: "took {}", engine.CANCELED: "canceled after {}",
            engine.FAILED: "failed after {}", engine.RUNNING: "running for {}"}.get(
        status, "open for {}").format(lasted)


def path_words(machine: Machine, step_rows, numbers: dict[int, int]) -> list[str]:
    """The path as a list of sentences, the diagram's text alternative: its start and its
    last steps (`step_rows`, executions.selectors.last_step_rows)."""
    words = [f"Started in {timeline.state_name(machine, machine.start_at)}"]
    for row in step_rows:
        source = timeline.state_name(machine, row["from_state"])
        name = timeline.transition_name(machine, row["from_state"], row["transition"])
        if row["kind"] == engine.WORK_STARTED:
            words.append(f"Step {numbers[row['seq']]}: {name}, work started in {source}")
        else:
            target = timeline.state_name(machine, row["to_state"] or row["from_state"])
            words.append(f"Step {numbers[row['seq']]}: {name}, {source} to {target}")
    return words


def context_lines(context, changes) -> list[tuple[str, str]]:
    """The context as JSON lines with what changed marked, like dm.js renders it."""
    added, changed = set(changes.get("added", [])), set(changes.get("changed", []))
    removed = changes.get("removed", {})
    items = [(k, v, "ctx-added" if k in added else "ctx-changed" if k in changed else "")
             for k, v in (context or {}).items()]
    items += [(k, v, "ctx-removed") for k, v in removed.items()]
    lines = []
    for i, (key, value, cls) in enumerate(items):
        text = "  " + json.dumps(key) + ": " + json.dumps(
            value, indent=2, ensure_ascii=False, default=str).replace("\n", "\n  ")
        lines.append((text + ("," if i < len(items) - 1 else ""), cls))
    return lines


# Operations ------------------------------------------------------------------------------
def pretty_json(value) -> str:
    """A value as the operators' forms show it to edit: indented JSON."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def impact_diagram(new: Machine, diff: diffs.Diff, plan) -> dict:
    """The version diff (the newer version's diagram, what was added and changed marked)
    with, on each state, how many executions a migration (executions.migrating.Plan)
    would move there (see drawn)."""
    moving: dict[str, int] = {}
    for impact in plan.states:
        if impact.target is not None and impact.count:
            moving[impact.target] = moving.get(impact.target, 0) + impact.count
    return drawn(lambda: diagrams.render_svg(new, machine_url=machine_url,
                                             heat=diagrams.Heat(
                                                 in_state=moving, weighs_edges=False,
                                                 in_state_words="executions a migration "
                                                                "would move here"),
                                             marks=diff.marks()))

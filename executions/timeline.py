"""History in plain words: one sentence per history row, and the execution's status line.

Written for support, product and operations people, not for the machine's author: states
and actions by their labels, who did it, and WHY a branch was taken (the guards recorded
in history). Sentences are small HTML fragments (names in <strong>, values escaped); each
also has a plain `text` form for captions and screen readers. Rows are dicts shaped like
``HistoryEntry.objects.values()``; nothing here queries the database.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from executions import engine
from machines.definition import Machine

BRIEF = 90  # characters of a JSON value shown inline
COLLAPSE_AT = 4  # this many similar rows in a row become one "× N" group
_TAGS = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class Sentence:
    """One history row in words. `dot` is the timeline dot's class (see dm.css)."""

    seq: int
    at: datetime
    kind: str
    dot: str
    html: str
    why: str = ""  # a second, muted line: the reason, the input, the value
    step: int | None = None  # the step number shared with the diagram
    actor: str = ""
    similar: tuple = ()  # what makes rows "the same" for collapsing repeats

    @property
    def text(self) -> str:
        parts = [_TAGS.sub("", self.html)] + ([_TAGS.sub("", self.why)] if self.why else [])
        return html.unescape(" — ".join(parts))


@dataclass(frozen=True)
class Group:
    """Several similar consecutive sentences shown as one line ("alice chose add × 900")."""

    items: tuple[Sentence, ...] = field(default_factory=tuple)

    @property
    def first(self) -> Sentence:
        return self.items[0]

    @property
    def last(self) -> Sentence:
        return self.items[-1]

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def steps(self) -> str:
        numbers = [s.step for s in self.items if s.step]
        return f"steps {numbers[0]}–{numbers[-1]}" if len(numbers) > 1 else ""


# Small helpers ----------------------------------------------------------------------------
def esc(value) -> str:
    return html.escape(str(value), quote=False)


def strong(value) -> str:
    return f"<strong>{esc(value)}</strong>"


def brief(value, limit: int = BRIEF) -> str:
    """A JSON value on one line, cut to `limit` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def humanize(name: str) -> str:
    """An action or transition id as words: "fraud-approve" -> "fraud approve"."""
    return re.sub(r"[-_]+", " ", name).strip() or name


def clock(moment: datetime | float | None) -> str:
    if moment is None:
        return ""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, tz=UTC)
    return moment.astimezone(UTC).strftime("%H:%M:%S").removesuffix(":00")


def duration(seconds: float | None) -> str:
    """1.2 s, 45 s, 3 min, 2 h 5 min, 3 days."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{minutes:.0f} min"
    hours, minutes = divmod(round(minutes), 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def who(actor: str | None) -> str:
    """The actor as a person reads it: users by name, machinery in words."""
    if not actor or actor == "system":
        return "the system"
    if actor == "timer":
        return "the timer"
    if actor.startswith("token:"):
        return f"API token {actor[6:]}"
    if actor.startswith("execution:"):
        return f"parent execution {actor[10:18]}"
    return actor


def inputs(value) -> str:
    """An action input as `key: value, …`; empty for {}."""
    if not value:
        return ""
    if isinstance(value, dict):
        text = ", ".join(f"{key}: {brief(item, 40)}" for key, item in value.items())
        return text if len(text) <= BRIEF else text[: BRIEF - 1] + "…"
    return brief(value)


# Names from the definition -----------------------------------------------------------------
def state_name(machine: Machine, name: str | None) -> str:
    state = machine.states.get(name or "")
    return state.display if state else (name or "?")


def action_label(machine: Machine, state: str | None, action: str) -> str:
    """The label of the first transition of `state` that takes `action`, or the name."""
    found = machine.states.get(state or "")
    for transition in found.transitions if found else ():
        if action in transition.on and transition.label:
            return transition.label
    return humanize(action)


def transition_name(machine: Machine, state: str | None, transition_id: str) -> str:
    found = machine.states.get(state or "")
    for transition in found.transitions if found else ():
        if transition.id == transition_id:
            return transition.label or humanize(transition.id)
    return humanize(transition_id)


def or_list(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


# Why a branch was taken -----------------------------------------------------------------------
def because(guards, transition_id: str, branch: str = "") -> str:
    """The guards recorded with a step, in words: the one that let it through, and the
    earlier ones that said no."""
    parts = []
    for guard in guards or ():
        code = f"<code>{esc(guard.get('when') or guard.get('if') or '')}</code>"
        mine = guard.get("transition") == transition_id
        if "if" in guard:
            parts.append(f"because {code} was true" if guard["result"]
                         else f"otherwise: {code} was false")
        elif mine and guard["result"]:
            parts.append(f"because {code} was true")
        elif not guard["result"]:
            parts.append(f"not {esc(humanize(guard['transition']))}: {code} was false")
    if branch == "else" and not any("otherwise" in p for p in parts):
        parts.append("otherwise")
    return "; ".join(parts)


# One row -----------------------------------------------------------------------------------
def sentence(row: dict, machine: Machine, step: int | None = None,
             children: dict | None = None) -> Sentence:
    """The sentence for one history row. `children` maps a work token to (id, url) of the
    child execution it started, to link it."""
    kind = row["kind"]
    make = _SENTENCES.get(kind, _unknown)
    dot, text, why = make(row, machine, children or {})
    mark = f"{_step_mark(step)} " if step else ""
    similar = (kind, row.get("transition"), row.get("action"), row.get("actor"),
               row.get("from_state"), row.get("to_state"))
    return Sentence(seq=row["seq"], at=row["at"], kind=kind, dot=dot, html=mark + text,
                    why=why, step=step, actor=row.get("actor") or "", similar=similar)


def _step_mark(step: int) -> str:
    from machines.diagrams import step_mark

    return f'<span class="step-no">{esc(step_mark(step))}</span>'


def _started(row, machine, children):
    given = inputs(row.get("input"))
    return ("auto", f"Started by {strong(who(row.get('actor')))} in "
            f"{strong(state_name(machine, machine.start_at))}",
            f"input: {esc(given)}" if given else "with no input")


def _received(row, machine, children):
    label = action_label(machine, row.get("from_state"), row.get("action") or "")
    queued = (row.get("detail") or {}).get("queued")
    text = f"{strong(who(row.get('actor')))} asked for {strong(label)}"
    why = "kept in order: it applies once the outstanding work reports back" if queued else ""
    given = inputs(row.get("input"))
    if given:
        why = f"input: {esc(given)}" + (f" · {why}" if why else "")
    return "action", text, why


def _rejected(row, machine, children):
    detail = row.get("detail") or {}
    label = humanize(row.get("action") or "")
    return ("rejected", f"{strong(who(row.get('actor')))}’s {strong(label)} was rejected",
            esc(detail.get("reason") or "it is not available now"))


def _taken(row, machine, children):
    source, target = row.get("from_state"), row.get("to_state") or row.get("from_state")
    branch = row.get("branch") or ""
    moved = (f"{strong(state_name(machine, source))} → {strong(state_name(machine, target))}"
             if target != source else f"stayed in {strong(state_name(machine, source))}")
    reason = because(row.get("guards"), row.get("transition") or "", branch)
    if row.get("action"):
        label = action_label(machine, source, row["action"])
        given = inputs(row.get("input"))
        where = (f" → {strong(state_name(machine, target))}" if target != source
                 else f" in {strong(state_name(machine, source))}")
        text = f"{strong(who(row.get('actor')))} chose {strong(label)}{where}"
        why = "; ".join(p for p in (f"input: {esc(given)}" if given else "", reason) if p)
        return "action", text, why
    name = transition_name(machine, source, row.get("transition") or "")
    if branch == "success":
        return "success", f"The work succeeded: moved {moved}", reason
    if branch == "error":
        return "error", f"The work failed: moved {moved}", reason
    how = f"automatically (<code>{esc(name)}</code>)"
    if row.get("actor") == "timer":
        how = f"when the timer of <code>{esc(name)}</code> fired"
    text = f"Moved {moved}" if target != source else f"Moved: {moved}"
    return "auto", text, "; ".join(p for p in (how, reason) if p)


def _timer_armed(row, machine, children):
    detail = row.get("detail") or {}
    due, at = detail.get("due"), row["at"]
    wait = duration(due - at.timestamp()) if due is not None else ""
    name = transition_name(machine, row.get("from_state") or _state_of(machine, row),
                           row.get("transition") or "")
    purpose = detail.get("purpose")
    if purpose == "timeout":
        text = f"Time limit set: the work must answer by {strong(clock(due))}"
    else:
        text = f"Sleeping until {strong(clock(due))} ({esc(name)})"
    return "timer", text, f"in {wait}" if wait else ""


def _retry_scheduled(row, machine, children):
    detail = row.get("detail") or {}
    due = detail.get("due")
    attempt = detail.get("attempt")
    of = _attempts(machine, row)
    wait = duration(due - row["at"].timestamp()) if due is not None else ""
    return ("timer", f"Will try again at {strong(clock(due))} (attempt {attempt}{of})",
            f"in {wait}" if wait else "")


def _timer_fired(row, machine, children):
    purpose = (row.get("detail") or {}).get("purpose")
    name = transition_name(machine, _state_of(machine, row), row.get("transition") or "")
    texts = {"timeout": "The time limit ran out before the work answered",
             "retry": "Time to try again"}
    return "timer", texts.get(purpose, f"The timer of {strong(name)} fired"), ""


def _timer_canceled(row, machine, children):
    purpose = (row.get("detail") or {}).get("purpose")
    what = {"timeout": "time limit", "retry": "retry timer"}.get(purpose, "timer")
    return "timer", f"The {what} was canceled", "no longer needed"


def _work_started(row, machine, children):
    detail = row.get("detail") or {}
    kind, attempt = detail.get("kind"), detail.get("attempt") or 1
    of = _attempts(machine, row)
    tries = f" (attempt {attempt}{of})" if attempt > 1 or of else ""
    name = transition_name(machine, row.get("from_state"), row.get("transition") or "")
    if kind == "machine":
        child = children.get(detail.get("token"))
        machine_id = detail.get("machine") or "another machine"
        link = (f'<a href="{esc(child[1])}">{esc(str(child[0])[:8])}</a>' if child
                else "")
        text = f"Started a {strong(machine_id)} execution {link}".rstrip()
        return "invoke", text, esc(f"input: {inputs(detail.get('work_input'))}")
    if kind == "trigger":
        target = str(detail.get("execution") or "")[:8]
        return ("invoke", f"Sent {strong(humanize(detail.get('action') or ''))} to execution "
                f"{esc(target)}", "")
    reason = because(row.get("guards"), row.get("transition") or "")
    if row.get("action"):
        label = action_label(machine, row.get("from_state"), row["action"])
        chose = f"{esc(who(row.get('actor')))} chose {esc(label)}"
        reason = f"{chose}; {reason}" if reason else chose
    return "invoke", f"Calling {strong(_call_name(machine, row) or name)}{tries}", reason


def _work_done(row, machine, children):
    seconds = row["duration_ms"] / 1000 if row.get("duration_ms") is not None else None
    work = row.get("work") or {}
    if work.get("kind") == "machine":
        what = f"The {strong(work.get('machine') or 'child')} execution"
        verbs = ("finished", "did not finish")
    elif work.get("kind") == "trigger":
        what, verbs = "Sending the action", ("succeeded", "failed")
    else:
        name = _call_name(machine, {**row, "from_state": row.get("state")})
        what = f"The call to {strong(name)}" if name else "The work"
        verbs = ("succeeded", "failed")
    if row["kind"] == engine.WORK_SUCCEEDED:
        took = f" in {duration(seconds)}" if seconds is not None else ""
        return ("success", f"{what} {verbs[0]}{took}",
                esc(f"output: {brief(row.get('output'))}"))
    error = row.get("error") or {}
    message = error.get("message") if isinstance(error, dict) else str(error)
    after = f" after {duration(seconds)}" if seconds is not None else ""
    return "error", f"{what} {verbs[1]}{after}", esc(message or "")


def _finished(row, machine, children):
    state = state_name(machine, _state_of(machine, row))
    return ("finished", f"Finished in {strong(state)}",
            esc(f"returned {brief(row.get('output'))}"))


def _failed(row, machine, children):
    error = row.get("error") or {}
    state = error.get("state") if isinstance(error, dict) else None
    where = f" in {strong(state_name(machine, state))}" if state else ""
    return "failed", f"Failed{where}", esc(error_message(error))


def _canceled(row, machine, children):
    reason = (row.get("detail") or {}).get("reason")
    return ("failed", f"Canceled by {strong(who(row.get('actor')))}",
            esc(f"reason: {reason}") if reason else "")


def _retried(row, machine, children):
    error = (row.get("detail") or {}).get("error") or {}
    return ("action", f"Retried by {strong(who(row.get('actor')))}",
            esc(f"it had failed: {error_message(error)}") if error else "")


def _stuck(row, machine, children):
    state = state_name(machine, _state_of(machine, row))
    return ("failed", f"Stuck in {strong(state)}",
            "no transition can be taken and it accepts no actions")


def _unknown(row, machine, children):
    return "auto", esc(humanize(row["kind"])), ""


_SENTENCES = {
    engine.STARTED: _started, engine.ACTION_RECEIVED: _received,
    engine.ACTION_REJECTED: _rejected, engine.TRANSITION_TAKEN: _taken,
    engine.TIMER_ARMED: _timer_armed, engine.TIMER_FIRED: _timer_fired,
    engine.TIMER_CANCELED: _timer_canceled, engine.WORK_STARTED: _work_started,
    engine.WORK_SUCCEEDED: _work_done, engine.WORK_FAILED: _work_done,
    engine.WORK_RETRY_SCHEDULED: _retry_scheduled, engine.EXECUTION_FINISHED: _finished,
    engine.EXECUTION_FAILED: _failed, engine.EXECUTION_CANCELED: _canceled,
    engine.EXECUTION_RETRIED: _retried, engine.EXECUTION_STUCK: _stuck,
}


def _state_of(machine: Machine, row: dict) -> str | None:
    """Rows without from_state (timers, finish): the state that owns the transition, or
    the row's own `state` key the view adds while walking history."""
    if row.get("state"):
        return row["state"]
    for state in machine.states.values():
        if any(t.id == row.get("transition") for t in state.transitions):
            return state.name
    return None


def _transition(machine: Machine, row: dict):
    state = machine.states.get(row.get("from_state") or _state_of(machine, row) or "")
    for transition in state.transitions if state else ():
        if transition.id == row.get("transition"):
            return transition
    return None


def _attempts(machine: Machine, row: dict) -> str:
    transition = _transition(machine, row)
    retry = transition.invoke.retry if transition and transition.invoke else None
    return f" of {retry.max_attempts}" if retry and retry.max_attempts > 1 else ""


def _call_name(machine: Machine, row: dict) -> str:
    """"the courier service" style name of a call: its label, or the io operation."""
    transition = _transition(machine, row)
    if transition is None or transition.invoke is None or transition.invoke.call is None:
        return ""
    if transition.label:
        return transition.label
    found = re.search(r"""\bio\(\s*['"]([\w.\-]+)""", transition.invoke.call.source or "")
    return found.group(1) if found else humanize(transition.id)


def error_message(error) -> str:
    if not isinstance(error, dict):
        return str(error or "")
    message = error.get("message") or error.get("type") or "unknown error"
    cause = error.get("cause")
    if isinstance(cause, dict) and cause.get("message") and cause["message"] not in message:
        message += f" ({cause['message']})"
    return message


# Many rows -----------------------------------------------------------------------------------
def sentences(rows, machine: Machine, steps: dict[int, int] | None = None,
              children: dict | None = None, state: str | None = None) -> list[Sentence]:
    """Sentences for rows in seq order, `state` being where the execution was before the
    first of them. An action received and then taken at once reads as one sentence (the
    transition's), so the receipt is left out."""
    rows = list(rows)
    steps = steps or {}
    out, works = [], {}  # work token -> its work_started detail
    for i, row in enumerate(rows):
        if row["kind"] == engine.STARTED:
            state = machine.start_at
        row = {**row, "state": state}
        detail = row.get("detail") or {}
        if row["kind"] == engine.WORK_STARTED:
            works[detail.get("token")] = detail
        elif row["kind"] in (engine.WORK_SUCCEEDED, engine.WORK_FAILED):
            row["work"] = works.get(detail.get("token"), {})
        if row["kind"] == engine.TRANSITION_TAKEN:
            state = row.get("to_state") or state
            row["state"] = state
        if row["kind"] == engine.ACTION_RECEIVED and not (row.get("detail") or {}).get("queued"):
            following = rows[i + 1] if i + 1 < len(rows) else None
            if following and following.get("action") == row.get("action") and following[
                    "kind"] in (engine.TRANSITION_TAKEN, engine.WORK_STARTED):
                continue
        out.append(sentence(row, machine, steps.get(row["seq"]), children))
    return out


def collapse(items: list[Sentence], at_least: int = COLLAPSE_AT) -> list:
    """Runs of `at_least` or more similar sentences in a row become one Group."""
    out, run = [], []

    def flush():
        if len(run) >= at_least:
            out.append(Group(tuple(run)))
        else:
            out.extend(run)
        run.clear()

    for item in items:
        if run and item.similar != run[-1].similar:
            flush()
        run.append(item)
    flush()
    return out


# The status line ---------------------------------------------------------------------------
def status_line(machine: Machine, *, status: str, state: str, timer: dict | None = None,
                work: dict | None = None, error=None, result=None,
                child: tuple | None = None, started: bool = True) -> str:
    """ONE sentence saying where the execution is and what it waits for (HTML fragment).
    `child` is (id, url) of the execution a machine invoke waits for; `started` is False
    while an async start waits for a worker."""
    here = strong(state_name(machine, state))
    found = machine.states.get(state)
    actions = found.action_names if found else ()
    choices = or_list([strong(action_label(machine, state, a)) for a in actions])
    if status == engine.WAITING:
        if not actions:
            return f"Stuck in {here}: no transition can be taken and it accepts no actions."
        return f"Waiting for: {choices}, in {here}."
    if status == engine.SLEEPING:
        timer = timer or {}
        until = strong(clock(timer.get("due")))
        work_row = {"transition": (work or {}).get("transition") or timer.get("transition"),
                    "from_state": state}
        if timer.get("purpose") == "retry":
            name = _call_name(machine, work_row) or "the work"
            attempt = (work or {}).get("attempt", 1) + 1
            return (f"Sleeping until {until}, then trying {strong(name)} again "
                    f"(attempt {attempt}{_attempts(machine, work_row)}), in {here}.")
        name = transition_name(machine, state, timer.get("transition") or "")
        unless = f" Or someone chooses {choices}." if actions else ""
        return f"Sleeping until {until} ({esc(name)}), in {here}.{unless}"
    if status == engine.INVOKING:
        work = work or {}
        work_row = {"transition": work.get("transition"), "from_state": state}
        if work.get("kind") == "machine":
            transition = _transition(machine, work_row)
            machine_id = transition.invoke.machine_id if transition else "child"
            link = (f' <a href="{esc(child[1])}">{esc(str(child[0])[:8])}</a>' if child
                    else "")
            return f"Waiting for {strong(machine_id)} execution{link} to finish, in {here}."
        if work.get("kind") == "trigger":
            return f"Sending an action to another execution, in {here}."
        name = _call_name(machine, work_row) or "a service"
        attempt = work.get("attempt", 1)
        of = _attempts(machine, work_row)
        tries = f" (attempt {attempt}{of})" if of else ""
        return f"Calling {strong(name)}{tries}, in {here}."
    if status == engine.FAILED:
        where = state_name(machine, (error or {}).get("state") or state)
        return f"Failed in {strong(where)}: {esc(error_message(error))}."
    if status == engine.FINISHED:
        return f"Finished: {here}, returning <code>{esc(brief(result))}</code>."
    if status == engine.CANCELED:
        return f"Canceled in {here}."
    if not started:
        return f"Queued: a worker will start it in {here}."
    return f"Running: moving on from {here}."

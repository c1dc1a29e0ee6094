"""History in plain words: one sentence per history row, and the execution's status line.

Written for support, product and operations people, not for the machine's author: states
and actions by their labels, who did it, and WHY a branch was taken (the guards recorded
in history). Sentences are small HTML fragments built with ``format_html`` (names in
<strong>, everything from a definition, an input or an actor escaped); what a sentence
maker returns as a plain ``str`` is text and is escaped too. Each sentence also has a
plain `text` form for captions and screen readers. Rows are dicts shaped like
``HistoryEntry.objects.values()``; nothing here queries the database.
"""
from __future__ import annotations

import ast
import html
import json
import re
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, datetime

from django.utils import timezone
from django.utils.html import conditional_escape, format_html, format_html_join
from django.utils.safestring import SafeString

from executions import engine, operations
from explorer.templatetags.times import as_datetime, when_html
from machines.definition import Expr, Machine
from machines.diagrams import step_mark
from machines.language import io_operation
from machines.words import duration, moment

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
    html: SafeString
    why: SafeString = SafeString("")  # a second, muted line: the reason, the input, the value
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
def strong(value) -> SafeString:
    return format_html("<strong>{}</strong>", value)


def code(value) -> SafeString:
    return format_html("<code>{}</code>", value)


def joined(separator: str, parts) -> SafeString:
    """The non-empty parts (HTML fragments or text, escaped) with `separator` between."""
    return format_html_join(separator, "{}", ((part,) for part in parts if part))


def brief(value, limit: int = BRIEF) -> str:
    """A JSON value on one line, cut to `limit` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def humanize(name: str) -> str:
    """An action or transition id as words: "fraud-approve" -> "fraud approve"."""
    return re.sub(r"[-_]+", " ", name).strip() or name


def clock(at: datetime | float | None) -> str:
    """A moment with its date and zone, in the reader's zone (the active one):
    "Dec 31, 02:01:23 UTC". Timers store epoch seconds."""
    if at is None:
        return ""
    found = as_datetime(at)
    if found is None:  # a time stored before times were checked may be past a datetime
        return f"{at:g} (out of range)" if isinstance(at, float) else "?"
    return moment(found, timezone.get_current_timezone(), seconds=True)


def who(actor: str | None) -> str:
    """The actor as a person reads it: users by name, machinery in words. Users are
    written `user:alice` (accounts.roles.actor_of); older rows say plain `alice`."""
    if not actor or actor == "system":
        return "the system"
    if actor.startswith("user:"):
        return actor[5:]
    if actor == "timer":
        return "the timer"
    if actor.startswith("token:"):
        return f"API token {actor[6:]}"
    if actor.startswith("execution:"):
        return f"parent execution {actor[10:18]}"
    if actor.startswith("schedule:"):
        return f"the schedule {actor[9:]}"
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


def or_list(words: list) -> SafeString:
    """"a, b or c", each word escaped unless it is already an HTML fragment."""
    if len(words) <= 1:
        return conditional_escape(words[0]) if words else SafeString("")
    return format_html("{} or {}", joined(", ", words[:-1]), words[-1])


# Why a branch was taken -----------------------------------------------------------------------
def because(guards, transition_id: str, branch: str = "") -> SafeString:
    """The guards recorded with a step, in words: the one that let it through, and the
    earlier ones that said no."""
    parts = []
    for guard in guards or ():
        guard_code = code(guard.get("when") or guard.get("if") or "")
        mine = guard.get("transition") == transition_id
        if "if" in guard:
            parts.append(format_html("because {} was true", guard_code) if guard["result"]
                         else format_html("otherwise: {} was false", guard_code))
        elif mine and guard["result"]:
            parts.append(format_html("because {} was true", guard_code))
        elif not guard["result"]:
            parts.append(format_html("not {}: {} was false", humanize(guard["transition"]),
                                     guard_code))
    if branch == "else" and not any("otherwise" in p for p in parts):
        parts.append("otherwise")
    return joined("; ", parts)


# One row -----------------------------------------------------------------------------------
def sentence(row: dict, machine: Machine, step: int | None = None,
             children: dict | None = None) -> Sentence:
    """The sentence for one history row. `children` maps a work token to (id, url) of the
    child execution it started, to link it."""
    kind = row["kind"]
    make = _SENTENCES.get(kind, _unknown)
    dot, text, why = make(row, machine, children or {})
    mark = (format_html('<span class="step-no" title="step {}"><span class="visually-hidden">'
                        'Step </span>{}<span class="visually-hidden">:</span></span> ',
                        step, step_mark(step)) if step else "")
    similar = (kind, row.get("transition"), row.get("action"), row.get("actor"),
               row.get("from_state"), row.get("to_state"))
    return Sentence(seq=row["seq"], at=row["at"], kind=kind, dot=dot,
                    html=format_html("{}{}", mark, text), why=conditional_escape(why),
                    step=step, actor=row.get("actor") or "", similar=similar)


# Each maker returns (dot class, the sentence, the why line): HTML fragments or plain text.
def _started(row, machine, children):
    given = inputs(row.get("input"))
    return ("auto", format_html("Started by {} in {}", strong(who(row.get("actor"))),
                                strong(state_name(machine, machine.start_at))),
            format_html("input: {}", given) if given else "with no input")


def _received(row, machine, children):
    label = action_label(machine, row.get("from_state"), row.get("action") or "")
    queued = (row.get("detail") or {}).get("queued")
    text = format_html("{} asked for {}", strong(who(row.get("actor"))), strong(label))
    why = "kept in order: it applies once the outstanding work reports back" if queued else ""
    given = inputs(row.get("input"))
    if given:
        why = joined(" · ", (format_html("input: {}", given), why))
    return "action", text, why


def _rejected(row, machine, children):
    detail = row.get("detail") or {}
    label = humanize(row.get("action") or "")
    why = detail.get("reason") or "it is not available now"
    if isinstance(detail.get("error"), dict):  # its own transition failed: nothing changed
        why = format_html("its transition failed, so nothing changed: {}",
                          plain_error(machine, detail["error"]))
    return ("rejected", format_html("{}’s {} was rejected", strong(who(row.get("actor"))),
                                    strong(label)), why)


def _taken(row, machine, children):
    source, target = row.get("from_state"), row.get("to_state") or row.get("from_state")
    branch = row.get("branch") or ""
    moved = (format_html("{} → {}", strong(state_name(machine, source)),
                         strong(state_name(machine, target)))
             if target != source else format_html("stayed in {}",
                                                   strong(state_name(machine, source))))
    reason = because(row.get("guards"), row.get("transition") or "", branch)
    if row.get("action"):
        label = action_label(machine, source, row["action"])
        given = inputs(row.get("input"))
        where = (format_html(" → {}", strong(state_name(machine, target))) if target != source
                 else format_html(" in {}", strong(state_name(machine, source))))
        text = format_html("{} chose {}{}", strong(who(row.get("actor"))), strong(label),
                           where)
        return "action", text, joined("; ", (format_html("input: {}", given) if given else "",
                                             reason))
    name = transition_name(machine, source, row.get("transition") or "")
    transition = _transition(machine, {"transition": row.get("transition"), "from_state": source})
    invoke = transition.invoke if transition else None
    if branch == "success" or branch.startswith("error"):  # error, error-1, ... by type
        failed = branch != "success"
        if invoke and invoke.kind == "machine":
            done = (("The {} execution was started", "The {} execution could not be started")
                    if invoke.is_async else
                    ("The {} execution finished", "The {} execution did not finish"))
            what = format_html(done[failed], strong(invoke.machine_id))
        elif invoke and invoke.kind == "trigger":
            what = "Sending the action failed" if failed else "The action was sent"
        else:
            what = "The work failed" if failed else "The work succeeded"
        caught = (row.get("detail") or {}).get("caught")
        if caught:
            what = format_html("{} ({})", what, code(caught))
        said = format_html("{}: moved {}" if target != source else "{}: {}", what, moved)
        return ("error" if failed else "success"), said, reason
    how = format_html("automatically ({})", code(name))
    if row.get("actor") == "timer" and transition is not None and (
            transition.wait is not None or transition.after is not None):
        how = format_html("when the timer of {} fired", code(name))
    text = format_html("Moved {}" if target != source else "Moved: {}", moved)
    return "auto", text, joined("; ", (how, reason))


def _timer_armed(row, machine, children):
    detail = row.get("detail") or {}
    due, at = detail.get("due"), row["at"]
    wait = duration(due - at.timestamp()) if due is not None else ""
    name = transition_name(machine, row.get("from_state") or _state_of(machine, row),
                           row.get("transition") or "")
    purpose = detail.get("purpose")
    if purpose == "timeout":
        text = format_html("Time limit set: the work must answer by {}", strong(clock(due)))
    elif purpose == "after":  # a state timer: actions stay available, staying keeps it
        here = state_name(machine, row.get("from_state") or _state_of(machine, row))
        text = format_html("Timer {} set: it fires at {} unless the execution leaves {} "
                           "first", strong(name), strong(clock(due)), strong(here))
        written = detail.get("after")
        return "timer", text, (f"in {wait} ({written})" if written and wait else
                               f"in {wait}" if wait else "") + "; moves that stay in the "\
            "state do not restart it"
    else:
        text = format_html("Sleeping until {} ({})", strong(clock(due)), name)
    return "timer", text, f"in {wait}" if wait else ""


def _retry_scheduled(row, machine, children):
    detail = row.get("detail") or {}
    due = detail.get("due")
    attempt = detail.get("attempt")
    of = _attempts(machine, row)
    wait = duration(due - row["at"].timestamp()) if due is not None else ""
    error_type = detail.get("error_type")  # set when the policy that matched names types
    after = format_html(" after {}", code(error_type)) if error_type else ""
    return ("timer", format_html("Will try again at {} (attempt {}{}){}", strong(clock(due)),
                                 attempt, of, after),
            f"in {wait}" if wait else "")


def _timer_fired(row, machine, children):
    purpose = (row.get("detail") or {}).get("purpose")
    name = transition_name(machine, _state_of(machine, row), row.get("transition") or "")
    texts = {"timeout": "The time limit ran out before the work answered",
             "retry": "Time to try again"}
    interrupted = (row.get("detail") or {}).get("interrupted")
    why = f"the {_WORK_WORDS.get(interrupted, 'work')} in progress was abandoned" \
        if interrupted else ""
    return "timer", texts.get(purpose) or format_html("The timer of {} fired", strong(name)), why


_WORK_WORDS = {"call": "call", "machine": "child execution", "trigger": "action sent"}


def _timer_canceled(row, machine, children):
    purpose = (row.get("detail") or {}).get("purpose")
    if purpose == "after":
        name = transition_name(machine, _state_of(machine, row), row.get("transition") or "")
        return ("timer", format_html("The timer {} was canceled", strong(name)),
                "the execution left the state, or ended")
    what = {"timeout": "time limit", "retry": "retry timer"}.get(purpose, "timer")
    return "timer", f"The {what} was canceled", "no longer needed"


def _work_started(row, machine, children):
    detail = row.get("detail") or {}
    kind, attempt = detail.get("kind"), detail.get("attempt") or 1
    if kind in GROUP_KINDS:
        return _group_started(row, machine)
    of = _attempts(machine, row)
    tries = f" (attempt {attempt}{of})" if attempt > 1 or of else ""
    name = transition_name(machine, row.get("from_state"), row.get("transition") or "")
    if kind == "machine":
        child = children.get(detail.get("token"))
        machine_id = detail.get("machine") or "another machine"
        text = format_html("Started a new {} execution", strong(machine_id))
        if child:
            text = format_html('{} <a href="{}">{}</a>', text, child[1], str(child[0])[:8])
        transition = _transition(machine, row)
        waits = not (transition and transition.invoke and transition.invoke.is_async)
        text = format_html("{}{}", text, ", and waits for it to finish" if waits
                           else " that runs on its own")
        given = inputs(detail.get("work_input"))
        return "invoke", text, f"input: {given}" if given else "with no input"
    if kind == "trigger":
        target = str(detail.get("execution") or "")[:8]
        return ("invoke", format_html("Sent {} to execution {}",
                                      strong(humanize(detail.get("action") or "")), target), "")
    reason = because(row.get("guards"), row.get("transition") or "")
    if row.get("action"):
        label = action_label(machine, row.get("from_state"), row["action"])
        reason = joined("; ", (format_html("{} chose {}", who(row.get("actor")), label),
                               reason))
    return "invoke", format_html("Calling {}{}", strong(_call_name(machine, row) or name),
                                 tries), reason


def _work_done(row, machine, children):
    seconds = row["duration_ms"] / 1000 if row.get("duration_ms") is not None else None
    work = row.get("work") or {}
    succeeded = row["kind"] == engine.WORK_SUCCEEDED
    error = row.get("error") or {}
    message = error_message(error)
    transition = _transition(machine, {"transition": work.get("transition") or row.get(
        "transition"), "from_state": work.get("from_state") or row.get("state")})
    is_async = bool(transition and transition.invoke and transition.invoke.is_async)
    if work.get("kind") in GROUP_KINDS:
        return _group_done(row, work, succeeded, message)
    took = f" in {duration(seconds)}" if seconds is not None else ""
    after = f" after {duration(seconds)}" if seconds is not None else ""
    if work.get("kind") == "machine":
        what = strong(work.get("machine") or "child")
        child = children.get(work.get("token"))
        link = (format_html(' <a href="{}">{}</a>', child[1], str(child[0])[:8]) if child
                else "")
        if is_async:  # the work was starting it: it runs on its own, not finished
            if succeeded:
                return ("success", format_html("The {} execution{} was started{}; it runs on "
                                               "its own", what, link, took), "")
            return ("error", format_html("The {} execution could not be started{}", what,
                                         after), message)
        if succeeded:
            return ("success", format_html("The {} execution{} finished", what, link),
                    f"returned {brief(row.get('output'))}")
        ended = {"child_canceled": "was canceled", "child_failed": "failed"}.get(
            error.get("type") if isinstance(error, dict) else "", "did not finish")
        return "error", format_html("The {} execution{} {}", what, link, ended), message
    if work.get("kind") == "trigger":
        action = strong(humanize(work.get("action") or ""))
        target = str(work.get("execution") or "")[:8]
        output = row.get("output") if isinstance(row.get("output"), dict) else {}
        if not succeeded:
            return "error", format_html("Sending {} to execution {} failed", action,
                                        target), message
        if output.get("accepted") is False:
            return ("error", format_html("Execution {} did not take {}", target, action),
                    output.get("reason") or "")
        if is_async:
            return "success", format_html("{} was sent to execution {}", action, target), ""
        return ("success", format_html("Execution {} took {}", target, action),
                format_html("it is now {} in {}", output.get("status") or "?",
                            output.get("state") or "?") if output.get("status") else "")
    name = _call_name(machine, {**row, "from_state": row.get("state")})
    what = format_html("The call to {}", strong(name)) if name else "The work"
    if succeeded and row.get("not_ok"):  # it answered, but its success check said no
        return ("error", format_html("{} answered{}, but not with a success", what, took),
                format_html("{} was false for output: {}", code(_ok_if(transition)),
                            brief(row.get("output"))))
    if succeeded:
        return ("success", format_html("{} succeeded{}", what, took),
                f"output: {brief(row.get('output'))}")
    return "error", format_html("{} failed{}", what, after), message


def _finished(row, machine, children):
    state = state_name(machine, _state_of(machine, row))
    return ("finished", format_html("Finished in {}", strong(state)),
            f"returned {brief(row.get('output'))}")


def _failed(row, machine, children):
    error = row.get("error") or {}
    state = error.get("state") if isinstance(error, dict) else None
    where = format_html(" in {}", strong(state_name(machine, state))) if state else ""
    return "failed", format_html("Failed{}", where), plain_error(machine, error)


def _canceled(row, machine, children):
    reason = (row.get("detail") or {}).get("reason")
    return ("failed", format_html("Canceled by {}", strong(who(row.get("actor")))),
            f"reason: {reason}" if reason else "")


def _retried(row, machine, children):
    detail = row.get("detail") or {}
    error = detail.get("error") or {}
    return ("action", format_html("Retried by {}", strong(who(row.get("actor")))),
            _why(detail, format_html("it had failed: {}", plain_error(machine, error))
                 if error else ""))


def _stuck(row, machine, children):
    state = state_name(machine, _state_of(machine, row))
    return ("failed", format_html("Stuck in {}", strong(state)),
            "no transition can be taken and it accepts no actions")


# parallel and map ----------------------------------------------------------------------------
GROUP_KINDS = ("parallel", "map")
JOIN_WORDS = {"all": "all must finish", "any": "the first to finish is enough"}
ON_FAILURE_WORDS = {"fail_fast": "the first failure stops the rest",
                    "collect": "failures are collected while the others run on"}


def _branches(kind: str | None, count: int) -> str:
    noun = "item" if kind == "map" else "branch"
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun == "branch" else "s")


def _joins(detail: dict) -> str:
    join = detail.get("join", "all")
    said = JOIN_WORDS.get(join) if isinstance(join, str) else f"{join} must finish"
    return "; ".join(filter(None, (said, ON_FAILURE_WORDS.get(detail.get("on_failure", "")))))


def _group_started(row, machine):
    """ "Started 3 branches together: identity, sanctions or address" and how they join."""
    detail = row.get("detail") or {}
    keys = detail.get("branches") or []
    name = transition_name(machine, row.get("from_state"), row.get("transition") or "")
    name = name[:1].upper() + name[1:]
    cap = detail.get("max_concurrency")
    if detail.get("kind") == "map":
        transition = _transition(machine, row)
        group = transition.invoke.group if transition and transition.invoke else None
        child = strong(group.machine_id if group else "a machine")
        at_once = f", {cap} at a time" if cap and cap < len(keys) else ""
        text = format_html("{}: started {} for each of {}{}", strong(name), child,
                           _branches("map", len(keys)), at_once)
    else:
        text = format_html("{}: started {} together: {}", strong(name),
                           _branches("parallel", len(keys)),
                           joined(", ", [strong(key) for key in keys]))
    return "invoke", text, _joins(detail)


def _branch_ended(row, machine, children):
    """ "identity finished: 2 of 3 branches done" with a link to the child."""
    detail = row.get("detail") or {}
    key, total = str(detail.get("branch", "?")), detail.get("total") or 0
    finished, failed = detail.get("finished", 0), detail.get("failed", 0)
    child = children.get(f"{(detail.get('token') or '')}/{key}")
    link = format_html(' <a href="{}">{}</a>', child[1], str(child[0])[:8]) if child else ""
    kind = _group_kind(machine, row)
    label = f"item {key}" if kind == "map" else key
    ok = detail.get("status") == "finished"
    progress = f"{finished} of {total} done" + (f", {failed} failed" if failed else "")
    text = format_html("{}{} {}: {}", strong(label), link, "finished" if ok else "failed",
                       progress)
    why = (f"returned {brief(row.get('output'))}" if ok else error_message(row.get("error")))
    started = [f"item {key}" if kind == "map" else str(key)
               for key in detail.get("started") or ()]
    if started:
        why = joined("; ", [why, f"started {', '.join(started)} next"])
    return ("success" if ok else "error"), text, why


def _group_kind(machine: Machine, row: dict) -> str | None:
    transition = _transition(machine, row)
    return transition.invoke.kind if transition and transition.invoke else None


def _group_done(row, work, succeeded, message):
    """How the join ended: met (and what it canceled) or failed."""
    detail = row.get("detail") or {}
    total = len(work.get("branches") or [])
    canceled = detail.get("canceled") or []
    stopped = f"stopped {', '.join(map(str, canceled))}" if canceled else ""
    if succeeded:
        return ("success", format_html("The join was met: {} of {} ended",
                                       total - len(canceled), _branches(work.get("kind"), total)),
                joined("; ", [stopped, f"output: {brief(row.get('output'))}"]))
    return "error", SafeString("The join failed"), joined("; ", [message, stopped])


def _group_status(machine: Machine, work: dict, here) -> SafeString:
    """ "Waiting in Checking for Run checks: 1 of 3 branches done, 2 running." """
    branches = work.get("branches") or []
    counts = {status: sum(1 for b in branches if b.get("status") == status)
              for status in ("finished", "failed", "running", "pending")}
    name = transition_name(machine, work.get("state"), work.get("transition") or "")
    parts = [f"{counts['finished']} of {_branches(work.get('kind'), len(branches))} done"]
    parts += [f"{counts[status]} {status}" for status in ("failed", "running", "pending")
              if counts[status]]
    return format_html("Waiting in {} for {}: {}.", here, strong(name), ", ".join(parts))
def _why(detail: dict, *more) -> SafeString:
    """An operator's reason, then whatever else the row says."""
    reason = detail.get("reason")
    return joined(" · ", (f"reason: {reason}" if reason else "", *more))


def _context_edited(row, machine, children):
    detail = row.get("detail") or {}
    changed = detail.get("changed") or []
    return ("action", format_html("{} edited the context", strong(who(row.get("actor")))),
            _why(detail, f"changed: {', '.join(changed)}" if changed else "nothing changed"))


def _input_edited(row, machine, children):
    detail = row.get("detail") or {}
    given = inputs(row.get("input"))
    return ("action", format_html("{} edited the start input", strong(who(row.get("actor")))),
            _why(detail, format_html("input: {}", given) if given else "input: none"))


def _dropped(detail: dict) -> str:
    dropped = detail.get("dropped") or []
    return f"dropped {' and '.join(dropped)}" if dropped else ""


def _moved(row, machine, children):
    detail = row.get("detail") or {}
    return ("action", format_html("{} moved it from {} to {}", strong(who(row.get("actor"))),
                                  strong(state_name(machine, row.get("from_state"))),
                                  strong(state_name(machine, row.get("to_state")))),
            _why(detail, _dropped(detail)))


def _migrated(row, machine, children):
    detail = row.get("detail") or {}
    return ("action", format_html(
        "{} migrated it from version {} to version {}, in {}", strong(who(row.get("actor"))),
        detail.get("from_version", "?"), detail.get("to_version", "?"),
        strong(state_name(machine, row.get("to_state")))), _why(detail, _dropped(detail)))


def _unknown(row, machine, children):
    return "auto", humanize(row["kind"]), ""


_SENTENCES = {
    engine.STARTED: _started, engine.ACTION_RECEIVED: _received,
    engine.ACTION_REJECTED: _rejected, engine.TRANSITION_TAKEN: _taken,
    engine.TIMER_ARMED: _timer_armed, engine.TIMER_FIRED: _timer_fired,
    engine.TIMER_CANCELED: _timer_canceled, engine.WORK_STARTED: _work_started,
    engine.WORK_SUCCEEDED: _work_done, engine.WORK_FAILED: _work_done,
    engine.WORK_RETRY_SCHEDULED: _retry_scheduled, engine.EXECUTION_FINISHED: _finished,
    engine.EXECUTION_FAILED: _failed, engine.EXECUTION_CANCELED: _canceled,
    engine.EXECUTION_RETRIED: _retried, engine.EXECUTION_STUCK: _stuck,
    engine.BRANCH_ENDED: _branch_ended,
    operations.CONTEXT_EDITED: _context_edited, operations.INPUT_EDITED: _input_edited,
    operations.EXECUTION_MOVED: _moved, operations.EXECUTION_MIGRATED: _migrated,
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


def _ok_if(transition) -> str:
    ok_if = transition.invoke.ok_if if transition and transition.invoke else None
    return ok_if.brief() if ok_if else "its success check"


def _call_name(machine: Machine, row: dict) -> str:
    """"the courier service" style name of a call: its label, or the io operation."""
    transition = _transition(machine, row)
    if transition is None or transition.invoke is None or transition.invoke.call is None:
        return ""
    if transition.label:
        return transition.label
    return io_operation(transition.invoke.call.source) or humanize(transition.id)


def error_message(error) -> str:
    if not isinstance(error, dict):
        return str(error or "")
    message = error.get("message") or error.get("type") or "unknown error"
    cause = error.get("cause")
    if isinstance(cause, dict) and cause.get("message") and cause["message"] not in message:
        message += f" ({cause['message']})"
    return message


# Errors in plain words -----------------------------------------------------------------------
_PARTS = (  # the end of an expression's path -> what it is, in words
    (re.compile(r"\.assign\.([^.\[]+)$"), "The update of {}"),
    (re.compile(r"\.when$"), "The condition"),
    (re.compile(r"\.if$"), "The decision"),
    (re.compile(r"\.invoke\.call$"), "The call"),
    (re.compile(r"\.invoke\.input$"), "The input it sends"),
    (re.compile(r"\.invoke\.ok_if$"), "The success check"),
    (re.compile(r"\.invoke\.execution$"), "The target execution"),
    (re.compile(r"\.wait\.(seconds|until)$"), "The wait"),
    (re.compile(r"\.return$"), "The result"),
    (re.compile(r"^context$"), "The initial context"),
)
_WHERE = {"input": "the input", "ctx": "the context", "output": "the work's output"}
_PROBLEMS = {
    "ZeroDivisionError": "divided by zero",
    "IndexError": "read past the end of a list",
    "TypeError": "used a value of the wrong type",
    "ValueError": "got a value it cannot use",
    "AttributeError": "used something the value does not have",
    "NameError": "used a name that does not exist",
}


def expression_source(machine: Machine, path: str | None) -> str | None:
    """The source of the expression at `path` in the definition, if it is code."""
    if not path:
        return None
    seen: set[int] = set()

    def walk(value):
        if id(value) in seen or value is None or isinstance(value, str | int | float | bool):
            return None
        seen.add(id(value))
        if isinstance(value, Expr):
            return value.source if value.path == path else None
        items = (value.values() if isinstance(value, dict) else value
                 if isinstance(value, list | tuple) else
                 [getattr(value, f.name) for f in fields(value)] if is_dataclass(value) else ())
        for item in items:
            found = walk(item)
            if found is not None:
                return found
        return None

    return walk(machine)


def _missing_key(message: str, source: str | None) -> SafeString | None:
    """"needs `sku` in the input, but the input had no `sku`" for a KeyError."""
    try:
        key = ast.literal_eval(message)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(key, str | int):
        return None
    quoted = re.escape(repr(key)) if isinstance(key, int) else (
        "(?:'" + re.escape(str(key)) + "'|\"" + re.escape(str(key)) + "\")")
    found = re.search(r"\b(input|ctx|output)((?:\[[^\[\]]+\])*)\[\s*" + quoted + r"\s*\]",
                      source or "")
    name = code(key)
    if found and not found.group(2):
        where = _WHERE[found.group(1)]
        return format_html("needs {} in {}, but {} had no {}", name, where, where, name)
    if found:
        holder = code(found.group(1) + found.group(2))
        return format_html("needs {} in {}, which had no {}", name, holder, name)
    return format_html("needs {}, which was missing", name)


def plain_error(machine: Machine, error) -> SafeString:
    """An error as a person reads it: which expression of which transition, and what went
    wrong ("The update of `order` in “Add item” needs `sku` in the input, but the input
    had no `sku`."), the expression itself last. Other errors keep their own message."""
    if not isinstance(error, dict) or error.get("type") != "expression_error":
        return conditional_escape(error_message(error))
    path = error.get("path") or ""
    what = "An expression"
    for pattern, words in _PARTS:
        found = pattern.search(path)
        if found:
            what = format_html(words, code(found.group(1))) if "{}" in words else words
            break
    state = error.get("state")
    transition = error.get("transition")
    where = (format_html(" in “{}”", transition_name(machine, state, transition))
             if transition else
             format_html(" of {}", state_name(machine, state)) if state else "")
    source = expression_source(machine, path)
    message = str(error.get("message") or "")
    kind, exception = error.get("kind"), error.get("exception")
    problem = None
    if exception == "KeyError":
        problem = _missing_key(message, source)
    elif kind == "timeout":
        problem = SafeString("took too long")
    elif exception in _PROBLEMS:
        problem = format_html("{} ({})", _PROBLEMS[exception], message)
    if problem is None:
        problem = format_html("failed: {}", message or exception or "unknown error")
    shown = " ".join((source or "").split())
    shown = shown if len(shown) <= 120 else shown[:119] + "…"
    expression = format_html(" The expression: {}", code(shown)) if shown else ""
    return format_html("{}{} {}.{}", what, where, problem, expression)


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
            works[detail.get("token")] = {**detail, "transition": row.get("transition"),
                                          "from_state": row.get("from_state") or state}
        elif row["kind"] in (engine.WORK_SUCCEEDED, engine.WORK_FAILED):
            row["work"] = works.get(detail.get("token"), {})
            following = rows[i + 1] if i + 1 < len(rows) else {}
            # An answer that ok_if refused is recorded as work_succeeded, then retried or
            # sent down the error branch (or the execution fails) in the same event.
            row["not_ok"] = row["kind"] == engine.WORK_SUCCEEDED and (
                following.get("kind") in (engine.WORK_RETRY_SCHEDULED, engine.EXECUTION_FAILED)
                or (following.get("kind") == engine.TRANSITION_TAKEN
                    and (following.get("branch") or "").startswith("error")))
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
def ending(machine: Machine, row: dict | None) -> SafeString:
    """How the last move reached where it ended: "from Fraud rejected by “cancel”",
    from a step row (seq, kind, transition, branch, from_state, to_state)."""
    if not row or row.get("kind") != engine.TRANSITION_TAKEN:
        return SafeString("")
    source = row.get("from_state")
    by = transition_name(machine, source, row.get("transition") or "")
    branch = {"success": " after its work succeeded", "error": " after its work failed"}.get(
        (row.get("branch") or "").split("-")[0], "")
    if (row.get("to_state") or source) == source:
        return format_html("by “{}”{}", by, branch)
    return format_html("from {} by “{}”{}", strong(state_name(machine, source)), by, branch)


def countdown(due) -> SafeString:
    """When a timer is due, in bold, and how long until then (ticking, see dm.js)."""
    at = as_datetime(due)
    close = at is not None and abs(at.timestamp() - datetime.now(UTC).timestamp()) < 3600
    return format_html("<strong>{}</strong>", when_html(due, seconds=close, countdown=True))


def status_line(machine: Machine, *, status: str, state: str, timer: dict | None = None,
                work: dict | None = None, error=None, result=None,
                child: tuple | None = None, started: bool = True,
                ended: str | SafeString = "", timers=()) -> SafeString:
    """ONE sentence saying where the execution is and what it waits for (HTML fragment).
    `child` is (id, url) of the execution a machine invoke waits for; `started` is False
    while an async start waits for a worker; `ended` says how a finished one reached its end
    state (see `ending`): a state named "canceled" is not a cancellation."""
    here = strong(state_name(machine, state))
    found = machine.states.get(state)
    actions = found.action_names if found else ()
    choices = or_list([strong(action_label(machine, state, a)) for a in actions])
    line = _status_line(machine, status, state, here, actions, choices, timer, work, error,
                        result, child, started, ended)
    if timers and status in engine.PAUSED_STATUSES:  # the state's `after` timers
        line = format_html("{} {}", line, _next_state_timer(machine, state, timers))
    return line


def _next_state_timer(machine: Machine, state: str, timers) -> SafeString:
    first = min(timers, key=lambda t: t.get("due") or 0)
    name = transition_name(machine, state, first.get("transition") or "")
    more = len(timers) - 1
    others = f" ({more} more timer{'s' if more > 1 else ''} later)" if more else ""
    return format_html("Its timer “{}” fires at {}{}.", name, countdown(first.get("due")),
                       others)


def _status_line(machine, status, state, here, actions, choices, timer, work, error, result,
                 child, started, ended) -> SafeString:
    if status == engine.SLEEPING and not timer:  # only state timers: said by the caller
        return format_html("Sleeping in {}.", here)
    if status == engine.WAITING:
        if not actions:
            return format_html(
                "Stuck in {}: no transition can be taken and it accepts no actions.", here)
        return format_html("Waiting for: {}, in {}.", choices, here)
    if status == engine.SLEEPING:
        timer = timer or {}
        until = countdown(timer.get("due"))
        work_row = {"transition": (work or {}).get("transition") or timer.get("transition"),
                    "from_state": state}
        if timer.get("purpose") == "retry":
            name = _call_name(machine, work_row) or "the work"
            attempt = (work or {}).get("attempt", 1) + 1
            return format_html("Sleeping in {}, then trying {} again (attempt {}{}) at {}.",
                               here, strong(name), attempt, _attempts(machine, work_row),
                               until)
        if timer.get("purpose") == "timeout":
            return format_html("Waiting for the work to answer, in {}: its time limit runs "
                               "out at {}.", here, until)
        name = transition_name(machine, state, timer.get("transition") or "")
        unless = format_html(" Or someone chooses {}.", choices) if actions else ""
        return format_html("Sleeping in {} until {}, when “{}” moves it on.{}", here, until,
                           name, unless)
    if status == engine.INVOKING:
        work = work or {}
        work_row = {"transition": work.get("transition"), "from_state": state}
        if work.get("kind") in GROUP_KINDS:
            return _group_status(machine, work, here)
        if work.get("kind") == "machine":
            transition = _transition(machine, work_row)
            machine_id = transition.invoke.machine_id if transition else "child"
            link = (format_html(' <a href="{}">{}</a>', child[1], str(child[0])[:8]) if child
                    else "")
            return format_html("Waiting for {} execution{} to finish, in {}.",
                               strong(machine_id), link, here)
        if work.get("kind") == "trigger":
            return format_html("Sending an action to another execution, in {}.", here)
        name = _call_name(machine, work_row) or "a service"
        attempt = work.get("attempt", 1)
        of = _attempts(machine, work_row)
        tries = f" (attempt {attempt}{of})" if of else ""
        return format_html("Calling {}{}, in {}.", strong(name), tries, here)
    if status == engine.FAILED:
        where = state_name(machine, (error or {}).get("state") or state)
        said = plain_error(machine, error)
        stop = "" if str(said).rstrip().endswith((".", "</code>")) else "."
        return format_html("Failed in {}: {}{}", strong(where), said, stop)
    if status == engine.FINISHED:
        how = format_html(", reached {}", ended) if ended else ""
        return format_html("Finished: it ended in {}, one of the machine’s end states{}; it "
                           "returned {}.", here, how, code(brief(result)))
    if status == engine.CANCELED:
        return format_html("Canceled in {}.", here)
    if not started:
        return format_html("Queued: a worker will start it in {}.", here)
    return format_html("Running: moving on from {}.", here)

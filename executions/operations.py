"""Operators' tools: repair one execution, or act on many, always with a preview first.

One request (`request`: checked once, like every value a service takes) is previewed on an
execution by `preview` and carried out by `perform`. Both build the same step: the
operation's own history row, then what the engine makes of it, computed in the evaluation
pool on a copy of the execution (so the preview says "would fail again: TypeError ..." when
it would). The preview writes nothing; `perform` builds it again on a fresh read and saves
it with the runtime's compare-and-swap, so an execution that moved meanwhile is never
overwritten. Cancel, retry and actions go through the runtime's own acceptance
(executions/runtime/accepting.py); edits, moves and migrations write their step here.

Many at once (`preview_bulk`, `run_bulk`, `bulk_job`): the preview stores what would happen
to each execution a query selects (a BulkOperation and its items); the run is a django-q2
task that records the outcome of each item. A job killed mid-way resumes with the items
that have no outcome: an execution is never acted on twice (the item is marked in the
transaction of the change, or the inbox keeps the job's idempotency key).

Every change is in the execution's history with who (accounts.roles.actor_of), when and the
reason given. Who may do what is `permitted` (editors edit data and move; operators retry,
cancel and send actions).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.http import QueryDict
from django.utils import timezone

from accounts import roles
from executions import engine
from executions.filters import ExecutionFilter
from executions.models import BulkItem, BulkOperation, Execution, HistoryEntry, InboxItem
from executions.runtime import accepting, advancing, queue
from executions.runtime import store as stores
from executions.runtime.accepting import NotAvailable, Outcome
from executions.runtime.store import Conflict, Step, limits
from executions.services import InvalidRequest
from expressions.values import InvalidValue, check_context, check_input, check_text
from machines.models import MachineVersion

log = logging.getLogger(__name__)

RETRY, CANCEL, EDIT, MOVE, ACTION, MIGRATE = (
    "retry", "cancel", "edit", "move", "action", "migrate")
KINDS = (RETRY, CANCEL, EDIT, MOVE, ACTION, MIGRATE)

# The history rows of the operations the engine does not make itself.
CONTEXT_EDITED, INPUT_EDITED, EXECUTION_MOVED, EXECUTION_MIGRATED = (
    "context_edited", "input_edited", "execution_moved", "execution_migrated")

APPLIES, NOT_AVAILABLE, WOULD_FAIL = BulkItem.APPLIES, BulkItem.NOT_AVAILABLE, BulkItem.WOULD_FAIL
MOVABLE = (engine.WAITING, engine.SLEEPING, engine.INVOKING, engine.FAILED)
MAX_BULK = 100_000  # executions one bulk operation may select
JOB_BATCH = 100  # items a job reads at a time (and how often it says it is alive)
JOB_LOST_AFTER = timedelta(minutes=2)  # a running job silent this long was killed
# A job hands over to a new task after this: well within the task timeout of Q_CLUSTER,
# and other tasks get their turn.
JOB_BUDGET_SECONDS = 60


# The request ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """What the caller asks for, checked. `context`: the edited context (edit; or retry and
    move with the context they need); `input`: an action's input (action; or retry of a
    failed action step with edited input); `state`: where to move; `version` + `mapping`
    (state in the current version -> state in `version`): a migration."""

    kind: str
    context: dict | None = None
    input: dict | None = None
    state: str | None = None
    action: str | None = None
    version: int | None = None
    mapping: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {key: value for key, value in dataclasses.asdict(self).items()
                if value not in (None, {})}

    @property
    def role(self) -> str:
        """Editors change data and where an execution stands; operators run it on."""
        if self.kind in (EDIT, MOVE, MIGRATE) or (self.kind == RETRY and self.context is not None):
            return roles.EDITOR
        return roles.OPERATOR


def request(kind: Any, *, context: Any = None, input: Any = None, state: Any = None,
            action: Any = None, version: Any = None, mapping: Any = None) -> Request:
    """The operation asked for, every value checked once (InvalidRequest says where)."""
    if kind not in KINDS:
        raise InvalidRequest(f"The operation must be one of {', '.join(KINDS)}, not {kind!r}.",
                             "operation")
    needs = {EDIT: "context", MOVE: "state", ACTION: "action", MIGRATE: "version"}
    given = {"context": context, "state": state, "action": action, "version": version}
    if kind in needs and given[needs[kind]] in (None, ""):
        raise InvalidRequest(f"A {kind} needs a {needs[kind]}.", needs[kind])
    allowed = {RETRY: {"context", "input"}, CANCEL: set(), EDIT: {"context"},
               MOVE: {"state", "context"}, ACTION: {"action", "input"},
               MIGRATE: {"version", "mapping"}}[kind]
    for name, value in (("context", context), ("input", input), ("state", state),
                        ("action", action), ("version", version), ("mapping", mapping)):
        if value is not None and name not in allowed:
            raise InvalidRequest(f"A {kind} takes no {name}.", name)
    if context is not None:
        context = _checked(lambda: check_input(context, limits(), "context"))
        _checked(lambda: check_context(context, limits()))
    if input is not None or kind == ACTION:
        input = _checked(lambda: check_input(input, limits(), "input"))
    for name, text in (("state", state), ("action", action)):
        if text is not None:
            _name(text, name)
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or not 1 <= version <= 2**31 - 1):
        raise InvalidRequest("The version must be a positive integer.", "version")
    if mapping is not None:
        if not isinstance(mapping, dict):
            raise InvalidRequest("The mapping must be an object of state -> state.", "mapping")
        for source, target in mapping.items():
            _name(source, f"mapping.{source}")
            _name(target, f"mapping.{source}")
    return Request(kind, context=context, input=input, state=state, action=action,
                   version=version, mapping=dict(mapping or {}))


def request_of(bulk: BulkOperation) -> Request:
    """The operation a bulk operation stored, checked again (limits may have changed)."""
    return request(bulk.kind, **{k: v for k, v in bulk.request.items() if k != "kind"})


def checked_reason(reason: Any) -> str:
    """Every operation says why: a non-empty text, at most as long as an error text."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidRequest("Say why: a reason is required for every operation.", "reason")
    if len(reason) > limits().error_text:
        raise InvalidRequest(f"The reason is longer than {limits().error_text:,} characters.",
                             "reason")
    _checked(lambda: check_text(reason, "reason"))
    return reason.strip()


def permitted(user, operation: Request) -> bool:
    """The role rule of accounts/roles.py for this operation."""
    return roles.can_edit(user) if operation.role == roles.EDITOR else roles.can_operate(user)


def _checked(check) -> Any:
    try:
        return check()
    except InvalidValue as exc:
        raise InvalidRequest(exc.message, exc.path) from None


def _name(value: Any, path: str) -> None:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise InvalidRequest("Give a name of 1 to 200 characters.", path)
    _checked(lambda: check_text(value, path))


# What an operation would do ------------------------------------------------------------------
@dataclass
class Verdict:
    """What an operation would do to one execution: `verdict` applies / not_available /
    would_fail, `reason` in words, and where the execution would stand after it."""

    verdict: str
    reason: str
    status: str = ""
    state: str = ""
    after_status: str = ""
    after_state: str = ""
    changes: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    """The step an operation makes on one execution, not yet stored."""

    verdict: Verdict
    step: Step | None = None
    version: MachineVersion | None = None  # a migration's new version


def preview(execution_id: Any, operation: Request) -> Verdict:
    """What `perform` would do to this execution now; nothing is written."""
    execution = stores.active.read_execution(execution_id)
    return _plan(execution, operation, actor="", reason="", key=None).verdict


def perform(execution_id: Any, operation: Request, *, actor: str, reason: Any,
            key: str | None = None, on_saved=None) -> Outcome:
    """Carry out the operation (NotAvailable when it cannot be done now, nothing changed).

    `key`: the idempotency key of a bulk job (a repeat applies nothing); `on_saved`: called
    with the execution as saved, inside the transaction that stores the change (the job
    records its item there).
    """
    reason = checked_reason(reason)
    if operation.kind in (CANCEL, ACTION) or (
            operation.kind == RETRY and operation.context is None and operation.input is None):
        return _accept(execution_id, operation, actor=actor, reason=reason, key=key)
    store = stores.active
    for _ in range(advancing.CAS_RETRIES):
        execution = store.read_execution(execution_id)
        plan = _plan(execution, operation, actor=actor, reason=reason, key=key)
        if plan.verdict.verdict == NOT_AVAILABLE:
            raise NotAvailable(plan.verdict.reason, execution.available_actions())
        assert plan.step is not None
        try:
            advanced = _save(execution, plan, on_saved)
        except Conflict:
            time.sleep(random.uniform(0, 0.005))
            continue
        store.forget(execution.pk)
        if not advanced.work and execution.status != engine.RUNNING:
            return Outcome(execution)
        settled = advancing.continue_inline(
            advanced, deadline=advancing.deadline_for(execution, None),
            work=advancing.policy_for(execution.execution_mode))
        store.refresh(execution)
        return Outcome(execution, settled=settled)
    raise RuntimeError(f"could not update {execution_id}: too many concurrent writers")


def _accept(execution_id: Any, operation: Request, *, actor: str, reason: str,
            key: str | None) -> Outcome:
    """Cancel, retry and actions: the runtime's own acceptance, which keeps `key`."""
    if operation.kind == CANCEL:
        return accepting.cancel(execution_id, actor=actor, reason=reason, idempotency_key=key)
    if operation.kind == RETRY:
        return accepting.retry(execution_id, actor=actor, reason=reason, idempotency_key=key)
    assert operation.action is not None
    return accepting.trigger(execution_id, operation.action, input=operation.input or {},
                             idempotency_key=key, actor=actor, wait=True)


def _save(execution: Execution, plan: _Plan, on_saved) -> advancing.Advanced:
    """The plan's step in ONE transaction: compare-and-swap of the snapshot, its history,
    its timer and work rows, a migration's new version, and the caller's mark."""
    assert plan.step is not None
    store = stores.active
    with store.atomic():
        if plan.version is not None:
            execution.machine_version = plan.version
        advanced = advancing.save(execution, plan.step)
        if plan.version is not None:
            Execution.objects.filter(pk=execution.pk).update(machine_version=plan.version)
        if on_saved is not None:
            on_saved(advanced.execution)
    return advanced


def _plan(execution: Execution, operation: Request, *, actor: str, reason: str,
          key: str | None) -> _Plan:
    status, state = execution.status, execution.state
    refusal = _refusal(execution, operation)
    if refusal is not None:
        return _Plan(Verdict(NOT_AVAILABLE, refusal, status, state))
    planner = {RETRY: _retry, CANCEL: _cancel, EDIT: _edit, MOVE: _move, ACTION: _action,
               MIGRATE: _migrate}[operation.kind]
    return planner(execution, operation, _Entry(execution.snapshot(), actor, reason, key))


def _refusal(execution: Execution, operation: Request) -> str | None:
    """Why the operation cannot be done on this execution now (None: it can be tried)."""
    status = execution.status
    if operation.kind == CANCEL:
        return engine.cancel_refused(status)
    if not execution.engine_state:
        return "it has not started yet"
    if status == engine.RUNNING:
        return "it is taking a step right now; try again once it pauses"
    if operation.kind == RETRY:
        return engine.retry_refused(status)
    if status in engine.TERMINAL_STATUSES:
        return f"it is {status}"
    if operation.kind == MOVE and status not in MOVABLE:
        return f"only a waiting or failed execution can be moved; this one is {status}"
    return None


@dataclass
class _Entry:
    """The operation's own history row, and the snapshot it starts from."""

    before: engine.Snapshot
    actor: str
    reason: str
    key: str | None

    def row(self, kind: str, **values) -> dict:
        detail = {"reason": self.reason, **values.pop("detail", {})}
        if self.key:
            detail["operation"] = self.key
        return {"seq": self.before.seq + 1, "kind": kind, "at": time.time(),
                "actor": self.actor or None, "detail": detail, **values}


def _edited(entry: _Entry, context: dict) -> tuple[engine.Snapshot, dict]:
    """The snapshot with its context replaced, and the row that says so."""
    before = entry.before
    changed = sorted(key for key in before.context.keys() | context.keys()
                     if before.context.get(key, _MISSING) != context.get(key, _MISSING))
    row = entry.row(CONTEXT_EDITED, context=context, from_state=before.state,
                    detail={"changed": changed})
    return dataclasses.replace(before, context=context, seq=before.seq + 1), row


_MISSING = object()


def _edit(execution: Execution, operation: Request, entry: _Entry) -> _Plan:
    assert operation.context is not None
    snapshot, row = _edited(entry, operation.context)
    changed = row["detail"]["changed"]
    words = f"changes {', '.join(changed)}" if changed else "changes nothing"
    return _Plan(Verdict(APPLIES, f"the context {words}", execution.status, execution.state,
                         execution.status, execution.state),
                 Step(snapshot, [row]))


def _cancel(execution: Execution, operation: Request, entry: _Entry) -> _Plan:
    changes = [f"drops {what}" for what in _outstanding(entry.before)]
    return _Plan(Verdict(APPLIES, "it would be canceled", execution.status, execution.state,
                         engine.CANCELED, execution.state, changes))


def _retry(execution: Execution, operation: Request, entry: _Entry) -> _Plan:
    """Retry: as it failed, with an edited context, or with edited input: a failed start
    starts again with it, a failed action step is taken again with it from the state it
    failed in."""
    before, rows = entry.before, []
    if operation.context is not None:
        before, row = _edited(entry, operation.context)
        rows.append(row)
    if operation.input is None:
        item = InboxItem(kind=InboxItem.RETRY, payload={"reason": entry.reason} if entry.reason
                         else {}, actor=entry.actor, idempotency_key=entry.key)
        return _computed(execution, before, rows, [item], [], None)
    error = before.error or {}
    if error.get("state") is None:  # its start failed: start again with this input
        row = {**entry.row(INPUT_EDITED, input=operation.input), "seq": before.seq + 1}
        rows.append(row)
        before = dataclasses.replace(before, input=operation.input, seq=before.seq + 1)
        item = InboxItem(kind=InboxItem.RETRY, payload={"reason": entry.reason}
                         if entry.reason else {}, actor=entry.actor, idempotency_key=entry.key)
        return _computed(execution, before, rows, [item], [], None)
    machine = execution.machine_version.parsed()
    failed_in = str(error["state"])
    try:
        transition = machine.states[failed_in].transition(str(error.get("transition")))
    except KeyError:
        transition = None
    if transition is None or not transition.on:
        return _Plan(Verdict(NOT_AVAILABLE, "it did not fail at its start or in a step an "
                             "action started, so there is no input to edit; retry it "
                             "without input",
                             execution.status, execution.state))
    action = _last_action(execution, transition.on)
    row = {**entry.row(engine.EXECUTION_RETRIED, detail={"error": error, "input": True}),
           "seq": before.seq + 1}
    rows.append(row)
    waiting = dataclasses.replace(before, status=engine.WAITING, state=failed_in, error=None,
                                  seq=before.seq + 1, auto_steps=0)
    item = InboxItem(kind=InboxItem.ACTION, payload={"action": action, "input": operation.input},
                     actor=entry.actor, idempotency_key=entry.key)
    return _computed(execution, waiting, rows, [item], [], None)


def _last_action(execution: Execution, names: tuple[str, ...]) -> str:
    """The action that started the failed step: the last one received of these names."""
    received = (HistoryEntry.objects.filter(execution=execution, kind=engine.ACTION_RECEIVED,
                                            action__in=names)
                .order_by("-seq").values_list("action", flat=True).first())
    return received or names[0]


def _action(execution: Execution, operation: Request, entry: _Entry) -> _Plan:
    assert operation.action is not None
    item = InboxItem(kind=InboxItem.ACTION, actor=entry.actor, idempotency_key=entry.key,
                     payload={"action": operation.action, "input": operation.input or {}})
    return _computed(execution, entry.before, [], [item], [], None)


def _move(execution: Execution, operation: Request, entry: _Entry) -> _Plan:
    """Move to another state of its version: what it had outstanding (a timer, a call) is
    dropped, and it enters the state as a transition would (automatic transitions run)."""
    assert operation.state is not None
    machine = execution.machine_version.parsed()
    if operation.state not in machine.states:
        return _Plan(Verdict(NOT_AVAILABLE, f"version {execution.machine_version.version} has "
                             f"no state {operation.state!r}", execution.status, execution.state))
    before = entry.before
    context = before.context if operation.context is None else operation.context
    effects, changes = _dropped(before)
    row = entry.row(EXECUTION_MOVED, from_state=before.state, to_state=operation.state,
                    context=context, detail={"dropped": changes, "status": before.status})
    moved = dataclasses.replace(before, status=engine.RUNNING, state=operation.state,
                                context=context, error=None, timer=None, work=None,
                                auto_steps=0, seq=before.seq + 1)
    return _computed(execution, moved, [row], [], effects, None, changes)


def _migrate(execution: Execution, operation: Request, entry: _Entry) -> _Plan:
    """Move to another version of its machine, into the state the mapping names (the same
    name by default). A timer or call whose transition the new state still has (of the same
    kind) is kept; otherwise it is dropped and the execution enters the state again."""
    assert operation.version is not None
    current = execution.machine_version
    status, state = execution.status, execution.state
    if operation.version == current.version:
        return _Plan(Verdict(NOT_AVAILABLE, f"it is on version {current.version} already",
                             status, state))
    try:
        version = stores.active.machine_version(execution.machine_id, operation.version)
    except MachineVersion.DoesNotExist:
        return _Plan(Verdict(NOT_AVAILABLE, f"{execution.machine_id} has no version "
                             f"{operation.version}", status, state))
    new = version.parsed()
    target = operation.mapping.get(state, state if state in new.states else None)
    if target is None:
        return _Plan(Verdict(NOT_AVAILABLE, f"version {version.version} has no state "
                             f"{state}: the mapping must name one", status, state))
    if target not in new.states:
        return _Plan(Verdict(NOT_AVAILABLE, f"version {version.version} has no state "
                             f"{target!r}", status, state))
    before = entry.before
    kept = kept_outstanding(before, new.states[target])
    error = before.error
    if status == engine.FAILED and error is not None:
        failed_at = error.get("transition")
        if failed_at is not None and error.get("state") == state and not _has(
                new.states[target], failed_at):
            return _Plan(Verdict(NOT_AVAILABLE, f"it failed at {failed_at}, which {target} "
                                 f"of version {version.version} does not have: a retry would "
                                 "find nothing to redo; move it instead", status, state))
        error = {**error, "state": target} if error.get("state") == state else error
    effects, changes = ([], []) if kept else _dropped(before)
    rows = [entry.row(EXECUTION_MIGRATED, from_state=state, to_state=target,
                      detail={"from_version": current.version, "to_version": version.version,
                              "dropped": changes})]
    migrated = dataclasses.replace(before, state=target, error=error, seq=before.seq + 1)
    if not kept and status in (engine.SLEEPING, engine.INVOKING):  # enters the state again
        migrated = dataclasses.replace(migrated, status=engine.RUNNING, timer=None, work=None,
                                       auto_steps=0)
    return _computed(execution, migrated, rows, [], effects, version, changes)


def _has(state, transition_id: str) -> bool:
    return any(t.id == transition_id for t in state.transitions)


def kept_outstanding(before: engine.Snapshot, state) -> bool:
    """Whether the state of the new version still has the transitions of the snapshot's
    timer and work (of the same kind): then a migration keeps them."""
    for outstanding in (before.timer, before.work):
        if outstanding is None:
            continue
        if not _has(state, outstanding["transition"]):
            return False
        transition = state.transition(outstanding["transition"])
        if outstanding is before.work and (transition.invoke is None or
                                           transition.invoke.kind != outstanding["kind"]):
            return False
        if outstanding is before.timer and outstanding["purpose"] == "wait" and \
                transition.wait is None:
            return False
    return True


def _outstanding(before: engine.Snapshot) -> list[str]:
    """What the execution has outstanding, in words: "the wait timer of release"."""
    found = []
    if before.timer is not None:
        found.append(f"the {before.timer['purpose']} timer of {before.timer['transition']}")
    if before.work is not None:
        found.append(f"the {before.work['kind']} of {before.work['transition']}")
    return found


def _dropped(before: engine.Snapshot) -> tuple[list[engine.Effect], list[str]]:
    effects: list[engine.Effect] = []
    if before.timer is not None:
        effects.append(engine.CancelTimer(before.timer["token"]))
    if before.work is not None and before.work.get("token") is not None:
        effects.append(engine.CancelWork(before.work["token"], before.work["kind"]))
    return effects, _outstanding(before)


def _computed(execution: Execution, snapshot: engine.Snapshot, rows: list[dict],
              items: list[InboxItem], effects: list[engine.Effect],
              version: MachineVersion | None, changes: list[str] | None = None) -> _Plan:
    """The engine on the prepared snapshot (and items), in the pool, on a copy: the whole
    step, and the verdict it gives."""
    prepared = copy.copy(execution)
    for name, value in stores.snapshot_columns(snapshot, timezone.now()).items():
        setattr(prepared, name, value)
    if version is not None:
        prepared.machine_version = version
    for item in items:
        item.execution = prepared
    step = advancing.compute(prepared, items)
    assert step.snapshot is not None
    whole = Step(step.snapshot, rows + list(step.history), effects + list(step.effects),
                 step.processed)
    return _Plan(_verdict_of(execution, whole, items,
                             [f"drops {what}" for what in changes or []]),
                 whole, version)


def _verdict_of(execution: Execution, step: Step, items: list[InboxItem],
                changes: list[str]) -> Verdict:
    after = step.snapshot
    assert after is not None
    verdict = Verdict(APPLIES, "", execution.status, execution.state, after.status,
                      after.state, list(changes))
    refused = next((item for item in items if item.outcome in (InboxItem.REJECTED,
                                                               InboxItem.IGNORED)), None)
    if refused is not None:
        verdict.verdict, verdict.reason = NOT_AVAILABLE, refused.reason
    elif after.status == engine.FAILED:
        error = after.error or {}
        verdict.verdict = WOULD_FAIL
        verdict.reason = f"it would fail in {error.get('state') or after.state}: " \
                         f"{error.get('message') or error.get('type')}"
    else:
        started = [type(effect).__name__ for effect in step.effects
                   if isinstance(effect, (engine.CallIO, engine.StartChild, engine.SendAction))]
        verdict.reason = f"it would be {after.status} in {after.state}" + (
            " (starting its work again)" if started else "")
    return verdict


# Many at once --------------------------------------------------------------------------------
def selected(selection: Any) -> QuerySet:
    """The executions a bulk operation is asked for: {"ids": [...]} or {"filters": {...}}
    (the list's filters, a failure group's among them)."""
    if not isinstance(selection, dict) or len(selection) != 1 or not (
            {"ids", "filters"} & selection.keys()):
        raise InvalidRequest('Select executions with {"ids": [...]} or {"filters": {...}}.',
                             "selection")
    queryset = Execution.objects.all()
    if "ids" in selection:
        ids = selection["ids"]
        if not isinstance(ids, list) or not ids or len(ids) > MAX_BULK:
            raise InvalidRequest(f"Give 1 to {MAX_BULK:,} execution ids.", "selection.ids")
        for index, value in enumerate(ids):
            try:
                uuid.UUID(str(value))
            except ValueError:
                raise InvalidRequest(f"{value!r} is not an execution id.",
                                     f"selection.ids[{index}]") from None
        return queryset.filter(pk__in=ids)
    filters = selection["filters"]
    if not isinstance(filters, dict):
        raise InvalidRequest("The filters must be an object of name -> value.",
                             "selection.filters")
    data = QueryDict(mutable=True)
    for name, value in filters.items():
        for one in value if isinstance(value, list) else [value]:
            if not isinstance(one, (str, int)):
                raise InvalidRequest("A filter's value must be text.",
                                     f"selection.filters.{name}")
            data.appendlist(name, str(one))
    filterset = ExecutionFilter(data, queryset=queryset)
    if not filterset.is_valid():
        name, problems = next(iter(filterset.errors.items()))
        raise InvalidRequest(f"{name}: {' '.join(problems)}", f"selection.filters.{name}")
    return filterset.qs


def preview_bulk(selection: Any, operation: Request, *, actor: str) -> BulkOperation:
    """The dry run of a bulk operation: what would happen to each selected execution, stored
    as the operation's items (nothing else is written)."""
    ids = list(selected(selection).order_by("created_at", "id").values_list("pk", flat=True)
               [:MAX_BULK + 1])
    if len(ids) > MAX_BULK:
        raise InvalidRequest(f"The selection has more than {MAX_BULK:,} executions; narrow it.",
                             "selection")
    verdicts = []  # computed first: the engine never runs inside a transaction
    for execution_id in ids:
        try:
            verdicts.append((execution_id, preview(execution_id, operation)))
        except Execution.DoesNotExist:  # deleted since the selection was read
            continue
    with transaction.atomic():  # the operation with all its items, or nothing
        bulk = BulkOperation.objects.create(kind=operation.kind, request=operation.as_dict(),
                                            selection=selection, previewed_by=actor,
                                            total=len(verdicts))
        BulkItem.objects.bulk_create(
            [BulkItem(operation=bulk, execution_id=execution_id, verdict=verdict.verdict,
                      preview=verdict.reason) for execution_id, verdict in verdicts],
            batch_size=1000)
    return bulk


def run_bulk(operation_id: Any, *, actor: str, reason: Any) -> BulkOperation:
    """Run a previewed bulk operation as a background job (once: a second run of the same
    operation is refused, a stopped one is resumed with `resume_bulk`)."""
    reason = checked_reason(reason)
    updated = BulkOperation.objects.filter(pk=operation_id, status=BulkOperation.PREVIEWED) \
        .update(status=BulkOperation.QUEUED, actor=actor, reason=reason)
    bulk = bulk_operation(operation_id)
    if not updated:
        raise NotAvailable(f"this operation is {bulk.status} already")
    queue.enqueue_bulk(bulk.pk)
    return bulk


def resume_bulk(operation_id: Any) -> BulkOperation:
    """Start again a job that stopped before its end (its worker was killed or restarted)."""
    bulk = bulk_operation(operation_id)
    if bulk.status not in (BulkOperation.QUEUED, BulkOperation.RUNNING) or not is_stalled(bulk):
        raise NotAvailable(f"this operation is {bulk.status}"
                           + (" and still making progress" if bulk.status != "done" else ""))
    queue.enqueue_bulk(bulk.pk)
    return bulk


def resume_stalled() -> int:
    """Resume every job that stopped (the timer loop's sweep calls this); how many."""
    stalled = [bulk for bulk in BulkOperation.objects.filter(
        status__in=(BulkOperation.QUEUED, BulkOperation.RUNNING)) if is_stalled(bulk)]
    for bulk in stalled:
        BulkOperation.objects.filter(pk=bulk.pk).update(heartbeat_at=timezone.now())
        queue.enqueue_bulk(bulk.pk)
    return len(stalled)


def is_stalled(bulk: BulkOperation) -> bool:
    """A job queued or running that has said nothing for JOB_LOST_AFTER."""
    last = bulk.heartbeat_at or bulk.started_at or bulk.created_at
    return bulk.status in (BulkOperation.QUEUED, BulkOperation.RUNNING) and \
        timezone.now() - last > JOB_LOST_AFTER


def bulk_operation(operation_id: Any) -> BulkOperation:
    """The bulk operation (BulkOperation.DoesNotExist for an unknown or malformed id)."""
    try:
        key = uuid.UUID(str(operation_id))
    except ValueError:
        raise BulkOperation.DoesNotExist(f"no bulk operation {operation_id}") from None
    return BulkOperation.objects.get(pk=key)


def bulk_job(operation_id: str) -> None:
    """The job (a django-q2 task): act on each item that has no outcome yet, in order, and
    record its outcome. Resumed after a kill, it goes on with the items left: an item is
    marked in the transaction of its change (edits, moves, migrations), and the runtime
    keeps the job's idempotency key with a cancel, retry or action, so none is done twice."""
    bulk = BulkOperation.objects.get(pk=operation_id)
    if bulk.status == BulkOperation.DONE:
        return
    now = timezone.now()
    BulkOperation.objects.filter(pk=bulk.pk).update(
        status=BulkOperation.RUNNING, started_at=bulk.started_at or now, heartbeat_at=now)
    operation = request_of(bulk)
    key = f"bulk:{bulk.pk}"
    deadline = time.monotonic() + JOB_BUDGET_SECONDS
    while True:
        batch = list(BulkItem.objects.filter(operation=bulk, outcome="").order_by("id")
                     [:JOB_BATCH])
        if not batch:
            break
        for item in batch:
            _act_on(item, operation, bulk, key)
        BulkOperation.objects.filter(pk=bulk.pk).update(heartbeat_at=timezone.now())
        if time.monotonic() >= deadline:
            queue.enqueue_bulk(bulk.pk)
            return
    BulkOperation.objects.filter(pk=bulk.pk).update(status=BulkOperation.DONE,
                                                    finished_at=timezone.now())


class _DoneElsewhere(Exception):
    """Another run of the job recorded this item first (a job resumed while the first still
    ran): the change rolls back."""


def _act_on(item: BulkItem, operation: Request, bulk: BulkOperation, key: str) -> None:
    if item.verdict == NOT_AVAILABLE:
        _record(item, NOT_AVAILABLE, f"not acted on: the preview said {item.preview}")
        return
    claimed = []

    def claim(saved: Execution) -> None:
        """In the transaction of the change: the item's outcome, or it rolls back when
        another run recorded it first."""
        if not BulkItem.objects.filter(pk=item.pk, outcome="").update(
                outcome=_outcome_of(saved.status), message=_where(saved),
                done_at=timezone.now()):
            raise _DoneElsewhere()
        claimed.append(True)

    try:
        outcome = perform(item.execution_id, operation, actor=bulk.actor, reason=bulk.reason,
                          key=key, on_saved=claim)
    except _DoneElsewhere:
        return
    except NotAvailable as refused:
        _record(item, NOT_AVAILABLE, refused.reason)
        return
    except Exception as exc:  # one execution's trouble never stops the job
        log.exception("bulk %s: execution %s", bulk.pk, item.execution_id)
        _record(item, BulkItem.FAILED, f"{type(exc).__name__}: {exc}"[:1000])
        return
    if not claimed:  # through the runtime's acceptance: recorded after it
        done = outcome.execution
        _record(item, _outcome_of(done.status), _where(done)
                + ("" if outcome.created else " (done before the job was resumed)"))


def _outcome_of(status: str) -> str:
    return WOULD_FAIL if status == engine.FAILED else APPLIES


def _where(execution: Execution) -> str:
    return f"now {execution.status} in {execution.state}"


def _record(item: BulkItem, outcome: str, message: str) -> None:
    """The item's outcome; the first recorded stands."""
    BulkItem.objects.filter(pk=item.pk, outcome="").update(outcome=outcome, message=message,
                                                           done_at=timezone.now())


def bulk_progress(bulk: BulkOperation) -> dict:
    """How far the job is: counts of the items by preview and by outcome."""
    items = BulkItem.objects.filter(operation=bulk)
    previewed = dict(items.values_list("verdict").annotate(n=Count("id")).order_by())
    outcomes = dict(items.exclude(outcome="").values_list("outcome").annotate(n=Count("id"))
                    .order_by())
    done = sum(outcomes.values())
    return {"total": bulk.total, "done": done, "previewed": previewed, "outcomes": outcomes,
            "stalled": is_stalled(bulk)}


def bulk_items(bulk: BulkOperation) -> QuerySet:
    return BulkItem.objects.filter(operation=bulk).select_related("execution").order_by("id")


# Failure groups ------------------------------------------------------------------------------
def failure_groups(queryset: QuerySet | None = None, limit: int = 50) -> list[dict]:
    """Failed executions grouped by machine, state, error type and message, largest first:
    each group is a filter of the list (status=failed, machine, state, error_type,
    error_message)."""
    queryset = Execution.objects.all() if queryset is None else queryset
    rows = (queryset.filter(status=engine.FAILED)
            .annotate(error_type=KeyTextTransform("type", "error"),
                      error_message=KeyTextTransform("message", "error"))
            .values("machine_id", "state", "error_type", "error_message")
            .annotate(count=Count("id")).order_by("-count", "machine_id", "state")[:limit])
    return [{**row, "filters": {"status": engine.FAILED, "machine": row["machine_id"],
                                "state": row["state"], "error_type": row["error_type"] or "",
                                "error_message": row["error_message"] or ""}}
            for row in rows]

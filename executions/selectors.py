"""Every read the surfaces (explorer pages, API, admin, commands) make about executions and
their history, named for what it returns.

Surfaces call these instead of the ORM, so each query is written once, with its index in
mind: counts are aggregate queries, long histories are read a page or a few columns at a
time. A missing execution raises ``Execution.DoesNotExist`` (catch
``django.core.exceptions.ObjectDoesNotExist``).
"""
from __future__ import annotations

import math
import statistics
import uuid

from django.core.paginator import Paginator
from django.db.models import Case, Count, F, Max, Prefetch, Q, Value, When, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from executions import engine
from executions.models import Execution, ExecutionAttribute, HistoryEntry
from executions.steps import STEP_KINDS
from machines.definition import Machine

STEP_FIELDS = ("seq", "kind", "transition", "branch", "from_state", "to_state")
STAY_WINDOW = 8_000  # newest history rows (all machines) whose stays feed the medians


# One execution ---------------------------------------------------------------------------
def execution(execution_id) -> Execution:
    """The execution with its version, parent and creator; DoesNotExist for an unknown id
    or for text that is not an execution id at all."""
    key = _execution_key(execution_id)
    return _with_children(
        Execution.objects.select_related("machine_version", "parent", "created_by")).get(pk=key)


def _with_children(queryset):
    """Executions with their children's ids, which every answer about one lists."""
    return queryset.prefetch_related(
        Prefetch("children", queryset=Execution.objects.only("id", "parent_id")))


def listed_executions():
    """Executions with what a listing shows: their version and their children's ids."""
    return _with_children(Execution.objects.select_related("machine_version"))


def history(execution_id):
    """An execution's history rows (DoesNotExist for an unknown execution, not no rows).
    Only whether the execution exists is read first, not the execution with its version,
    parent, creator and children (a page of rows needs none of them)."""
    key = _execution_key(execution_id)
    if not Execution.objects.filter(pk=key).exists():
        raise Execution.DoesNotExist("Execution matching query does not exist.")
    return HistoryEntry.objects.filter(execution_id=key)


def history_unchecked(execution_id):
    """An execution's history rows without first checking that the execution exists: for
    a page that checks (with `history`) only when it comes back empty, as rows belong to
    an execution. DoesNotExist for text that is not an execution id."""
    return HistoryEntry.objects.filter(execution_id=_execution_key(execution_id))


def _execution_key(execution_id) -> uuid.UUID:
    try:
        return uuid.UUID(str(execution_id))
    except ValueError:
        raise Execution.DoesNotExist(f"{execution_id!r} is not an execution id") from None


def diagram_of(execution_id):
    """(the execution's machine definition, its history's step rows), to draw its path."""
    found = execution(execution_id)
    return found, step_rows(found)


def executions_by_short_id(prefix: str, limit: int = 2) -> list[Execution]:
    """Executions whose id is `prefix` or starts with it (the short ids shown everywhere),
    at most `limit`; none for text that cannot be part of an id."""
    prefix = prefix.strip().lower()
    if not prefix or len(prefix) > 36 or set(prefix) - set("0123456789abcdef-"):
        return []
    if len(prefix) == 36:
        try:
            return list(Execution.objects.filter(pk=uuid.UUID(prefix)))
        except ValueError:
            return []
    digits = prefix.replace("-", "")
    if len(digits) > 32:
        return []
    # A range on the primary key (its index on both databases), not a LIKE on its text.
    first, last = uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))
    return list(Execution.objects.select_related("machine_version")
                .filter(pk__gte=first, pk__lte=last).order_by("pk")[:limit])


class AmbiguousId(ValueError):
    """A short id that several executions' ids start with; `candidates` lists them."""

    def __init__(self, prefix: str, candidates: list[Execution]):
        super().__init__(f"{prefix!r} is the start of the ids of {len(candidates)} or more "
                         "executions; give more of the id")
        self.prefix = prefix
        self.candidates = candidates


AMBIGUOUS_SHOWN = 10


def execution_id_of(reference: str) -> uuid.UUID:
    """The id of the execution a full id or a short id (a unique prefix of one, as shown
    everywhere) stands for: one query on the primary key for a short one, none for a full
    one. DoesNotExist when none matches, AmbiguousId when several do."""
    text = str(reference).strip().lower()
    if len(text) == 36 or len(text) == 32:
        return _execution_key(text)
    found = executions_by_short_id(text, limit=AMBIGUOUS_SHOWN)
    if not found:
        raise Execution.DoesNotExist(f"no execution with an id starting with {reference!r}")
    if len(found) > 1:
        raise AmbiguousId(text, found)
    return found[0].pk


def execution_id_by_key(machine_id: str, key: str) -> uuid.UUID:
    """The execution of a machine with this business key: the one not finished or canceled
    when there is one (at most one: the key is unique among those), else the newest."""
    found = (Execution.objects.filter(business_key__isnull=False, business_key=key,
                                      machine_id=machine_id)
             .order_by(Case(When(status__in=engine.TERMINAL_STATUSES, then=1), default=0),
                       "-created_at")
             .values_list("pk", flat=True).first())
    if found is None:
        raise Execution.DoesNotExist(f"no execution of {machine_id!r} with the key {key!r}")
    return found


SEARCH_LIMIT = 50


def search(text: str, limit: int = SEARCH_LIMIT) -> list[tuple[Execution, str]]:
    """Executions that `text` names, each with how: its id or short id ("id"), its business
    key ("key"), or the value of a text or number attribute ("<name>"); newest first. Each
    lookup is on an index: the primary key's range, the key's, the attribute values'."""
    text = text.strip()
    if not text or len(text) > 200:
        return []
    found: dict = {}
    if len(text) >= 4:
        for match in executions_by_short_id(text, limit):
            found.setdefault(match.pk, (match, "id"))
    for match in (Execution.objects.select_related("machine_version")
                  .filter(business_key__isnull=False, business_key=text)
                  .order_by()[:limit]):  # unordered: the key's index, not created_at's
        found.setdefault(match.pk, (match, "key"))
    same_value = Q(text=text)
    number = _number(text)
    if number is not None:
        same_value |= Q(number=number)
    named = dict(ExecutionAttribute.objects.filter(same_value)
                 .values_list("execution_id", "name")[:limit])
    if named:
        for match in (Execution.objects.select_related("machine_version")
                      .filter(pk__in=list(named)).order_by("-created_at")):
            found.setdefault(match.pk, (match, named[match.pk]))
    ordered = sorted(found.values(), key=lambda pair: pair[0].created_at, reverse=True)
    return ordered[:limit]


def _number(text: str) -> float | None:
    """The number `text` writes (`120`, `99.5`, `-3`), else None: a number attribute is
    found by its value, not by how it was typed (`120.0` finds 120)."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def execution_status(execution_id) -> dict:
    """`{version, status, state}` of one execution, all a poll needs."""
    found = execution(execution_id)
    return {"version": found.version, "status": found.status, "state": found.state}


def step_rows(execution: Execution) -> list[dict]:
    """Only the step rows and only the columns a path needs: cheap even for long histories."""
    return list(execution.history.filter(kind__in=STEP_KINDS).order_by("seq")
                .values(*STEP_FIELDS))


def history_total(execution: Execution) -> int:
    """How many history rows the execution has (the engine counts them)."""
    return execution.engine_state.get("seq") or execution.history.count()


def history_rows(execution: Execution, first: int, last: int) -> list[dict]:
    """Whole history rows with seq from `first` to `last`, in order."""
    return list(execution.history.filter(seq__gte=first, seq__lte=last).order_by("seq")
                .values())


def context_before(execution: Execution, seq: int) -> dict | None:
    """The context recorded last before history row `seq` (None at the start)."""
    if seq <= 1:
        return None
    return (execution.history.filter(seq__lt=seq, context__isnull=False).order_by("-seq")
            .values_list("context", flat=True).first())


def children(execution: Execution) -> list[dict]:
    """The executions it started, oldest first: id, parent_token, machine, status, state."""
    return list(execution.children.order_by("created_at").values(
        "id", "parent_token", "machine_id", "status", "state"))


# Lists and counts ------------------------------------------------------------------------
def executions(machine_id: str | None = None):
    """Every execution (of one machine), unordered: a queryset for filters and pages."""
    found = Execution.objects.all()
    return found.filter(machine_id=machine_id) if machine_id else found


# The orders a list can be sorted in (the explorer's `sort`), by name.
SORTS = {"newest": ("-created_at", "-pk"), "oldest": ("created_at", "pk"),
         "updated": ("-updated_at", "-pk"), "status": ("status", "-created_at", "-pk"),
         "state": ("state", "-created_at", "-pk")}


def execution_page(queryset, number, size: int, sort: str = "newest"):
    """A page of `queryset` in the order `sort` names (SORTS), newest first by default. The
    ids are paged first and the rows fetched after: sorting narrow id rows is several times
    faster than sorting whole rows."""
    page = Paginator(queryset.order_by(*SORTS[sort]).values_list("pk", flat=True),
                     size).get_page(number)
    ids = list(page.object_list)
    found = Execution.objects.select_related("machine_version").in_bulk(ids)
    page.object_list = [found[pk] for pk in ids if pk in found]
    return page


def counts_by_status(machine_id: str | None = None) -> dict[str, dict[str, int]]:
    """machine id -> {status: how many executions}, statuses in engine.STATUSES order, for
    every machine or only `machine_id`; one aggregate query."""
    found: dict[str, dict[str, int]] = {}
    rows = executions(machine_id).order_by().values_list("machine_id", "status")
    for machine, status, n in rows.annotate(n=Count("pk")):
        found.setdefault(machine, {})[status] = n
    order = {status: i for i, status in enumerate(engine.STATUSES)}
    return {machine: dict(sorted(counts.items(), key=lambda item: order.get(item[0], 99)))
            for machine, counts in found.items()}


def executions_per_version(version_ids) -> dict[int, int]:
    """machine version pk -> executions of it."""
    return dict(Execution.objects.filter(machine_version_id__in=list(version_ids)).order_by()
                .values_list("machine_version_id").annotate(n=Count("pk")))


# The heatmap of a version ----------------------------------------------------------------
def executions_in_states(machine_version) -> dict[str, int]:
    """state -> executions of the version there now; served by the (machine_version, state)
    index alone."""
    return dict(Execution.objects.filter(machine_version=machine_version).order_by()
                .values_list("state").annotate(n=Count("pk")))


def failed_in_states(machine_version) -> dict[str, int]:
    """state -> executions of the version that failed there (the heatmap shows them apart
    from the ones waiting)."""
    return dict(Execution.objects.filter(machine_version=machine_version,
                                         status=engine.FAILED).order_by()
                .values_list("state").annotate(n=Count("pk")))


def step_counts(machine: Machine, machine_version) -> list[tuple[dict, int]]:
    """(step row, times) pairs of the version's history, a step row holding the kind,
    transition, from_state and branch. Counting by (kind, transition) is served by the
    (machine_version, kind, transition) index; only transitions whose id is not unique in
    the machine, or that branch (decision, invoke), need a second look at their rows."""
    owners: dict[str, list[str]] = {}
    branching = set()
    for state in machine.states.values():
        for transition in state.transitions:
            owners.setdefault(transition.id, []).append(state.name)
            if transition.invoke or transition.decision:
                branching.add(transition.id)
    rows = HistoryEntry.objects.filter(machine_version=machine_version, kind__in=STEP_KINDS)
    out: list[tuple[dict, int]] = []
    unclear = set()
    for kind, tid, n in rows.order_by().values_list("kind", "transition").annotate(
            n=Count("pk")):
        states = owners.get(tid, [])
        if len(states) == 1 and (tid not in branching or kind == engine.WORK_STARTED):
            out.append(({"kind": kind, "transition": tid, "from_state": states[0]}, n))
        else:
            unclear.add((kind, tid))
    for kind in {kind for kind, _ in unclear}:
        tids = [tid for k, tid in unclear if k == kind]
        detailed = (rows.filter(kind=kind, transition__in=tids).order_by()
                    .values_list("transition", "from_state", "branch").annotate(n=Count("pk")))
        for tid, source, branch, n in detailed:
            out.append(({"kind": kind, "transition": tid, "from_state": source,
                         "branch": branch}, n))
    return out


def _stays(rows) -> dict[str, list[float]]:
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
    """state -> median seconds spent there, over the newest `window` history rows: a
    primary-key range, so the cost does not grow with the number of executions. (The
    version is checked in Python: given it, databases prefer its index and read every row
    of the version.)"""
    newest = HistoryEntry.objects.order_by("-pk").values_list("pk", flat=True).first()
    if newest is None:
        return {}
    rows = HistoryEntry.objects.filter(
        pk__gt=newest - window, kind__in=(engine.STARTED, engine.TRANSITION_TAKEN),
    ).order_by().values(
        "machine_version_id", "execution_id", "seq", "kind", "at", "from_state", "to_state")
    machine = machine_version.parsed()
    mine = [{**row, "state": machine.start_at} for row in rows
            if row["machine_version_id"] == machine_version.pk]
    found = _stays(mine)
    for state, seconds in _open_stays(mine, machine).items():
        found.setdefault(state, []).extend(seconds)
    return {state: statistics.median(seconds) for state, seconds in found.items()}


def _open_stays(rows: list[dict], machine: Machine) -> dict[str, list[float]]:
    """Seconds spent so far by the executions still paused in the state they last entered
    (a stay not over yet counts too: a state where executions pile up shows it). Final
    states and failed executions are left out: theirs is no stay."""
    entered: dict = {}
    for row in sorted(rows, key=lambda r: (r["execution_id"], r["seq"])):
        if row["kind"] == engine.STARTED:
            entered[row["execution_id"]] = (row["state"], row["at"])
        elif row["kind"] == engine.TRANSITION_TAKEN and (row["to_state"] or row["from_state"]) \
                != row["from_state"]:
            entered[row["execution_id"]] = (row["to_state"], row["at"])
    still = Execution.objects.filter(
        pk__in=list(entered), status__in=(*engine.PAUSED_STATUSES, engine.RUNNING),
    ).values_list("pk", "state")
    now = timezone.now()
    out: dict[str, list[float]] = {}
    for pk, state in still:
        name, at = entered[pk]
        if name == state and name in machine.states and not machine.states[name].is_terminal:
            out.setdefault(name, []).append((now - at).total_seconds())
    return out
# An execution's path without its every step row ----------------------------------------
MOVE_FIELDS = ("kind", "transition", "from_state", "to_state", "branch")


def moves(execution: Execution, before: int) -> list[dict]:
    """Each move of the execution (a step row's kind, transition, states and branch) once,
    with `times` taken and its `last` seq, and the same before history row `before`
    (`times_before`, `last_before`): one GROUP BY for the diagram's path and for where
    a timeline page starts."""
    earlier = Q(seq__lt=before)
    return list(execution.history.filter(kind__in=STEP_KINDS).order_by().values(*MOVE_FIELDS)
                .annotate(times=Count("pk"), last=Max("seq"),
                          times_before=Count("pk", filter=earlier),
                          last_before=Max("seq", filter=earlier)))


def step_moves(execution: Execution, keep: int, found_moves: list[dict]) -> list[dict]:
    """For each of `found_moves` (moves()), its first `keep` steps and its last, each a
    row with the move's fields, `seq`, `n` (the step's number), `k` (its rank within the
    move) and `times` (the move's total). The database numbers the steps (window
    functions, the moves partitioned by a small number standing for each: sorting by
    five texts cost more than reading every row), so a long history sends back a few
    rows per move instead of every step."""
    if not found_moves:
        return []
    move_number = Case(*(When(Q(**{name: move[name] for name in MOVE_FIELDS}), then=Value(i))
                         for i, move in enumerate(found_moves)), default=Value(-1))
    rows = (execution.history.filter(kind__in=STEP_KINDS)
            .annotate(n=Window(RowNumber(), order_by=F("seq").asc()),
                      k=Window(RowNumber(), partition_by=[move_number],
                               order_by=F("seq").asc()),
                      move=move_number)
            .filter(Q(k__lte=keep) | Q(seq__in=[move["last"] for move in found_moves]))
            .order_by("seq").values("seq", "n", "k", "move"))
    return [{**{name: found_moves[row["move"]][name] for name in MOVE_FIELDS},
             "seq": row["seq"], "n": row["n"], "k": row["k"],
             "times": found_moves[row["move"]]["times"]} for row in rows]


def moves_before(found_moves: list[dict]) -> list[dict]:
    """The moves() taken before the seq they were counted up to, each with `seq` its last
    time then and `times` how often, in the order they were last taken: what the
    diagram showed then, and (their sum) how many steps came before."""
    return sorted(({**{name: move[name] for name in MOVE_FIELDS}, "seq": move["last_before"],
                    "times": move["times_before"]} for move in found_moves
                   if move["times_before"]), key=lambda move: move["seq"])


def last_step_rows(execution: Execution, count: int, through: int) -> list[dict]:
    """The last `count` step rows (STEP_FIELDS) up to seq `through`, oldest first (the
    bound keeps them to what moves() counted, if a step was written since)."""
    rows = (execution.history.filter(kind__in=STEP_KINDS, seq__lte=through).order_by("-seq")
            .values(*STEP_FIELDS))
    return list(rows[:count])[::-1]

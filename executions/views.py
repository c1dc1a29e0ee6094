"""The explorer: pages that show machines and executions to people who don't read code.

Login everywhere; viewers read, operators act (POST + CSRF, through executions.services
like every other surface). What a page shows is computed by executions.paths (the path,
the steps, the heatmap) and executions.timeline (the words); the views only fetch rows,
with aggregate queries wherever the answer is a count.
"""
from __future__ import annotations

import json
import re
import uuid
from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from accounts.roles import can_operate, can_view, role_of
from executions import engine, paths, timeline
from executions import services as execution_services
from executions.forms import ActionForm, CancelForm, ExecutionFilter
from executions.models import Execution
from machines import diagrams, services
from machines.models import Machine, MachineVersion

PAGE_SIZE = 50  # executions per list page
HISTORY_PAGE = 200  # history rows per timeline page
TRIGGER_WAIT = 5  # seconds an action waits to be applied before the page reloads


# Access ----------------------------------------------------------------------------------
def _forbidden(request, why: str):
    return render(request, "explorer/forbidden.html", {"why": why}, status=403)


def viewer(view):
    """Logged in (else the login page) and at least a viewer (else 403)."""
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not can_view(request.user):
            return _forbidden(request, "Your account has no role yet: ask an administrator "
                                       "to make you a viewer, operator or editor.")
        return view(request, *args, **kwargs)
    return wrapped


def operator(view):
    """POST only, and only for operators: viewers read."""
    @require_POST
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not can_operate(request.user):
            return _forbidden(request, "Only operators can act on executions; you can look.")
        return view(request, *args, **kwargs)
    return wrapped


def _machine_url(machine_id: str) -> str:
    return reverse("explorer:machine", args=[machine_id])


def _page_context(request) -> dict:
    return {"role": role_of(request.user), "operator": can_operate(request.user)}


# Machines --------------------------------------------------------------------------------
@viewer
def machine_list(request):
    versions = list(services.latest_versions())
    counts: dict[str, dict[str, int]] = {}
    rows = Execution.objects.order_by().values_list("machine_id", "status").annotate(
        n=Count("pk"))
    for machine_id, status, n in rows:
        counts.setdefault(machine_id, {})[status] = n
    for version in versions:
        by_status = counts.get(version.machine_id, {})
        version.status_counts = [(s, by_status[s]) for s in engine.STATUSES if s in by_status]
        version.executions_total = sum(by_status.values())
        version.thumbnail = mark_safe(_thumbnail(version.parsed()))
    return render(request, "explorer/machines.html",
                  {"versions": versions, **_page_context(request)})


def _thumbnail(machine) -> str:
    """The cached diagram without ids and titles: a picture inside a link, several a page."""
    svg = diagrams.render_svg(machine)
    return _TITLES.sub("", _IDS.sub("", svg))


_IDS = re.compile(r' id="[^"]*"')
_TITLES = re.compile(r"<title>[^<]*</title>")


@viewer
def machine_detail(request, machine_id, version=None):
    try:
        machine_version = services.get_version(machine_id, version)
    except MachineVersion.DoesNotExist:
        raise Http404(f"No machine {machine_id!r} version {version or 'latest'}") from None
    machine = machine_version.parsed()
    all_versions = list(MachineVersion.objects.filter(machine_id=machine_id)
                        .order_by("-version").values("id", "version", "title", "created_at"))
    per_version = dict(Execution.objects.filter(
        machine_version_id__in=[item["id"] for item in all_versions]).order_by()
        .values_list("machine_version_id").annotate(n=Count("pk")))
    for item in all_versions:
        item["executions"] = per_version.get(item["id"], 0)

    compare = _compare(request, machine_id, all_versions)
    if compare:
        old, new, diff = compare
        svg = paths.mark_svg(diagrams.render_svg(new.parsed(), machine_url=_machine_url),
                             diff.classes())
        heat = None
        shown = new
    else:
        heat = paths.heat(machine_version)
        svg = paths.heat_svg(diagrams.render_svg(machine, machine_url=_machine_url), heat,
                             timeline.duration)
        shown = machine_version
    shown_machine = shown.parsed()

    filters = ExecutionFilter(request.GET or None)
    page = _page(filters.apply(Execution.objects.filter(machine_id=machine_id)),
                 request.GET.get("page"))
    status_counts = dict(Execution.objects.filter(machine_id=machine_id).order_by()
                         .values_list("status").annotate(n=Count("pk")))
    return render(request, "explorer/machine.html", {
        "version": shown, "definition": shown_machine, "all_versions": all_versions,
        "is_latest": shown.version == all_versions[0]["version"],
        "svg": mark_safe(svg),  # rendered by machines.diagrams, every label escaped
        "diagram_text": diagrams.describe(shown_machine),
        "heat": heat, "heat_rows": _heat_rows(shown_machine, heat) if heat else [],
        "compare": compare, "compare_value": request.GET.get("compare", ""),
        "filters": filters, "page": page, "rows": _execution_rows(page),
        "status_counts": [(s, status_counts[s]) for s in engine.STATUSES
                          if s in status_counts],
        "query": _query_without_page(request),
        **_page_context(request),
    })


def _compare(request, machine_id, all_versions):
    """`?compare=1..2` (or the form's `from`/`to`): (old, new, Diff), or None."""
    text = request.GET.get("compare", "")
    if not text and request.GET.get("from") and request.GET.get("to"):
        text = f"{request.GET['from']}..{request.GET['to']}"
    if ".." not in text:
        return None
    try:
        first, second = (int(part) for part in text.split("..", 1))
    except ValueError:
        return None
    known = {item["version"] for item in all_versions}
    if first not in known or second not in known:
        raise Http404("No such versions to compare")
    old = services.get_version(machine_id, min(first, second))
    new = services.get_version(machine_id, max(first, second))
    return old, new, paths.definition_diff(old.parsed(), new.parsed())


def _heat_rows(machine, heat: paths.Heat) -> list[dict]:
    """The heatmap as a table (its text alternative), states in definition order."""
    return [{
        "name": name, "label": state.display, "now": heat.in_state.get(name, 0),
        "stay": timeline.duration(heat.median_stay[name]) if name in heat.median_stay else "",
        "terminal": state.is_terminal,
    } for name, state in machine.states.items()]


# Executions ------------------------------------------------------------------------------
def _page(executions, number):
    """A page of executions, newest first. The ids are paged first and the rows fetched
    after: sorting narrow id rows is several times faster than sorting whole rows."""
    page = Paginator(executions.order_by("-created_at").values_list("pk", flat=True),
                     PAGE_SIZE).get_page(number)
    ids = list(page.object_list)
    found = Execution.objects.select_related("machine_version").in_bulk(ids)
    page.object_list = [found[pk] for pk in ids if pk in found]
    return page


def _execution_rows(page) -> list[dict]:
    rows = []
    for execution in page.object_list:
        machine = execution.machine_version.parsed()
        rows.append({"execution": execution, "state": timeline.state_name(machine,
                                                                          execution.state),
                     "title": machine.display})
    return rows


def _query_without_page(request) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


@viewer
def execution_list(request):
    filters = ExecutionFilter(request.GET or None)
    page = _page(filters.apply(Execution.objects.all()), request.GET.get("page"))
    return render(request, "explorer/executions.html", {
        "filters": filters, "page": page, "rows": _execution_rows(page),
        "machines": Machine.objects.values_list("id", flat=True),
        "query": _query_without_page(request), **_page_context(request),
    })


def _execution(execution_id) -> Execution:
    try:
        key = uuid.UUID(str(execution_id))
    except ValueError:
        raise Http404("Not an execution id") from None
    return get_object_or_404(
        Execution.objects.select_related("machine_version", "parent", "created_by"), pk=key)


@viewer
def execution_detail(request, execution_id):
    execution = _execution(execution_id)
    return _execution_page(request, execution)


def _execution_page(request, execution, *, action_form=None, status=200):
    machine = execution.machine_version.parsed()
    step_rows = list(paths.path_rows(execution))
    path = paths.path_from_rows(step_rows, start_at=machine.start_at, current=execution.state,
                                status=execution.status)
    numbers = paths.numbered_steps(step_rows)
    total = execution.engine_state.get("seq") or execution.history.count()
    first, last = _history_window(request, total)
    page_rows = list(execution.history.filter(seq__gte=first, seq__lte=last)
                     .order_by("seq").values())
    children = list(execution.children.order_by("created_at").values(
        "id", "parent_token", "machine_id", "status", "state"))
    child_links = {c["parent_token"]: (c["id"], reverse("explorer:execution", args=[c["id"]]))
                   for c in children}
    state_before = _state_before(execution, machine, step_rows, first)
    said = timeline.sentences(page_rows, machine, numbers, child_links, state_before)
    captions = {s.seq: s.text for s in said}
    context_before = _context_before(execution, first)
    steps = paths.build_steps(step_rows, page_rows, start_at=machine.start_at,
                              context_before=context_before,
                              final_status=execution.status if last >= total else None,
                              captions=captions)
    shown_context = steps[-1]["context"] if steps else execution.context
    changes = steps[-1]["changes"] if steps else paths.context_changes({}, {})
    work = execution.engine_state.get("work") or {}
    waiting_child = child_links.get(work.get("token")) if work.get("kind") == "machine" else None
    actions = (engine.available_actions(machine, execution.snapshot())
               if can_operate(request.user) else ())
    return render(request, "explorer/execution.html", {
        "execution": execution, "machine": machine, "title": _title(machine, execution),
        "status_line": mark_safe(timeline.status_line(
            machine, status=execution.status, state=execution.state,
            timer=execution.engine_state.get("timer"), work=work, error=execution.error,
            result=execution.result, child=waiting_child,
            started=bool(execution.engine_state))),
        "actions": [(name, timeline.action_label(machine, execution.state, name))
                    for name in actions],
        "action_form": action_form,
        "can_cancel": can_operate(request.user)
        and execution.status not in engine.TERMINAL_STATUSES,
        "can_retry": can_operate(request.user) and execution.status == engine.FAILED,
        "svg": mark_safe(diagrams.render_svg(machine, path, machine_url=_machine_url)),
        "diagram_text": diagrams.describe(machine, path),
        "path_words": _path_words(machine, step_rows),
        "steps": steps,
        "timeline": timeline.collapse(said),
        "history_total": total, "history_first": first, "history_last": last,
        "earlier": max(1, first - HISTORY_PAGE) if first > 1 else None,
        "later": last + 1 if last < total else None,
        "context_lines": _context_lines(shown_context, changes),
        "context_step": steps[-1]["n"] if steps else None,
        "children": children, "running_for": _running_for(execution),
        "started_by": timeline.who(execution.actor),
        "idle_for": timeline.duration((timezone.now() - page_rows[-1]["at"]).total_seconds())
        if page_rows and execution.status in engine.PAUSED_STATUSES else "",
        "result_json": json.dumps(execution.result, indent=2, ensure_ascii=False, default=str),
        "error_text": timeline.error_message(execution.error) if execution.error else "",
        **_page_context(request),
    }, status=status)


def _history_window(request, total: int) -> tuple[int, int]:
    """Seq range of the timeline page: `?from=N`, or the newest HISTORY_PAGE rows."""
    try:
        first = max(1, int(request.GET.get("from", "")))
    except ValueError:
        first = max(1, total - HISTORY_PAGE + 1)
    return first, min(total, first + HISTORY_PAGE - 1)


def _state_before(execution, machine, step_rows, first_seq) -> str:
    state = machine.start_at
    for row in step_rows:
        if row["seq"] >= first_seq:
            break
        if row["kind"] == engine.TRANSITION_TAKEN:
            state = row["to_state"] or row["from_state"]
    return state


def _context_before(execution, first_seq) -> dict | None:
    if first_seq <= 1:
        return None
    row = (execution.history.filter(seq__lt=first_seq, context__isnull=False)
           .order_by("-seq").values_list("context", flat=True).first())
    return row


def _title(machine, execution) -> str:
    return f"{machine.display} {execution.short_id}"


def _running_for(execution) -> str:
    end = execution.finished_at or timezone.now()
    return timeline.duration((end - execution.created_at).total_seconds())


def _path_words(machine, step_rows) -> list[str]:
    """The path as a list of sentences, the diagram's text alternative."""
    words = [f"Started in {timeline.state_name(machine, machine.start_at)}"]
    numbers = paths.numbered_steps(step_rows)
    for row in step_rows[-paths.MAX_STEPS:]:
        source = timeline.state_name(machine, row["from_state"])
        name = timeline.transition_name(machine, row["from_state"], row["transition"])
        if row["kind"] == engine.WORK_STARTED:
            words.append(f"Step {numbers[row['seq']]}: {name}, work started in {source}")
        else:
            target = timeline.state_name(machine, row["to_state"] or row["from_state"])
            words.append(f"Step {numbers[row['seq']]}: {name}, {source} to {target}")
    return words


def _context_lines(context, changes) -> list[tuple[str, str]]:
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


@viewer
def execution_status(request, execution_id):
    """What dm.js polls: the page reloads when `version` changes."""
    execution = _execution(execution_id)
    return JsonResponse({"version": execution.version, "status": execution.status,
                         "state": execution.state})


# Acting ----------------------------------------------------------------------------------
def _actor(request) -> str:
    return request.user.get_username()


@operator
def execution_trigger(request, execution_id):
    execution = _execution(execution_id)
    form = ActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Nothing was sent: the input needs fixing (see below).")
        return _execution_page(request, execution, action_form=form, status=400)
    action, given = form.cleaned_data["action"], form.cleaned_data["input"]
    machine = execution.machine_version.parsed()
    label = timeline.action_label(machine, execution.state, action)
    try:
        outcome = execution_services.trigger(execution.pk, action, input=given,
                                             actor=_actor(request), wait=True,
                                             timeout=TRIGGER_WAIT)
    except execution_services.NotAvailable as exc:
        messages.error(request, f"“{label}” was not applied: {exc.reason}")
    except execution_services.InvalidRequest as exc:
        messages.error(request, f"“{label}” was not sent: {exc}")
    else:
        done = outcome.execution
        messages.success(request, f"“{label}” was applied: the execution is now "
                                  f"{done.status} in {timeline.state_name(machine, done.state)}.")
    return redirect(execution.get_absolute_url())


@operator
def execution_cancel(request, execution_id):
    execution = _execution(execution_id)
    form = CancelForm(request.POST)
    reason = form.cleaned_data.get("reason") if form.is_valid() else None
    try:
        execution_services.cancel(execution.pk, actor=_actor(request), reason=reason or None)
    except execution_services.NotAvailable as exc:
        messages.error(request, f"Not canceled: {exc.reason}")
    else:
        messages.success(request, "The execution was canceled.")
    return redirect(execution.get_absolute_url())


@operator
def execution_retry(request, execution_id):
    execution = _execution(execution_id)
    try:
        outcome = execution_services.retry(execution.pk, actor=_actor(request))
    except execution_services.NotAvailable as exc:
        messages.error(request, f"Not retried: {exc.reason}")
    else:
        messages.success(request, f"Retried: the execution is now {outcome.execution.status}.")
    return redirect(execution.get_absolute_url())


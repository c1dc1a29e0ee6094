"""The operators' pages (executions/operations.py): repair one execution, failure groups,
bulk operations and migrations. Each operation is previewed before the button that does
it is shown, and asks for a reason."""
from __future__ import annotations

from django.contrib import messages
from django.core import signing
from django.core.exceptions import ObjectDoesNotExist
from django.core.paginator import Paginator
from django.http import Http404, QueryDict
from django.shortcuts import redirect
from django.urls import reverse

from accounts.roles import actor_of
from executions import migrating, operations, selectors
from executions.filters import ExecutionFilter
from explorer import presenters
from explorer.forms import OperationForm
from explorer.views.access import forbidden, page_context, viewer
from explorer.views.executions import render
from machines import diffs
from machines import selectors as machines

ITEMS_PAGE = 100  # a bulk operation's items per page
PREVIEW_SALT = "explorer.operate.previewed"


def _operation(request, form: OperationForm, mapping: dict | None = None):
    """The checked operation of a valid form, or None with the service's error on the form
    (field named where it can be)."""
    try:
        return operations.request(form.cleaned_data["operation"], mapping=mapping,
                                  **form.parameters())
    except operations.InvalidRequest as exc:
        field = (exc.path or "").split(".")[0].split("[")[0]
        form.add_error(field if field in form.fields else None, str(exc))
        return None


# One execution -------------------------------------------------------------------------------
@viewer
def operate(request, execution_id):
    """GET: the form (`?operation=`); POST `preview`: what it would do, and the button that
    does it; POST `confirm`: do it, with the reason given."""
    try:
        execution = selectors.execution(execution_id)
    except ObjectDoesNotExist:
        raise Http404("No such execution") from None
    machine = execution.machine_version.parsed()
    if request.method != "POST":
        kind = request.GET.get("operation", "retry")
        form = OperationForm(initial={
            "operation": kind, "state": execution.state if kind == "move" else "",
            "context": presenters.pretty_json(execution.context) if kind in ("edit", "move")
            else ""})
        return _operate_page(request, execution, machine, form, None)
    form = OperationForm(request.POST)
    operation = _operation(request, form) if form.is_valid() else None
    if operation is None:
        return _operate_page(request, execution, machine, form, None, status=400)
    if not operations.permitted(request.user, operation):
        return forbidden(request, f"This {operation.kind} needs the {operation.role} role.")
    if "confirm" not in request.POST or not _previewed(request, operation):
        if "confirm" in request.POST:
            form.add_error(None, "The operation changed since its preview: here is the "
                                 "preview of this one; confirm it again.")
        verdict = operations.preview(execution.pk, operation)
        return _operate_page(request, execution, machine, form, verdict, operation=operation)
    try:
        outcome = operations.perform(execution.pk, operation, actor=actor_of(request.user),
                                     reason=form.cleaned_data["reason"])
    except operations.InvalidRequest as exc:
        form.add_error("reason" if exc.path == "reason" else None, str(exc))
        verdict = operations.preview(execution.pk, operation)
        return _operate_page(request, execution, machine, form, verdict, status=400,
                             operation=operation)
    except operations.NotAvailable as exc:
        messages.error(request, f"Nothing was done: {exc.reason}")
        return redirect(execution.get_absolute_url())
    done = outcome.execution
    messages.success(request, f"Done ({operation.kind}): the execution is now {done.status} "
                              f"in {done.state}.")
    return redirect(execution.get_absolute_url())


def _previewed(request, operation) -> bool:
    """Whether the operation confirmed is the one whose preview was shown (signed in the
    preview's form: a field changed after it is previewed again, not done)."""
    try:
        return signing.loads(request.POST.get("previewed", ""), salt=PREVIEW_SALT) == \
            operation.as_dict()
    except signing.BadSignature:
        return False


def _operate_page(request, execution, machine, form, verdict, status=200, operation=None):
    return render(request, "explorer/operate.html", {
        "execution": execution, "machine": machine, "form": form, "verdict": verdict,
        "previewed": signing.dumps(operation.as_dict(), salt=PREVIEW_SALT)
        if verdict and operation else "",
        "states": list(machine.states.values()), **page_context(request)}, status=status)


# Failure groups ------------------------------------------------------------------------------
@viewer
def failures(request):
    filters = ExecutionFilter(request.GET or None, queryset=selectors.executions())
    groups = operations.failure_groups(filters.qs)
    for group in groups:
        group["query"] = _query(group["filters"])
    return render(request, "explorer/failures.html", {
        "groups": groups, "filters": filters, "machines": machines.machine_ids(),
        **page_context(request)})


def _query(filters: dict) -> str:
    query = QueryDict(mutable=True)
    for name, value in filters.items():
        query[name] = value
    return query.urlencode()


# Bulk operations -----------------------------------------------------------------------------
@viewer
def bulk_new(request):
    """The selection is the page's query (the list's filters); the form picks the operation.
    POST: the dry run, stored; then its page."""
    filters = ExecutionFilter(request.GET, queryset=selectors.executions(),
                              page_parameters=("ids", "operation", "sort"))
    if "ids" in request.GET:  # the rows ticked in a list
        selection: dict = {"ids": request.GET.getlist("ids")}
        count = len(selection["ids"])
    else:
        selection = {"filters": {name: values if len(values) > 1 else values[0]
                                 for name, values in request.GET.lists()
                                 if name not in ("page", "operation", "sort")}}
        count = filters.qs.count() if filters.is_valid() else 0
    if request.method != "POST":
        form = OperationForm(initial={"operation": request.GET.get("operation", "retry")})
        return _bulk_new_page(request, form, selection, count, filters)
    form = OperationForm(request.POST)
    mapping = {key[4:]: value for key, value in request.POST.items()
               if key.startswith("map.") and value}
    operation = _operation(request, form, mapping or None) if form.is_valid() else None
    if operation is None:
        return _bulk_new_page(request, form, selection, count, filters, status=400)
    if not operations.permitted(request.user, operation):
        return forbidden(request, f"This {operation.kind} needs the {operation.role} role.")
    try:
        bulk = operations.preview_bulk(selection, operation, actor=actor_of(request.user))
    except operations.InvalidRequest as exc:
        form.add_error(None, str(exc))
        return _bulk_new_page(request, form, selection, count, filters, status=400)
    return redirect("explorer:bulk", bulk.pk)


def _bulk_new_page(request, form, selection, count, filters, status=200):
    return render(request, "explorer/bulk_new.html", {
        "form": form, "selection": selection.get("filters", {}),
        "selected": len(selection.get("ids", ())), "count": count,
        "filters": filters, "query": request.GET.urlencode(), **page_context(request)},
        status=status)


@viewer
def bulk_detail(request, operation_id):
    """The dry run (what would happen to each), the run button with its reason, then the
    job's progress and each outcome."""
    try:
        bulk = operations.bulk_operation(operation_id)
    except ObjectDoesNotExist:
        raise Http404("No such bulk operation") from None
    operation = operations.request_of(bulk)
    if request.method == "POST":
        if not operations.permitted(request.user, operation):
            return forbidden(request, f"This {bulk.kind} needs the {operation.role} role.")
        try:
            if "resume" in request.POST:
                operations.resume_bulk(bulk.pk)
            else:
                operations.run_bulk(bulk.pk, actor=actor_of(request.user),
                                    reason=request.POST.get("reason"))
        except operations.InvalidRequest as exc:
            messages.error(request, f"Not started: {exc}")
        except operations.NotAvailable as exc:
            messages.error(request, f"Not started: {exc.reason}")
        else:
            messages.success(request, f"Started: the {bulk.kind} runs in the background.")
        return redirect("explorer:bulk", bulk.pk)
    page = Paginator(operations.bulk_items(bulk), ITEMS_PAGE).get_page(request.GET.get("page"))
    return render(request, "explorer/bulk.html", {
        "bulk": bulk, "operation": operation, "progress": operations.bulk_progress(bulk),
        "page": page, "can_run": operations.permitted(request.user, operation),
        **page_context(request)})


# Migrations ----------------------------------------------------------------------------------
@viewer
def migration(request, machine_id):
    """The proposed mapping from `from` to `to` (the page's query, `map.<state>` choosing),
    how many executions each state would move and what changes for them; the button
    previews the migration as a bulk operation."""
    try:
        plan = migrating.impact_from_query(machine_id, request.GET)
    except operations.InvalidRequest as exc:
        messages.error(request, f"No migration to show: {exc}")
        return redirect(reverse("explorer:machine", args=[machine_id]))
    old = machines.get_version(machine_id, plan.from_version).parsed()
    new = machines.get_version(machine_id, plan.to_version).parsed()
    return render(request, "explorer/migration.html", {
        "plan": plan, "targets": list(new.states.values()),
        "bulk_query": _query({"machine": machine_id, "version": plan.from_version}),
        **presenters.impact_diagram(new, diffs.definition_diff(old, new), plan),
        **page_context(request)})

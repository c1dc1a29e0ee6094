"""The execution pages: lists, one execution, its status for polling, and the actions
operators take (through the service functions, like every other surface)."""
from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.loader import render_to_string

from accounts.roles import actor_of, can_operate
from executions import selectors, services
from executions.filters import ExecutionFilter
from explorer import contracts, presenters, timeline
from explorer.forms import ActionForm, CancelForm
from explorer.views import search
from explorer.views.access import operator, page_context, query_without_page, viewer
from expressions.values import printable
from machines import selectors as machines

PAGE_SIZE = 50  # executions per list page
TRIGGER_WAIT = 5  # seconds an action waits to be applied before the page reloads


def render(request, template: str, context: dict, status: int = 200) -> HttpResponse:
    """django.shortcuts.render, except that text no page can encode (a lone surrogate in a
    value stored before every value was checked) is written escaped (`\\ud800`) instead
    of failing the whole page with a 500."""
    text = render_to_string(template, context, request)
    return HttpResponse(text.encode("utf-8", "backslashreplace"),
                        content_type="text/html; charset=utf-8", status=status)


def _found(view):
    """404 for an execution id that is unknown or not an id at all. A short id (a unique
    prefix) opens its execution: a page redirects to the full id, an action is taken; one
    that several ids start with lists them to choose from."""
    @wraps(view)
    def wrapped(request, execution_id, *args, **kwargs):
        try:
            return view(request, selectors.execution(execution_id), *args, **kwargs)
        except ObjectDoesNotExist:
            pass
        try:
            full = selectors.execution_id_of(execution_id)
            if str(full) == str(execution_id).strip().lower():  # a full id: it does not exist
                raise Http404("No such execution")
        except ObjectDoesNotExist:
            raise Http404("No such execution") from None
        except selectors.AmbiguousId as exc:
            return search.choices(request, execution_id,
                                  [(found, "id") for found in exc.candidates], status=300)
        if request.method == "GET":
            return redirect(request.get_full_path().replace(execution_id, str(full), 1))
        return view(request, selectors.execution(full), *args, **kwargs)
    return wrapped


@viewer
def execution_list(request):
    filters = ExecutionFilter(request.GET or None, queryset=selectors.executions(),
                              page_parameters=("sort",))
    sort = request.GET.get("sort") or "newest"
    bad_sort = sort not in selectors.SORTS
    page = selectors.execution_page(filters.qs, request.GET.get("page"), PAGE_SIZE,
                                    "newest" if bad_sort else sort)
    columns = contracts.attribute_columns(_machine_of(request.GET.get("machine")))
    return render(request, "explorer/executions.html", {
        "filters": filters, "page": page,
        "rows": contracts.with_attributes(presenters.execution_rows(page), columns),
        "attribute_columns": columns,
        "machines": machines.machine_ids(), "sorts": list(selectors.SORTS), "sort": sort,
        "bad_sort": bad_sort, "states": machines.state_choices(request.GET.get("machine")),
        "query": query_without_page(request), **page_context(request),
    })


def _machine_of(machine_id: str | None):
    """The latest definition of the machine a list is filtered to (None: any machine)."""
    if not machine_id:
        return None
    try:
        return machines.get_version(machine_id).parsed()
    except ObjectDoesNotExist:
        return None


@viewer
@_found
def execution_detail(request, execution):
    return _execution_page(request, execution)


def _execution_page(request, execution, *, action_form=None, bound=None, status=200):
    shown = presenters.execution_page(execution, asked_from=request.GET.get("from"),
                                      asked_to=request.GET.get("to"),
                                      can_act=can_operate(request.user))
    generated = contracts.action_forms(shown["machine"], shown["actions"], bound)
    with_form = {item["name"] for item in generated}
    one_click = [(n, label) for n, label in shown["actions"] if n not in with_form]
    declared = shown["machine"].action_inputs
    # The JSON box for the actions that declare no input: each posts through its button's
    # form (`action-N`, N counting the one-click buttons).
    json_actions = [(n, label, index) for index, (n, label) in enumerate(one_click, 1)
                    if n not in declared]
    return render(request, "explorer/execution.html",
                  {**shown, "action_form": action_form, "action_forms": generated,
                   "one_click": one_click, "json_actions": json_actions,
                   **page_context(request)},
                  status=status)


@viewer
@_found
def execution_status(request, execution):
    """What dm.js polls: the page reloads when `version` changes."""
    return JsonResponse(printable({"version": execution.version, "status": execution.status,
                                   "state": execution.state}))


# Acting ----------------------------------------------------------------------------------
@operator
@_found
def execution_trigger(request, execution):
    machine = execution.machine_version.parsed()
    generated = contracts.bound_form(machine, request.POST.get("action", ""), request.POST)
    form = ActionForm(request.POST if generated is None else
                      {"action": request.POST.get("action"), "input": "{}"})
    if not form.is_valid() or (generated is not None and not generated.is_valid()):
        messages.error(request, "Nothing was sent: the input needs fixing (see below).")
        return _execution_page(request, execution, action_form=form, status=400,
                               bound=(request.POST.get("action"), generated))
    action = form.cleaned_data["action"]
    given = form.cleaned_data["input"] if generated is None else contracts.input_of(generated)
    label = timeline.action_label(machine, execution.state, action)
    try:
        outcome = services.trigger(execution.pk, action, input=given,
                                   actor=actor_of(request.user), wait=True,
                                   timeout=TRIGGER_WAIT)
    except services.NotAvailable as exc:
        messages.error(request, f"“{label}” was not applied: {exc.reason}")
    except services.InvalidRequest as exc:
        if generated is None:
            messages.error(request, f"“{label}” was not sent: {exc}")
        else:  # the schema's word on the form's fields, shown beside them
            for path, message in exc.problems:
                name = path.removeprefix("input").lstrip(".").split(".")[0].split("[")[0]
                generated.add_error(name if name in generated.fields else None, message)
            messages.error(request, f"“{label}” was not sent: the input needs fixing.")
            return _execution_page(request, execution, action_form=form, status=400,
                                   bound=(action, generated))
    else:
        done = outcome.execution
        messages.success(request, f"“{label}” was applied: the execution is now "
                                  f"{done.status} in {timeline.state_name(machine, done.state)}.")
    return redirect(execution.get_absolute_url())


@operator
@_found
def execution_cancel(request, execution):
    form = CancelForm(request.POST)
    reason = form.cleaned_data.get("reason") if form.is_valid() else None
    if not reason:  # a cancel is confirmed with its reason (explorer:operate asks for both)
        messages.error(request, "Not canceled: say why (the reason is required).")
        return redirect(execution.get_absolute_url())
    try:
        services.cancel(execution.pk, actor=actor_of(request.user), reason=reason)
    except services.NotAvailable as exc:
        messages.error(request, f"Not canceled: {exc.reason}")
    else:
        messages.success(request, "The execution was canceled.")
    return redirect(execution.get_absolute_url())


@operator
@_found
def execution_retry(request, execution):
    try:
        outcome = services.retry(execution.pk, actor=actor_of(request.user))
    except services.NotAvailable as exc:
        messages.error(request, f"Not retried: {exc.reason}")
    else:
        messages.success(request, f"Retried: the execution is now {outcome.execution.status}.")
    return redirect(execution.get_absolute_url())

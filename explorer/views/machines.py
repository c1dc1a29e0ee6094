"""The machine pages: every machine, and one machine with its heatmap or a version diff."""
from __future__ import annotations

from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from executions import migrating
from executions import selectors as executions
from executions.filters import ExecutionFilter
from explorer import presenters
from explorer.views.access import page_context, query_without_page, viewer
from machines import diagrams, diffs
from machines import selectors as machines

PAGE_SIZE = 50  # executions per list page


@viewer
def machine_list(request):
    versions = presenters.machine_cards(list(machines.latest_versions()))
    return render(request, "explorer/machines.html",
                  {"versions": versions, **page_context(request)})


@viewer
def machine_detail(request, machine_id, version=None):
    try:
        machine_version = machines.get_version(machine_id, version)
    except ObjectDoesNotExist:
        raise Http404(f"No machine {machine_id!r} version {version or 'latest'}") from None
    all_versions = machines.version_summaries(machine_id)
    per_version = executions.executions_per_version(item["id"] for item in all_versions)
    for item in all_versions:
        item["executions"] = per_version.get(item["id"], 0)

    compare = _compare(request, machine_id, all_versions)
    if compare:
        old, new, diff = compare
        impact = migrating.plan(machine_id, old.version, new.version)
        drawing = presenters.impact_diagram(new.parsed(), diff, impact)
        heat = None
        shown = new
    else:
        impact = None
        heat = presenters.heat(machine_version)
        drawing = presenters.heat_diagram(machine_version.parsed(), heat)
        shown = machine_version
    shown_machine = shown.parsed()

    filters = ExecutionFilter(request.GET or None, queryset=executions.executions(machine_id),
                              page_parameters=("compare", "from", "to"))
    page = executions.execution_page(filters.qs,
                                     request.GET.get("page"), PAGE_SIZE)
    return render(request, "explorer/machine.html", {
        "version": shown, "definition": shown_machine, "all_versions": all_versions,
        "is_latest": shown.version == all_versions[0]["version"],
        **drawing, "diagram_text": diagrams.describe(shown_machine),
        "heat": heat, "heat_rows": presenters.heat_rows(shown_machine, heat) if heat else [],
        "compare": compare, "impact": impact,
        "compare_value": request.GET.get("compare", ""),
        "filters": filters, "page": page, "rows": presenters.execution_rows(page),
        "states": [(name, state.display) for name, state in shown_machine.states.items()],
        "status_counts": list(executions.counts_by_status(machine_id).get(machine_id, {}).items()),
        "query": query_without_page(request),
        "schedules": presenters.schedule_rows(machines.schedules_of(machine_id)),
        **page_context(request),
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
    old = machines.get_version(machine_id, min(first, second))
    new = machines.get_version(machine_id, max(first, second))
    return old, new, diffs.definition_diff(old.parsed(), new.parsed())


THUMBNAIL_MAX_AGE = 24 * 3600  # a saved version never changes


@viewer
@require_GET
def machine_thumbnail(request, machine_id, version):
    """The machine list's picture of one version, as an SVG image: the list itself runs no
    `dot`, each thumbnail request at most one (bounded, cached). A version too large to
    draw answers a small "too large to draw" picture (200: it is what there is to show)."""
    try:
        machine = machines.get_version(machine_id, version).parsed()
    except ObjectDoesNotExist:
        raise Http404(f"No machine {machine_id!r} version {version}") from None
    try:
        text = presenters.thumbnail_svg(diagrams.render_svg(machine))
    except diagrams.DiagramUnavailable as exc:
        text = diagrams.notice_svg(exc.detail, exc.title)
    response = HttpResponse(text, content_type="image/svg+xml; charset=utf-8")
    response["Cache-Control"] = f"private, max-age={THUMBNAIL_MAX_AGE}"
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response

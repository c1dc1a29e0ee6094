"""The search box in every page's header: a full or short execution id, a business key, or
an attribute's value (text or number). One match opens that execution; several are listed
to choose."""
from __future__ import annotations

from types import SimpleNamespace

from django.shortcuts import redirect, render

from executions import selectors
from explorer import presenters
from explorer.views.access import page_context, viewer


@viewer
def search(request):
    text = request.GET.get("q", "").strip()
    matches = selectors.search(text) if text else []
    if len(matches) == 1:
        return redirect(matches[0][0].get_absolute_url())
    return choices(request, text, matches)


def choices(request, text: str, matches: list, status: int = 200):
    """The executions `text` could mean, with how each matched."""
    # execution_rows reads a page's object_list
    rows = presenters.execution_rows(SimpleNamespace(object_list=[e for e, _ in matches]))
    for row, (_, how) in zip(rows, matches, strict=True):
        row["matched"] = {"id": "its id", "key": "its key"}.get(how, f"attribute “{how}”")
    return render(request, "explorer/search.html",
                  {"text": text, "rows": rows, "limit": selectors.SEARCH_LIMIT,
                   **page_context(request)}, status=status)



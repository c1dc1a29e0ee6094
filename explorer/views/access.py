"""Who may open a page: logged in and a viewer to read, an operator to act."""
from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.shortcuts import render
from django.views.decorators.http import require_POST

from accounts.roles import can_operate, can_view, role_of


def forbidden(request, why: str):
    return render(request, "explorer/forbidden.html", {"why": why}, status=403)


def viewer(view):
    """Logged in (else the login page) and at least a viewer (else 403)."""
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not can_view(request.user):
            return forbidden(request, "Your account has no role yet: ask an administrator "
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
            return forbidden(request, "Only operators can act on executions; you can look.")
        return view(request, *args, **kwargs)
    return wrapped


def page_context(request) -> dict:
    """What every page's header needs to know about the user."""
    return {"role": role_of(request.user), "operator": can_operate(request.user)}


def query_without_page(request) -> str:
    """The list's filters as a query string, for the links to other pages."""
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()

"""DRF permission classes for the three roles (accounts.roles): one rule per kind of view.

A failed check on an anonymous request becomes 401 (DRF asks the first authenticator,
TokenAuthentication, for its WWW-Authenticate header); on a signed-in user, 403.
"""
from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.roles import can_edit, can_operate, can_view


class CanView(BasePermission):
    """Viewers (and every role above them) read."""

    message = "Reading needs the viewer role (or operator, editor)."

    def has_permission(self, request, view):
        return can_view(request.user)


class ReadOrOperate(BasePermission):
    """Viewers read; operators start, trigger, cancel and retry."""

    message = "Starting, triggering, canceling or retrying executions needs the operator role."

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            self.message = CanView.message  # instances are per request
            return can_view(request.user)
        return can_operate(request.user)


class ReadOrEdit(BasePermission):
    """Viewers read; editors save machine versions (their expressions are code)."""

    message = "Saving machine versions needs the editor role."

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            self.message = CanView.message
            return can_view(request.user)
        return can_edit(request.user)

"""The admin site of Data Machines: its name, the order of its apps, and who may enter.

Who may enter: staff, as in Django, and editors (accounts.roles.can_edit) without being
staff, so giving someone the `editor` group is all it takes to let them use the machine
editor. What they see inside is still decided per model by their permissions: an editor
sees Machines and Machine versions, and Executions read-only (executions/admin.py), not
users or the queue.

The order: the product's apps first (Machines, Executions), then users and groups, then
django-q's task tables under one "Queue (operations)" heading at the end, so "Failed
tasks" never sits next to Machines.
"""
from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.utils.translation import gettext_lazy as _

from accounts.roles import can_edit

APP_ORDER = ["machines", "executions", "auth", "authtoken", "django_q"]
APP_NAMES = {"django_q": "Queue (operations)"}


def may_use_admin(user) -> bool:
    """Staff, or an editor (an active user whose groups let them save machine versions)."""
    return bool(user.is_active and (user.is_staff or can_edit(user)))


class LoginForm(AdminAuthenticationForm):
    """The admin's login form, letting in the editors has_permission lets in."""

    def confirm_login_allowed(self, user):
        if not may_use_admin(user):
            raise forms.ValidationError(
                _("Please enter the correct %(username)s and password for a staff account. "
                  "Note that both fields may be case-sensitive."),
                code="invalid_login",
                params={"username": self.username_field.verbose_name},
            )


class DataMachinesAdminSite(admin.AdminSite):
    site_header = "Data Machines administration"
    site_title = "Data Machines admin"
    index_title = "Machines, executions, users and the queue"
    site_url = "/"  # "View site": back to the explorer
    login_form = LoginForm

    def has_permission(self, request):
        return may_use_admin(request.user)

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        for app in apps:
            if app["app_label"] in APP_NAMES:
                app["name"] = APP_NAMES[app["app_label"]]
        known = {label: i for i, label in enumerate(APP_ORDER)}
        others = APP_ORDER.index("django_q") - 0.5  # any other app: before the queue
        return sorted(apps, key=lambda app: (known.get(app["app_label"], others), app["name"]))

"""Every /api/ route (docs/api.md). Included from workflow_site/urls.py under "api/".

The schema and the interactive docs need a login (a session or a token) unless
settings.API_DOCS_PUBLIC (DM_API_DOCS_PUBLIC=true): the docs page sends a browser to the
login page, the schema answers 401 in the error shape.

Anything else under /api/ (an unknown path, a malformed UUID or machine id, a version
beyond the database's integer range) gets a JSON 404 in the one error shape.
"""
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.urls import path, re_path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer

from api.views import not_found
from executions.api import operations
from executions.api import views as executions
from machines.api import views as machines

app_name = "api"


class MachineIdConverter:
    """The language's machine id pattern, so no other text reaches a query."""

    regex = r"[a-z0-9][a-z0-9._-]{0,99}"

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


class VersionConverter:
    """1..2147483647 as a number (the column's range); longer numbers do not match."""

    regex = r"[0-9]{1,10}"

    def to_python(self, value):
        number = int(value)
        if not 1 <= number <= 2**31 - 1:
            raise ValueError("version out of range")
        return number

    def to_url(self, value):
        return str(value)


class DocsPermission(BasePermission):
    def has_permission(self, request, view):
        return settings.API_DOCS_PUBLIC or bool(request.user and request.user.is_authenticated)


class SchemaView(SpectacularAPIView):
    permission_classes = [DocsPermission]

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        # Errors in JSON (the one error shape), not in the schema's YAML.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


# The Swagger page loads its start-up script from this same view (?script=): no inline
# script, so the Content-Security-Policy need not allow any.
_docs = SpectacularSwaggerSplitView.as_view(url_name="api:schema",
                                            permission_classes=[DocsPermission])


def docs(request, *args, **kwargs):
    if not settings.API_DOCS_PUBLIC and not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    return _docs(request, *args, **kwargs)


class ExecutionReferenceConverter:
    """A full execution id or a short one (a prefix of at least 4 hex digits): the view
    resolves it (executions.api.views.AddressedExecution)."""

    regex = r"[0-9a-fA-F][0-9a-fA-F-]{3,35}"

    def to_python(self, value):
        return value

    def to_url(self, value):
        return str(value)


class KeyConverter:
    """A business key: any text without '/' up to 200 characters (the column's size)."""

    regex = r"[^/]{1,200}"

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(MachineIdConverter, "machine")
register_converter(VersionConverter, "version")
register_converter(ExecutionReferenceConverter, "execution")
register_converter(KeyConverter, "key")

VERSION = "machines/<machine:machine_id>/versions/<version:version>/"
EXECUTION = "executions/<execution:execution_id>/"
BY_KEY = "machines/<machine:machine_id>/keys/<key:key>/"

urlpatterns = [
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", docs, name="docs"),
    path("machines/", machines.MachineListView.as_view(), name="machines"),
    path("machines/validate/", machines.MachineValidateView.as_view(), name="validate"),
    path("machines/<machine:machine_id>/", machines.MachineDetailView.as_view(),
         name="machine"),
    path("machines/<machine:machine_id>/versions/", machines.MachineVersionListView.as_view(),
         name="machine-versions"),
    path(VERSION, machines.MachineVersionDetailView.as_view(), name="machine-version"),
    path(VERSION + "diagram.svg", machines.VersionDiagramSVGView.as_view(),
         name="machine-version-svg"),
    path(VERSION + "diagram.dot", machines.VersionDiagramDOTView.as_view(),
         name="machine-version-dot"),
    path("machines/<machine:machine_id>/executions/", executions.StartView.as_view(),
         name="start"),
    path("executions/", executions.ExecutionListView.as_view(), name="executions"),
    path(EXECUTION, executions.ExecutionDetailView.as_view(), name="execution"),
    path(EXECUTION + "history/", executions.HistoryView.as_view(), name="execution-history"),
    path(EXECUTION + "actions/", executions.TriggerView.as_view(), name="trigger"),
    path(EXECUTION + "cancel/", executions.CancelView.as_view(), name="cancel"),
    path(EXECUTION + "retry/", executions.RetryView.as_view(), name="retry"),
    path(EXECUTION + "operations/", operations.OperationView.as_view(), name="operation"),
    path("failures/", operations.FailureGroupsView.as_view(), name="failure-groups"),
    path("bulk-operations/", operations.BulkListView.as_view(), name="bulk-operations"),
    path("bulk-operations/<uuid:operation_id>/", operations.BulkDetailView.as_view(),
         name="bulk-operation"),
    path("bulk-operations/<uuid:operation_id>/run/", operations.BulkRunView.as_view(),
         name="bulk-run"),
    path("machines/<machine:machine_id>/migration/", operations.MigrationView.as_view(),
         name="migration"),
    path(EXECUTION + "diagram.svg", executions.ExecutionDiagramView.as_view(),
         name="execution-svg"),
    path("machines/<machine:machine_id>/openapi.json", executions.MachineOpenAPIView.as_view(),
         name="machine-openapi"),
    path(BY_KEY, executions.ExecutionDetailView.as_view(), name="execution-by-key"),
    path(BY_KEY + "history/", executions.HistoryView.as_view(), name="history-by-key"),
    path(BY_KEY + "actions/", executions.TriggerView.as_view(), name="trigger-by-key"),
    path(BY_KEY + "cancel/", executions.CancelView.as_view(), name="cancel-by-key"),
    path(BY_KEY + "retry/", executions.RetryView.as_view(), name="retry-by-key"),
    re_path(r"^", not_found),  # everything else, newlines in the path included
]

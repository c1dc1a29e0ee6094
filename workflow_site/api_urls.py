"""The /api/ routes (docs/api.md). Included from workflow_site/urls.py under "api/".

Anything else under /api/ (an unknown path, a malformed UUID or machine id, a version
beyond the database's integer range) gets a JSON 404 in the one error shape.
"""
from django.http import JsonResponse
from django.urls import Resolver404, path, re_path, register_converter, resolve
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from executions import api as executions_api
from machines import api as machines_api
from workflow_site.api_errors import error_body

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


register_converter(MachineIdConverter, "machine")
register_converter(VersionConverter, "version")


@csrf_exempt  # a POST to a wrong path is a 404, not Django's HTML CSRF page
def not_found(request):
    detail = f"No API endpoint at {request.path}."
    return JsonResponse(error_body("not_found", detail, [
        {"path": request.path, "message": detail, "hint": _slash_hint(request.path)}]),
        status=404)


def _slash_hint(path: str) -> str | None:
    if path.endswith("/"):
        return None
    try:
        found = resolve(path + "/").func is not not_found
    except Resolver404:
        found = False
    return f"API paths end with a slash: {path}/" if found else None


VERSION = "machines/<machine:machine_id>/versions/<version:version>/"
EXECUTION = "executions/<uuid:execution_id>/"

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("machines/", machines_api.MachineListView.as_view(), name="machines"),
    path("machines/validate/", machines_api.MachineValidateView.as_view(), name="validate"),
    path("machines/<machine:machine_id>/", machines_api.MachineDetailView.as_view(),
         name="machine"),
    path("machines/<machine:machine_id>/versions/", machines_api.MachineVersionListView.as_view(),
         name="machine-versions"),
    path(VERSION, machines_api.MachineVersionDetailView.as_view(), name="machine-version"),
    path(VERSION + "diagram.svg", machines_api.VersionDiagramSVGView.as_view(),
         name="machine-version-svg"),
    path(VERSION + "diagram.dot", machines_api.VersionDiagramDOTView.as_view(),
         name="machine-version-dot"),
    path("machines/<machine:machine_id>/executions/", executions_api.StartView.as_view(),
         name="start"),
    path("executions/", executions_api.ExecutionListView.as_view(), name="executions"),
    path(EXECUTION, executions_api.ExecutionDetailView.as_view(), name="execution"),
    path(EXECUTION + "history/", executions_api.HistoryView.as_view(), name="execution-history"),
    path(EXECUTION + "actions/", executions_api.TriggerView.as_view(), name="trigger"),
    path(EXECUTION + "cancel/", executions_api.CancelView.as_view(), name="cancel"),
    path(EXECUTION + "retry/", executions_api.RetryView.as_view(), name="retry"),
    path(EXECUTION + "diagram.svg", executions_api.ExecutionDiagramView.as_view(),
         name="execution-svg"),
    re_path(r"^", not_found),  # everything else, newlines in the path included
]

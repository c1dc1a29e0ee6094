"""Shared API views: the base every API view uses, the diagram view and the JSON 404."""
from django.http import HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.views import APIView

from accounts.api_permissions import CanView
from api.errors import error_body, exception_handler
from api.parsers import JSONBodyParser


class ErrorShapeMixin:
    # For every API view: the one error shape and the bounded JSON parser. (A comment, not
    # a docstring: drf-spectacular would show a docstring as every view's description.)

    parser_classes = [JSONBodyParser]

    def get_exception_handler(self):
        return exception_handler


class JSONErrorsOnly(BaseContentNegotiation):
    """Diagram views answer SVG/DOT by their URL and errors in JSON, whatever `Accept` says."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None


class DiagramView(ErrorShapeMixin, APIView):
    """Base of the diagram endpoints: `content_type` says which format; `get` draws."""

    permission_classes = [CanView]
    content_negotiation_class = JSONErrorsOnly
    content_type = "image/svg+xml; charset=utf-8"

    def diagram(self, text: str) -> HttpResponse:
        return HttpResponse(text, content_type=self.content_type)


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

"""The machines part of the HTTP API (docs/api.md): list, save, validate, versions, diagrams.

Views only translate HTTP to the service functions in machines.services; errors raised
there (DefinitionError, VersionConflict, DoesNotExist) become the one error shape in
workflow_site.api_errors.
"""
from django.db.models import Count
from django.http import HttpResponse
from django.urls import NoReverseMatch, reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api_permissions import CanView, ReadOrEdit
from machines import diagrams
from machines.models import Machine, MachineVersion
from machines.selectors import get_version, latest_versions
from machines.services import check_source, save_version
from workflow_site.api_errors import (
    ErrorShapeMixin,
    JSONBodyParser,
    TextBodyParser,
    TextYAMLParser,
)

ORDER_YAML = """id: order
title: Order
execution_mode: sync
start_at: cart
context: {items: []}
states:
  cart:
    actions:
      - {id: add, on: add, assign: {items: "ctx['items'] + [input['sku']]"}}
      - {id: place, on: place, when: "len(ctx['items']) > 0", state: placed}
  placed: {return: "ctx['items']"}
"""


# Links ------------------------------------------------------------------------------------
def page_url(obj) -> str | None:
    """The explorer page of a machine, version or execution (None until explorer routes exist)."""
    try:
        return obj.get_absolute_url()
    except NoReverseMatch:
        return None


def machine_link(machine_id: str) -> str:
    """Where an invoked machine's node on a diagram links to: its page, else its API."""
    try:
        return reverse("explorer:machine", args=[machine_id])
    except NoReverseMatch:
        return reverse("api:machine", args=[machine_id])


# Serializers ------------------------------------------------------------------------------
class ProblemSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="Where: `states.cart.actions[2].state`; '' for the "
                                           "whole document or body.")
    message = serializers.CharField()
    hint = serializers.CharField(allow_null=True, required=False)
    line = serializers.IntegerField(required=False, help_text="In expressions and text.")
    column = serializers.IntegerField(required=False)


class ErrorSerializer(serializers.Serializer):
    """The shape of every error answer."""

    type = serializers.CharField(help_text="validation_error, parse_error, invalid_definition, "
                                           "not_authenticated, permission_denied, not_found, "
                                           "version_conflict, not_available, payload_too_large…")
    detail = serializers.CharField(help_text="A human sentence.")
    errors = ProblemSerializer(many=True)
    warnings = ProblemSerializer(many=True, required=False,
                                 help_text="Only for invalid_definition.")
    available_actions = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Only for not_available.")


class MachineVersionSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="machine_id", help_text="The machine id.")
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True,
                                              allow_null=True)
    definition = serializers.JSONField(help_text="The parsed definition, version filled in.")
    api_url = serializers.SerializerMethodField()
    diagram_url = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField(help_text="Its page in the explorer.")

    class Meta:
        model = MachineVersion
        fields = ["id", "version", "title", "description", "definition", "source",
                  "source_format", "content_hash", "created_at", "created_by", "api_url",
                  "diagram_url", "url"]

    def get_api_url(self, version) -> str:
        return reverse("api:machine-version", args=[version.machine_id, version.version])

    def get_diagram_url(self, version) -> str:
        return reverse("api:machine-version-svg", args=[version.machine_id, version.version])

    def get_url(self, version) -> str | None:
        return page_url(version)


class SavedVersionSerializer(MachineVersionSerializer):
    warnings = serializers.SerializerMethodField()

    class Meta(MachineVersionSerializer.Meta):
        fields = MachineVersionSerializer.Meta.fields + ["warnings"]

    def get_warnings(self, version) -> list[dict]:
        return self.context.get("warnings", [])


class MachineSummarySerializer(serializers.Serializer):
    id = serializers.CharField(source="machine_id")
    version = serializers.IntegerField(help_text="The latest version.")
    title = serializers.CharField()
    description = serializers.CharField()
    versions = serializers.IntegerField(source="versions_count",
                                        help_text="How many versions are stored.")
    executions = serializers.DictField(
        child=serializers.IntegerField(), source="execution_counts",
        help_text="Executions of every version by status, e.g. {\"waiting\": 3}.")
    api_url = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField(help_text="Its page in the explorer.")

    def get_api_url(self, version) -> str:
        return reverse("api:machine", args=[version.machine_id])

    def get_url(self, version) -> str | None:
        return page_url(version.machine)


class ValidationSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    errors = ProblemSerializer(many=True)
    warnings = ProblemSerializer(many=True)


def execution_counts() -> dict[str, dict[str, int]]:
    """machine id -> {status: count}, in one query over the executions relation."""
    rows = (Machine.objects.filter(executions__isnull=False)
            .values_list("id", "executions__status").annotate(n=Count("executions"))
            .order_by())
    counts: dict[str, dict[str, int]] = {}
    for machine_id, status, n in rows:
        counts.setdefault(machine_id, {})[status] = n
    return counts


# Request bodies ---------------------------------------------------------------------------
def source_of(data):
    """The definition in a save/validate body: `{"source": text or object}`, the object
    itself, or YAML/JSON text posted as application/yaml."""
    if isinstance(data, dict) and "source" in data:
        source = data["source"]
        if not isinstance(source, (str, dict)):
            raise exceptions.ValidationError(
                {"source": ["must be the definition as YAML/JSON text, or the object itself"]})
        return source
    if not isinstance(data, (dict, str)):
        raise exceptions.ValidationError(
            ["The body must be the definition object, {\"source\": text}, or YAML text."])
    return data


def error_response(what: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=what)


COMMON_ERRORS = {
    401: error_response("No or invalid credentials."),
    403: error_response("The user's role does not allow this."),
}
BODY_ERRORS = {
    400: error_response("Malformed body or invalid values."),
    413: error_response("Body larger than the limit (256 KiB by default)."),
    415: error_response("Not JSON (or YAML where accepted)."),
}
NOT_FOUND = {404: error_response("No such machine or version.")}

SOURCE_BODY_EXAMPLES = [
    OpenApiExample("YAML text", value={"source": ORDER_YAML}, request_only=True),
    OpenApiExample("Definition object", request_only=True, value={
        "id": "order", "execution_mode": "sync", "start_at": "cart",
        "states": {"cart": {"actions": [{"id": "place", "on": "place", "state": "placed"}]},
                   "placed": {"return": None}}}),
]
VERSION_EXAMPLE = OpenApiExample("A stored version", response_only=True, value={
    "id": "order", "version": 3, "title": "Order", "description": "",
    "definition": {"id": "order", "version": 3, "start_at": "cart", "states": {}},
    "source": ORDER_YAML, "source_format": "yaml", "content_hash": "9f2c…",
    "created_at": "2026-11-26T10:00:00Z", "created_by": "erin",
    "api_url": "/api/machines/order/versions/3/",
    "diagram_url": "/api/machines/order/versions/3/diagram.svg", "url": "/machines/order/3/"})
INVALID_EXAMPLE = OpenApiExample("Invalid definition", status_codes=[400], response_only=True,
                                 value={
    "type": "invalid_definition", "detail": "1 problem in the definition.",
    "errors": [{"path": "states.cart.actions[1].state", "message": "unknown state 'placd'",
                "hint": "did you mean 'placed'?"}], "warnings": []})


# Views ------------------------------------------------------------------------------------
class MachineListView(ErrorShapeMixin, APIView):
    permission_classes = [ReadOrEdit]
    parser_classes = [JSONBodyParser, TextBodyParser, TextYAMLParser]

    @extend_schema(
        summary="List machines",
        description="The latest version of every machine, with its number of versions and "
                    "its executions counted by status.",
        responses={200: MachineSummarySerializer(many=True), **COMMON_ERRORS},
        examples=[OpenApiExample("Machines", response_only=True, value=[{
            "id": "order", "version": 3, "title": "Order", "description": "", "versions": 3,
            "executions": {"waiting": 4, "finished": 17}, "api_url": "/api/machines/order/",
            "url": "/machines/order/"}])],
        tags=["machines"],
    )
    def get(self, request):
        counts = execution_counts()
        latest = list(latest_versions())
        for version in latest:
            version.execution_counts = counts.get(version.machine_id, {})
        return Response(MachineSummarySerializer(latest, many=True).data)

    @extend_schema(
        summary="Save a machine version",
        description="Body: `{\"source\": \"<YAML or JSON text>\"}`, the definition object "
                    "itself, or the text posted as `application/yaml`. 201 when a new version "
                    "was stored, 200 when the identical definition already was, 409 when its "
                    "explicit `version` holds a different definition, 400 with every problem "
                    "when it is invalid. Needs the editor role.",
        request={"application/json": OpenApiTypes.OBJECT, "application/yaml": OpenApiTypes.STR,
                 "text/yaml": OpenApiTypes.STR},
        responses={201: SavedVersionSerializer, 200: SavedVersionSerializer,
                   409: error_response("This version already holds a different definition."),
                   **BODY_ERRORS, **COMMON_ERRORS},
        examples=[*SOURCE_BODY_EXAMPLES, VERSION_EXAMPLE, INVALID_EXAMPLE],
        tags=["machines"],
    )
    def post(self, request):
        source = source_of(request.data)
        try:
            version, created = save_version(source, user=request.user)
        except RecursionError:
            raise exceptions.ParseError("The definition is nested too deeply.") from None
        warnings = [p.to_dict() for p in check_source(source).warnings]
        body = SavedVersionSerializer(version, context={"warnings": warnings}).data
        return Response(body, status=201 if created else 200)


class MachineValidateView(ErrorShapeMixin, APIView):
    permission_classes = [CanView]
    parser_classes = [JSONBodyParser, TextBodyParser, TextYAMLParser]

    @extend_schema(
        summary="Validate a definition without saving it",
        description="The same body as saving. Always 200 for a readable body: `valid`, and "
                    "every error and warning with its path and a hint.",
        request={"application/json": OpenApiTypes.OBJECT, "application/yaml": OpenApiTypes.STR,
                 "text/yaml": OpenApiTypes.STR},
        responses={200: ValidationSerializer, **BODY_ERRORS, **COMMON_ERRORS},
        examples=[*SOURCE_BODY_EXAMPLES, OpenApiExample("Result", response_only=True, value={
            "valid": False,
            "errors": [{"path": "start_at", "message": "unknown state 'crt'",
                        "hint": "did you mean 'cart'?"}],
            "warnings": []})],
        tags=["machines"],
    )
    def post(self, request):
        try:
            checked = check_source(source_of(request.data))
        except RecursionError:
            raise exceptions.ParseError("The definition is nested too deeply.") from None
        return Response({"valid": checked.valid,
                         "errors": [p.to_dict() for p in checked.errors],
                         "warnings": [p.to_dict() for p in checked.warnings]})

    @extend_schema(exclude=True)
    def get(self, request):
        """`validate` is also a valid machine id: GET shows that machine like any other."""
        return Response(MachineVersionSerializer(get_version("validate")).data)


class MachineDetailView(ErrorShapeMixin, APIView):
    permission_classes = [CanView]

    @extend_schema(summary="The latest version of a machine",
                   description="Its id, version, title, description, definition, source "
                               "as written, and who saved it when.",
                   responses={200: MachineVersionSerializer, **NOT_FOUND, **COMMON_ERRORS},
                   examples=[VERSION_EXAMPLE], tags=["machines"])
    def get(self, request, machine_id):
        return Response(MachineVersionSerializer(get_version(machine_id)).data)


class MachineVersionListView(ErrorShapeMixin, APIView):
    permission_classes = [CanView]

    @extend_schema(summary="All versions of a machine, newest first",
                   description="Every stored version, each as `GET …/versions/{v}/` shows "
                               "it. Versions never change.",
                   responses={200: MachineVersionSerializer(many=True), **NOT_FOUND,
                              **COMMON_ERRORS},
                   examples=[OpenApiExample("Versions", response_only=True,
                                            value=[VERSION_EXAMPLE.value])],
                   tags=["machines"])
    def get(self, request, machine_id):
        get_version(machine_id)  # 404 for an unknown machine, not an empty list
        versions = (MachineVersion.objects.filter(machine_id=machine_id)
                    .select_related("created_by").order_by("-version"))
        return Response(MachineVersionSerializer(versions, many=True).data)


class MachineVersionDetailView(ErrorShapeMixin, APIView):
    permission_classes = [CanView]

    @extend_schema(summary="One version of a machine",
                   description="`id`, `version`, `title`, `description`, `definition` "
                               "(parsed), `source` (as written), `created_at`, `created_by`.",
                   responses={200: MachineVersionSerializer, **NOT_FOUND, **COMMON_ERRORS},
                   examples=[VERSION_EXAMPLE], tags=["machines"])
    def get(self, request, machine_id, version):
        return Response(MachineVersionSerializer(get_version(machine_id, version)).data)


class JSONErrorsOnly(BaseContentNegotiation):
    """Diagram views answer SVG/DOT by their URL and errors in JSON, whatever `Accept` says."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None


class DiagramView(ErrorShapeMixin, APIView):
    """Base of the diagram endpoints: `content_type` and `render` say which format."""

    permission_classes = [CanView]
    content_negotiation_class = JSONErrorsOnly
    content_type = "image/svg+xml; charset=utf-8"

    def render(self, machine, path=None) -> str:
        return diagrams.render_svg(machine, path, machine_url=machine_link)

    def diagram(self, machine, path=None) -> HttpResponse:
        return HttpResponse(self.render(machine, path), content_type=self.content_type)


SVG_EXAMPLE = OpenApiExample(
    "SVG", response_only=True, media_type="image/svg+xml",
    value='<svg width="100%" class="dm-svg" …><g id="state-cart" class="node state">…</g></svg>')
DOT_EXAMPLE = OpenApiExample(
    "DOT", response_only=True, media_type="text/vnd.graphviz",
    value='digraph order {\n  rankdir=LR\n  s0 [label="cart" id="state-cart"]\n  …\n}')
SVG_RESPONSE = {(200, "image/svg+xml"): OpenApiResponse(
    OpenApiTypes.STR, description="The diagram as SVG.")}
DOT_RESPONSE = {(200, "text/vnd.graphviz"): OpenApiResponse(
    OpenApiTypes.STR, description="The diagram as Graphviz DOT source.")}


class VersionDiagramSVGView(DiagramView):
    @extend_schema(summary="A version's diagram (SVG)",
                   description="States as boxes, transitions as labelled arrows, guards "
                               "and timers on the arrows; ids and classes are stable.",
                   responses={**SVG_RESPONSE, **NOT_FOUND, **COMMON_ERRORS},
                   examples=[SVG_EXAMPLE], tags=["machines"])
    def get(self, request, machine_id, version):
        return self.diagram(get_version(machine_id, version).parsed())


class VersionDiagramDOTView(DiagramView):
    content_type = "text/vnd.graphviz; charset=utf-8"

    def render(self, machine, path=None) -> str:
        return diagrams.to_dot(machine, path, machine_url=machine_link)

    @extend_schema(summary="A version's diagram (Graphviz DOT)",
                   description="The Graphviz source the SVG is drawn from.",
                   responses={**DOT_RESPONSE, **NOT_FOUND, **COMMON_ERRORS},
                   examples=[DOT_EXAMPLE], tags=["machines"])
    def get(self, request, machine_id, version):
        return self.diagram(get_version(machine_id, version).parsed())

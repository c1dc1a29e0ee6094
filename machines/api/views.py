"""The machines API views: HTTP to machines.services (saving, checking) and
machines.selectors / executions.selectors (reads). Errors raised there (DefinitionError,
VersionConflict, DoesNotExist) become the one error shape through api.errors."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api_permissions import CanView, ReadOrEdit
from api.links import machine_link
from api.parsers import JSONBodyParser, TextBodyParser, TextYAMLParser
from api.schema import (
    BODY_ERRORS,
    COMMON_ERRORS,
    DOT_EXAMPLE,
    DOT_RESPONSE,
    SVG_EXAMPLE,
    SVG_RESPONSE,
    error_response,
)
from api.views import DiagramView, ErrorShapeMixin
from executions import selectors as executions
from machines import diagrams, selectors
from machines.api import examples
from machines.api.serializers import (
    MachineDetailSerializer,
    MachineSummarySerializer,
    MachineVersionSerializer,
    SavedVersionSerializer,
    ValidationSerializer,
)
from machines.services import check_source, save_version

NOT_FOUND = {404: error_response("No such machine or version.")}
SOURCE_BODIES = {"application/json": OpenApiTypes.OBJECT, "application/yaml": OpenApiTypes.STR,
                 "text/yaml": OpenApiTypes.STR}


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


class MachineListView(ErrorShapeMixin, APIView):
    permission_classes = [ReadOrEdit]
    parser_classes = [JSONBodyParser, TextBodyParser, TextYAMLParser]

    @extend_schema(
        summary="List machines",
        description="The latest version of every machine, with its number of versions and "
                    "its executions counted by status.",
        responses={200: MachineSummarySerializer(many=True), **COMMON_ERRORS},
        examples=[examples.MACHINES_EXAMPLE],
        tags=["machines"],
    )
    def get(self, request):
        counts = executions.counts_by_status()
        latest = list(selectors.latest_versions())
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
        request=SOURCE_BODIES,
        responses={201: SavedVersionSerializer, 200: SavedVersionSerializer,
                   409: error_response("This version already holds a different definition."),
                   **BODY_ERRORS, **COMMON_ERRORS},
        examples=[*examples.SOURCE_BODY_EXAMPLES, examples.VERSION_EXAMPLE,
                  examples.INVALID_EXAMPLE],
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
        request=SOURCE_BODIES,
        responses={200: ValidationSerializer, **BODY_ERRORS, **COMMON_ERRORS},
        examples=[*examples.SOURCE_BODY_EXAMPLES, examples.VALIDATION_EXAMPLE],
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
        return Response(MachineVersionSerializer(selectors.get_version("validate")).data)


class MachineDetailView(ErrorShapeMixin, APIView):
    permission_classes = [CanView]

    @extend_schema(summary="The latest version of a machine",
                   description="Its id, version, title, description, definition, source "
                               "as written, who saved it when, and its schedules with "
                               "their next run times.",
                   responses={200: MachineDetailSerializer, **NOT_FOUND, **COMMON_ERRORS},
                   examples=[examples.VERSION_EXAMPLE], tags=["machines"])
    def get(self, request, machine_id):
        version = selectors.get_version(machine_id)
        return Response(MachineDetailSerializer(version, context={
            "schedules": selectors.schedules_of(machine_id)}).data)


class MachineVersionListView(ErrorShapeMixin, APIView):
    permission_classes = [CanView]

    @extend_schema(summary="All versions of a machine, newest first",
                   description="Every stored version, each as `GET …/versions/{v}/` shows "
                               "it. Versions never change.",
                   responses={200: MachineVersionSerializer(many=True), **NOT_FOUND,
                              **COMMON_ERRORS},
                   examples=[examples.VERSIONS_EXAMPLE],
                   tags=["machines"])
    def get(self, request, machine_id):
        versions = selectors.versions_of(machine_id)  # 404 for an unknown machine
        return Response(MachineVersionSerializer(versions, many=True).data)


class MachineVersionDetailView(ErrorShapeMixin, APIView):
    permission_classes = [CanView]

    @extend_schema(summary="One version of a machine",
                   description="`id`, `version`, `title`, `description`, `definition` "
                               "(parsed), `source` (as written), `created_at`, `created_by`.",
                   responses={200: MachineVersionSerializer, **NOT_FOUND, **COMMON_ERRORS},
                   examples=[examples.VERSION_EXAMPLE], tags=["machines"])
    def get(self, request, machine_id, version):
        return Response(MachineVersionSerializer(selectors.get_version(machine_id, version)).data)


class VersionDiagramSVGView(DiagramView):
    @extend_schema(summary="A version's diagram (SVG)",
                   description="States as boxes, transitions as labelled arrows, guards "
                               "and timers on the arrows; ids and classes are stable.",
                   responses={**SVG_RESPONSE, **NOT_FOUND, **COMMON_ERRORS},
                   examples=[SVG_EXAMPLE], tags=["machines"])
    def get(self, request, machine_id, version):
        machine = selectors.get_version(machine_id, version).parsed()
        try:
            return self.diagram(diagrams.render_svg(machine, None, machine_url=machine_link))
        except diagrams.DiagramUnavailable as exc:
            exc.description = diagrams.describe(machine)  # 422 diagram_too_large with it
            raise


class VersionDiagramDOTView(DiagramView):
    content_type = "text/vnd.graphviz; charset=utf-8"

    @extend_schema(summary="A version's diagram (Graphviz DOT)",
                   description="The Graphviz source the SVG is drawn from.",
                   responses={**DOT_RESPONSE, **NOT_FOUND, **COMMON_ERRORS},
                   examples=[DOT_EXAMPLE], tags=["machines"])
    def get(self, request, machine_id, version):
        machine = selectors.get_version(machine_id, version).parsed()
        return self.diagram(diagrams.to_dot(machine, None, machine_url=machine_link))

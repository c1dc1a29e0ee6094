"""The executions API views: HTTP to the service functions (start, trigger, cancel, retry)
and executions.selectors; each answers with the execution the service returned. The
services' refusals become the one error shape through api.errors (see errors.py)."""
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api_permissions import CanView, ReadOrOperate
from accounts.roles import actor_of, can_edit, can_override_mode
from api.links import machine_link
from api.renderers import PrintableJSONRenderer
from api.schema import BODY_ERRORS, COMMON_ERRORS, SVG_EXAMPLE, SVG_RESPONSE, error_response
from api.views import DiagramView, ErrorShapeMixin
from executions import selectors, services, steps
from executions.api import examples
from executions.api.contract import openapi_document
from executions.api.pagination import BySeq, NewestFirst
from executions.api.serializers import (
    HISTORY_FIELDS,
    CancelSerializer,
    ExecutionSerializer,
    HistoryEntrySerializer,
    NoBodySerializer,
    StartSerializer,
    TriggerSerializer,
    capped,
    history_rows,
    strict,
)
from executions.engine import STATUSES
from executions.filters import MACHINE_ID, MAX_VERSION, ExecutionFilter
from machines import diagrams
from machines import selectors as machine_selectors

NOT_FOUND = {404: error_response("No such execution (or machine).")}
# The filters as the schema shows them: what django-filter's schema cannot tell (a pattern,
# bounds, the statuses in their order).
FILTER_PARAMETERS = [
    OpenApiParameter("machine", {"type": "string", "pattern": MACHINE_ID, "minLength": 1}),
    OpenApiParameter("version", {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}),
    OpenApiParameter("status", {"type": "string", "enum": list(STATUSES)}),
    OpenApiParameter("state", {"type": "string", "maxLength": 200, "minLength": 1}),
]
CONFLICT = {409: error_response("Not possible now; nothing was changed. "
                                "`available_actions` lists what is.")}


def actor(request) -> str:
    """Who did it, for history: `token:NAME` through an API token, else `user:NAME`."""
    return actor_of(request.user, via_token=isinstance(request.successful_authenticator,
                                                       TokenAuthentication))


def answer(request, execution, status=200) -> Response:
    return Response(ExecutionSerializer(execution, context={"request": request}).data,
                    status=status)


class ExecutionFilters(DjangoFilterBackend):
    """executions.filters.ExecutionFilter; invalid values are a 400 naming the field, and so
    is a filter given blank (the explorer's form reads blank as "any")."""

    def filter_queryset(self, request, queryset, view):
        params = request.query_params
        blank = {name: ["This field may not be blank."] for name in params
                 if (name in ExecutionFilter.base_filters or name.startswith("attr."))
                 and not params[name].strip()}
        if blank:
            raise exceptions.ValidationError(blank)
        return super().filter_queryset(request, queryset, view)


class AddressedExecution:
    """Views of one execution, addressed by its id, a short id (a unique prefix of one), or
    its machine and business key (`/api/machines/<machine>/keys/<key>/...`): the handler
    gets the full id. An ambiguous short id is a 400 listing the candidates."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if "key" in self.kwargs:
            found = selectors.execution_id_by_key(self.kwargs.pop("machine_id"),
                                                  self.kwargs.pop("key"))
        else:
            found = selectors.execution_id_of(self.kwargs.pop("execution_id"))
        self.kwargs["execution_id"] = found  # the dict the handler is called with


class StartView(ErrorShapeMixin, APIView):
    permission_classes = [ReadOrOperate]

    @extend_schema(
        summary="Start an execution",
        description="Starts the latest version (or `version`). 201 with the execution; 200 "
                    "with the first execution when `idempotency_key` was used before for "
                    "this machine; 202 when `wait` (or sync mode) ran out of time before the "
                    "execution paused. Needs the operator role; `mocks` and `mode` need the "
                    "editor role.",
        request=StartSerializer,
        responses={201: ExecutionSerializer, 200: ExecutionSerializer,
                   202: OpenApiResponse(ExecutionSerializer, description="Still running."),
                   404: error_response("No such machine or version."),
                   **BODY_ERRORS, **COMMON_ERRORS},
        examples=[examples.START_EXAMPLE, examples.EXECUTION_RESPONSE],
        tags=["executions"],
    )
    def post(self, request, machine_id):
        body = strict(StartSerializer, request.data)
        if body.get("mocks") is not None and not can_edit(request.user):
            raise exceptions.PermissionDenied("Starting with mocks needs the editor role.")
        if body.get("mode") is not None and not can_override_mode(request.user):
            raise exceptions.PermissionDenied(
                "Overriding the execution mode needs the editor role; leave `mode` out to "
                "use the machine's own.")
        outcome = services.start(
            machine_id, input=body.get("input"), version=body.get("version"),
            idempotency_key=body.get("idempotency_key"), mocks=body.get("mocks"),
            mode=body.get("mode"), actor=actor(request), user=request.user,
            wait=body["wait"], timeout=capped(body.get("timeout")),
        )
        execution = outcome.execution
        waited = body["wait"] or execution.execution_mode == "sync"
        if not outcome.created:
            code = 200
        elif waited and not outcome.settled:
            code = 202
        else:
            code = 201
        return answer(request, execution, code)


class ExecutionListView(ErrorShapeMixin, GenericAPIView):
    permission_classes = [CanView]
    serializer_class = ExecutionSerializer
    pagination_class = NewestFirst
    filter_backends = [ExecutionFilters]
    filterset_class = ExecutionFilter

    def get_queryset(self):
        return selectors.listed_executions()

    @extend_schema(
        summary="List executions, newest first",
        description="Cursor-paginated (`next`/`previous` links; `page_size` up to 500). "
                    "Invalid filter values give 400, and so does a parameter that is no "
                    "filter. With `machine`, its searchable attributes filter as "
                    "`attr.<name>` and `attr.<name>__gt|gte|lt|lte` "
                    "(`/api/machines/{machine}/openapi.json` lists them).",
        parameters=[*FILTER_PARAMETERS, OpenApiParameter(
            "page_size", int, description="Items per page (default 50).")],
        responses={200: ExecutionSerializer(many=True), 400: error_response("Invalid filter."),
                   404: error_response("Invalid cursor."), **COMMON_ERRORS},
        examples=[examples.EXECUTION_IN_PAGE, examples.INVALID_FILTER_EXAMPLE],
        tags=["executions"],
    )
    def get(self, request):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class ExecutionDetailView(AddressedExecution, ErrorShapeMixin, APIView):
    permission_classes = [CanView]

    @extend_schema(summary="One execution",
                   description="Its status, state, context, input, result or error, the "
                               "actions available now, parent and children.",
                   responses={200: ExecutionSerializer, **NOT_FOUND, **COMMON_ERRORS},
                   examples=[examples.EXECUTION_RESPONSE], tags=["executions"])
    def get(self, request, execution_id):
        return answer(request, selectors.execution(execution_id))


class HistoryView(AddressedExecution, ErrorShapeMixin, GenericAPIView):
    permission_classes = [CanView]
    serializer_class = HistoryEntrySerializer
    pagination_class = BySeq
    # JSON only: history_rows leaves the escaping to this renderer; the browsable API
    # answered a browser 500 here (its filter form wants a queryset this view never builds).
    renderer_classes = [PrintableJSONRenderer]

    @extend_schema(
        summary="An execution's history, in order",
        description="Every row with its `seq` (1, 2, … with no gaps), cursor-paginated.",
        parameters=[OpenApiParameter("page_size", int,
                                     description="Rows per page (default 100).")],
        responses={200: HistoryEntrySerializer(many=True), **NOT_FOUND, **COMMON_ERRORS},
        examples=[examples.HISTORY_ROW_EXAMPLE],
        tags=["executions"],
    )
    def get(self, request, execution_id):
        rows = self.paginate_queryset(
            selectors.history_unchecked(execution_id).values(*HISTORY_FIELDS))
        if not rows:
            selectors.history(execution_id)  # an empty page: 404 unless the execution exists
        return self.get_paginated_response(history_rows(rows))


class TriggerView(AddressedExecution, ErrorShapeMixin, APIView):
    permission_classes = [ReadOrOperate]

    @extend_schema(
        summary="Trigger an action",
        description="With `wait`: 200 and the execution after the action was applied and "
                    "the execution paused again (202 if `timeout` ran out first). Without "
                    "`wait`: 202, accepted; it is applied in order, or rejected with the "
                    "reason recorded in history. 409 when the action is not available now "
                    "(nothing changed). Needs the operator role.",
        request=TriggerSerializer,
        responses={200: ExecutionSerializer,
                   202: OpenApiResponse(ExecutionSerializer, description="Accepted."),
                   **CONFLICT, **NOT_FOUND, **BODY_ERRORS, **COMMON_ERRORS},
        examples=[examples.TRIGGER_EXAMPLE, examples.EXECUTION_RESPONSE,
                  examples.NOT_AVAILABLE_EXAMPLE],
        tags=["executions"],
    )
    def post(self, request, execution_id):
        body = strict(TriggerSerializer, request.data)
        outcome = services.trigger(
            execution_id, body["action"], input=body.get("input"),
            idempotency_key=body.get("idempotency_key"), actor=actor(request),
            wait=body["wait"], timeout=capped(body.get("timeout")),
        )
        return answer(request, outcome.execution, 200 if body["wait"] and outcome.settled
                      else 202)


class CancelView(AddressedExecution, ErrorShapeMixin, APIView):
    permission_classes = [ReadOrOperate]

    @extend_schema(
        summary="Cancel an execution",
        description="Children it invoked synchronously are canceled too. 409 when it has "
                    "already finished or been canceled. The body says why: `{\"reason\": …}` "
                    "(required, kept in history; 400 without it).",
        request=CancelSerializer,
        responses={200: ExecutionSerializer, **CONFLICT, **NOT_FOUND, **BODY_ERRORS,
                   **COMMON_ERRORS},
        examples=[examples.CANCEL_EXAMPLE, examples.EXECUTION_RESPONSE],
        tags=["executions"],
    )
    def post(self, request, execution_id):
        body = strict(CancelSerializer, request.data)
        outcome = services.cancel(execution_id, actor=actor(request), reason=body.get("reason"))
        return answer(request, outcome.execution)


class RetryView(AddressedExecution, ErrorShapeMixin, APIView):
    permission_classes = [ReadOrOperate]

    @extend_schema(
        summary="Retry a failed execution",
        description="Resumes a `failed` execution from where it failed; 409 for any other "
                    "status. No body.",
        request=None,
        responses={200: ExecutionSerializer, **CONFLICT, **NOT_FOUND, **BODY_ERRORS,
                   **COMMON_ERRORS},
        examples=[examples.EXECUTION_RESPONSE],
        tags=["executions"],
    )
    def post(self, request, execution_id):
        strict(NoBodySerializer, request.data)
        outcome = services.retry(execution_id, actor=actor(request))
        return answer(request, outcome.execution)


class ExecutionDiagramView(AddressedExecution, DiagramView):
    @extend_schema(summary="The diagram with this execution's path",
                   description="States visited, transitions taken (numbered in order), the "
                               "current state marked with the status.",
                   responses={**SVG_RESPONSE, **NOT_FOUND, **COMMON_ERRORS},
                   examples=[SVG_EXAMPLE], tags=["executions"])
    def get(self, request, execution_id):
        execution, step_rows = selectors.diagram_of(execution_id)
        machine = execution.machine_version.parsed()
        path = steps.execution_path(machine, step_rows, state=execution.state,
                                    status=execution.status)
        try:
            return self.diagram(diagrams.render_svg(machine, path, machine_url=machine_link))
        except diagrams.DiagramUnavailable as exc:
            exc.description = diagrams.describe(machine, path)  # 422 diagram_too_large
            raise


class MachineOpenAPIView(ErrorShapeMixin, APIView):
    permission_classes = [CanView]

    @extend_schema(summary="The machine's own OpenAPI document",
                   description="OpenAPI 3.1 for starting the machine and triggering each of "
                               "its actions, with the input schemas its latest version "
                               "declares (and its business key and attribute filters).",
                   responses={200: OpenApiResponse(description="An OpenAPI document."),
                              **NOT_FOUND, **COMMON_ERRORS},
                   tags=["machines"])
    def get(self, request, machine_id):
        version = machine_selectors.get_version(machine_id)
        return Response(openapi_document(version.parsed(), version.version))

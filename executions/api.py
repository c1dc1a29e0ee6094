"""The executions part of the HTTP API (docs/api.md): start, list, read, history, drive.

Views only translate HTTP to executions.runner (start, trigger, cancel, retry); the runner
stores and applies everything. Its refusals become the one error shape: NotAvailable ->
409 with `available_actions`, InvalidRequest -> 400, DoesNotExist -> 404.
"""
from django.db.models import Prefetch
from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import exceptions, serializers
from rest_framework.authentication import TokenAuthentication
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api_permissions import CanView, ReadOrOperate
from accounts.roles import can_edit
from executions import engine, runner
from executions.models import Execution, HistoryEntry
from explorer.presenters import execution_path as diagram_path
from machines.api import (
    BODY_ERRORS,
    COMMON_ERRORS,
    SVG_EXAMPLE,
    SVG_RESPONSE,
    DiagramView,
    error_response,
    page_url,
)
from workflow_site import api_errors
from workflow_site.api_errors import error_body, problem

MAX_WAIT_SECONDS = 30.0  # a waiting request holds a web thread: bound it
MAX_VERSION = 2**31 - 1
EXECUTION_MODES = ("sync", "async-throughput", "async-latency")

NOT_FOUND = {404: error_response("No such execution (or machine).")}
CONFLICT = {409: error_response("Not possible now; nothing was changed. "
                                "`available_actions` lists what is.")}


# Errors -----------------------------------------------------------------------------------
def exception_handler(exc, context):
    """The runner's refusals in the one error shape; everything else as everywhere."""
    if isinstance(exc, runner.NotAvailable):
        hint = ("available now: " + ", ".join(exc.available_actions)
                if exc.available_actions else "no action is available now")
        body = error_body("not_available", exc.reason, [problem("action", exc.reason, hint)],
                          available_actions=exc.available_actions)
        return Response(body, status=409)
    if isinstance(exc, runner.InvalidRequest):
        return Response(error_body("invalid_request", str(exc), [problem("", str(exc))]),
                        status=400)
    return api_errors.exception_handler(exc, context)


class ExecutionErrors(api_errors.ErrorShapeMixin):
    def get_exception_handler(self):
        return exception_handler


def actor_of(request) -> str:
    """Who did it, for history: the API token's user or the signed-in user."""
    kind = "token" if isinstance(request.successful_authenticator, TokenAuthentication) \
        else "user"
    return f"{kind}:{request.user.get_username()}"


# Serializers ------------------------------------------------------------------------------
class ExecutionSerializer(serializers.ModelSerializer):
    machine = serializers.CharField(source="machine_id")
    version = serializers.IntegerField(source="machine_version.version")
    mode = serializers.CharField(source="execution_mode")
    context = serializers.JSONField()
    input = serializers.JSONField(allow_null=True)
    result = serializers.JSONField(allow_null=True, help_text="The return value once finished.")
    error = serializers.JSONField(allow_null=True)
    available_actions = serializers.SerializerMethodField()
    parent = serializers.UUIDField(source="parent_id", allow_null=True)
    children = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField(help_text="Its page in the explorer.")
    api_url = serializers.SerializerMethodField()
    history_url = serializers.SerializerMethodField()
    diagram_url = serializers.SerializerMethodField()

    class Meta:
        model = Execution
        fields = ["id", "machine", "version", "mode", "status", "state", "context", "input",
                  "result", "error", "available_actions", "parent", "children", "actor",
                  "idempotency_key", "created_at", "updated_at", "finished_at", "url",
                  "api_url", "history_url", "diagram_url"]

    def get_available_actions(self, execution) -> list[str]:
        return list(execution.available_actions())

    def get_children(self, execution) -> list[str]:
        return [str(child.pk) for child in execution.children.all()]

    def get_url(self, execution) -> str | None:
        return page_url(execution)

    def get_api_url(self, execution) -> str:
        return reverse("api:execution", args=[execution.pk])

    def get_history_url(self, execution) -> str:
        return reverse("api:execution-history", args=[execution.pk])

    def get_diagram_url(self, execution) -> str:
        return reverse("api:execution-svg", args=[execution.pk])


def text_or_null(**kwargs):
    return serializers.CharField(allow_null=True, **kwargs)


class HistoryEntrySerializer(serializers.ModelSerializer):
    """A history row; fields that do not apply to its kind are null."""

    actor = text_or_null(help_text="user:NAME, token:NAME, timer, execution:ID, system")
    transition = text_or_null(help_text="The transition's id.")
    branch = text_or_null(help_text="success/error after an invoke, then/else of a decision.")
    from_state = text_or_null()
    to_state = text_or_null()
    action = text_or_null()

    class Meta:
        model = HistoryEntry
        fields = ["seq", "kind", "at", "actor", "transition", "branch", "from_state",
                  "to_state", "action", "input", "context", "output", "error", "guards",
                  "detail", "duration_ms"]

    def to_representation(self, entry):
        row = super().to_representation(entry)
        return {key: None if value == "" else value for key, value in row.items()}


class TextField(serializers.CharField):
    """A JSON string: DRF's CharField would also take 5 and make it "5"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StartSerializer(serializers.Serializer):
    input = serializers.DictField(required=False, help_text="The execution's input object.")
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION,
                                       help_text="Default: the latest version.")
    idempotency_key = TextField(
        required=False, max_length=200,
        help_text="The same key for the same machine returns the first execution (200).")
    mocks = serializers.DictField(
        required=False, help_text="operation name -> expression or value, replacing IO "
                                  "operations for this execution. Needs the editor role.")
    mode = serializers.ChoiceField(EXECUTION_MODES, required=False,
                                   help_text="Override the machine's execution_mode.")
    wait = serializers.BooleanField(required=False, default=False,
                                    help_text="Answer once the execution paused (or timeout).")
    timeout = serializers.FloatField(
        required=False, min_value=0,
        help_text=f"Seconds to wait; capped at {MAX_WAIT_SECONDS:g}.")


class TriggerSerializer(serializers.Serializer):
    action = TextField(max_length=200)
    input = serializers.DictField(required=False)
    idempotency_key = TextField(
        required=False, max_length=200,
        help_text="The same key again for this execution applies nothing and answers as "
                  "the first time.")
    wait = serializers.BooleanField(required=False, default=False)
    timeout = serializers.FloatField(required=False, min_value=0,
                                     help_text=f"Capped at {MAX_WAIT_SECONDS:g} seconds.")


class NoBodySerializer(serializers.Serializer):
    """Retry takes no fields (an empty object or no body)."""


class CancelSerializer(serializers.Serializer):
    reason = TextField(required=False, max_length=1000)


class ExecutionFilterSerializer(serializers.Serializer):
    machine = serializers.RegexField(r"^[a-z0-9][a-z0-9._-]{0,99}$", required=False)
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION)
    status = serializers.ChoiceField(engine.STATUSES, required=False)
    state = serializers.CharField(required=False, max_length=200)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    parent = serializers.UUIDField(required=False)


def strict(serializer_class, data):
    """Validated body; unknown fields are refused (a typo must not be silently ignored)."""
    if not isinstance(data, dict):
        raise exceptions.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
    serializer = serializer_class(data=data)
    unknown = sorted(set(data) - set(serializer.fields))
    serializer.is_valid(raise_exception=False)
    found = dict(serializer.errors)
    for key in unknown:
        found[key] = [f"unknown field; known: {', '.join(serializer.fields)}"]
    if found:
        raise exceptions.ValidationError(found)
    return serializer.validated_data


def capped(timeout):
    return None if timeout is None else min(timeout, MAX_WAIT_SECONDS)


# Examples ---------------------------------------------------------------------------------
EXECUTION_EXAMPLE = {
    "id": "5b0d1c52-6a3e-4f57-9d1a-2f7b8c9e0a11", "machine": "order", "version": 3,
    "mode": "sync", "status": "waiting", "state": "cart", "context": {"items": ["sku-1"]},
    "input": {}, "result": None, "error": None, "available_actions": ["add", "place"],
    "parent": None, "children": [], "actor": "token:olga", "idempotency_key": "order-42",
    "created_at": "2026-11-26T10:00:00Z", "updated_at": "2026-11-26T10:00:01Z",
    "finished_at": None, "url": "/executions/5b0d1c52-6a3e-4f57-9d1a-2f7b8c9e0a11/",
    "api_url": "/api/executions/5b0d1c52-6a3e-4f57-9d1a-2f7b8c9e0a11/",
    "history_url": "/api/executions/5b0d1c52-6a3e-4f57-9d1a-2f7b8c9e0a11/history/",
    "diagram_url": "/api/executions/5b0d1c52-6a3e-4f57-9d1a-2f7b8c9e0a11/diagram.svg",
}
EXECUTION_RESPONSE = OpenApiExample("An execution", response_only=True, value=EXECUTION_EXAMPLE)
NOT_AVAILABLE_EXAMPLE = OpenApiExample(
    "Action not available", status_codes=[409], response_only=True, value={
        "type": "not_available", "detail": "'ship' is not available in state cart",
        "errors": [{"path": "action", "message": "'ship' is not available in state cart",
                    "hint": "available now: add, place"}],
        "available_actions": ["add", "place"]})


# Pagination -------------------------------------------------------------------------------
class NewestFirst(CursorPagination):
    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class BySeq(CursorPagination):
    ordering = "seq"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


def executions():
    children = Prefetch("children", queryset=Execution.objects.only("id", "parent_id"))
    return Execution.objects.select_related("machine_version").prefetch_related(children)


def get_execution(execution_id) -> Execution:
    return executions().get(pk=execution_id)


# Views ------------------------------------------------------------------------------------
class StartView(ExecutionErrors, APIView):
    permission_classes = [ReadOrOperate]

    @extend_schema(
        summary="Start an execution",
        description="Starts the latest version (or `version`). 201 with the execution; 200 "
                    "with the first execution when `idempotency_key` was used before for "
                    "this machine; 202 when `wait` (or sync mode) ran out of time before the "
                    "execution paused. Needs the operator role; `mocks` needs the editor role.",
        request=StartSerializer,
        responses={201: ExecutionSerializer, 200: ExecutionSerializer,
                   202: OpenApiResponse(ExecutionSerializer, description="Still running."),
                   404: error_response("No such machine or version."),
                   **BODY_ERRORS, **COMMON_ERRORS},
        examples=[OpenApiExample("Start", request_only=True, value={
            "input": {"customer": "c-17"}, "idempotency_key": "order-42", "wait": True,
            "timeout": 10}), EXECUTION_RESPONSE],
        tags=["executions"],
    )
    def post(self, request, machine_id):
        body = strict(StartSerializer, request.data)
        if body.get("mocks") is not None and not can_edit(request.user):
            raise exceptions.PermissionDenied("Starting with mocks needs the editor role.")
        outcome = runner.start(
            machine_id, input=body.get("input"), version=body.get("version"),
            idempotency_key=body.get("idempotency_key"), mocks=body.get("mocks"),
            mode=body.get("mode"), actor=actor_of(request), user=request.user,
            wait=body["wait"], timeout=capped(body.get("timeout")),
        )
        execution = get_execution(outcome.execution.pk)
        waited = body["wait"] or execution.execution_mode == "sync"
        if not outcome.created:
            code = 200
        elif waited and not outcome.settled:
            code = 202
        else:
            code = 201
        return Response(ExecutionSerializer(execution, context={"request": request}).data,
                        status=code)


class ExecutionListView(ExecutionErrors, GenericAPIView):
    permission_classes = [CanView]
    serializer_class = ExecutionSerializer
    pagination_class = NewestFirst

    @extend_schema(
        summary="List executions, newest first",
        description="Cursor-paginated (`next`/`previous` links; `page_size` up to 500). "
                    "Invalid filter values give 400.",
        parameters=[ExecutionFilterSerializer, OpenApiParameter(
            "page_size", int, description="Items per page (default 50).")],
        responses={200: ExecutionSerializer(many=True), 400: error_response("Invalid filter."),
                   404: error_response("Invalid cursor."), **COMMON_ERRORS},
        examples=[OpenApiExample("An execution in a page", response_only=True,
                                 value=EXECUTION_EXAMPLE),  # drf-spectacular adds the page
            OpenApiExample("Invalid filter", status_codes=[400], response_only=True, value={
                "type": "validation_error", "detail": "\"done\" is not a valid choice. (status)",
                "errors": [{"path": "status", "message": "\"done\" is not a valid choice.",
                            "hint": None}]})],
        tags=["executions"],
    )
    def get(self, request):
        params = ExecutionFilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        page = self.paginate_queryset(filtered(executions(), params.validated_data))
        data = self.get_serializer(page, many=True).data
        return self.get_paginated_response(data)


def filtered(queryset, filters: dict):
    lookups = {"machine": "machine_id", "version": "machine_version__version",
               "status": "status", "state": "state", "created_after": "created_at__gte",
               "created_before": "created_at__lt", "parent": "parent_id"}
    return queryset.filter(**{lookups[key]: value for key, value in filters.items()})


class ExecutionDetailView(ExecutionErrors, APIView):
    permission_classes = [CanView]

    @extend_schema(summary="One execution",
                   description="Its status, state, context, input, result or error, the "
                               "actions available now, parent and children.",
                   responses={200: ExecutionSerializer, **NOT_FOUND, **COMMON_ERRORS},
                   examples=[EXECUTION_RESPONSE], tags=["executions"])
    def get(self, request, execution_id):
        execution = get_execution(execution_id)
        return Response(ExecutionSerializer(execution, context={"request": request}).data)


class HistoryView(ExecutionErrors, GenericAPIView):
    permission_classes = [CanView]
    serializer_class = HistoryEntrySerializer
    pagination_class = BySeq

    @extend_schema(
        summary="An execution's history, in order",
        description="Every row with its `seq` (1, 2, … with no gaps), cursor-paginated.",
        parameters=[OpenApiParameter("page_size", int,
                                     description="Rows per page (default 100).")],
        responses={200: HistoryEntrySerializer(many=True), **NOT_FOUND, **COMMON_ERRORS},
        examples=[OpenApiExample("A history row in a page", response_only=True, value={
                "seq": 2, "kind": "transition_taken", "at": "2026-11-26T10:00:01Z",
                "actor": "token:olga", "transition": "add", "branch": None,
                "from_state": "cart", "to_state": "cart", "action": "add",
                "input": {"sku": "sku-1"}, "context": {"items": ["sku-1"]}, "output": None,
                "error": None, "guards": None, "detail": None, "duration_ms": 0.4})],
        tags=["executions"],
    )
    def get(self, request, execution_id):
        execution = Execution.objects.only("pk").get(pk=execution_id)
        page = self.paginate_queryset(HistoryEntry.objects.filter(execution=execution))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class TriggerView(ExecutionErrors, APIView):
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
        examples=[OpenApiExample("Add an item", request_only=True, value={
            "action": "add", "input": {"sku": "sku-1"}, "idempotency_key": "add-1",
            "wait": True}), EXECUTION_RESPONSE, NOT_AVAILABLE_EXAMPLE],
        tags=["executions"],
    )
    def post(self, request, execution_id):
        body = strict(TriggerSerializer, request.data)
        outcome = runner.trigger(
            execution_id, body["action"], input=body.get("input"),
            idempotency_key=body.get("idempotency_key"), actor=actor_of(request),
            wait=body["wait"], timeout=capped(body.get("timeout")),
        )
        code = 200 if body["wait"] and outcome.settled else 202
        execution = get_execution(execution_id)
        return Response(ExecutionSerializer(execution, context={"request": request}).data,
                        status=code)


class CancelView(ExecutionErrors, APIView):
    permission_classes = [ReadOrOperate]

    @extend_schema(
        summary="Cancel an execution",
        description="Children it invoked synchronously are canceled too. 409 when it has "
                    "already finished or been canceled. Body optional: `{\"reason\": …}`.",
        request=CancelSerializer,
        responses={200: ExecutionSerializer, **CONFLICT, **NOT_FOUND, **BODY_ERRORS,
                   **COMMON_ERRORS},
        examples=[OpenApiExample("Reason", request_only=True,
                                 value={"reason": "customer called"}), EXECUTION_RESPONSE],
        tags=["executions"],
    )
    def post(self, request, execution_id):
        body = strict(CancelSerializer, request.data)
        runner.cancel(execution_id, actor=actor_of(request), reason=body.get("reason"))
        execution = get_execution(execution_id)
        return Response(ExecutionSerializer(execution, context={"request": request}).data)


class RetryView(ExecutionErrors, APIView):
    permission_classes = [ReadOrOperate]

    @extend_schema(
        summary="Retry a failed execution",
        description="Resumes a `failed` execution from where it failed; 409 for any other "
                    "status. No body.",
        request=None,
        responses={200: ExecutionSerializer, **CONFLICT, **NOT_FOUND, **BODY_ERRORS,
                   **COMMON_ERRORS},
        examples=[EXECUTION_RESPONSE],
        tags=["executions"],
    )
    def post(self, request, execution_id):
        strict(NoBodySerializer, request.data)
        runner.retry(execution_id, actor=actor_of(request))
        execution = get_execution(execution_id)
        return Response(ExecutionSerializer(execution, context={"request": request}).data)


class ExecutionDiagramView(ExecutionErrors, DiagramView):
    @extend_schema(summary="The diagram with this execution's path",
                   description="States visited, transitions taken (numbered in order), the "
                               "current state marked with the status.",
                   responses={**SVG_RESPONSE, **NOT_FOUND, **COMMON_ERRORS},
                   examples=[SVG_EXAMPLE], tags=["executions"])
    def get(self, request, execution_id):
        execution = Execution.objects.select_related("machine_version").get(pk=execution_id)
        return self.diagram(execution.machine_version.parsed(), diagram_path(execution))

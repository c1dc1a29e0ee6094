"""The operators' tools over HTTP (executions/operations.py): repair one execution, failure
groups, bulk operations and migrations. Every operation can be asked with `dry_run` first;
the service checks every value (400 says where) and the role the operation needs (403)."""
from dataclasses import asdict

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from accounts.api_permissions import CanView, ReadOrOperate
from api.schema import BODY_ERRORS, COMMON_ERRORS, error_response
from api.views import ErrorShapeMixin
from executions import migrating, operations, selectors
from executions.api.serializers import ExecutionSerializer, strict
from executions.api.views import CONFLICT, NOT_FOUND, actor, answer
from executions.filters import ExecutionFilter

ANY = {"required": False, "allow_null": True}


class OperationSerializer(serializers.Serializer):
    """The fields as given: executions.operations.request checks their values."""

    operation = serializers.JSONField()
    context = serializers.JSONField(**ANY)
    input = serializers.JSONField(**ANY)
    state = serializers.JSONField(**ANY)
    action = serializers.JSONField(**ANY)
    version = serializers.JSONField(**ANY)
    mapping = serializers.JSONField(**ANY)
    reason = serializers.JSONField(**ANY)
    dry_run = serializers.BooleanField(default=False)


class BulkSerializer(OperationSerializer):
    selection = serializers.JSONField()
    dry_run = None  # a bulk operation is always previewed first: POST .../run/ runs it


class RunSerializer(serializers.Serializer):
    reason = serializers.JSONField(**ANY)


# What the answers hold, for the schema (the views build them from the services' results).
class VerdictSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(["applies", "not_available", "would_fail"])
    reason = serializers.CharField()
    status = serializers.CharField()
    state = serializers.CharField()
    after_status = serializers.CharField()
    after_state = serializers.CharField()
    changes = serializers.ListField(child=serializers.CharField())


class FailureGroupSerializer(serializers.Serializer):
    machine_id = serializers.CharField()
    state = serializers.CharField()
    error_type = serializers.CharField(allow_null=True)
    error_message = serializers.CharField(allow_null=True)
    count = serializers.IntegerField()
    filters = serializers.DictField(child=serializers.CharField())


class FailureGroupsSerializer(serializers.Serializer):
    groups = FailureGroupSerializer(many=True)


class BulkItemSerializer(serializers.Serializer):
    execution = serializers.UUIDField()
    verdict = serializers.CharField()
    preview = serializers.CharField()
    outcome = serializers.CharField(help_text="empty until the job acted on it")
    message = serializers.CharField()


class BulkOperationSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.CharField()
    request = serializers.DictField()
    selection = serializers.DictField()
    status = serializers.ChoiceField(["previewed", "queued", "running", "done"])
    actor = serializers.CharField()
    reason = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    progress = serializers.DictField()
    items = BulkItemSerializer(many=True, help_text="the first 500")
    url = serializers.URLField()


def checked_operation(request, body) -> operations.Request:
    """The operation asked for, checked; 403 when the user's role does not allow it."""
    operation = operations.request(
        body["operation"], **{name: body.get(name) for name in (
            "context", "input", "state", "action", "version", "mapping")})
    if not operations.permitted(request.user, operation):
        raise exceptions.PermissionDenied(
            f"A {operation.kind} {'with an edited context ' if operation.context else ''}"
            f"needs the {operation.role} role.")
    return operation


class OperationView(ErrorShapeMixin, APIView):
    permission_classes = [ReadOrOperate]

    @extend_schema(
        summary="Repair an execution (or preview it)",
        description="`operation`: retry (optionally with `context` or `input`), cancel, edit "
                    "(`context`), move (`state`, optional `context`), action (`action`, "
                    "`input`), migrate (`version`, optional `mapping`). `reason` is required. "
                    "With `dry_run: true` nothing changes and the answer says what would "
                    "happen: `verdict` applies / not_available / would_fail, and why.",
        request=OperationSerializer,
        responses={200: OpenApiResponse(
            PolymorphicProxySerializer("OperationAnswer", [VerdictSerializer,
                                                           ExecutionSerializer], None),
            description="The verdict of a dry run, or the execution after the operation."),
            **CONFLICT, **NOT_FOUND, **BODY_ERRORS, **COMMON_ERRORS},
        tags=["operations"],
    )
    def post(self, request, execution_id):
        body = strict(OperationSerializer, request.data)
        operation = checked_operation(request, body)
        if body["dry_run"]:
            return Response(asdict(operations.preview(execution_id, operation)))
        outcome = operations.perform(execution_id, operation, actor=actor(request),
                                     reason=body.get("reason"))
        return answer(request, outcome.execution)


class FailureGroupsView(ErrorShapeMixin, APIView):
    permission_classes = [CanView]

    @extend_schema(summary="Failed executions grouped by machine, state and error",
                   description="Each group's `filters` select it in the execution list.",
                   responses={200: FailureGroupsSerializer,
                              400: error_response("Invalid filter."), **COMMON_ERRORS},
                   tags=["operations"])
    def get(self, request):
        filters = ExecutionFilter(request.GET, queryset=selectors.executions())
        if not filters.is_valid():
            raise exceptions.ValidationError(filters.errors)
        return Response({"groups": operations.failure_groups(filters.qs)})


def bulk_answer(request, bulk, status=200) -> Response:
    items = [{"execution": str(item.execution_id), "verdict": item.verdict,
              "preview": item.preview, "outcome": item.outcome, "message": item.message}
             for item in operations.bulk_items(bulk)[:500]]
    return Response({
        "id": str(bulk.pk), "kind": bulk.kind, "request": bulk.request,
        "selection": bulk.selection, "status": bulk.status, "actor": bulk.actor,
        "reason": bulk.reason, "created_at": bulk.created_at, "finished_at": bulk.finished_at,
        "progress": operations.bulk_progress(bulk), "items": items,
        "url": reverse("api:bulk-operation", args=[bulk.pk], request=request),
    }, status=status)


class BulkListView(ErrorShapeMixin, APIView):
    permission_classes = [ReadOrOperate]

    @extend_schema(
        summary="Preview a bulk operation",
        description="`selection`: `{\"ids\": [...]}` or `{\"filters\": {...}}` (the list's "
                    "filters; a failure group's `filters`). Stores the dry run: what would "
                    "happen to each execution. Nothing else changes until POST .../run/.",
        request=BulkSerializer,
        responses={201: BulkOperationSerializer, **BODY_ERRORS, **COMMON_ERRORS},
        tags=["operations"])
    def post(self, request):
        body = strict(BulkSerializer, request.data)
        operation = checked_operation(request, body)
        bulk = operations.preview_bulk(body["selection"], operation, actor=actor(request))
        return bulk_answer(request, bulk, 201)


class BulkDetailView(ErrorShapeMixin, APIView):
    permission_classes = [CanView]

    @extend_schema(summary="A bulk operation: its preview, progress and outcomes",
                   responses={200: BulkOperationSerializer, **NOT_FOUND, **COMMON_ERRORS},
                   tags=["operations"])
    def get(self, request, operation_id):
        return bulk_answer(request, operations.bulk_operation(operation_id))


class BulkRunView(ErrorShapeMixin, APIView):
    permission_classes = [ReadOrOperate]

    @extend_schema(summary="Run a previewed bulk operation as a background job",
                   description="`reason` is required. 409 when it ran already.",
                   request=RunSerializer,
                   responses={202: BulkOperationSerializer, **CONFLICT, **NOT_FOUND,
                              **BODY_ERRORS, **COMMON_ERRORS}, tags=["operations"])
    def post(self, request, operation_id):
        body = strict(RunSerializer, request.data)
        bulk = operations.bulk_operation(operation_id)
        operation = operations.request_of(bulk)
        if not operations.permitted(request.user, operation):
            raise exceptions.PermissionDenied(f"This {bulk.kind} needs the {operation.role} "
                                              "role.")
        bulk = operations.run_bulk(bulk.pk, actor=actor(request), reason=body.get("reason"))
        return bulk_answer(request, bulk, 202)


class MigrationView(ErrorShapeMixin, APIView):
    permission_classes = [CanView]

    @extend_schema(
        summary="The impact of migrating a machine's executions to another version",
        description="`from`, `to`: versions; `map.<state>=<state>` overrides the proposed "
                    "mapping (same names map; renamed or removed states need a choice). "
                    "Nothing changes: migrate with a bulk operation `migrate`.",
        parameters=[OpenApiParameter("from", {"type": "integer", "minimum": 1}, required=True),
                    OpenApiParameter("to", {"type": "integer", "minimum": 1}, required=True)],
        responses={200: OpenApiTypes.OBJECT, 400: error_response("Invalid versions or mapping."),
                   **NOT_FOUND, **COMMON_ERRORS}, tags=["operations"])
    def get(self, request, machine_id):
        plan = migrating.impact_from_query(machine_id, request.GET)
        return Response(plan.as_dict())

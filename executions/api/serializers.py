"""What the executions API answers, and the bodies it accepts (unknown fields refused)."""
from django.urls import reverse
from rest_framework import exceptions, serializers

from api.links import page_url
from executions.filters import MAX_VERSION
from executions.models import Execution, HistoryEntry
from expressions.values import printable

MAX_WAIT_SECONDS = 30.0  # a waiting request holds a web thread: bound it
EXECUTION_MODES = ("sync", "async-throughput", "async-latency")


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

    def to_representation(self, execution):
        # Rows stored before every value was checked may hold text no JSON answer can
        # encode (a lone surrogate): shown escaped, never a 500 (expressions.values.printable).
        return printable(super().to_representation(execution))

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
        row = printable(super().to_representation(entry))
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
    mode = serializers.ChoiceField(
        EXECUTION_MODES, required=False,
        help_text="Override the machine's execution_mode. Needs the editor role (sync runs "
                  "the machine's code in the web process).")
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

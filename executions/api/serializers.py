"""What the executions API answers, and the bodies it accepts (unknown fields refused)."""
import math

from django.urls import NoReverseMatch, get_script_prefix, reverse
from django.utils import timezone
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
    key = serializers.CharField(source="business_key", allow_null=True,
                                help_text="The business key its machine declares.")
    attributes = serializers.JSONField(help_text="The searchable attributes, by name.")

    class Meta:
        model = Execution
        fields = ["id", "machine", "version", "mode", "status", "state", "context", "input",
                  "result", "error", "available_actions", "parent", "children", "actor",
                  "idempotency_key", "created_at", "updated_at", "finished_at", "url",
                  "api_url", "history_url", "diagram_url", "key", "attributes"]

    def to_representation(self, execution):
        # Rows stored before every value was checked may hold text no JSON answer can
        # encode (a lone surrogate): shown escaped, never a 500 (expressions.values.printable).
        return printable(represent(execution))

    def generic_representation(self, execution):
        """What DRF's ModelSerializer makes of the fields above: `represent` must equal it
        (tests/test_api_executions.py compares them)."""
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


_DATETIME = serializers.DateTimeField()  # DRF's ISO 8601 in the current time zone


def _text(value):
    return None if value is None else str(value)


def _when(value):
    return None if value is None else _DATETIME.to_representation(value)


def represent(execution) -> dict:
    """ExecutionSerializer's fields without building a serializer per execution: building
    its 22 fields (copied from the model's) took longer than the action it answers for.
    The children are read only for a machine that can start any (`invoke: machine`,
    `parallel` or `map`): no other execution has children, and it answers without a
    query."""
    pk = execution.pk
    machine = execution.machine_version.parsed()
    if _starts_children(machine):
        cached = getattr(execution, "_prefetched_objects_cache", {}).get("children")
        children = ([str(child.pk) for child in cached] if cached is not None else
                    [str(child) for child in Execution.objects.filter(parent_id=pk)
                     .values_list("pk", flat=True)])
    else:
        children = []
    return {
        "id": str(pk),
        "machine": _text(execution.machine_id),
        "version": execution.machine_version.version,
        "mode": _text(execution.execution_mode),
        "status": _text(execution.status),
        "state": _text(execution.state),
        "context": execution.context,
        "input": execution.input,
        "result": execution.result,
        "error": execution.error,
        "available_actions": list(execution.available_actions()),
        "parent": _text(execution.parent_id),
        "children": children,
        "actor": _text(execution.actor),
        "idempotency_key": _text(execution.idempotency_key),
        "created_at": _when(execution.created_at),
        "updated_at": _when(execution.updated_at),
        "finished_at": _when(execution.finished_at),
        "url": _url_of("explorer:execution", pk),
        "api_url": _url_of("api:execution", pk),
        "history_url": _url_of("api:execution-history", pk),
        "diagram_url": _url_of("api:execution-svg", pk),
        "key": _text(execution.business_key),
        "attributes": execution.attributes,
    }


_SOME_ID = "00000000-0000-4000-8000-000000000000"
_URLS: dict[tuple[str, str], str | None] = {}


def _url_of(name: str, pk) -> str | None:
    """reverse(name, args=[pk]), from the route reversed once per name (and script
    prefix) with a stand-in id: four reversals cost more than the rest of the answer.
    None when the route does not exist (the explorer's, as page_url)."""
    key = (name, get_script_prefix())
    if key not in _URLS:
        try:
            _URLS[key] = reverse(name, args=[_SOME_ID])
        except NoReverseMatch:
            _URLS[key] = None
    template = _URLS[key]
    return None if template is None else template.replace(_SOME_ID, str(pk))


CHILD_STARTING_INVOKES = ("machine", "parallel", "map")  # each child is an execution


def _starts_children(machine) -> bool:
    return any(transition.invoke is not None
               and transition.invoke.kind in CHILD_STARTING_INVOKES
               for state in machine.states.values() for transition in state.transitions)


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


HISTORY_FIELDS = tuple(HistoryEntrySerializer.Meta.fields)


def history_rows(rows) -> list[dict]:
    """HistoryEntrySerializer's answer for `values(*HISTORY_FIELDS)` rows, without a
    serializer: building its 16 fields per row was most of a page of 100 rows
    (tests/test_latency_history.py checks both say the same). The rows are changed in
    place: they are `values()`' own dicts. Text no JSON answer can encode is escaped when
    the answer is rendered (api.renderers.PrintableJSONRenderer), not checked here."""
    zone = timezone.get_current_timezone()  # DRF's DateTimeField, once for the page
    for row in rows:
        for key, value in row.items():  # texts come from the database as str
            if value == "":
                row[key] = None  # as the serializer's to_representation, in any field
        at = row["at"]
        if timezone.is_aware(at):
            text = at.astimezone(zone).isoformat()
            row["at"] = text[:-6] + "Z" if text.endswith("+00:00") else text
        else:
            row["at"] = _when(at)
        if row["duration_ms"] is not None:
            row["duration_ms"] = float(row["duration_ms"])
    return rows


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
    reason = TextField(max_length=1000, help_text="Why it is canceled (required; kept in "
                       "history).")


def strict(serializer_class, data):
    """Validated body; unknown fields are refused (a typo must not be silently ignored)."""
    if not isinstance(data, dict):
        raise exceptions.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
    plain = _plain_body(serializer_class, data)
    if plain is not None:
        return plain
    serializer = serializer_class(data=data)
    unknown = sorted(set(data) - set(serializer.fields))
    serializer.is_valid(raise_exception=False)
    found = dict(serializer.errors)
    for key in unknown:
        found[key] = [f"unknown field; known: {', '.join(serializer.fields)}"]
    if found:
        raise exceptions.ValidationError(found)
    return serializer.validated_data


_FIELDS: dict[type, dict] = {}
_ANY_VALUE = type(serializers.DictField().child)  # a DictField that checks no value


def _plain_body(serializer_class, data) -> dict | None:
    """The validated body without building a serializer, for a body whose every value is
    already what DRF would make of it (a trimmed ASCII string within bounds, a real bool,
    a finite number within bounds, an object, a listed choice); None for anything else,
    which goes through DRF for its checks and messages. Building the serializer's fields
    per request cost as much as the rest of the view (tests/test_api_executions.py checks
    both paths agree)."""
    fields = _FIELDS.get(serializer_class)
    if fields is None:
        fields = _FIELDS[serializer_class] = dict(serializer_class().fields)
    out = {}
    for name, value in data.items():
        field = fields.get(name)
        if field is None or not _as_is(field, value):
            return None
        if isinstance(value, dict):
            value = dict(value)
        elif type(field) is serializers.FloatField:
            value = float(value)  # as DRF makes it
        out[name] = value
    for name, field in fields.items():
        if name not in out:
            if field.required:
                return None
            if field.default is not serializers.empty:
                out[name] = field.get_default()
    return out


def _as_is(field, value) -> bool:
    kind = type(field)
    if kind is serializers.ChoiceField:
        return type(value) is str and value in field.choice_strings_to_values \
            and field.choice_strings_to_values[value] == value
    if kind is TextField or kind is serializers.CharField:
        return (type(value) is str and value.isascii() and value == value.strip()
                and (bool(value) or field.allow_blank) and "\x00" not in value
                and (field.max_length is None or len(value) <= field.max_length))
    if kind is serializers.BooleanField:
        return value is True or value is False
    if kind is serializers.DictField:
        return type(value) is dict and type(field.child) is _ANY_VALUE
    if kind is serializers.IntegerField or kind is serializers.FloatField:
        if type(value) is not int and (kind is serializers.IntegerField
                                       or type(value) is not float or not math.isfinite(value)):
            return False
        return ((field.min_value is None or value >= field.min_value)
                and (field.max_value is None or value <= field.max_value)
                and (type(value) is not int or abs(value) < 2 ** 53))
    return False


def capped(timeout):
    return None if timeout is None else min(timeout, MAX_WAIT_SECONDS)

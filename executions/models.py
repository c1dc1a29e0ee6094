"""Durable executions: the snapshot, its history, and the rows that make work durable.

Only the runtime writes these (executions/runtime/sqlstore.py); every surface calls
executions/services.py.
- Execution: the engine snapshot, queryable columns + the engine's bookkeeping (`engine`).
- HistoryEntry: append-only, `seq` gap-free per execution.
- InboxItem: every action/timer/result/cancel/retry is stored here first
  (durable acceptance, idempotency key, order), then applied by an advance. A start needs
  none: a stored execution whose engine_state is still empty is the pending start.
- Timer: armed timers; the timer loop turns due ones into inbox items.
- Work: effects that leave the process (IO, child starts, actions sent, parent notices),
  recorded in the advance that asked for them and performed after its commit.
- StarterMarker: whether a task that starts the waiting async-throughput executions is
  pending (executions/tasks.py), when tasks are not in Redis.
"""
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse

from executions import engine
from machines.models import Machine, MachineVersion

STATUS_CHOICES = [(s, s) for s in engine.STATUSES]


class Execution(models.Model):
    # Foreign keys without an index of their own where an index in Meta begins with them:
    # every start writes each index, and those serve the same lookups.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    machine = models.ForeignKey(Machine, on_delete=models.PROTECT, related_name="executions",
                                db_index=False)
    machine_version = models.ForeignKey(
        MachineVersion, on_delete=models.PROTECT, related_name="executions", db_index=False
    )
    execution_mode = models.CharField(max_length=20)
    status = models.CharField(max_length=10, choices=STATUS_CHOICES)
    state = models.CharField(max_length=200)
    context = models.JSONField(default=dict)
    input = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    engine_state = models.JSONField(default=dict, help_text="seq, timer, work, queued")
    version = models.PositiveIntegerField(default=0, help_text="compare-and-swap counter")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children",
        db_index=False,
    )
    parent_token = models.CharField(max_length=200, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    # The machine's business key (machines/contracts.py), and whether it is unique among
    # the executions not finished or canceled ("unfinished") or for all time ("always").
    business_key = models.CharField(max_length=200, null=True, blank=True)
    key_scope = models.CharField(max_length=10, blank=True)
    attributes = models.JSONField(default=dict, blank=True,
                                  help_text="the searchable attributes, as last computed")
    mocks = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=200, blank=True, help_text="who started it")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("operate_execution", "Can start, trigger, cancel and retry executions")]
        constraints = [
            models.UniqueConstraint(
                fields=["machine", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="unique_execution_idempotency_key",
            ),
            # A start with a key in use returns that execution (runtime/accepting.py).
            models.UniqueConstraint(
                fields=["machine", "business_key"],
                condition=Q(business_key__isnull=False) & (
                    Q(key_scope="always") | ~Q(status__in=list(engine.TERMINAL_STATUSES))),
                name="unique_execution_business_key",
            ),
        ]
        indexes = [
            models.Index(fields=["machine", "status"]),
            models.Index(fields=["machine", "created_at"]),
            models.Index(fields=["machine_version", "state"]),
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["parent", "parent_token"]),
            # Only executions a worker has not started yet: the batch start of
            # async-throughput mode reads them (executions/runtime/sqlstore.py).
            models.Index(fields=["id"], condition=Q(version=0), name="execution_not_started"),
            # Addressing by key (any status) and the explorer's search box.
            models.Index(fields=["business_key", "machine"],
                         condition=Q(business_key__isnull=False),
                         name="execution_business_key"),
        ]

    def __str__(self):
        return f"{self.machine_id} {str(self.id)[:8]}"

    def get_absolute_url(self):
        return reverse("explorer:execution", args=[self.id])

    @property
    def short_id(self):
        return str(self.id)[:8]

    def snapshot(self) -> engine.Snapshot:
        return engine.Snapshot.from_dict(
            {
                "status": self.status,
                "state": self.state,
                "context": self.context,
                "input": self.input,
                "result": self.result,
                "error": self.error,
                **self.engine_state,
            }
        )

    def available_actions(self):
        return engine.actions_in(self.machine_version.parsed(), self.status, self.state)


class ExecutionAttribute(models.Model):
    """One searchable attribute of an execution (machines/contracts.py), in the column of its
    type, so that a filter is an indexed comparison. Rewritten by the step that changes it."""

    COLUMNS = {"string": "text", "number": "number", "boolean": "boolean",
               "timestamp": "moment"}  # the column of each attribute type

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE,
                                  related_name="attribute_rows", db_index=False)
    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="+",
                                db_index=False)
    name = models.CharField(max_length=40)
    text = models.CharField(max_length=200, null=True, blank=True)
    number = models.FloatField(null=True, blank=True)
    boolean = models.BooleanField(null=True, blank=True)
    moment = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["execution", "name"], name="unique_attribute"),
        ]
        indexes = [
            models.Index(fields=["machine", "name", "text"], name="attribute_text"),
            models.Index(fields=["machine", "name", "number"], name="attribute_number"),
            models.Index(fields=["machine", "name", "moment"], name="attribute_moment"),
            models.Index(fields=["machine", "name", "boolean"], name="attribute_boolean"),
            models.Index(fields=["text"], name="attribute_any_text"),  # the search box
            models.Index(fields=["number"], name="attribute_any_number"),  # the search box
        ]

    def __str__(self):
        return f"{self.execution_id} {self.name}"


class HistoryEntry(models.Model):
    # No index of their own: the unique (execution, seq) and the (machine_version, ...)
    # index serve their lookups, and every step writes each index.
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="history",
                                  db_index=False)
    machine_version = models.ForeignKey(MachineVersion, on_delete=models.CASCADE,
                                        related_name="+", db_index=False)
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=40)
    at = models.DateTimeField()
    actor = models.CharField(max_length=200, blank=True)
    transition = models.CharField(max_length=200, blank=True)
    branch = models.CharField(max_length=20, blank=True)
    from_state = models.CharField(max_length=200, blank=True)
    to_state = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=200, blank=True)
    input = models.JSONField(null=True, blank=True)
    context = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    guards = models.JSONField(null=True, blank=True)
    detail = models.JSONField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["execution", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["execution", "seq"], name="unique_history_seq"),
        ]
        indexes = [
            models.Index(fields=["machine_version", "kind", "transition"]),
        ]
        verbose_name_plural = "history entries"

    def __str__(self):
        return f"{self.execution_id} #{self.seq} {self.kind}"


class InboxItem(models.Model):
    ACTION, TIMER, RESULT, CANCEL, RETRY = "action", "timer", "result", "cancel", "retry"
    KIND_CHOICES = [(k, k) for k in (ACTION, TIMER, RESULT, CANCEL, RETRY)]
    APPLIED, REJECTED, IGNORED = "applied", "rejected", "ignored"

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="inbox")
    kind = models.CharField(max_length=10, choices=KIND_CHOICES)
    payload = models.JSONField(default=dict)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    actor = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["execution", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="unique_inbox_idempotency_key",
            ),
        ]
        indexes = [
            models.Index(
                fields=["execution", "id"],
                condition=Q(processed_at__isnull=True),
                name="inbox_pending",
            ),
            models.Index(
                fields=["created_at"],
                condition=Q(processed_at__isnull=True),
                name="inbox_pending_age",
            ),
        ]

    def __str__(self):
        return f"{self.kind} for {self.execution_id}"


class Timer(models.Model):
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="timers")
    token = models.CharField(max_length=200, unique=True)
    due_at = models.FloatField(db_index=True, help_text="epoch seconds")
    purpose = models.CharField(max_length=10)

    class Meta:
        ordering = ["due_at"]

    def __str__(self):
        return f"{self.purpose} timer {self.token} due {self.due_at}"


class Work(models.Model):
    PENDING, RUNNING, DONE, CANCELED = "pending", "running", "done", "canceled"
    CALL, CHILD, SEND, NOTIFY = "call", "machine", "trigger", "notify"

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="work")
    token = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=10)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, default=PENDING)
    attempts = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_seconds = models.FloatField(default=60)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["status", "claimed_at"])]

    def __str__(self):
        return f"{self.kind} work {self.token} ({self.status})"


class StarterMarker(models.Model):
    """One row per task queue: since when a task that starts the waiting async-throughput
    executions has been pending, or null when none is (executions/runtime/queue.py).

    Used when tasks are not in Redis (with Redis the marker is a key beside the queue).
    """

    queue = models.CharField(max_length=100, primary_key=True)
    pending_since = models.FloatField(null=True, blank=True, help_text="epoch seconds")

    def __str__(self):
        return f"starter for {self.queue}: " + (
            "none pending" if self.pending_since is None else f"pending since {self.pending_since}")


class BulkOperation(models.Model):
    """One operation on many executions (executions/operations.py): previewed first (its
    items carry what would happen to each), then run as a background job that records the
    outcome of each item, so a job killed mid-way resumes where it stopped."""

    PREVIEWED, QUEUED, RUNNING, DONE = "previewed", "queued", "running", "done"
    STATUS_CHOICES = [(s, s) for s in (PREVIEWED, QUEUED, RUNNING, DONE)]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=20)
    request = models.JSONField(default=dict, help_text="the operation and its parameters")
    selection = models.JSONField(default=dict, help_text="the filters or ids it was asked for")
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=PREVIEWED)
    previewed_by = models.CharField(max_length=200, blank=True)
    actor = models.CharField(max_length=200, blank=True, help_text="who ran it")
    reason = models.TextField(blank=True)
    total = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.kind} of {self.total} ({self.status})"


class BulkItem(models.Model):
    """One execution of a bulk operation: the dry run's verdict, then the real outcome
    (empty while it has not been acted on)."""

    APPLIES, NOT_AVAILABLE, WOULD_FAIL, FAILED = (
        "applies", "not_available", "would_fail", "failed")

    operation = models.ForeignKey(BulkOperation, on_delete=models.CASCADE, related_name="items",
                                  db_index=False)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="+")
    verdict = models.CharField(max_length=20)
    preview = models.TextField(blank=True, help_text="what the dry run said would happen")
    outcome = models.CharField(max_length=20, blank=True)
    message = models.TextField(blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["operation", "id"]
        constraints = [
            models.UniqueConstraint(fields=["operation", "execution"],
                                    name="unique_bulk_item_execution"),
        ]
        indexes = [models.Index(fields=["operation", "outcome", "id"])]

    def __str__(self):
        return f"{self.operation_id} {self.execution_id}: {self.outcome or self.verdict}"

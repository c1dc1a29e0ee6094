"""Executions and bulk operations in the admin, read-only, as its users expect to find them:
a list with filters, each linked to its page in the explorer (where it is explained and
acted on: executions/operations.py)."""
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from executions.models import BulkOperation, Execution
from machines.words import moment_and_relative


class ReadOnly(admin.ModelAdmin):
    """Executions change only through the services (history says who and why)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _when(moment):
    return moment_and_relative(moment, timezone.get_current_timezone()) if moment else "—"


@admin.register(Execution)
class ExecutionAdmin(ReadOnly):
    list_display = ["short_id", "machine_id", "version", "status", "state", "started",
                    "error_summary", "explorer"]
    list_filter = ["status", "execution_mode", "machine", "created_at"]
    search_fields = ["machine__id", "state", "actor"]
    list_select_related = ["machine_version"]
    date_hierarchy = "created_at"
    show_full_result_count = False  # a count of every execution is no filter's business
    fields = ["explorer", "machine", "machine_version", "execution_mode", "status", "state",
              "context", "input", "result", "error", "actor", "created_at", "updated_at",
              "finished_at", "parent"]
    readonly_fields = fields

    @admin.display(description="Version", ordering="machine_version__version")
    def version(self, execution):
        return execution.machine_version.version

    @admin.display(description="Started", ordering="created_at")
    def started(self, execution):
        return _when(execution.created_at)

    @admin.display(description="Error")
    def error_summary(self, execution):
        error = execution.error or {}
        return f"{error.get('type')}: {str(error.get('message'))[:120]}" if error else ""

    @admin.display(description="In the explorer")
    def explorer(self, execution):
        return format_html('<a href="{}">open {}</a>', execution.get_absolute_url(),
                           execution.short_id)


@admin.register(BulkOperation)
class BulkOperationAdmin(ReadOnly):
    list_display = ["__str__", "kind", "status", "total", "actor", "reason", "created",
                    "explorer"]
    list_filter = ["kind", "status"]
    fields = ["explorer", "kind", "request", "selection", "status", "previewed_by", "actor",
              "reason", "total", "created_at", "started_at", "finished_at"]
    readonly_fields = fields

    @admin.display(description="Created", ordering="created_at")
    def created(self, bulk):
        return _when(bulk.created_at)

    @admin.display(description="In the explorer")
    def explorer(self, bulk):
        return format_html('<a href="{}">result page</a>', reverse("explorer:bulk",
                                                                    args=[bulk.pk]))

"""Every read the surfaces (API, explorer, commands) make about executions.

Selectors return model objects or querysets, or raise the model's DoesNotExist (an
ObjectDoesNotExist, which the API answers with 404). Writes go through the service
functions, never through here.
"""
from __future__ import annotations

from django.db.models import Count, Prefetch

from executions import engine, paths
from executions.models import Execution, HistoryEntry


def executions():
    """Executions with what a listing shows: their version and their children's ids."""
    children = Prefetch("children", queryset=Execution.objects.only("id", "parent_id"))
    return Execution.objects.select_related("machine_version").prefetch_related(children)


def get_execution(execution_id) -> Execution:
    return executions().get(pk=execution_id)


def history(execution_id):
    """An execution's history rows (DoesNotExist for an unknown execution, not no rows)."""
    execution = Execution.objects.only("pk").get(pk=execution_id)
    return HistoryEntry.objects.filter(execution=execution)


def diagram_of(execution_id):
    """(the execution's machine definition, the path to draw on its diagram)."""
    execution = Execution.objects.select_related("machine_version").get(pk=execution_id)
    return execution.machine_version.parsed(), paths.diagram_path(execution)


def counts_by_status(machine_id: str | None = None) -> dict[str, dict[str, int]]:
    """machine id -> {status: how many executions}, statuses in engine.STATUSES order, for
    every machine or only `machine_id`; one aggregate query."""
    rows = Execution.objects.order_by()
    if machine_id is not None:
        rows = rows.filter(machine_id=machine_id)
    found: dict[str, dict[str, int]] = {}
    for machine, status, n in rows.values_list("machine_id", "status").annotate(n=Count("pk")):
        found.setdefault(machine, {})[status] = n
    order = {status: i for i, status in enumerate(engine.STATUSES)}
    return {machine: dict(sorted(counts.items(), key=lambda item: order.get(item[0], 99)))
            for machine, counts in found.items()}

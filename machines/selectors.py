"""Every read the surfaces (explorer pages, API, admin) make about machines and their
versions, named for what it returns. A missing version raises
``MachineVersion.DoesNotExist`` (catch ``django.core.exceptions.ObjectDoesNotExist``).
"""
from __future__ import annotations

from datetime import UTC, datetime

from django.db.models import Count, Max, OuterRef, Subquery

from machines import schedules
from machines.models import Machine, MachineVersion, Schedule


def latest_versions():
    """The latest version of every machine, with `versions_count`, ordered by machine id."""
    same_machine = MachineVersion.objects.filter(machine=OuterRef("machine"))
    newest = same_machine.order_by("-version").values("version")[:1]
    count = same_machine.order_by().values("machine").annotate(n=Count("pk")).values("n")
    return (
        MachineVersion.objects.filter(version=Subquery(newest))
        .annotate(versions_count=Subquery(count))
        .select_related("machine", "created_by")
        .order_by("machine_id")
    )


def get_version(machine_id: str, version: int | None = None) -> MachineVersion:
    """One version, the latest when `version` is None. Raises MachineVersion.DoesNotExist."""
    versions = MachineVersion.objects.filter(machine_id=machine_id).select_related("created_by")
    if version is not None:
        return versions.get(version=version)
    found = versions.order_by("-version").first()
    if found is None:
        raise MachineVersion.DoesNotExist(f"No machine '{machine_id}'.")
    return found


def versions_of(machine_id: str) -> list[MachineVersion]:
    """Every version of a machine, newest first; DoesNotExist for an unknown machine (every
    stored machine has a version: they are saved together)."""
    versions = list(MachineVersion.objects.filter(machine_id=machine_id)
                    .select_related("created_by").order_by("-version"))
    if not versions:
        raise MachineVersion.DoesNotExist(f"No machine '{machine_id}'.")
    return versions


def version_summaries(machine_id: str) -> list[dict]:
    """Every version of a machine, newest first: id, version, title, created_at."""
    return list(MachineVersion.objects.filter(machine_id=machine_id).order_by("-version")
                .values("id", "version", "title", "created_at"))


def machine_exists(machine_id: str) -> bool:
    return Machine.objects.filter(id=machine_id).exists()


def machine_ids():
    """The id of every machine, in id order."""
    return list(Machine.objects.order_by("id").values_list("id", flat=True))


def with_latest_version(machines):
    """Machines annotated with their latest version's number and title and how many
    versions they have (the admin's list)."""
    newest = MachineVersion.objects.filter(machine=OuterRef("pk")).order_by("-version")
    return machines.annotate(
        latest_version=Max("versions__version"),
        versions_count=Count("versions"),
        latest_title=Subquery(newest.values("title")[:1]),
    )


def previous_version(version: MachineVersion) -> MachineVersion | None:
    """The newest version of the same machine before `version`, if any."""
    return (MachineVersion.objects.filter(machine_id=version.machine_id,
                                          version__lt=version.version)
            .order_by("-version").first())


def schedules_of(machine_id: str, runs: int = 3) -> list[dict]:
    """The machine's schedules, by name: how each is timed, its start input, when it fired
    last and its next `runs` fire times (aware datetimes in UTC)."""
    found = []
    for row in Schedule.objects.filter(machine_id=machine_id).order_by("name"):
        declared = row.declared()
        found.append({
            "id": row.name, "cron": declared.cron, "every": declared.every,
            "in_words": schedules.explain(declared.cron) if declared.cron else None,
            "time_zone": declared.time_zone, "input": row.input, "version": row.version,
            "last_fired_at": _moment(row.last_fired_at),
            "next_runs": [_moment(at) for at in
                          schedules.upcoming(declared, row.next_fire_at, runs)],
        })
    return found


def _moment(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)
def state_choices(machine_id: str | None) -> list[tuple[str, str]]:
    """(name, label) of the states of a machine's latest version, for a state filter; empty
    for no machine or an unknown one."""
    if not machine_id:
        return []
    version = MachineVersion.objects.filter(machine_id=machine_id).order_by("-version").first()
    if version is None:
        return []
    return [(name, state.display) for name, state in version.parsed().states.items()]

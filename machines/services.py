"""Saving machine versions: the one place every surface stores a definition (reads are in
machines.selectors).

Versions are immutable. Saving is idempotent (the same definition twice is one version) and
safe under concurrency: two saves racing for the next version number both succeed, the
unique (machine, version) constraint decides who gets which number.
"""
from __future__ import annotations

import json
import time

from django.db import IntegrityError, transaction

from machines import schedules
from machines.language import DefinitionError, canonical_hash, check, parse_text
from machines.models import Machine, MachineVersion, Schedule

SAVE_ATTEMPTS = 20  # how many racing saves one save can lose before giving up


class VersionConflict(Exception):
    """A different definition is already stored under this id and version."""

    def __init__(self, machine_id: str, version: int):
        self.machine_id = machine_id
        self.version = version
        super().__init__(
            f"Version {version} of machine '{machine_id}' already exists with a different "
            f"definition. Versions never change: remove `version` to save the next one."
        )


def save_version(source: str | dict, *, user=None) -> tuple[MachineVersion, bool]:
    """Validate and store `source`; return (the stored version, whether it was created).

    Raises DefinitionError when the source is invalid and VersionConflict when its
    explicit version already holds something else.
    """
    checked = check_source(source)
    if not checked.valid:
        raise DefinitionError(checked.errors, checked.warnings)

    document = checked.document
    if isinstance(source, str):
        text, source_format = source, checked.source_format
    else:
        text, source_format = json.dumps(source, indent=2, ensure_ascii=False) + "\n", "json"
    fields = {
        "title": document.get("title") or "",
        "description": document.get("description") or "",
        "source": text,
        "source_format": source_format,
        "content_hash": canonical_hash(document),
        "created_by": user if user is not None and user.is_authenticated else None,
    }
    for _ in range(SAVE_ATTEMPTS - 1):
        try:
            return _store(document, fields)
        except IntegrityError:
            continue  # another save took this number first; look again (it may be ours)
    return _store(document, fields)


def _store(document: dict, fields: dict) -> tuple[MachineVersion, bool]:
    """One attempt, in one transaction: find the same definition or insert the next version."""
    requested = document.get("version")
    with transaction.atomic():
        machine, _ = Machine.objects.get_or_create(id=document["id"])
        if requested is not None:
            existing = machine.versions.filter(version=requested).first()
            if existing is not None:
                if existing.content_hash != fields["content_hash"]:
                    raise VersionConflict(machine.id, requested)
                return existing, False
            number = requested
        else:
            latest = machine.latest
            if latest is not None and latest.content_hash == fields["content_hash"]:
                return latest, False
            number = latest.version + 1 if latest else 1
        stored = MachineVersion.objects.create(
            machine=machine, version=number, definition={**document, "version": number}, **fields
        )
        reconcile_schedules(machine)
        return stored, True


def reconcile_schedules(machine: Machine, now: float | None = None) -> None:
    """Make the machine's Schedule rows those of its latest version. A schedule whose
    timing (cron, every, time zone) is unchanged keeps its next fire time; a new or
    changed one counts from now; one the latest version no longer declares is removed.
    Runs in the save's transaction, so a version and its schedules are stored together."""
    now = time.time() if now is None else now
    latest = machine.latest
    declared = {s.id: s for s in latest.parsed().schedules}
    Schedule.objects.filter(machine=machine).exclude(name__in=declared).delete()
    existing = {row.name: row for row in Schedule.objects.select_for_update()
                .filter(machine=machine)}
    for name, schedule in declared.items():
        row = existing.get(name)
        if row is None:
            Schedule.objects.create(machine=machine, name=name, version=latest.version,
                                    timing=schedule.timing, input=schedule.input,
                                    next_fire_at=schedules.next_after(schedule, now))
            continue
        changed = ["version", "input"]
        if row.timing != schedule.timing:
            row.timing, row.next_fire_at = schedule.timing, schedules.next_after(schedule, now)
            changed += ["timing", "next_fire_at"]
        row.version, row.input = latest.version, schedule.input
        row.save(update_fields=changed)


def check_source(source: str | dict):
    """check() with `machine:` references resolved against stored machines (and itself)."""
    own_id = declared_id(source)
    return check(
        source,
        machine_exists=lambda mid: mid == own_id or Machine.objects.filter(id=mid).exists(),
    )


def declared_id(source: str | dict) -> str | None:
    """The id the source declares, if it can be read at all (check() reports why not)."""
    if isinstance(source, dict):
        document = source
    else:
        try:
            document, _ = parse_text(source)
        except DefinitionError:
            return None
    return document.get("id") if isinstance(document, dict) else None

"""Saving machine versions: the one place every surface stores a definition (reads are in
machines.selectors).

Versions are immutable. Saving is idempotent (the same definition twice is one version) and
safe under concurrency: two saves racing for the next version number both succeed, the
unique (machine, version) constraint decides who gets which number.
"""
from __future__ import annotations

import json

from django.db import IntegrityError, transaction

from machines.language import DefinitionError, canonical_hash, check, parse_text
from machines.models import Machine, MachineVersion

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
        return stored, True


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

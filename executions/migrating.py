"""Migrating running executions to another version of their machine: the state mapping
proposed from the version diff, and the impact of a mapping before anything changes.

The migration itself is the `migrate` operation of executions/operations.py, one
execution at a time with compare-and-swap (a bulk operation migrates many, previewed first).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from django.db.models import Count
from django.db.models.fields.json import KeyTextTransform, KeyTransform

from executions import engine, operations
from executions.models import Execution
from executions.services import InvalidRequest
from machines import diffs
from machines.models import MachineVersion


@dataclass
class StateImpact:
    """The executions in one state of the old version, and what a migration does to them."""

    state: str
    target: str | None  # None: no mapping chosen yet
    count: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    outstanding_changed: int = 0  # timers or calls dropped (the state is entered again)
    words: list[str] = field(default_factory=list)


@dataclass
class Plan:
    machine: str
    from_version: int
    to_version: int
    mapping: dict[str, str | None]  # every state of the old version -> the new, or None
    needs_choice: list[str]  # old states without a same-named one in the new version
    added: list[str]
    states: list[StateImpact]

    @property
    def moving(self) -> int:
        return sum(impact.count for impact in self.states if impact.target is not None)

    @property
    def unmapped(self) -> int:
        return sum(impact.count for impact in self.states if impact.target is None)

    def as_dict(self) -> dict:
        return {**asdict(self), "moving": self.moving, "unmapped": self.unmapped,
                "operation": {"operation": operations.MIGRATE, "version": self.to_version,
                              "mapping": {k: v for k, v in self.mapping.items()
                                          if v is not None and v != k}},
                "selection": {"filters": {"machine": self.machine,
                                          "version": self.from_version}}}


def _version(machine_id: str, version: int, what: str) -> MachineVersion:
    found = MachineVersion.objects.filter(machine_id=machine_id, version=version).first()
    if found is None:
        raise InvalidRequest(f"{machine_id} has no version {version}.", what)
    return found


def plan(machine_id: str, from_version: int, to_version: int,
         mapping: dict[str, str] | None = None) -> Plan:
    """The mapping (same names map; `mapping` chooses for the others, or overrides) and
    how many executions of each state it would move, with what changes for them."""
    old_version = _version(machine_id, from_version, "from")
    new_version = _version(machine_id, to_version, "to")
    old, new = old_version.parsed(), new_version.parsed()
    mapping = mapping or {}
    for source, target in mapping.items():
        if source not in old.states:
            raise InvalidRequest(f"version {from_version} has no state {source!r}.",
                                 f"map.{source}")
        if target not in new.states:
            raise InvalidRequest(f"version {to_version} has no state {target!r}.",
                                 f"map.{source}")
    chosen: dict[str, str | None] = {
        name: mapping.get(name, name if name in new.states else None) for name in old.states}
    diff = diffs.definition_diff(old, new)
    impacts = {name: StateImpact(name, chosen[name]) for name in old.states}
    for row in _groups(old_version):
        impact = impacts.get(row["state"])
        if impact is None:
            continue
        impact.count += row["n"]
        impact.by_status[row["status"]] = impact.by_status.get(row["status"], 0) + row["n"]
        if impact.target is not None and not _kept(row, new.states[impact.target]):
            impact.outstanding_changed += row["n"]
    for impact in impacts.values():
        impact.words = _words(impact, to_version)
    return Plan(machine_id, from_version, to_version, chosen,
                sorted(name for name in old.states if name not in new.states),
                list(diff.states.get("added", [])),
                [impacts[name] for name in old.states])


def _groups(version: MachineVersion) -> list[dict]:
    """Executions on `version` that a migration may move, by state, status and outstanding
    timer or work (transition and kind)."""
    return list(
        Execution.objects.filter(machine_version=version)
        .exclude(status__in=engine.TERMINAL_STATUSES)
        .annotate(timer_transition=KeyTextTransform("transition",
                                                    KeyTransform("timer", "engine_state")),
                  timer_purpose=KeyTextTransform("purpose", KeyTransform("timer", "engine_state")),
                  work_transition=KeyTextTransform("transition",
                                                   KeyTransform("work", "engine_state")),
                  work_kind=KeyTextTransform("kind", KeyTransform("work", "engine_state")))
        .values("state", "status", "timer_transition", "timer_purpose", "work_transition",
                "work_kind")
        .annotate(n=Count("id")).order_by())


def _kept(row: dict, state) -> bool:
    snapshot = engine.Snapshot(
        status=row["status"], state=row["state"], context={},
        timer=({"transition": row["timer_transition"], "purpose": row["timer_purpose"]}
               if row["timer_transition"] else None),
        work=({"transition": row["work_transition"], "kind": row["work_kind"]}
              if row["work_transition"] else None))
    return operations.kept_outstanding(snapshot, state)


def _words(impact: StateImpact, to_version: int) -> list[str]:
    if not impact.count:
        return []
    if impact.target is None:
        return [f"{impact.count} have no state to go to in version {to_version}: choose one"]
    words = [f"{impact.count} would move to {impact.target}"]
    if impact.outstanding_changed:
        words.append(f"{impact.outstanding_changed} of them have a timer or call that "
                     f"version {to_version} does not have there: it is dropped and they "
                     "enter the state again")
    return words


def impact_from_query(machine_id: str, query) -> Plan:
    """`plan` from a page's or the API's query: from, to, map.<state>=<state>."""
    versions = []
    for name in ("from", "to"):
        value = query.get(name, "")
        if not value.isdigit() or not 1 <= int(value) <= 2**31 - 1:
            raise InvalidRequest(f"Give the version to migrate {name} as a positive integer.",
                                 name)
        versions.append(int(value))
    mapping = {key[4:]: value for key, value in query.items()
               if key.startswith("map.") and value}
    return plan(machine_id, versions[0], versions[1], mapping)

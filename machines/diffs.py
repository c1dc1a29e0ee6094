"""What changed from one version of a machine to another, for the version diff of the
machine page: states and transitions added, removed and changed, compared by meaning (a
transition moved within its list is not a change). Pure Python: no Django.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass

from machines.definition import Machine
from machines.diagrams import edge_id, state_id


@dataclass
class Diff:
    """What changed from one version to another, by state name and transition."""

    states: dict[str, list[str]] = field(default_factory=dict)  # added/removed/changed
    transitions: dict[str, list[tuple]] = field(default_factory=dict)  # (state, id, words)
    schedules: dict[str, list[str]] = field(default_factory=dict)  # added/removed/changed ids

    @property
    def is_empty(self) -> bool:
        return not any(self.states.values()) and not any(self.transitions.values()) \
            and not any(self.schedules.values())

    def marks(self) -> dict[str, list[str]]:
        """Diagram id -> class, the `marks` of render_svg for the newer version's diagram."""
        out = {}
        for how in ("added", "changed"):
            for name in self.states.get(how, []):
                out[state_id(name)] = [f"diff-{how}"]
            for state, tid, _ in self.transitions.get(how, []):
                for branch in (None, "success", "error", "then", "else"):
                    out[edge_id(state, tid, branch)] = [f"diff-{how}"]
        return out


def _plain(value):
    """A definition object as plain data without document paths (moving an item is not a
    change of meaning)."""
    if is_dataclass(value):
        value = asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "path"}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _transitions(machine: Machine) -> dict[tuple, tuple]:
    return {(state.name, t.id): (_plain(t), _words(machine, state, t))
            for state in machine.states.values() for t in state.transitions}


def _words(machine: Machine, state, transition) -> str:
    target = machine.states.get(transition.target or state.name)
    where = "…" if transition.invoke or transition.decision else (
        target.display if target else transition.target)
    how = f"on {', '.join(transition.on)}" if transition.on else "automatic"
    return f"{state.display} → {where} ({transition.display}, {how})"


def definition_diff(old: Machine, new: Machine) -> Diff:
    """States and transitions added, removed and changed from `old` to `new`."""
    def state_facts(state):
        return _plain({"label": state.label, "description": state.description,
                       "returns": state.returns, "terminal": state.is_terminal})

    diff = Diff(states={
        "added": [n for n in new.states if n not in old.states],
        "removed": [n for n in old.states if n not in new.states],
        "changed": [n for n in new.states if n in old.states
                    and state_facts(new.states[n]) != state_facts(old.states[n])],
    })
    before, after = _transitions(old), _transitions(new)
    diff.transitions = {
        "added": [(*key, words) for key, (_, words) in after.items() if key not in before],
        "removed": [(*key, words) for key, (_, words) in before.items() if key not in after],
        "changed": [(*key, words) for key, (plain, words) in after.items()
                    if key in before and before[key][0] != plain],
    }
    old_schedules = {s.id: s for s in old.schedules}
    new_schedules = {s.id: s for s in new.schedules}
    diff.schedules = {
        "added": [n for n in new_schedules if n not in old_schedules],
        "removed": [n for n in old_schedules if n not in new_schedules],
        "changed": [n for n, s in new_schedules.items()
                    if n in old_schedules and old_schedules[n] != s],
    }
    return diff

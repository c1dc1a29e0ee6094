"""The forms the explorer generates from a machine's input schemas (machines/contracts.py):
one per action that declares fields, with a field per property (required, type, choices,
bounds, default). Actions declared to take nothing stay one-click buttons; actions that
declare nothing keep the JSON box.

What a form collects goes to the service like any input: the service checks it against the
schema once more, and its refusal names the fields."""
from __future__ import annotations

from datetime import UTC, datetime

from django import forms

from expressions.values import InvalidValue, load_json
from machines import contracts
from machines.definition import Machine


class JSONValueField(forms.CharField):
    """A nested object, list or untyped value: typed as JSON."""

    widget = forms.Textarea(attrs={"rows": 2, "class": "code-input", "spellcheck": "false"})

    def to_python(self, value):
        text = (super().to_python(value) or "").strip()
        if not text:
            return None
        try:
            return load_json(text)
        except InvalidValue as exc:
            raise forms.ValidationError(f"Not JSON: {exc}") from None


def _field(schema: dict, required: bool) -> forms.Field:
    kind = schema.get("type")
    initial = schema.get("default")
    options = {"required": required, "initial": initial,
               "help_text": schema.get("description", "")}
    if "enum" in schema and all(isinstance(choice, str) for choice in schema["enum"]):
        choices = [(choice, choice) for choice in schema["enum"]]
        return forms.ChoiceField(choices=choices if required or initial is not None
                                 else [("", "—"), *choices], **options)
    if kind == "string":
        return forms.CharField(max_length=schema.get("maxLength"), strip=False, **options)
    if kind in ("integer", "number"):
        bounds = {"min_value": schema.get("minimum"), "max_value": schema.get("maximum")}
        if kind == "integer":
            return forms.IntegerField(**bounds, **options)
        field = forms.FloatField(**bounds, **options)
        field.widget.attrs["step"] = "any"
        return field
    if kind == "boolean":
        return forms.BooleanField(**{**options, "required": False})
    return JSONValueField(**options)


def form_class(schema: dict) -> type[forms.Form]:
    """A Django form with a field per property of an object schema, required ones first."""
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    ordered = sorted(properties, key=lambda name: name not in required)
    fields = {name: _field(properties[name] if isinstance(properties[name], dict) else {},
                           name in required) for name in ordered}
    return type("ActionInputForm", (forms.Form,), fields)


def has_form(machine: Machine, action: str) -> bool:
    """The action declares fields (not "no input", not undeclared)."""
    schema = machine.action_inputs.get(action)
    return (schema is not None and not contracts.needs_no_input(schema)
            and schema.get("type") == "object" and bool(schema.get("properties")))


def action_forms(machine: Machine, actions: list[tuple[str, str]],
                 bound: tuple[str, forms.Form] | None = None) -> list[dict]:
    """{name, label, form} for each available action that declares fields; `bound`: the
    (action, form) a refused post sent, shown again with its errors."""
    shown = []
    for name, label in actions:
        if not has_form(machine, name):
            continue
        if bound is not None and bound[0] == name:
            form = bound[1]
        else:
            form = form_class(machine.action_inputs[name])(prefix=prefix(name))
        shown.append({"name": name, "label": label, "form": form})
    return shown


def prefix(action: str) -> str:
    return f"input-{action}"


def bound_form(machine: Machine, action: str, data) -> forms.Form | None:
    """The form of a posted action, bound to what was posted (None: the action has none)."""
    if not has_form(machine, action):
        return None
    return form_class(machine.action_inputs[action])(data, prefix=prefix(action))


def input_of(form: forms.Form) -> dict:
    """The input a valid form stands for: fields left empty are left out."""
    return {name: value for name, value in form.cleaned_data.items()
            if value is not None and value != ""}


# Searchable attributes in the list -------------------------------------------------------
def attribute_columns(machine: Machine | None) -> list[dict]:
    """The attributes a list of one machine's executions shows as columns and filters on:
    {name, type, filters: [(parameter, label)], choices} (comparisons for numbers and
    times; a boolean is chosen from a list, since a text box would take any word)."""
    if machine is None:
        return []
    columns = []
    for attribute in machine.attributes:
        parameter = f"attr.{attribute.name}"
        if attribute.type in ("number", "timestamp"):
            filters = [(f"{parameter}__gte", "from"), (f"{parameter}__lte", "to")]
        else:
            filters = [(parameter, "is")]
        choices = [("true", "yes"), ("false", "no")] if attribute.type == "boolean" else []
        columns.append({"name": attribute.name, "type": attribute.type, "filters": filters,
                        "choices": choices})
    return columns


def with_attributes(rows: list[dict], columns: list[dict]) -> list[dict]:
    """Each row with `attributes`: (name, value) in the columns' order (times as
    datetimes, for the `when` filter)."""
    for row in rows:
        stored = row["execution"].attributes or {}
        row["attributes"] = [
            (column["name"], _shown(stored.get(column["name"]), column["type"]))
            for column in columns]
    return rows


def _shown(value, kind: str):
    if value is None:
        return None
    if kind == "timestamp":
        return datetime.fromtimestamp(value, tz=UTC)
    if kind == "boolean":
        return "yes" if value else "no"
    if kind == "number" and float(value).is_integer():
        return int(value)
    return value

"""ExecutionFilter: the one set of execution filters, for the API's list and the explorer's.

A plain django-filter FilterSet, so a Django view uses it as it is:

    filters = ExecutionFilter(request.GET or None, queryset=selectors.executions())
    rows = filters.qs            # unfiltered while unbound or invalid
    filters.form                 # the bound form, for the filter bar and its errors

The API (through django-filter's DRF backend) refuses invalid values with a 400 naming the
field; the messages are DRF's, as when a serializer checked these parameters. A parameter
that is no filter (`?customer=c-17`) is an error of its own, never ignored; the paging
parameters of the lists (PAGING) are let through.

Searchable attributes (machines/contracts.py) filter as `attr.<name>` (equal) and
`attr.<name>__gt|gte|lt|lte`, typed by the attribute's declaration in the latest version of
the machine named by `machine`, which they need: `?machine=order&attr.amount__gte=100`.
"""
from __future__ import annotations

import datetime
import re

import django_filters
from django import forms
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Subquery

from executions import engine
from executions.models import Execution, ExecutionAttribute
from machines import selectors as machine_selectors

MACHINE_ID = r"^[a-z0-9][a-z0-9._-]{0,99}$"  # the language's machine id
MAX_VERSION = 2**31 - 1  # the column's range


class DateTimeField(forms.DateTimeField):
    """ISO 8601; an offset that puts the moment beyond year 9999 is invalid, not a 500."""

    default_error_messages = {
        "invalid": "Datetime has wrong format. Use one of these formats instead: "
                   "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].",
        "overflow": "Datetime value out of range.",
    }

    def to_python(self, value):
        result = super().to_python(value)
        if result is not None:
            try:
                result.astimezone(datetime.UTC)
            except OverflowError:
                raise forms.ValidationError(self.error_messages["overflow"],
                                            code="overflow") from None
        return result


class RegexFilter(django_filters.CharFilter):
    field_class = forms.RegexField


class IntegerFilter(django_filters.Filter):
    field_class = forms.IntegerField


class MomentFilter(django_filters.Filter):
    field_class = DateTimeField


TOO_LONG = {"max_length": "Ensure this field has no more than %(limit_value)s characters."}
PAGING = frozenset({"page", "page_size", "cursor"})
ATTRIBUTE_PARAMETER = re.compile(r"^attr\.(?P<name>[^_].*?)(?:__(?P<lookup>gt|gte|lt|lte))?$")
MAX_ATTRIBUTE_FILTERS = 5


class RefusedField(forms.Field):
    """A parameter that cannot filter anything: always invalid, with the reason."""

    def __init__(self, reason: str, **kwargs):
        kwargs["required"] = False
        super().__init__(**kwargs)
        self.reason = reason

    def clean(self, value):
        raise forms.ValidationError(self.reason, code="unknown")


class RefusedFilter(django_filters.Filter):
    field_class = RefusedField


class BooleanField(forms.Field):
    """true/false only (a NullBooleanField reads anything else as "any")."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if value in ("true", "false"):
            return value == "true"
        raise forms.ValidationError("Must be true or false.", code="invalid")


ATTRIBUTE_FIELDS = {
    "string": lambda: forms.CharField(max_length=200, error_messages=TOO_LONG),
    "number": lambda: forms.FloatField(error_messages={"invalid": "A number is required."}),
    "boolean": BooleanField,
    "timestamp": DateTimeField,
}


class AttributeFilter(django_filters.Filter):
    """One comparison of a searchable attribute: the executions whose attribute row (in
    the column of its type, through its index) compares so."""

    def __init__(self, machine_id: str, name: str, kind: str, lookup: str, **kwargs):
        self.field_class = ATTRIBUTE_FIELDS[kind]
        super().__init__(field_name=name, lookup_expr=lookup, **kwargs)
        self.machine_id, self.kind = machine_id, kind

    @property
    def field(self):
        if not hasattr(self, "_field"):
            self._field = self.field_class()
            self._field.required = False
        return self._field

    def filter(self, qs, value):
        if value in django_filters.constants.EMPTY_VALUES:
            return qs
        rows = ExecutionAttribute.objects.filter(**{
            "machine_id": self.machine_id, "name": self.field_name,
            f"{ExecutionAttribute.COLUMNS[self.kind]}__{self.lookup_expr}": value})
        return qs.filter(pk__in=Subquery(rows.values("execution_id")))


class ExecutionFilter(django_filters.FilterSet):
    machine = RegexFilter(
        field_name="machine_id", regex=MACHINE_ID,
        error_messages={"invalid": "This value does not match the required pattern."})
    # Several at once: ?status=failed&status=waiting
    status = django_filters.MultipleChoiceFilter(
        choices=[(s, s) for s in engine.STATUSES], widget=forms.CheckboxSelectMultiple,
        error_messages={"invalid_choice": '"%(value)s" is not a valid choice.'})
    state = django_filters.CharFilter(max_length=200, error_messages=TOO_LONG)
    version = IntegerFilter(
        field_name="machine_version__version", min_value=1, max_value=MAX_VERSION,
        error_messages={"invalid": "A valid integer is required."})
    created_after = MomentFilter(field_name="created_at", lookup_expr="gte")
    created_before = MomentFilter(field_name="created_at", lookup_expr="lt")
    parent = django_filters.UUIDFilter(
        field_name="parent_id", error_messages={"invalid": "Must be a valid UUID."})

    # A failure group (executions.operations.failure_groups) is these two with status,
    # machine and state.
    error_type = django_filters.CharFilter(method="filter_error_type", max_length=200,
                                           error_messages=TOO_LONG)
    error_message = django_filters.CharFilter(method="filter_error_message", max_length=10_000,
                                              error_messages=TOO_LONG)

    class Meta:
        model = Execution
        fields = ["machine", "status", "state", "version", "created_after", "created_before",
                  "parent", "error_type", "error_message"]

    def filter_error_type(self, queryset, name, value):
        return queryset.filter(error__type=value)

    def filter_error_message(self, queryset, name, value):
        return queryset.filter(error__message=value)

    def __init__(self, data=None, *args, page_parameters: tuple[str, ...] = (), **kwargs):
        """`page_parameters`: what else the page's own query string may hold (not filters,
        not refused), e.g. the machine page's `compare`."""
        super().__init__(data, *args, **kwargs)
        if data:
            self._parameters(data, PAGING.union(page_parameters))

    def _parameters(self, data, allowed: frozenset[str]) -> None:
        """A filter for each attribute parameter, and a refusal for each parameter that is
        neither a filter nor allowed (so that its error names it)."""
        unknown = [name for name in data if name not in self.filters and name not in allowed]
        attributes = [name for name in unknown if ATTRIBUTE_PARAMETER.match(name)]
        declared = self._declared_attributes(data.get("machine")) if attributes else {}
        known = ", ".join([*self.filters, "attr.<name>"])
        for name in unknown:
            match = ATTRIBUTE_PARAMETER.match(name)
            if match is None:
                self.filters[name] = RefusedFilter(
                    reason=f"Unknown parameter; the filters are: {known}.")
            elif declared is None:
                self.filters[name] = RefusedFilter(
                    reason="An attribute filter needs `machine` (its attributes' types).")
            elif match["name"] not in declared:
                listed = ", ".join(declared) or "none"
                self.filters[name] = RefusedFilter(
                    reason=f"Machine {data.get('machine')!r} has no attribute "
                           f"{match['name']!r}; its attributes: {listed}.")
            elif len(attributes) > MAX_ATTRIBUTE_FILTERS:
                self.filters[name] = RefusedFilter(
                    reason=f"At most {MAX_ATTRIBUTE_FILTERS} attribute filters.")
            elif declared[match["name"]] == "boolean" and match["lookup"]:
                self.filters[name] = RefusedFilter(reason="A boolean is compared for equality.")
            else:
                self.filters[name] = AttributeFilter(
                    data["machine"], match["name"], declared[match["name"]],
                    match["lookup"] or "exact")

    @staticmethod
    def _declared_attributes(machine_id) -> dict[str, str] | None:
        """name -> type in the latest version of the machine (None: no machine named)."""
        if not machine_id:
            return None
        try:
            machine = machine_selectors.get_version(machine_id).parsed()
        except ObjectDoesNotExist:
            return {}
        return {attribute.name: attribute.type for attribute in machine.attributes}

    def filter_queryset(self, queryset):
        # The valid filters apply and an invalid one filters nothing (the explorer names it
        # from the form's errors); the API answers 400 before it gets here.
        return super().filter_queryset(queryset)

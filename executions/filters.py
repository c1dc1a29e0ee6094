"""ExecutionFilter: the one set of execution filters, for the API's list and the explorer's.

A plain django-filter FilterSet, so a Django view uses it as it is:

    filters = ExecutionFilter(request.GET or None, queryset=selectors.executions())
    rows = filters.qs            # unfiltered while unbound or invalid
    filters.form                 # the bound form, for the filter bar and its errors

The API (through django-filter's DRF backend) refuses invalid values with a 400 naming the
field; the messages are DRF's, as when a serializer checked these parameters.
"""
from __future__ import annotations

import datetime

import django_filters
from django import forms

from executions import engine
from executions.models import Execution

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

    def filter_queryset(self, queryset):
        # The valid filters apply and an invalid one filters nothing (the explorer names it
        # from the form's errors); the API answers 400 before it gets here.
        return super().filter_queryset(queryset)

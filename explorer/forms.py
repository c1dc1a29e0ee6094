"""Forms of the explorer pages: an action's JSON input and cancel (the list filters are
executions.filters.ExecutionFilter, shared with the API)."""
from django import forms

from expressions.values import InvalidValue, load_json


class ActionForm(forms.Form):
    """Trigger an action; its input is a JSON object typed in a textarea (default {})."""

    action = forms.CharField(max_length=200)
    input = forms.CharField(
        required=False, initial="{}",
        widget=forms.Textarea(attrs={"rows": 4, "class": "code-input", "spellcheck": "false"}),
        help_text="A JSON object, for example {\"sku\": \"x9\", \"qty\": 2}.",
    )

    def clean_input(self):
        text = (self.cleaned_data.get("input") or "").strip() or "{}"
        try:  # the one JSON check of every surface: no NaN, surrogates, deep nesting
            value = load_json(text)
        except InvalidValue as exc:
            raise forms.ValidationError(str(exc)) from None
        if not isinstance(value, dict):
            raise forms.ValidationError(
                f"The input must be a JSON object like {{\"key\": \"value\"}}, "
                f"not {type(value).__name__ if value is not None else 'null'}."
            )
        return value


class CancelForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False)

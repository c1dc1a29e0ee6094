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


def _json_object(text: str, what: str):
    """A JSON object typed in a textarea (the one JSON check: load_json); None when blank.
    What it may hold is the service's check (executions.operations.request)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = load_json(text)
    except InvalidValue as exc:
        raise forms.ValidationError(str(exc)) from None
    if not isinstance(value, dict):
        raise forms.ValidationError(f"The {what} must be a JSON object like "
                                    "{\"key\": \"value\"}.")
    return value


class OperationForm(forms.Form):
    """An operation on one execution or many (executions.operations): previewed first,
    done with a reason."""

    operation = forms.ChoiceField(choices=[
        ("retry", "Retry"), ("cancel", "Cancel"), ("edit", "Edit the context"),
        ("move", "Move to another state"), ("action", "Send an action"),
        ("migrate", "Migrate to another version")])
    context = forms.CharField(required=False, widget=forms.Textarea(attrs={
        "rows": 6, "class": "code-input", "spellcheck": "false"}),
        help_text="A JSON object: the whole context it will have (blank: unchanged).")
    input = forms.CharField(required=False, widget=forms.Textarea(attrs={
        "rows": 3, "class": "code-input", "spellcheck": "false"}),
        help_text="A JSON object: the input of the action, or of the failed step to retry.")
    state = forms.CharField(required=False, max_length=200)
    action = forms.CharField(required=False, max_length=200)
    version = forms.IntegerField(required=False, min_value=1, max_value=2**31 - 1)
    reason = forms.CharField(required=False, max_length=10_000, widget=forms.Textarea(attrs={
        "rows": 2}), help_text="Required: history records who did it, when and why.")

    def clean_context(self):
        return _json_object(self.cleaned_data.get("context"), "context")

    def clean_input(self):
        return _json_object(self.cleaned_data.get("input"), "input")

    def parameters(self) -> dict:
        """The operation's parameters for executions.operations.request (blank: not given)."""
        data = self.cleaned_data
        return {name: None if data.get(name) in ("", None) else data[name]
                for name in ("context", "input", "state", "action", "version")}

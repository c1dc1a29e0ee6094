"""Forms of the admin editor: the source textarea and the pair of versions to compare."""
from django import forms


class SourceForm(forms.Form):
    """The machine source as the editor typed it (never stripped: whitespace is YAML syntax)."""

    source = forms.CharField(
        strip=False,
        widget=forms.Textarea(
            attrs={
                "id": "machine-source",
                "class": "dm-source",
                "rows": 32,
                "spellcheck": "false",
                "autocomplete": "off",
                "autocapitalize": "off",
                "wrap": "off",
                "aria-describedby": "machine-source-help",
            }
        ),
        error_messages={"required": "The source is empty: write the machine's YAML or JSON."},
    )


class DiffForm(forms.Form):
    """Two version numbers from the query string (?a=1&b=2)."""

    a = forms.IntegerField(min_value=1, label="From version")
    b = forms.IntegerField(min_value=1, label="To version")

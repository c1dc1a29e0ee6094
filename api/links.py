"""Links the API answers with: explorer pages when their routes exist, else API URLs."""
from django.urls import NoReverseMatch, reverse


def page_url(obj) -> str | None:
    """The explorer page of a machine, version or execution (None until explorer routes exist)."""
    try:
        return obj.get_absolute_url()
    except NoReverseMatch:
        return None


def machine_link(machine_id: str) -> str:
    """Where an invoked machine's node on a diagram links to: its page, else its API."""
    try:
        return reverse("explorer:machine", args=[machine_id])
    except NoReverseMatch:
        return reverse("api:machine", args=[machine_id])

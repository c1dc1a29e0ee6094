"""The history page rendered once (api.renderers.PrintableJSONRenderer): text no JSON
answer can encode is escaped, a browser gets the same JSON (not a 500), the permission
check still runs, and other rows are sent as they are."""
from datetime import UTC, datetime

import pytest

from executions.models import Execution, HistoryEntry
from tests.helpers import CART


def _with_odd_row(api, save_machine, odd_text):
    save_machine(CART)
    operator = api("operator", "olga")
    execution_id = operator.post("/api/machines/cart/executions/", {},
                                 format="json").json()["id"]
    execution = Execution.objects.get(pk=execution_id)
    HistoryEntry.objects.create(
        execution=execution, machine_version=execution.machine_version, seq=2,
        kind="work_succeeded", at=datetime(2026, 3, 1, 12, tzinfo=UTC),
        detail={"k": odd_text}, output="")
    return execution_id


def test_a_lone_surrogate_is_escaped_and_a_browser_gets_the_json(api, save_machine):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL refuses to store a lone surrogate")
    execution_id = _with_odd_row(api, save_machine, "\ud800")
    client = api("viewer")
    url = f"/api/executions/{execution_id}/history/"
    answer = client.get(url)
    assert answer.status_code == 200
    assert answer.json()["results"][-1]["detail"] == {"k": "\\ud800"}
    browser = client.get(url, HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert browser.status_code == 200 and browser["Content-Type"] == "application/json"
    assert browser.json() == answer.json()


def test_plain_text_is_sent_as_utf8_and_empty_text_as_null(api, save_machine):
    execution_id = _with_odd_row(api, save_machine, "é ✓")
    answer = api("viewer").get(f"/api/executions/{execution_id}/history/")
    assert answer.status_code == 200
    assert "é ✓".encode() in answer.content
    last = answer.json()["results"][-1]
    assert last["detail"] == {"k": "é ✓"} and last["output"] is None


def test_without_the_viewer_role_the_page_is_refused(api, save_machine, client):
    execution_id = _with_odd_row(api, save_machine, "x")
    assert client.get(f"/api/executions/{execution_id}/history/").status_code == 401
    assert api("none", "nemo").get(
        f"/api/executions/{execution_id}/history/").status_code == 403

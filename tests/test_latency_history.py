"""The history API's rows built as plain dicts (executions.api.serializers.history_rows)
and its keyset pages: the same answer as DRF's serializer, every row once, fresh."""
from datetime import UTC, datetime

from executions.models import Execution, HistoryEntry
from tests.helpers import CART


def _rows_of(client, execution_id, page_size):
    seen, url = [], f"/api/executions/{execution_id}/history/?page_size={page_size}"
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        seen += response.json()["results"]
        url = response.json()["next"]
    return seen


def _started(client):
    return client.post("/api/machines/cart/executions/", {}, format="json").json()["id"]


def _act(client, execution_id, sku):
    response = client.post(f"/api/executions/{execution_id}/actions/",
                           {"action": "add", "input": {"sku": sku}, "wait": True},
                           format="json")
    assert response.status_code == 200, response.content


def test_plain_rows_equal_drf_s_for_every_kind_of_value(api, save_machine):
    """Empty texts become null, `output` of "" too (as DRF's to_representation does),
    times in DRF's ISO form, floats stay floats, and text no JSON answer can encode (a lone
    surrogate stored before values were checked, on SQLite) is escaped, not a 500."""
    from django.db import connection

    from executions.api.serializers import HistoryEntrySerializer

    odd_text = "\ud800" if connection.vendor == "sqlite" else "é"  # PostgreSQL refuses it
    save_machine(CART)
    client = api("operator", "olga")
    execution_id = _started(client)
    _act(client, execution_id, "a")
    execution = Execution.objects.get(pk=execution_id)
    last = execution.history.order_by("-seq").first().seq
    HistoryEntry.objects.create(
        execution=execution, machine_version=execution.machine_version, seq=last + 1,
        kind="work_succeeded", at=datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        actor="", transition="", output="", detail={"k": odd_text}, duration_ms=3,
        guards=[{"when": "x", "value": True}], error={"message": "é"})
    answered = _rows_of(client, execution_id, 100)
    expected = [HistoryEntrySerializer(entry).data
                for entry in execution.history.order_by("seq")]
    assert answered == expected
    odd = answered[-1]
    assert odd["actor"] is None and odd["output"] is None and odd["duration_ms"] == 3.0
    escaped = odd_text.encode("utf-8", "backslashreplace").decode()
    assert odd["transition"] is None and odd["detail"] == {"k": escaped}
    assert odd["at"] == "2026-03-01T12:00:00.123456Z"


def test_keyset_pages_reach_every_row_once_and_see_rows_added_between_pages(api,
                                                                            save_machine):
    save_machine(CART)
    client = api("operator", "olga")
    execution_id = _started(client)
    for sku in "abcd":
        _act(client, execution_id, sku)
    total = HistoryEntry.objects.filter(execution_id=execution_id).count()
    for size in (1, 2, 3, total, total + 5):
        assert [r["seq"] for r in _rows_of(client, execution_id, size)] == list(
            range(1, total + 1))
    first = client.get(f"/api/executions/{execution_id}/history/?page_size=3").json()
    _act(client, execution_id, "late")  # committed after the first page was read
    rest, url = [], first["next"]
    while url:
        page = client.get(url).json()
        rest += page["results"]
        url = page["next"]
    seqs = [r["seq"] for r in first["results"] + rest]
    grown = HistoryEntry.objects.filter(execution_id=execution_id).count()
    assert grown > total and seqs == list(range(1, grown + 1))
    assert rest[-1]["context"] == {"items": ["a", "b", "c", "d", "late"]}


def test_a_page_is_one_keyset_query_on_the_seq_index(api, save_machine,
                                                     django_assert_max_num_queries):
    """The page's rows are read with `seq > cursor ORDER BY seq LIMIT n+1`: no OFFSET, no
    COUNT of the history, however far the cursor is."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    save_machine(CART)
    client = api("viewer")
    operator = api("operator", "olga")
    execution_id = _started(operator)
    for sku in "abc":
        _act(operator, execution_id, sku)
    second = client.get(client.get(
        f"/api/executions/{execution_id}/history/?page_size=2").json()["next"])
    with CaptureQueriesContext(connection) as captured:
        response = client.get(second.json()["next"])
    assert response.status_code == 200
    history_reads = [q["sql"] for q in captured
                     if "executions_historyentry" in q["sql"].lower()]
    assert len(history_reads) == 1, history_reads
    sql = history_reads[0].upper()
    assert "OFFSET" not in sql and "COUNT(" not in sql and '"SEQ" >' in sql, sql

"""The operators' tools over HTTP: roles, dry runs, errors in the one shape, bulk runs and
the migration impact."""
import pytest

from executions import engine, operations, services
from executions.models import BulkOperation, Execution, HistoryEntry
from tests.helpers import assert_error

REFUND = """
id: refund
execution_mode: sync
start_at: refund-requested
context: "{'amount': input['amount'], 'small': input['amount'] <= 100}"
states:
  refund-requested:
    actions:
      - {id: approve, on: approve, state: approved}
      - {id: hold, on: hold, state: held}
  held:
    actions:
      - {id: release, wait: {seconds: 3600}, state: approved}
  approved: {return: "ctx['amount']"}
"""
RENAMED = REFUND.replace("refund-requested", "requested").replace(
    "release, wait: {seconds: 3600}", "release, wait: {seconds: 60}").replace(
    "id: release", "id: let-go")


@pytest.fixture
def refund(save_machine):
    return save_machine(REFUND)


def failed():
    return services.start("refund", input={"amount": "5"}, actor="user:x").execution


def operate(client, execution, **body):
    return client.post(f"/api/executions/{execution.pk}/operations/", body, format="json")


def test_dry_run_then_retry_with_edited_input(api, refund):
    execution = failed()
    operator = api("operator", "olga")
    preview = operate(operator, execution, operation="retry", dry_run=True)
    assert preview.status_code == 200, preview.content
    assert preview.json()["verdict"] == "would_fail"
    fixed = operate(operator, execution, operation="retry", input={"amount": 5},
                    reason="amount was text")
    assert fixed.status_code == 200, fixed.content
    assert fixed.json()["status"] == "waiting"
    row = HistoryEntry.objects.get(execution=execution, kind=operations.INPUT_EDITED)
    assert row.actor == "token:olga" and row.detail["reason"] == "amount was text"


def test_roles_reasons_and_bad_values(api, refund):
    execution = failed()
    body = assert_error(operate(api("operator"), execution, operation="edit", context={},
                                reason="x"), 403)
    assert "editor" in body["detail"]
    assert_error(operate(api("viewer"), execution, operation="retry", reason="x"), 403)
    body = assert_error(operate(api("operator"), execution, operation="retry"), 400,
                        "invalid_request")
    assert body["errors"][0]["path"] == "reason"
    body = assert_error(operate(api("editor"), execution, operation="edit",
                                context={"a": [1, {"b": "\x00"}]}, reason="x"), 400)
    assert body["errors"][0]["path"] == "context.a[1].b"
    body = assert_error(operate(api("editor"), execution, operation="edit", context={},
                                reason="x", colour="red"), 400)
    assert "colour" in str(body)
    assert_error(operate(api("editor"), execution, operation="move", state="nowhere",
                         reason="x"), 409, "not_available")
    assert Execution.objects.get(pk=execution.pk).status == engine.FAILED


def test_failure_groups_and_a_bulk_retry_by_group(api, refund):
    ids = [failed().pk for _ in range(3)]
    services.start("refund", input={"amount": 1}, actor="user:x")
    operator = api("operator")
    groups = operator.get("/api/failures/").json()["groups"]
    assert len(groups) == 1 and groups[0]["count"] == 3
    listed = operator.get("/api/executions/", groups[0]["filters"]).json()
    assert {row["id"] for row in listed["results"]} == {str(pk) for pk in ids}
    created = operator.post("/api/bulk-operations/", {
        "operation": "retry", "input": {"amount": 5},
        "selection": {"filters": groups[0]["filters"]}}, format="json")
    assert created.status_code == 201, created.content
    bulk = created.json()
    assert bulk["progress"]["previewed"] == {"applies": 3} and bulk["status"] == "previewed"
    assert_error(operator.post(f"/api/bulk-operations/{bulk['id']}/run/", {}, format="json"),
                 400)
    ran = operator.post(f"/api/bulk-operations/{bulk['id']}/run/", {"reason": "fixed"},
                        format="json")
    assert ran.status_code == 202 and ran.json()["status"] == "queued"
    operations.bulk_job(bulk["id"])
    done = operator.get(f"/api/bulk-operations/{bulk['id']}/").json()
    assert done["status"] == "done" and done["progress"]["outcomes"] == {"applies": 3}
    assert_error(operator.get("/api/bulk-operations/00000000-0000-0000-0000-000000000000/"),
                 404)


def test_migration_impact_then_migrate(api, save_machine, refund):
    waiting = services.start("refund", input={"amount": 1}, actor="user:x").execution
    sleeping = services.start("refund", input={"amount": 2}, actor="user:x").execution
    services.trigger(sleeping.pk, "hold", actor="user:x")
    save_machine(RENAMED)
    viewer = api("viewer")
    impact = viewer.get("/api/machines/refund/migration/", {"from": 1, "to": 2}).json()
    assert impact["needs_choice"] == ["refund-requested"]
    assert impact["unmapped"] == 1 and impact["moving"] == 1
    held = next(row for row in impact["states"] if row["state"] == "held")
    assert held["target"] == "held" and held["outstanding_changed"] == 1
    mapped = viewer.get("/api/machines/refund/migration/", {
        "from": 1, "to": 2, "map.refund-requested": "requested"}).json()
    assert mapped["unmapped"] == 0 and mapped["moving"] == 2
    body = assert_error(viewer.get("/api/machines/refund/migration/", {
        "from": 1, "to": 2, "map.refund-requested": "nowhere"}), 400)
    assert body["errors"][0]["path"] == "map.refund-requested"
    assert_error(viewer.get("/api/machines/refund/migration/", {"from": "x", "to": 2}), 400)
    editor = api("editor")
    created = editor.post("/api/bulk-operations/", {
        **mapped["operation"], "selection": mapped["selection"]}, format="json").json()
    assert created["progress"]["previewed"] == {"applies": 2}
    editor.post(f"/api/bulk-operations/{created['id']}/run/", {"reason": "v2 fixes it"},
                format="json")
    operations.bulk_job(created["id"])
    waiting.refresh_from_db()
    sleeping.refresh_from_db()
    assert (waiting.machine_version.version, waiting.state) == (2, "requested")
    assert (sleeping.machine_version.version, sleeping.state, sleeping.status) == (
        2, "held", engine.SLEEPING)
    assert sleeping.engine_state["timer"]["transition"] == "let-go"
    migrated = HistoryEntry.objects.get(execution=waiting, kind=operations.EXECUTION_MIGRATED)
    assert migrated.machine_version.version == 2 and migrated.detail["from_version"] == 1
    finished = services.trigger(waiting.pk, "approve", actor="user:x").execution
    assert finished.status == engine.FINISHED
    assert BulkOperation.objects.get(pk=created["id"]).actor == "token:editor-user"

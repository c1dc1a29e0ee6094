"""What the execution page says of the operators' rows: who, the reason, and what changed
(edits, moves with what they dropped, migrations), as on the page itself."""
import re

import pytest

from executions import operations, services

MACHINE = """
id: refund
execution_mode: sync
start_at: requested
context: "{'amount': input['amount'], 'small': input['amount'] <= 100}"
states:
  requested:
    label: Refund requested
    actions:
      - {id: hold, on: hold, state: held}
  held:
    actions:
      - {id: release, wait: {seconds: 3600}, state: approved}
  approved: {label: Approved, return: "ctx['amount']"}
"""


@pytest.fixture
def page_of(save_machine, make_user, client):
    save_machine(MACHINE)
    client.force_login(make_user("victor", "viewer"))

    def page(execution):
        text = client.get(execution.get_absolute_url()).content.decode()
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))
    return page


def test_the_operators_rows_say_who_why_and_what(page_of, save_machine):
    failed = services.start("refund", input={"amount": "5"}, actor="user:x").execution
    operations.perform(failed.pk, operations.request("retry", input={"amount": 5}),
                       actor="user:olga", reason="amount was text")
    operations.perform(failed.pk, operations.request("edit", context={"amount": 6}),
                       actor="user:edith", reason="customer asked for 6")
    services.trigger(failed.pk, "hold", actor="user:x")
    operations.perform(failed.pk, operations.request("move", state="approved"),
                       actor="user:edith", reason="approved by phone")
    text = page_of(failed)
    assert "olga edited the start input reason: amount was text · input: amount: 5" in text
    assert "Retried by olga reason: amount was text · it had failed:" in text
    assert "edith edited the context reason: customer asked for 6 · changed: amount, small" \
        in text
    assert ("edith moved it from held to Approved reason: approved by phone · dropped the "
            "wait timer of release") in text


def test_a_migration_is_said_with_both_versions(page_of, save_machine):
    waiting = services.start("refund", input={"amount": 1}, actor="user:x").execution
    save_machine(MACHINE.replace("Refund requested", "Asked for a refund"))
    operations.perform(waiting.pk, operations.request("migrate", version=2),
                       actor="user:edith", reason="new labels")
    text = page_of(waiting)
    assert ("edith migrated it from version 1 to version 2, in Asked for a refund "
            "reason: new labels") in text

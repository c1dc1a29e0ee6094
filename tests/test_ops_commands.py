"""The operators' commands: operate (one execution) and bulk (preview, run, show)."""
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from executions import engine, services
from executions.models import Execution, HistoryEntry

REFUND = """
id: refund
execution_mode: sync
start_at: requested
context: "{'amount': input['amount'], 'small': input['amount'] <= 100}"
states:
  requested:
    actions:
      - {id: approve, on: approve, state: approved}
  approved: {return: "ctx['amount']"}
"""


@pytest.fixture
def refund(save_machine):
    return save_machine(REFUND)


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_operate_previews_then_needs_a_reason(refund):
    failed = services.start("refund", input={"amount": "5"}).execution
    said = run("operate", str(failed.pk)[:8], "retry", "--dry-run")
    assert said.startswith("would_fail: it would fail")
    with pytest.raises(CommandError, match="a reason is required"):
        run("operate", str(failed.pk), "retry", "--input", '{"amount": 5}')
    with pytest.raises(CommandError, match="not valid JSON"):
        run("operate", str(failed.pk), "retry", "--input", "{amount: 5}", "--reason", "x")
    said = run("operate", str(failed.pk), "retry", "--input", '{"amount": 5}', "--reason", "typo")
    assert "status   waiting" in said
    assert HistoryEntry.objects.filter(execution=failed, actor="cli",
                                       kind=engine.EXECUTION_RETRIED).exists()


def test_bulk_preview_run_show(refund):
    ids = [services.start("refund", input={"amount": "5"}).execution.pk for _ in range(2)]
    said = run("bulk", "preview", "retry", "--input", '{"amount": 5}', "--filter",
               "status=failed", "--filter", "machine=refund")
    bulk_id = re.search(r"bulk operation (\S+):", said).group(1)
    assert '{"applies": 2}' in said
    with pytest.raises(CommandError, match="status"):
        run("bulk", "preview", "cancel", "--filter", "status=exploded")
    said = run("bulk", "run", bulk_id, "--reason", "fixed", "--here")
    assert "done" in said and '{"applies": 2}' in said.splitlines()[-1]
    assert Execution.objects.filter(pk__in=ids, status="waiting").count() == 2
    with pytest.raises(CommandError, match="no bulk operation"):
        run("bulk", "show", "nope")

"""The execution commands address an execution by its machine and business key (issue 13),
and refuse input that breaks the machine's schema with the paths."""
import pytest
from django.core.management import CommandError, call_command

from executions import services
from executions.models import Execution


@pytest.fixture
def refund(save_machine):
    save_machine("refund.yaml")
    return services.start("refund", input={"refund_id": "R-5", "customer": "c-1",
                                           "amount": 10}, wait=True).execution


def run(*args):
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_show_trigger_and_cancel_by_machine_and_key(refund):
    assert f"execution {refund.pk}" in run("show_execution", "R-5", "--machine", "refund")
    assert "approved" in run("trigger", "R-5", "approve", "--machine", "refund")
    assert "canceled" in run("cancel_execution", "R-5", "--machine", "refund",
                             "--reason", "duplicate")
    assert Execution.objects.get(pk=refund.pk).status == "canceled"
    with pytest.raises(CommandError, match="no execution of 'refund' with the key 'R-404'"):
        run("show_execution", "R-404", "--machine", "refund")
    with pytest.raises(CommandError, match="already canceled"):
        run("cancel_execution", refund.short_id, "--reason", "again")


def test_a_cancel_from_the_command_line_says_why(refund):
    with pytest.raises(CommandError, match="--reason"):
        run("cancel_execution", refund.short_id)
    with pytest.raises(CommandError, match="a reason is required"):
        run("cancel_execution", refund.short_id, "--reason", " ")
    assert Execution.objects.get(pk=refund.pk).status != "canceled"


def test_commands_refuse_input_that_breaks_the_schema(refund):
    with pytest.raises(CommandError, match=r"'reason' is a required property \(at input\)"):
        run("trigger", refund.short_id, "reject", "--input", "{}")
    with pytest.raises(CommandError, match="input.amount"):
        run("start_execution", "refund", "--input",
            '{"refund_id": "R-6", "customer": "c", "amount": "ten"}')

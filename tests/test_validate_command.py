"""`manage.py validate_machine`: what authors and CI see, and its exit status."""
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command, execute_from_command_line
from django.core.management.base import CommandError

from machines.models import Machine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BAD = """\
id: bad
start_at: a
states:
  a:
    actions:
      - {id: go, on: go, state: dne, when: "ctx['x'] +"}
  done: {return: null}
  orphan: {return: 1}
"""
WARNED = "id: warned\nstart_at: a\nstates:\n  a: {return: 1}\n  orphan: {return: 2}\n"


def run(*files) -> tuple[str, CommandError | None]:
    out = StringIO()
    try:
        call_command("validate_machine", *map(str, files), stdout=out, no_color=True)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


@pytest.fixture
def write(tmp_path):
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.mark.django_db
def test_valid_files_are_ok_and_children_among_them_exist():
    files = sorted(EXAMPLES.glob("*.yaml"))
    output, failure = run(*files)
    assert failure is None
    assert output.splitlines() == [f"{path}: ok" for path in files]


@pytest.mark.django_db
def test_every_error_and_warning_is_printed_and_the_command_fails(write):
    bad = write("bad.yaml", BAD)
    output, failure = run(bad)
    assert str(failure) == "1 of 1 files have errors"
    assert output.splitlines() == [
        f"{bad}: 2 errors, 2 warnings",
        "  error: states.a.actions[0].when:1:11: invalid syntax",
        "  error: states.a.actions[0].state: unknown state 'dne' (did you mean 'done'?)",
        "  warning: states.done: state 'done' cannot be reached from 'a' "
        "(add a transition that leads to it, or remove it)",
        "  warning: states.orphan: state 'orphan' cannot be reached from 'a' "
        "(add a transition that leads to it, or remove it)",
    ]


@pytest.mark.django_db
def test_warnings_alone_do_not_fail(write):
    warned = write("warned.yaml", WARNED)
    output, failure = run(warned)
    assert failure is None
    assert output.splitlines()[0] == f"{warned}: ok (1 warning)"


@pytest.mark.django_db
def test_unreadable_and_unparsable_files_are_errors(write, tmp_path):
    broken = write("broken.json", '{"id": "x",\n "states": [}')
    output, failure = run(tmp_path / "missing.yaml", broken, EXAMPLES / "order.yaml")
    assert str(failure) == "2 of 3 files have errors"
    lines = output.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'missing.yaml'}: error: cannot read it: ")
    assert lines[1:3] == [
        f"{broken}: 1 error",
        "  error: (document):2:13: invalid JSON: Expecting value",
    ]
    # shipment is neither stored nor given
    assert lines[3:] == [
        f"{EXAMPLES / 'order.yaml'}: ok (1 warning)",
        "  warning: states.released.actions[0].invoke.machine: machine 'shipment' does not "
        "exist yet (save it before an execution reaches this transition)",
    ]


@pytest.mark.django_db
def test_stored_machines_count_as_existing():
    Machine.objects.create(id="shipment")
    output, failure = run(EXAMPLES / "order.yaml")
    assert (output, failure) == (f"{EXAMPLES / 'order.yaml'}: ok\n", None)


@pytest.mark.django_db
def test_exit_status_is_1_with_errors_and_0_without(write, capsys):
    with pytest.raises(SystemExit) as exited:
        execute_from_command_line(["manage.py", "validate_machine", str(write("b.yaml", BAD))])
    assert exited.value.code == 1
    assert "1 of 1 files have errors" in capsys.readouterr().err
    execute_from_command_line(["manage.py", "validate_machine", str(write("w.yaml", WARNED))])
    assert "ok (1 warning)" in capsys.readouterr().out

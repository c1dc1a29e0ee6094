"""manage.py load_machines and create_api_token: output, idempotence and exit codes."""
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from machines.models import MachineVersion

LAMP = """\
id: lamp
start_at: "off"
states:
  "off":
    actions:
      - {id: switch-on, on: toggle, state: "on"}
  "on":
    actions:
      - {id: switch-off, on: toggle, state: "off"}
"""
DOOR_JSON = '{"id": "door", "start_at": "shut", "states": {"shut": {"return": null}}}'


def load(*paths):
    out, err = StringIO(), StringIO()
    call_command("load_machines", *map(str, paths), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "nested").mkdir()
    (tmp_path / "lamp.yaml").write_text(LAMP)
    (tmp_path / "nested" / "door.json").write_text(DOOR_JSON)
    (tmp_path / "nested" / "notes.txt").write_text("not a machine")
    return tmp_path


@pytest.mark.django_db
def test_loading_a_folder_twice_creates_each_version_once(folder):
    out, err = load(folder)
    assert "created lamp v1" in out and "created door v1" in out and err == ""
    out, _ = load(folder)
    assert "unchanged lamp v1" in out and "unchanged door v1" in out
    assert MachineVersion.objects.count() == 2


@pytest.mark.django_db
def test_warnings_are_reported_once_every_file_is_loaded(tmp_path):
    parent = LAMP.replace("id: lamp", "id: a-parent").replace(
        "- {id: switch-off, on: toggle, state: \"off\"}",
        "- {id: run, on: toggle, invoke: {machine: z-child, success: {state: \"off\"}}}",
    )
    (tmp_path / "a-parent.yaml").write_text(parent)
    (tmp_path / "z-child.yaml").write_text(LAMP.replace("id: lamp", "id: z-child"))
    out, _ = load(tmp_path)
    assert "created a-parent v1" in out and "does not exist" not in out
    (tmp_path / "z-child.yaml").unlink()
    (tmp_path / "a-parent.yaml").write_text(parent.replace("z-child", "nowhere"))
    out, _ = load(tmp_path)
    assert f"warning: {tmp_path / 'a-parent.yaml'}: states.on.actions[0].invoke.machine" in out


@pytest.mark.django_db
def test_a_changed_file_becomes_the_next_version(folder):
    load(folder / "lamp.yaml")
    (folder / "lamp.yaml").write_text(LAMP.replace("id: lamp\n", "id: lamp\ntitle: Lamp\n"))
    out, _ = load(folder / "lamp.yaml")
    assert "created lamp v2" in out


@pytest.mark.django_db
def test_a_broken_file_is_reported_and_fails_the_command_but_not_the_others(folder):
    broken = folder / "broken.yaml"
    broken.write_text(LAMP.replace("id: lamp", "id: broken").replace('state: "on"', "state: onn"))
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="1 of 3 file"):
        call_command("load_machines", str(folder), stdout=out, stderr=err)
    assert f"{broken}: not loaded" in err.getvalue()
    assert "states.off.actions[0].state" in err.getvalue()
    assert "created lamp v1" in out.getvalue() and "created door v1" in out.getvalue()
    assert not MachineVersion.objects.filter(machine_id="broken").exists()


@pytest.mark.django_db
def test_a_version_conflict_is_reported(tmp_path):
    pinned = DOOR_JSON.replace('"id": "door"', '"id": "door", "version": 1')
    (tmp_path / "a.json").write_text(pinned)
    (tmp_path / "b.yaml").write_text("id: door\nversion: 1\nstart_at: x\nstates: {x: {return: 1}}")
    with pytest.raises(CommandError):
        load(tmp_path)
    assert MachineVersion.objects.get().definition["start_at"] == "shut"


def test_a_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="No such file or folder: .*missing"):
        load(tmp_path / "missing")


def test_failures_exit_with_status_1_on_the_command_line(tmp_path):
    missing = tmp_path / "missing.yaml"
    result = subprocess.run(
        [sys.executable, "manage.py", "load_machines", str(missing)],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert f"No such file or folder: {missing}" in result.stderr


@pytest.mark.django_db
@pytest.mark.skipif(not (settings.BASE_DIR / "examples").is_dir(), reason="no examples/ yet")
def test_the_examples_load_and_reload_without_new_versions():
    examples = Path(settings.BASE_DIR) / "examples"
    out, err = load(examples)
    count = MachineVersion.objects.count()
    assert count > 0 and err == "", err
    out, _ = load(examples)
    assert "created" not in out
    assert MachineVersion.objects.count() == count


@pytest.mark.django_db
def test_create_api_token_prints_the_same_token_until_reset():
    get_user_model().objects.create_user("robot", password="pw-12345678")
    first, second = StringIO(), StringIO()
    call_command("create_api_token", "robot", stdout=first)
    call_command("create_api_token", "robot", stdout=second)
    key = first.getvalue().strip()
    assert len(key) == 40 and second.getvalue().strip() == key
    reset = StringIO()
    call_command("create_api_token", "robot", "--reset", stdout=reset)
    assert reset.getvalue().strip() not in ("", key)


@pytest.mark.django_db
def test_create_api_token_names_an_unknown_user():
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("create_api_token", "ghost")

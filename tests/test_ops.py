"""Processes survive a busy database and their own death (issue 11, item 5).

- run_timers' retry: an error of one round is logged once, retried with a growing pause,
  and the loop goes on (unit test of the wrapper, and a real run_timers against a SQLite
  database whose write lock another connection holds).
- bin/serve restarts a child that died, saying which and how.
"""
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from django.db import OperationalError, connection

from executions.management.commands.run_timers import retrying
from tests.helpers import ROOT, subprocess_database_url, wait_until

NAP = """
id: nap
execution_mode: sync
start_at: napping
states:
  napping:
    actions:
      - {id: wake, wait: {seconds: 3600}, state: awake}
  awake: {return: "1"}
"""


def flaky(errors, result="done"):
    """A function that raises each of `errors` in turn, then returns `result`."""
    calls = []

    def function():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    function.calls = calls
    return function


def test_retry_backs_off_logs_once_and_returns_the_result(caplog):
    locked = OperationalError("database is locked")
    function = flaky([locked, locked, locked, OperationalError("database is locked")])
    pauses = []
    with caplog.at_level(logging.WARNING, logger="executions.timers"):
        result = retrying(function, "firing due timers", sleep=pauses.append, first=0.05,
                          maximum=0.3)
    assert result == "done" and len(function.calls) == 5
    # 0.05, 0.1, 0.2, then capped at 0.3 (slept in slices of at most 0.1 s)
    assert sum(pauses) == pytest.approx(0.05 + 0.1 + 0.2 + 0.3)
    assert max(pauses) <= 0.1
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert "firing due timers failed" in messages[0] and "database is locked" in messages[0]
    assert "busy" in messages[0]
    assert "succeeded again after 4 failed attempt(s)" in messages[1]


def test_retry_logs_a_different_error_again_and_survives_any_exception(caplog):
    function = flaky([OperationalError("database is locked"), RuntimeError("redis is down"),
                      RuntimeError("redis is down")], result=3)
    with caplog.at_level(logging.WARNING, logger="executions.timers"):
        assert retrying(function, "sweeping", sleep=lambda _: None) == 3
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3, messages
    assert "redis is down" in messages[1] and caplog.records[1].exc_info  # with traceback


def test_retry_gives_up_waiting_when_asked_to_stop():
    function = flaky([OperationalError("database is locked")] * 100)
    assert retrying(function, "x", sleep=lambda _: None, stopping=lambda: True) is None
    assert len(function.calls) == 1


def test_the_loop_keeps_firing_timers_while_the_sweep_keeps_failing(monkeypatch, caplog):
    """run_timers in this process with a sweep that always fails: the timers are still
    fired every poll, the sweep is retried with growing pauses and logged once."""
    from django.core.management import call_command

    from executions.runtime import schedules, timers

    fired, swept = [], []

    def fire_due_timers():
        fired.append(time.monotonic())
        if len(fired) == 30:
            os.kill(os.getpid(), signal.SIGTERM)  # the command's handler: stop
        return 0

    def sweep():
        swept.append(time.monotonic())
        raise OperationalError("database is locked")

    monkeypatch.setattr(timers, "fire_due_timers", fire_due_timers)
    monkeypatch.setattr(timers, "sweep", sweep)
    monkeypatch.setattr(timers, "next_timer_due", lambda: None)
    monkeypatch.setattr(schedules, "fire_due_schedules", lambda: 0)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with caplog.at_level(logging.WARNING, logger="executions.timers"):
            call_command("run_timers", stdout=open(os.devnull, "w"))
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert len(fired) == 30
    assert 3 <= len(swept) < 30  # retried, with pauses that grow
    gaps = [later - earlier for earlier, later in zip(swept, swept[1:], strict=False)]
    assert gaps[-1] > gaps[0]
    assert [record.getMessage() for record in caplog.records if "sweeping" in
            record.getMessage()] == [caplog.records[0].getMessage()]


def read_log(path):
    return path.read_bytes().decode(errors="replace") if path.exists() else ""


@pytest.mark.skipif(os.environ.get("DATABASE_URL", "sqlite").startswith("postgres"),
                    reason="SQLite's write lock")
def test_run_timers_outlives_database_is_locked_and_fires_the_timer(transactional_db,
                                                                    save_machine, tmp_path):
    from executions import services
    from executions.models import InboxItem, Timer

    save_machine(NAP)
    execution_id = services.start("nap").execution.id
    Timer.objects.filter(execution_id=execution_id).update(due_at=time.time() + 1.5)
    # Another connection holds the write lock: every claim of run_timers waits its busy
    # timeout (0.3 s) and gets "database is locked".
    holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, timeout=5)
    holder.execute("BEGIN IMMEDIATE")
    log = tmp_path / "timers.log"
    env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "PYTHONUNBUFFERED": "1",
           "DM_SQLITE_BUSY_TIMEOUT": "0.3"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "manage.py", "run_timers"], cwd=ROOT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_until(lambda: "database is locked" in read_log(log), 60,
                   lambda: f"run_timers never met the lock:\n{read_log(log)}")
        time.sleep(1.5)  # several more failed attempts
        assert process.poll() is None, read_log(log)
        assert Timer.objects.filter(execution_id=execution_id).exists()
        holder.execute("ROLLBACK")
        wait_until(lambda: not Timer.objects.filter(execution_id=execution_id).exists(), 30,
                   lambda: f"the due timer never fired:\n{read_log(log)}")
        assert InboxItem.objects.filter(execution_id=execution_id, kind="timer").exists()
        wait_until(lambda: "succeeded again" in read_log(log), 10, lambda: read_log(log))
        assert read_log(log).count("database is locked") == 1, read_log(log)
        assert process.poll() is None, read_log(log)
    finally:
        holder.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, read_log(log)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children_of(pid) -> dict[int, str]:
    """pid -> command line of each live child process of `pid` (Linux /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                found[int(entry)] = cmdline.read().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return found


def test_bin_serve_restarts_a_child_that_dies_and_stops_them_all(tmp_path):
    """bin/serve from scratch on a temporary SQLite database (the venv running the tests,
    via DM_VENV): it answers, brings a killed run_timers back, and SIGTERM stops it all."""
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if key not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "DATABASE_URL")}
    env.update({
        "DM_VENV": sys.prefix, "PORT": str(port), "WEB_WORKERS": "1", "DM_Q_WORKERS": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "DM_Q_CLUSTER_NAME": f"serve-test-{port}", "DM_ADMIN_PASSWORD": "serve-test-pass",
        "PYTHONUNBUFFERED": "1",
    })
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen([str(ROOT / "bin" / "serve")], cwd=ROOT, env=env,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    started = set()
    try:
        def answering():
            assert serve.poll() is None, f"bin/serve exited:\n{read_log(log)}"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/login/", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answering, 50, lambda: f"bin/serve did not answer:\n{read_log(log)}",
                   interval=0.2)
        text = read_log(log)
        assert "Created the admin user 'admin' with the password in DM_ADMIN_PASSWORD" in text
        assert "Warning" not in text and "Traceback" not in text, text

        def timer_loop():
            return next((pid for pid, command in children_of(serve.pid).items()
                         if "run_timers" in command), None)

        old = wait_until(timer_loop, 10, "no run_timers child")
        started.update(children_of(serve.pid))
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: timer_loop() not in (None, old), 15,
                   lambda: f"run_timers was not restarted:\n{read_log(log)}")
        started.update(children_of(serve.pid))
        text = wait_until(lambda: "run_timers restarted" in read_log(log) and read_log(log), 10,
                          lambda: read_log(log))
        assert f"run_timers (pid {old}) was killed by SIGKILL; restarting it in 1 s" in text
        assert answering()  # the others kept running
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            for pid in started:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise
    assert serve.returncode == 0, read_log(log)

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    def all_gone():
        return not [pid for pid in started if alive(pid)]

    wait_until(all_gone, 10, "bin/serve left processes running")

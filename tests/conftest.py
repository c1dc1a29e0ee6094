"""Shared fixtures. Tests run against the database named by DATABASE_URL (SQLite by default).

`cluster` starts the real worker processes (django-q2's qcluster and our timer loop) as
subprocesses against the test database, the way bin/serve runs them.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("admin", "admin@example.com", "admin-pass-123")


@pytest.fixture
def make_user(db):
    """make_user("alice", "operator") -> a user in that role's group ("none" for no role)."""
    from django.contrib.auth.models import Group

    def make(username, role="viewer", password="pass-123-pass"):
        user = get_user_model().objects.create_user(username, f"{username}@example.com", password)
        if role != "none":
            user.groups.add(Group.objects.get(name=role))
        return user

    return make


@pytest.fixture
def save_machine(db):
    """save_machine(yaml_text or dict) -> MachineVersion, stored through the real service."""
    from machines.services import save_version

    def save(source):
        if isinstance(source, str) and "\n" not in source and source.endswith(".yaml"):
            source = (ROOT / "examples" / source).read_text()
        return save_version(source)[0]

    return save


def test_database_url() -> str:
    """The URL of the database the tests run on, for subprocesses."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    user = settings.get("USER") or "postgres"
    return f"postgres://{user}@{host}:{port}/{settings['NAME']}"


class Cluster:
    """qcluster + run_timers subprocesses; stop()/start() to simulate a restart."""

    def __init__(self, env):
        self.env = env
        self.processes = []

    def start(self):
        log = open(os.environ.get("DM_CLUSTER_LOG", "/tmp/dm-cluster.log"), "ab")
        for command in (["qcluster"], ["run_timers"]):
            self.processes.append(subprocess.Popen(
                [sys.executable, "manage.py", *command], cwd=ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ))
        time.sleep(1.5)  # qcluster spawns its workers

    def stop(self, sig=signal.SIGTERM):
        for process in self.processes:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes = []


@pytest.fixture
def cluster(transactional_db, request):
    """A running worker cluster on the test database (ORM broker unless REDIS_URL is set)."""
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "DM_Q_CLUSTER_NAME": _cluster_name(),
        "DM_STEP_LIMIT": os.environ.get("DM_STEP_LIMIT", "1000"),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    cluster = Cluster(env)
    cluster.start()
    yield cluster
    cluster.stop()


def _cluster_name():
    from django.conf import settings

    return settings.Q_CLUSTER["name"]


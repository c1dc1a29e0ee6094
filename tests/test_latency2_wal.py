"""SQLite's WAL checkpoints off the requests' path (workflow_site/wal.py): a web process's
connections leave them to a thread, which copies what commits wrote; other processes keep
SQLite's default; PostgreSQL is untouched."""
import time

import pytest
from django.db import connection

from workflow_site import wal


@pytest.fixture
def web_process():
    wal.stop_all()
    wal.checkpoint_off_requests()
    connection.close()  # the next query opens a connection as a web process's would
    yield
    wal.stop_all()
    connection.close()


def _autocheckpoint() -> int:
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_commits_are_checkpointed_by_the_thread_not_by_the_committing_connection(
        web_process, make_user):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    assert _autocheckpoint() == wal.BACKSTOP_PAGES
    checkpointer = wal.checkpointer(str(connection.settings_dict["NAME"]))
    for n in range(20):  # committed one by one (autocommit): each appends to the log
        make_user(f"wal-user-{n}")
    deadline = time.monotonic() + 10
    while checkpointer.pages == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpointer.pages > 0
    assert checkpointer.thread.is_alive()
    assert wal.checkpointer(str(connection.settings_dict["NAME"])) is checkpointer  # one


@pytest.mark.django_db(transaction=True)
def test_other_processes_keep_sqlite_s_default(make_user):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    wal.stop_all()
    connection.close()
    assert _autocheckpoint() == 1000
    assert wal._checkpointers == {}


@pytest.mark.django_db(transaction=True)
def test_postgresql_is_left_alone(web_process):
    if connection.vendor == "sqlite":
        pytest.skip("PostgreSQL only")
    connection.ensure_connection()
    assert wal._checkpointers == {}


def test_a_web_process_loads_its_views_freezes_them_and_checkpoints_in_a_thread(tmp_path):
    """What importing workflow_site.wsgi (as gunicorn does) leaves in its process."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    script = (
        "import gc, sys\n"
        "import workflow_site.wsgi\n"
        "from django.db import connection\n"
        "from workflow_site import wal\n"
        "assert 'executions.api.views' in sys.modules\n"
        "assert gc.get_freeze_count() > 10000, gc.get_freeze_count()\n"
        "with connection.cursor() as cursor:\n"
        "    cursor.execute('PRAGMA wal_autocheckpoint')\n"
        "    assert cursor.fetchone()[0] == wal.BACKSTOP_PAGES\n"
        "assert [c.thread.is_alive() for c in wal._checkpointers.values()] == [True]\n"
        "print('ok')\n")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/web.sqlite3",
           "DJANGO_SETTINGS_MODULE": "workflow_site.settings"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]

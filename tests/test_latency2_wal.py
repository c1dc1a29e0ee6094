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

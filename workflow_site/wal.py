"""SQLite's WAL checkpoints off the requests' path, in web processes.

By default SQLite checkpoints in the commit that takes the write-ahead log past 1,000 pages:
that commit copies the pages back into the database file and syncs it, 5-7 ms on the
development machine against 0.3 ms for a usual commit, about one API action in 150 (it
was most of the actions' p99; docs/benchmarks.md). A web process (workflow_site.wsgi)
calls `checkpoint_off_requests()`: its connections then checkpoint only past
BACKSTOP_PAGES (should this thread stall), and one daemon thread per process runs a
PASSIVE checkpoint on its own connection every INTERVAL seconds. A passive checkpoint
never waits for a lock and never blocks a reader or a writer; the sqlite3 module releases
the GIL while it copies. Durability is unchanged: a commit is in the log when it returns.
Other processes (workers, the timer loop, commands) keep SQLite's default. Several web
workers each run one: a passive checkpoint that finds another one running only says so
(its row's `busy`), it raises nothing.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading

from django.db.backends.signals import connection_created

log = logging.getLogger(__name__)

BACKSTOP_PAGES = 10_000  # a request's commit checkpoints only past this (the thread stalled)
INTERVAL = 0.5  # seconds between the thread's checkpoints


class Checkpointer:
    """One thread and one connection, for one database file, in one process."""

    def __init__(self, path: str, interval: float = INTERVAL):
        self.path = path
        self.interval = interval
        self.pages = 0  # pages copied back into the database file so far
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        connection = sqlite3.connect(self.path)
        try:
            while not self.stopped.wait(self.interval):
                try:
                    self.checkpoint(connection)
                except sqlite3.Error as exc:  # the next turn tries again; the backstop holds
                    log.warning("WAL checkpoint of %s failed: %s", self.path, exc)
        finally:
            connection.close()

    def checkpoint(self, connection: sqlite3.Connection) -> None:
        _, _, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.pages += max(0, copied)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


_checkpointers: dict[tuple[int, str], Checkpointer] = {}  # by (process, file)
_lock = threading.Lock()


def checkpointer(path: str) -> Checkpointer:
    """This process's checkpointer of `path`, started on first use (a forked process starts
    its own: threads do not survive a fork)."""
    key = (os.getpid(), path)
    with _lock:
        found = _checkpointers.get(key)
        if found is None or not found.thread.is_alive():
            found = _checkpointers[key] = Checkpointer(path)
    return found


def _on_connection(sender, connection, **kwargs) -> None:
    if connection.vendor != "sqlite":
        return
    path = connection.settings_dict["NAME"]
    if not path or str(path).startswith(":memory:") or "mode=memory" in str(path):
        return  # nothing on disk to checkpoint
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
    checkpointer(str(path))


def checkpoint_off_requests() -> None:
    """From now on, this process's SQLite connections leave checkpoints to a thread."""
    connection_created.connect(_on_connection, dispatch_uid="workflow_site.wal")


def stop_all() -> None:
    """Stop this module's threads and its signal (tests)."""
    connection_created.disconnect(dispatch_uid="workflow_site.wal")
    with _lock:
        found = list(_checkpointers.values())
        _checkpointers.clear()
    for one in found:
        one.stop()

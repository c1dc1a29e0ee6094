"""gunicorn's gthread worker, telling Django how long each request waited for a thread.

A gthread worker's main thread accepts connections and hands each readable one to a pool
of threads; past capacity, requests wait in that pool's queue before any Django code runs,
where workflow_site.overload cannot see them: it shed the excess only after tens of
seconds of queueing. This worker notes when a connection became readable and passes the
wait to the request as the `X-DM-Queued` header (seconds), set here only (a client's own
header of that name is dropped), so the overload middleware answers 503 at once to a
request that already waited too long instead of serving it late.

    gunicorn workflow_site.wsgi --worker-class workflow_site.gunicorn_worker.QueueTimedWorker
"""
import time

from gunicorn.workers.gthread import ThreadWorker

QUEUED_HEADER = "X-DM-QUEUED"  # gunicorn upper-cases header names; WSGI: HTTP_X_DM_QUEUED


class QueueTimedWorker(ThreadWorker):
    def enqueue_req(self, conn):
        conn.queued_at = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn):
        """In a pool thread: the wait ends here, before the request is read (a client that
        sends slowly does not count as waiting)."""
        conn.waited = time.monotonic() - getattr(conn, "queued_at", time.monotonic())
        return super().handle(conn)

    def handle_request(self, req, conn):
        req.headers = [(name, value) for name, value in req.headers
                       if name.upper() != QUEUED_HEADER]
        req.headers.append((QUEUED_HEADER, f"{getattr(conn, 'waited', 0.0):.6f}"))
        return super().handle_request(req, conn)

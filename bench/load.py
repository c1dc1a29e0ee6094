"""200 concurrent API clients against one gunicorn (2 workers) on loopback, bounded in time.

    .venv/bin/python bench/load.py --database-url postgres://postgres@127.0.0.1:5432/dm_bench_load \
        --redis-url redis://127.0.0.1:6379/10
    .venv/bin/python bench/load.py ... --old      # the server as bin/serve ran it before
                                                  # (4 threads, no limit): the floor to beat

Each client loops for --seconds: start a sync-mode execution (`wait`), then two actions
on it (`wait`), as a user working through an order would; a 503 is answered at once and
the client waits its Retry-After (at most 5 s) before going on, as a polite client does.
The server runs as bin/serve runs it (gthread, WEB_THREADS threads, the per-worker limit
of workflow_site/overload.py, keep-alive, backlog); the IO and timer processes are not
needed (sync mode). Reported: answers by status, p50/p99 of the actions and starts served
(2xx), p99 of every answer, and connections dropped without an answer (transport errors),
which must be 0. Target (issue 16): p99 of served actions under 250 ms, no drop, and past
capacity 503s rather than queueing.
"""
import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MACHINE = """
id: bench-load
execution_mode: sync
start_at: open
context: {n: 0}
states:
  open:
    actions:
      - {id: click, on: click, assign: {n: "ctx['n'] + input['by']"}}
"""


def prepare(env: dict) -> str:
    """Migrate, the machine, an operator's token (in a child: this process stays light)."""
    code = f"""
import django; django.setup()
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from machines.services import save_version
call_command("migrate", verbosity=0)
user, _ = User.objects.get_or_create(username="bench-load")
user.groups.add(Group.objects.get(name="operator"))
save_version({MACHINE!r})
print(Token.objects.get_or_create(user=user)[0].key)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def serve(env: dict, port: int, old: bool, access_log: str) -> subprocess.Popen:
    if old:  # as bin/serve started it before issue 16
        flags = ["--threads", "4"]
        env = {**env, "DM_WEB_MAX_CONCURRENT": "0"}
    else:
        flags = ["--worker-class", os.environ.get(
                     "WEB_WORKER_CLASS", "workflow_site.gunicorn_worker.QueueTimedWorker"),
                 "--threads", os.environ.get("WEB_THREADS", "8"),
                 "--backlog", "2048", "--keep-alive", os.environ.get("WEB_KEEPALIVE", "75"),
                 "--timeout", "60"]
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "workflow_site.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "2", *flags, "--log-level", "warning",
         "--access-logfile", access_log, "--access-logformat",
         "%(s)s %(L)s %({x-dm-queued}i)s %(U)s"],
        cwd=ROOT, env=env, start_new_session=True)


class Connection:
    """One keep-alive HTTP/1.1 connection to the server: a POST with a JSON body, the
    status, headers and JSON body of the answer. Plain asyncio streams, not httpx: with
    200 clients on the server's own two cores, httpx's CPU per request was most of what
    the clients saw (answers 0.2 ms in the server took 0.3-0.6 s to reach them)."""

    def __init__(self, port: int, token: str):
        self.port, self.token = port, token
        self.reader = self.writer = None

    async def post(self, path: str, body: dict) -> tuple[int, dict, object]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token "
            f"{self.token}\r\nContent-Type: application/json\r\nContent-Length: "
            f"{len(data)}\r\n\r\n".encode() + data)
        await self.writer.drain()
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {k.lower(): v for k, _, v in (h.partition(": ") for h in head[1:] if h)}
        answer = await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, json.loads(answer) if answer else None

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def client(port: int, token: str, until: float, record) -> None:
    connection = Connection(port, token)

    async def post(kind, path, body):
        began = time.perf_counter()
        try:
            status, headers, answer = await asyncio.wait_for(connection.post(path, body), 60)
        except TimeoutError:
            record(kind, "no answer in 60 s", time.perf_counter() - began)
            connection.close()
            return None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            record(kind, f"dropped ({type(exc).__name__})", time.perf_counter() - began)
            connection.close()
            await asyncio.sleep(1)
            return None
        record(kind, status, time.perf_counter() - began)
        if status == 503:
            await asyncio.sleep(min(5.0, float(headers.get("retry-after", 1))))
        return status, answer

    try:
        while time.monotonic() < until:
            started = await post("start", "/api/machines/bench-load/executions/",
                                 {"input": {}, "wait": True})
            if started is None or started[0] != 201:
                continue
            path = f"/api/executions/{started[1]['id']}/actions/"
            for _ in range(2):
                if time.monotonic() >= until:
                    break
                await post("action", path, {"action": "click", "input": {"by": 1},
                                            "wait": True})
    finally:
        connection.close()


async def run(port: int, token: str, clients: int, seconds: float):
    answers: list[tuple[str, object, float]] = []
    until = time.monotonic() + seconds
    began = time.perf_counter()
    await asyncio.gather(*(client(port, token, until, lambda *a: answers.append(a))
                           for _ in range(clients)))
    return answers, time.perf_counter() - began


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def wait_up(port: int) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/machines/", timeout=5)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not start")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--old", action="store_true", help="the server as before: 4 threads, "
                                                           "no limit")
    args = parser.parse_args()
    from bench.api import free_port

    env = {**os.environ, "DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url,
           "DJANGO_SETTINGS_MODULE": "workflow_site.settings",
           "DM_Q_CLUSTER_NAME": os.environ.get("DM_Q_CLUSTER_NAME", "bench-load")}
    env.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "k" * 40)  # throwaway data
    token = prepare(env)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        access_log = str(Path(tmp) / "access.log")
        server = serve(env, port, args.old, access_log)
        try:
            wait_up(port)
            answers, took = asyncio.run(run(port, token, args.clients, args.seconds))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        report(answers, took, args)
        report_server(Path(access_log).read_text().splitlines())


def report_server(lines):
    """What the server saw (its access log): seconds a request waited for a thread (the
    worker's X-DM-Queued; "-" under the old worker) and seconds gunicorn took to answer
    it. The clients run on the same cores: what they see on top is their own share."""
    print("\nin the server (access log): waited for a thread + answered, ms")
    print(f"{'requests':28} {'n':>6} {'wait p50':>9} {'wait p99':>9} {'sum p50':>8} "
          f"{'sum p99':>8}")
    rows = [line.split() for line in lines if line.count(" ") >= 3]
    for label, keep in (("actions served (2xx)", lambda s, u: s < 300 and "/actions/" in u),
                        ("starts served (2xx)", lambda s, u: s < 300 and u.endswith(
                            "/executions/")),
                        ("503 answers", lambda s, u: s == 503)):
        found = [(float(q) if q != "-" else 0.0, float(t)) for s, t, q, u in rows
                 if s.isdigit() and keep(int(s), u)]
        waits = [q * 1000 for q, _ in found]
        sums = [(q + t) * 1000 for q, t in found]
        print(f"{label:28} {len(found):6d} {percentile(waits, 50):9.1f} "
              f"{percentile(waits, 99):9.1f} {percentile(sums, 50):8.1f} "
              f"{percentile(sums, 99):8.1f}")


def report(answers, took, args):
    engine = "PostgreSQL" if args.database_url.startswith("postgres") else "SQLite"
    broker = "Redis" if args.redis_url else "ORM broker"
    setup = "before: 4 threads, no limit" if args.old else "gthread, per-worker limit"
    print(f"{args.clients} clients, {args.seconds:g} s (all answered after {took:.1f} s), "
          f"gunicorn 2 workers ({setup}), {engine} + {broker}")
    by_status: dict[object, int] = {}
    for _, status, _ in answers:
        by_status[status] = by_status.get(status, 0) + 1
    print("answers: " + ", ".join(f"{status}: {n}" for status, n in sorted(
        by_status.items(), key=lambda item: str(item[0]))))
    print(f"{'requests':28} {'n':>6} {'per s':>7} {'p50 ms':>8} {'p99 ms':>9} {'max ms':>9}")
    for kind in ("action", "start"):
        for label, keep in (("served (2xx)", lambda s: isinstance(s, int) and s < 300),
                            ("every answer", lambda s: isinstance(s, int))):
            times = [t * 1000 for k, s, t in answers if k == kind and keep(s)]
            print(f"{kind + 's ' + label:28} {len(times):6d} {len(times) / took:7.1f} "
                  f"{percentile(times, 50):8.1f} {percentile(times, 99):9.1f} "
                  f"{max(times, default=float('nan')):9.1f}")
    shed = [t * 1000 for _, s, t in answers if s == 503]
    print(f"{'503 answers':28} {len(shed):6d} {len(shed) / took:7.1f} "
          f"{percentile(shed, 50):8.1f} {percentile(shed, 99):9.1f} "
          f"{max(shed, default=float('nan')):9.1f}")
    served = [t * 1000 for k, s, t in answers
              if k == "action" and isinstance(s, int) and s < 300]
    dropped = sum(n for status, n in by_status.items() if not isinstance(status, int))
    errors = sum(n for status, n in by_status.items()
                 if isinstance(status, int) and status >= 400 and status != 503)
    p99 = percentile(served, 99)
    print(f"target: served actions p99 < 250 ms: {'met' if p99 < 250 else 'missed'} "
          f"({p99:.0f} ms); dropped / no answer: {dropped}; errors other than 503: {errors}; "
          f"503 shed: {by_status.get(503, 0)}")


if __name__ == "__main__":
    main()

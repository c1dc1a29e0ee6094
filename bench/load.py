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
import os
import signal
import subprocess
import sys
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


def serve(env: dict, port: int, old: bool) -> subprocess.Popen:
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
         *(["--access-logfile", os.environ["BENCH_ACCESS_LOG"], "--access-logformat",
            "%(s)s %(L)s %({x-dm-queued}i)s"] if os.environ.get("BENCH_ACCESS_LOG") else [])],
        cwd=ROOT, env=env, start_new_session=True)


async def client(http, token: str, until: float, record) -> None:
    import httpx

    headers = {"Authorization": f"Token {token}"}

    async def post(kind, path, body):
        began = time.perf_counter()
        try:
            response = await http.post(path, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            record(kind, f"no answer in 60 s ({type(exc).__name__})",
                   time.perf_counter() - began)
            return None
        except httpx.TransportError as exc:
            record(kind, f"dropped ({type(exc).__name__})", time.perf_counter() - began)
            await asyncio.sleep(1)
            return None
        record(kind, response.status_code, time.perf_counter() - began)
        if response.status_code == 503:
            await asyncio.sleep(min(5.0, float(response.headers.get("Retry-After", 1))))
        return response

    while time.monotonic() < until:
        started = await post("start", "/api/machines/bench-load/executions/",
                             {"input": {}, "wait": True})
        if started is None or started.status_code != 201:
            continue
        path = f"/api/executions/{started.json()['id']}/actions/"
        for _ in range(2):
            if time.monotonic() >= until:
                break
            await post("action", path, {"action": "click", "input": {"by": 1}, "wait": True})


async def run(port: int, token: str, clients: int, seconds: float):
    import httpx

    answers: list[tuple[str, object, float]] = []
    # Pools of 10 connections: one pool shared by 200 concurrent requests spends its time
    # matching requests to connections (httpcore's pool is quadratic in them), which
    # measures the client, not the server.
    pools = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                               limits=httpx.Limits(max_connections=10))
             for _ in range(max(1, clients // 10))]
    https = [pools[i % len(pools)] for i in range(clients)]
    until = time.monotonic() + seconds
    began = time.perf_counter()
    try:
        await asyncio.gather(*(client(http, token, until, lambda *a: answers.append(a))
                               for http in https))
    finally:
        took = time.perf_counter() - began
        for http in pools:
            await http.aclose()
    return answers, took


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
    server = serve(env, port, args.old)
    try:
        wait_up(port)
        answers, took = asyncio.run(run(port, token, args.clients, args.seconds))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    report(answers, took, args)


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

"""HTTP latency of an action and of starts, against a bare DRF endpoint's one write.

Both go through the same real server (gunicorn on 127.0.0.1, one worker, one thread), the
same token authentication and the same database, measured in the same run, interleaved
request by request. The floor is a DRF POST that inserts one row: what any API costs. The
difference is what the runner adds: load + lock the execution, run the engine, write the
snapshot and its history rows in one transaction, and serialise the answer.

    .venv/bin/python bench/api.py                    # SQLite (temporary file)
    .venv/bin/python bench/api.py --database-url postgres://postgres@127.0.0.1:5432/dm_bench_api
    .venv/bin/python bench/api.py --requests 200     # fewer rounds

gunicorn serves `bench.api:application`: the project plus the bare endpoint at
/bench/bare/ (this module is its URLconf; nothing of it is in the product).
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLICKER = """
id: bench-api-clicker
execution_mode: sync
start_at: open
context: {n: 0}
states:
  open:
    actions:
      - {id: click, on: click, assign: {n: "ctx['n'] + input['by']"}}
"""
LATER = CLICKER.replace("id: bench-api-clicker", "id: bench-api-later").replace(
    "execution_mode: sync", "execution_mode: async-throughput")
TARGET = 1.5  # each row within 1.5x of the bare write at p50 and p99 (issue 16)


# The server side: the project's URLs plus one bare endpoint ---------------------------------
def _server_urlpatterns():
    from django.urls import include, path
    from rest_framework.permissions import IsAuthenticated
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class BareWrite(APIView):
        """Token auth, parse the JSON body, one INSERT, a small JSON answer."""

        permission_classes = [IsAuthenticated]

        def post(self, request):
            from django.contrib.admin.models import ADDITION, LogEntry

            entry = LogEntry.objects.create(user=request.user, action_flag=ADDITION,
                                            object_repr=str(request.data.get("by", ""))[:200])
            return Response({"id": entry.pk}, status=201)

    return [path("bench/bare/", BareWrite.as_view()), path("", include("workflow_site.urls"))]


if os.environ.get("DM_BENCH_SERVER"):  # imported by gunicorn
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workflow_site.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "k" * 40)  # throwaway data
    import django
    from django.conf import settings as _settings

    django.setup()
    _settings.ROOT_URLCONF = __name__
    urlpatterns = _server_urlpatterns()  # before the WSGI module loads the URLconf
    from workflow_site.wsgi import application  # noqa: F401 (as served: GC freeze, WAL)


# The client side -----------------------------------------------------------------------------
def prepare(database_url: str) -> tuple[str, str]:
    """Migrate, create an operator's token and one waiting execution: (token, execution id)."""
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workflow_site.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "k" * 40)  # throwaway data
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from executions import services
    from machines.services import save_version

    call_command("migrate", verbosity=0)
    user, _ = User.objects.get_or_create(username="bench-operator")
    user.groups.add(Group.objects.get(name="operator"))
    token, _ = Token.objects.get_or_create(user=user)
    save_version(CLICKER)
    save_version(LATER)
    execution = services.start("bench-api-clicker", actor="bench").execution
    from django.db import connections

    connections.close_all()
    return token.key, str(execution.pk)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(database_url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url, "DM_BENCH_SERVER": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "bench.api:application", "--bind",
         f"127.0.0.1:{port}", "--workers", "1", "--threads", "1", "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True,
    )


def wait_up(client, url: str) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            client.get(url)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("gunicorn did not start")


def measure(client, requests: int, token: str, execution_id: str) -> dict[str, list[float]]:
    """Interleaved: each call once per round, so all see the same conditions. The async
    start is answered as soon as its row is committed and the starter enqueued (no cluster
    runs here: the executions stay pending)."""
    headers = {"Authorization": f"Token {token}"}
    calls = {
        "trigger sync action (wait)": (f"/api/executions/{execution_id}/actions/",
                                       {"action": "click", "input": {"by": 1}, "wait": True},
                                       200),
        "start sync machine (wait)": ("/api/machines/bench-api-clicker/executions/",
                                      {"input": {}, "wait": True}, 201),
        "start async machine (at once)": ("/api/machines/bench-api-later/executions/",
                                          {"input": {}}, 201),
        "bare DRF endpoint, 1 INSERT": ("/bench/bare/", {"by": 1}, 201),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(requests + 20):
        for name, (path, body, expected) in calls.items():
            began = time.perf_counter()
            response = client.post(path, json=body, headers=headers)
            elapsed = (time.perf_counter() - began) * 1000
            if response.status_code != expected:
                raise SystemExit(f"{name}: {response.status_code} {response.text[:300]}")
            if round_ >= 20:  # the first rounds warm caches and connections
                times[name].append(elapsed)
    return times


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def table(times: dict[str, list[float]], database: str) -> str:
    bare = times["bare DRF endpoint, 1 INSERT"]
    floor = {p: percentile(bare, p) for p in (50, 99)}
    rows = [f"HTTP latency through gunicorn (1 worker, 1 thread), {database}, "
            f"{len(bare)} requests each, interleaved",
            f"{'endpoint':32} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8} "
            f"{'p50 x':>6} {'p99 x':>6}  target <={TARGET}x"]
    for name, values in times.items():
        ratios = {p: percentile(values, p) / floor[p] for p in (50, 99)}
        verdict = "" if values is bare else (
            "met" if max(ratios.values()) <= TARGET else "missed")
        rows.append(f"{name:32} {percentile(values, 50):8.2f} {percentile(values, 90):8.2f} "
                    f"{percentile(values, 99):8.2f} {statistics.fmean(values):8.2f} "
                    f"{ratios[50]:6.2f} {ratios[99]:6.2f}  {verdict}")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: a temporary SQLite file")
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/bench-api.sqlite3"
        token, execution_id = prepare(database_url)
        port = free_port()
        server = serve(database_url, port)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                wait_up(client, "/api/machines/")
                times = measure(client, args.requests, token, execution_id)
        finally:
            server.terminate()
            server.wait(timeout=20)
    engine = "PostgreSQL" if database_url.startswith("postgres") else "SQLite"
    print(table(times, engine))


if __name__ == "__main__":
    main()

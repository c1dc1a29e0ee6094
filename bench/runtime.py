"""Runtime benchmark: persisted transitions, interactive actions, async throughput, timers.

Every figure is printed next to a floor measured in the same run on the same database with
the plain ORM:
  floor (a) each step its own transaction: one history insert + one compare-and-swap update
            (taking turns with the actions it is compared with: the median of the ratios)
  floor (b) a whole run in one transaction: bulk insert of its history + one CAS update
Async throughput is compared with django-q2's own no-op task rate through the same cluster,
both enqueued by CALLERS threads at once (one caller alone measures its own latency).

    .venv/bin/python bench/runtime.py              # SQLite, and PostgreSQL when reachable
    .venv/bin/python bench/runtime.py --quick      # fewer rounds, no cluster rows
    .venv/bin/python bench/runtime.py --only sqlite --no-cluster --actions 1000

Each database runs in a child process (Django settings are per process) on a fresh
database: a temporary SQLite file, or the PostgreSQL database `dm_bench` (recreated; another
name in BENCH_DATABASE, so that two runs at once do not drop each other's).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import children  # noqa: E402

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
BENCH_DATABASE = os.environ.get("BENCH_DATABASE", "dm_bench")

LOOP = """
id: bench-loop
execution_mode: sync
start_at: counting
context: {n: 0}
states:
  counting:
    actions:
      - {id: step, when: "ctx['n'] < 900", assign: {n: "ctx['n'] + 1"}}
      - {id: done, state: done}
  done: {return: "ctx['n']"}
"""
CLICKER = """
id: bench-clicker
execution_mode: sync
start_at: open
context: {n: 0}
states:
  open:
    actions:
      - {id: click, on: click, assign: {n: "ctx['n'] + 1"}}
"""
QUICK = """
id: bench-quick
start_at: a
states:
  a:
    actions:
      - {id: go, state: b}
  b: {return: "'done'"}
"""
TIMER = """
id: bench-timer
start_at: resting
states:
  resting:
    actions:
      - {id: ring, wait: {seconds: "input['delay']"}, state: awake}
  awake: {return: null}
"""


# Child side: runs inside Django against one database ------------------------------------
def child(args):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workflow_site.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from machines.services import save_version

    for source in (LOOP, CLICKER, QUICK, TIMER):
        save_version(source)
    results = {}
    results.update(bench_floors(args.rounds))
    results.update(bench_sync_loop(args.rounds))
    results.update(bench_actions(args.actions))
    if args.cluster:
        results.update(bench_cluster(args))
    print("RESULTS " + json.dumps(results))


def _execution_row():
    from executions.models import Execution
    from machines.models import MachineVersion

    version = MachineVersion.objects.get(machine_id="bench-loop")
    return Execution.objects.create(
        machine_id="bench-loop", machine_version=version, execution_mode="sync",
        status="waiting", state="counting", context={"n": 0},
    )


def _history(execution, seq):
    from django.utils import timezone

    from executions.models import HistoryEntry

    return HistoryEntry(
        execution=execution, machine_version_id=execution.machine_version_id, seq=seq,
        kind="transition_taken", at=timezone.now(), transition="step",
        from_state="counting", to_state="counting", context={"n": seq},
    )


def _floor_a(execution, done, steps):
    """Floor (a): `steps` steps, each its own transaction, after `done` steps already made."""
    from django.db import transaction
    from django.db.models import F

    from executions.models import Execution

    started = time.perf_counter()
    for seq in range(done + 1, done + steps + 1):
        with transaction.atomic():
            _history(execution, seq).save()
            Execution.objects.filter(pk=execution.pk, version=seq - 1).update(
                version=F("version") + 1, context={"n": seq})
    return steps / (time.perf_counter() - started)


def bench_floors(rounds):
    from django.db import transaction
    from django.db.models import F

    from executions.models import Execution

    steps = 900
    samples = []
    for _ in range(rounds):
        execution = _execution_row()
        started = time.perf_counter()
        with transaction.atomic():
            type(_history(execution, 1)).objects.bulk_create(
                [_history(execution, seq) for seq in range(1, steps + 1)], batch_size=500)
            Execution.objects.filter(pk=execution.pk, version=0).update(
                version=F("version") + 1, context={"n": steps})
        samples.append(steps / (time.perf_counter() - started))
    return {"floor_b": statistics.median(samples)}


def bench_sync_loop(rounds):
    from executions import services

    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        execution = services.start("bench-loop").execution
        elapsed = time.perf_counter() - started
        assert execution.result == 900, execution.error
        samples.append(execution.history.filter(kind="transition_taken").count() / elapsed)
    return {"sync_loop": statistics.median(samples)}


TURNS = 20  # floor (a) and the actions take turns this many times each


def bench_actions(count):
    """One action per advance and floor (a), taking TURNS turns each (on a shared machine
    the two of a turn see the same moment of load): the median rate of each, and the median
    of the turns' ratios, which is what the row compares."""
    from executions import services

    execution = services.start("bench-clicker").execution
    floor_row = _execution_row()
    steps = max(1, count // TURNS)
    ours, floors = [], []

    def actions():
        started = time.perf_counter()
        for _ in range(steps):
            services.trigger(execution.pk, "click", wait=True)
        return steps / (time.perf_counter() - started)

    for turn in range(TURNS):
        if turn % 2:  # who goes first alternates
            ours.append(actions())
        floors.append(_floor_a(floor_row, turn * steps, steps))
        if not turn % 2:
            ours.append(actions())
    execution.refresh_from_db()
    assert execution.context["n"] == steps * TURNS
    ratios = [mine / floor for mine, floor in zip(ours, floors, strict=True)]
    return {"actions": statistics.median(ours), "floor_a": statistics.median(floors),
            "actions_ratio": statistics.median(ratios),
            "actions_ratios": sorted(round(ratio, 2) for ratio in ratios)}


def bench_cluster(args):
    results = {}
    brokers = [("orm", {})]
    if _redis_ok():
        brokers.append(("redis", {"REDIS_URL": REDIS_URL}))
    for name, extra in brokers:
        with _cluster(extra) as patch:
            with patch():
                results[f"noop_{name}"] = _noop_rate(args.async_count)
                results[f"async_{name}"] = _async_rate(args.async_count)
                if name == "orm":
                    results.update(_timer_lateness(args.timers))
    return results


def _redis_ok():
    import redis

    try:
        return redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False


class _cluster:
    """Start qcluster + run_timers on this database; patch this process's broker to match."""

    def __init__(self, extra_env):
        self.extra_env = extra_env

    def __enter__(self):
        from django.db import connection

        env = {**os.environ, **self.extra_env}
        connection.close()
        self.log = open(os.path.join(tempfile.gettempdir(), "dm-bench-cluster.log"), "ab")
        self.processes = [
            subprocess.Popen([sys.executable, "manage.py", command], cwd=ROOT, env=env,
                             stdout=self.log, stderr=subprocess.STDOUT,
                             start_new_session=True)
            for command in ("qcluster", "run_timers")
        ]
        time.sleep(2)
        return self.patch

    def patch(self):
        from contextlib import ExitStack
        from unittest import mock

        from django_q.conf import Conf

        from executions.runtime import queue

        stack = ExitStack()
        if "REDIS_URL" in self.extra_env:
            import redis

            redis.from_url(REDIS_URL).flushdb()  # its own Redis database: no stale tasks
            stack.enter_context(mock.patch.object(Conf, "ORM", None))
            stack.enter_context(mock.patch.object(Conf, "REDIS", REDIS_URL))
        queue._broker.cache_clear()
        stack.callback(queue._broker.cache_clear)
        return stack

    def __exit__(self, *exc):
        import signal

        for process in self.processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


CALLERS = 4  # threads enqueueing at once, as several web workers would


def _from_callers(make_one, count):
    """Call make_one() `count` times from CALLERS threads, each with its own connection."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def part(_):
        try:
            return [make_one() for _ in range(count // CALLERS)]
        finally:
            connection.close()

    with ThreadPoolExecutor(CALLERS) as pool:
        return [made for chunk in pool.map(part, range(CALLERS)) for made in chunk]


def _noop_rate(count):
    from django_q.tasks import async_task

    from executions.runtime import queue

    count -= count % CALLERS
    marks = Path(tempfile.mkstemp(prefix="dm-noop-")[1])
    started = time.perf_counter()
    _from_callers(lambda: async_task("bench.noop.mark", str(marks), broker=queue._broker()),
                  count)
    while len(marks.read_text().splitlines()) < count:
        if time.perf_counter() - started > 120:
            raise RuntimeError("no-op tasks did not finish")
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    marks.unlink()
    return count / elapsed


def _async_rate(count):
    from executions import services
    from executions.models import Execution

    count -= count % CALLERS
    # Counted with one indexed query: polling a list of ids would cost this process (and
    # the CPU the cluster shares) more than the no-op floor's reading of a file.
    finished = Execution.objects.filter(machine_id="bench-quick", status="finished")
    before = finished.count()
    started = time.perf_counter()
    _from_callers(lambda: services.start("bench-quick"), count)
    while finished.count() - before < count:
        if time.perf_counter() - started > 120:
            raise RuntimeError("async executions did not finish")
        time.sleep(0.005)
    return count / (time.perf_counter() - started)


def _timer_lateness(count):
    from executions import services
    from executions.models import Execution

    ids = []
    for i in range(count):
        ids.append(services.start("bench-timer", input={"delay": 1 + (i % 10) / 10},
                                wait=True).execution.pk)
    deadline = time.time() + 30
    while Execution.objects.filter(pk__in=ids, status="finished").count() < count:
        if time.time() > deadline:
            raise RuntimeError("timers did not fire")
        time.sleep(0.05)
    late = []
    for execution in Execution.objects.filter(pk__in=ids):
        armed = execution.history.get(kind="timer_armed")
        fired = execution.history.get(kind="timer_fired")
        late.append((fired.at.timestamp() - armed.detail["due"]) * 1000)
    late.sort()
    return {"timer_p50_ms": statistics.median(late),
            "timer_p99_ms": late[min(len(late) - 1, int(len(late) * 0.99))]}


# Parent side: one child per database, then the table --------------------------------------
def run_child(label, database_url, argv):
    return children.run_child(__file__, label, database_url, argv, ROOT)


def postgres_bench_url():
    return children.fresh_postgres_database(BENCH_DATABASE)


def table(label, r):
    rows = [
        ("900-step sync loop, transitions/s", r["sync_loop"], r["floor_b"], 0.5, "floor (b)",
         None),
        ("one action per advance, actions/s", r["actions"], r["floor_a"], 0.8, "floor (a)",
         r["actions_ratio"]),
    ]
    for broker in ("orm", "redis"):
        if f"async_{broker}" in r:
            rows.append((f"async executions/s ({broker} broker)", r[f"async_{broker}"],
                         r[f"noop_{broker}"], 0.5, "no-op tasks/s", None))
    print(f"\n{label}")
    print(f"| {'measure':<40} | {'ours':>9} | {'floor':>9} | {'floor is':<13} | ratio | target |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 11}|{'-' * 15}|-------|--------|")
    for name, ours, floor, target, what, ratio in rows:
        ratio = ours / floor if ratio is None else ratio
        verdict = "ok" if ratio >= target else "MISSED"
        print(f"| {name:<40} | {ours:>9.0f} | {floor:>9.0f} | {what:<13} | {ratio:5.2f} |"
              f" {verdict} ≥{target:g} |")
    print(f"(one action per advance: the ratio is the median of {TURNS} turns against floor"
          f" (a); the turns, sorted: {' '.join(f'{x:.2f}' for x in r['actions_ratios'])})")
    if "timer_p99_ms" in r:
        p50, p99 = r["timer_p50_ms"], r["timer_p99_ms"]
        verdict = "ok" if p99 < 250 else "MISSED"
        print(f"| {'timer lateness p50 / p99, ms':<40} | {p50:>9.0f} | {p99:>9.0f} |"
              f" {'(p50 | p99)':<13} |       | {verdict} <250 |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, no cluster rows")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--actions", type=int, default=300)
    parser.add_argument("--async-count", type=int, default=1200)
    parser.add_argument("--timers", type=int, default=100)
    parser.add_argument("--no-cluster", dest="cluster", action="store_false")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], help="one database")
    args = parser.parse_args()
    if args.child:
        return child(args)
    argv = []
    if args.quick:
        argv += ["--rounds", "2", "--actions", "100", "--no-cluster"]
    else:
        argv += ["--rounds", str(args.rounds), "--actions", str(args.actions),
                 "--async-count", str(args.async_count), "--timers", str(args.timers)]
        if not args.cluster:
            argv.append("--no-cluster")
    if args.only != "postgresql":
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = run_child("SQLite", f"sqlite:///{tmp}/bench.sqlite3", argv)
        table("SQLite (WAL)", sqlite)
    url = postgres_bench_url() if args.only != "sqlite" else None
    if url:
        table("PostgreSQL", run_child("PostgreSQL", url, argv))


if __name__ == "__main__":
    main()

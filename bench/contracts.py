"""Contracts benchmark: a start with a business key next to a start with an idempotency key
(the floor: the same INSERT guarded by a unique index), new and repeated, and the input
schema check.

    .venv/bin/python bench/contracts.py            # a fresh temporary SQLite database
    .venv/bin/python bench/contracts.py --postgres  # the PostgreSQL database dm_bench_contracts

Starts go through executions.services.start in this process, async-throughput (the row is
the pending start: no worker runs), one of each kind in turn so a busy machine slows both
alike; each figure is the median of STARTS * ROUNDS starts, timed one by one.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STARTS = 200
ROUNDS = 5
MACHINE = """
id: {id}
start_at: open
{extra}
states:
  open:
    actions:
      - {{id: close, on: close, state: closed}}
  closed: {{return: null}}
"""


def configure(postgres: bool):
    if postgres:
        os.environ["DATABASE_URL"] = os.environ.get(
            "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/dm_bench_contracts")
    else:
        path = Path(tempfile.mkdtemp()) / "contracts-bench.sqlite3"
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workflow_site.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "k" * 40)  # throwaway data
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if postgres:
        with connection.cursor() as cursor:
            cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    call_command("migrate", verbosity=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    configure(args.postgres)
    from django.db import connection

    from executions import services
    from machines.services import save_version

    save_version(MACHINE.format(id="plain", extra=""))
    save_version(MACHINE.format(id="keyed", extra="key: \"input['ref']\""))
    save_version(MACHINE.format(id="typed", extra="input: {ref: string, qty: integer >= 1}"))
    counter = iter(range(10**9))

    def idempotent_new():
        n = next(counter)
        services.start("plain", input={"ref": f"r{n}"}, idempotency_key=f"r{n}")

    def keyed_new():
        services.start("keyed", input={"ref": f"r{next(counter)}"})

    def idempotent_again():
        services.start("plain", input={"ref": "r0"}, idempotency_key="r0")

    def keyed_again():
        services.start("keyed", input={"ref": "r1"})

    def unchecked():
        services.start("plain", input={"ref": "x", "qty": 2})

    def checked():
        services.start("typed", input={"ref": "x", "qty": 2})

    keyed_new()  # r1 exists for keyed_again, r0 for idempotent_again
    idempotent_new()
    rows = [("start, new", idempotent_new, keyed_new, "idempotency key", "business key"),
            ("start, repeated (returns the first)", idempotent_again, keyed_again,
             "idempotency key", "business key"),
            ("start, input schema checked", unchecked, checked, "no schema", "schema")]
    print(f"{STARTS * ROUNDS} starts of each kind, one of each in turn, median per start "
          f"({connection.vendor})\n")
    print(f"{'row':38} {'floor':>16} {'ms/start':>9} {'measured':>13} {'ms/start':>9} "
          f"{'ratio':>6}")
    for name, floor, measured, floor_name, measured_name in rows:
        floor_times, measured_times = [], []
        for fn in (floor, measured):  # warm-up
            fn()
        # One of each in turn: a busy machine (load comes and goes) slows both alike.
        for _ in range(STARTS * ROUNDS):
            for fn, times in ((floor, floor_times), (measured, measured_times)):
                started = time.perf_counter()
                fn()
                times.append((time.perf_counter() - started) * 1000)
        f, m = statistics.median(floor_times), statistics.median(measured_times)
        print(f"{name:38} {floor_name:>16} {f:9.3f} {measured_name:>13} {m:9.3f} "
              f"{m / f:5.2f}x")


if __name__ == "__main__":
    main()

"""Operations benchmark: a bulk retry and a bulk migration of many executions, per second.

Each figure is printed next to the per-step floor measured in the same run on the same
database with the plain ORM: floor (a) of bench/runtime.py, each step its own transaction,
one history insert + one compare-and-swap update, measured before, between and after the
operations (the median: the load of a shared machine changes). A bulk operation does more per
execution than that floor: the dry run reads it and computes the step in the evaluation
pool, the job reads it again, computes again, and saves the step (compare-and-swap,
history rows, the inbox item that makes it idempotent) and marks its item.

    .venv/bin/python bench/operations.py            # 10,000 each; SQLite, then PostgreSQL
    .venv/bin/python bench/operations.py --count 1000

Each database runs in a child process on a fresh database: a temporary SQLite file, or the
PostgreSQL database `dm_bench_ops` (recreated). The job runs in the child's process (what a
worker runs, without the queue's latency).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import children  # noqa: E402

REFUND = """
id: bench-refund
execution_mode: sync
start_at: requested
context: "{'amount': input['amount'], 'small': input['amount'] <= 100}"
states:
  requested:
    actions:
      - {id: approve, on: approve, state: approved}
  approved: {return: "ctx['amount']"}
"""
# Version 2: the same states, the check written the other way round.
REFUND_2 = REFUND.replace("input['amount'] <= 100", "100 >= input['amount']")
# Of the per-step floor: a dry run reads and computes (no write); a job reads, computes and
# writes a step, then marks its item: several statements where the floor has two.
TARGETS = {"dry run": 0.5, "job": 0.1}


def child(args):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workflow_site.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from machines.services import save_version

    save_version(REFUND)
    floors = [floor_a()]  # measured around each bulk operation: the load on a shared
    results = bench_retry(args.count)  # machine changes during a run of minutes
    floors.append(floor_a())
    save_version(REFUND_2)
    results.update(bench_migrate(args.count))
    floors.append(floor_a())
    results["floor_a"] = statistics.median(floors)
    results["floors"] = floors
    print("RESULTS " + json.dumps(results))


def floor_a(steps=900):
    """bench/runtime.py's floor (a): a step = one history insert + one CAS update."""
    from django.db import transaction
    from django.db.models import F
    from django.utils import timezone

    from executions.models import Execution, HistoryEntry
    from machines.models import MachineVersion

    version = MachineVersion.objects.filter(machine_id="bench-refund").first()
    execution = Execution.objects.create(machine_id="bench-refund", machine_version=version,
                                         execution_mode="sync", status="waiting",
                                         state="requested", context={"n": 0})
    started = time.perf_counter()
    for seq in range(1, steps + 1):
        with transaction.atomic():
            HistoryEntry.objects.create(
                execution=execution, machine_version_id=version.pk, seq=seq,
                kind="transition_taken", at=timezone.now(), transition="approve",
                from_state="requested", to_state="requested", context={"n": seq})
            Execution.objects.filter(pk=execution.pk, version=seq - 1).update(
                version=F("version") + 1, context={"n": seq})
    rate = steps / (time.perf_counter() - started)
    execution.delete()  # not an execution the operations should find
    return rate


def _bulk(selection, operation, reason):
    """(dry run executions/s, job executions/s) of one bulk operation."""
    from executions import operations

    started = time.perf_counter()
    bulk = operations.preview_bulk(selection, operation, actor="bench")
    previewed = time.perf_counter() - started
    operations.run_bulk(bulk.pk, actor="bench", reason=reason)
    started = time.perf_counter()
    while bulk.status != bulk.DONE:  # a job hands over after its budget: the next task
        operations.bulk_job(str(bulk.pk))
        bulk.refresh_from_db()
    ran = time.perf_counter() - started
    progress = operations.bulk_progress(bulk)
    assert progress["outcomes"] == {"applies": bulk.total}, progress
    return bulk.total / previewed, bulk.total / ran


def bench_retry(count):
    """`count` executions failed at their start; all retried with the input fixed."""
    from executions import operations, services
    from executions.models import Execution

    for _ in range(count):
        services.start("bench-refund", input={"amount": "5"})
    assert Execution.objects.filter(status="failed").count() == count
    preview, job = _bulk({"filters": {"status": "failed", "machine": "bench-refund"}},
                         operations.request("retry", input={"amount": 5}), "bench")
    assert Execution.objects.filter(status="waiting").count() == count
    return {"retry_preview": preview, "retry_job": job}


def bench_migrate(count):
    """The `count` executions waiting on version 1, migrated to version 2."""
    from executions import operations
    from executions.models import Execution

    preview, job = _bulk({"filters": {"machine": "bench-refund", "version": 1,
                                      "status": "waiting"}},
                         operations.request("migrate", version=2), "bench")
    assert Execution.objects.filter(machine_version__version=2).count() == count
    return {"migrate_preview": preview, "migrate_job": job}


# Parent side -----------------------------------------------------------------------------
def run_child(label, database_url, argv):
    return children.run_child(__file__, label, database_url, argv, ROOT)


def postgres_bench_url():
    return children.fresh_postgres_database("dm_bench_ops")


def table(label, count, r):
    rows = [(f"bulk retry of {count:,}: dry run, executions/s", r["retry_preview"]),
            (f"bulk retry of {count:,}: job, executions/s", r["retry_job"]),
            (f"migration of {count:,}: dry run, executions/s", r["migrate_preview"]),
            (f"migration of {count:,}: job, executions/s", r["migrate_job"])]
    print(f"\n{label} (floor (a) measured before, between and after: "
          f"{', '.join(f'{f:.0f}' for f in r['floors'])} steps/s; the median is used)")
    print(f"| {'measure':<44} | {'ours':>7} | {'floor (a)':>9} | ratio | target |")
    print(f"|{'-' * 46}|{'-' * 9}|{'-' * 11}|-------|--------|")
    for name, ours in rows:
        target = TARGETS["job" if "job" in name else "dry run"]
        ratio = ours / r["floor_a"]
        verdict = "ok" if ratio >= target else "MISSED"
        print(f"| {name:<44} | {ours:>7.0f} | {r['floor_a']:>9.0f} | {ratio:5.2f} |"
              f" {verdict} ≥{target:g} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    if args.child:
        return child(args)
    argv = ["--count", str(args.count)]
    with tempfile.TemporaryDirectory() as tmp:
        table("SQLite (WAL)", args.count, run_child("SQLite", f"sqlite:///{tmp}/b.sqlite3", argv))
    url = postgres_bench_url()
    if url:
        table("PostgreSQL", args.count, run_child("PostgreSQL", url, argv))


if __name__ == "__main__":
    main()

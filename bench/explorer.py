"""Explorer benchmark: the execution page with 10,000 history rows, the machine page with
100,000 executions, the history API's first page of a 25,000-row history and an attribute
filter over 100,000 executions, each next to the time of the bare queries it needs.

    .venv/bin/python bench/explorer.py            # a fresh temporary SQLite database
    .venv/bin/python bench/explorer.py --postgres  # the PostgreSQL database dm_bench_explorer

Rows are bulk-inserted directly (the runner would take minutes to write them). Pages are
fetched with Django's test client as a logged-in viewer; each figure is the median of
several requests after one warm-up (the diagram cache, the parsed definition).
"""
import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HISTORY_ROWS = 10_000
LONG_RUN_STEPS = 25_000  # history rows of the execution whose history API page is timed
EXECUTIONS = 100_000
ROUNDS = 5


def configure(postgres: bool):
    if postgres:
        os.environ["DATABASE_URL"] = os.environ.get(
            "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/dm_bench_explorer")
    else:
        path = Path(tempfile.mkdtemp()) / "explorer-bench.sqlite3"
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workflow_site.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "k" * 40)  # throwaway data
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if postgres:
        with connection.cursor() as cursor:  # start clean: drop our tables
            cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    call_command("migrate", verbosity=0)


def timed_pair(page, bare, rounds=ROUNDS * 3) -> tuple[float, float, object]:
    """Medians (ms) of a page and of its bare queries, taking turns, so that load from
    elsewhere on a shared machine falls on both alike."""
    page()
    bare()
    page_times, bare_times, result = [], [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = page()
        page_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        bare()
        bare_times.append(time.perf_counter() - started)
    return (statistics.median(page_times) * 1000, statistics.median(bare_times) * 1000,
            result)


def timed(fn, rounds=ROUNDS) -> tuple[float, object]:
    fn()  # warm-up
    times, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, result


def long_execution(version, user, history_rows=HISTORY_ROWS):
    """An order sitting in its cart after many add actions: `history_rows` history rows."""
    from executions.models import Execution, HistoryEntry

    start = datetime(2026, 1, 1, tzinfo=UTC)
    execution = Execution.objects.create(
        machine_id="order", machine_version=version, execution_mode="sync", status="waiting",
        state="cart", context={"order": {"id": "R1", "line_items": []}, "n": 0},
        engine_state={"seq": history_rows}, actor="bench", created_by=user)
    rows = [HistoryEntry(execution=execution, machine_version=version, seq=1,
                         kind="execution_started", at=start, actor="bench",
                         context={"order": {"id": "R1", "line_items": []}, "n": 0})]
    rows.append(HistoryEntry(execution=execution, machine_version=version, seq=2,
                             kind="transition_taken", at=start, transition="created",
                             from_state="create", to_state="cart"))
    seq = 2
    while seq < history_rows:
        at = start + timedelta(seconds=seq)
        rows.append(HistoryEntry(execution=execution, machine_version=version, seq=seq + 1,
                                 kind="action_received", at=at, actor="alice", action="add",
                                 input={"sku": "x9"}))
        rows.append(HistoryEntry(execution=execution, machine_version=version, seq=seq + 2,
                                 kind="transition_taken", at=at, actor="alice", action="add",
                                 transition="add", from_state="cart", to_state="cart",
                                 input={"sku": "x9"}, context={"n": seq}))
        seq += 2
    HistoryEntry.objects.bulk_create(rows[:history_rows], batch_size=2000)
    return execution


# Where the 100,000 executions stop: (weight, status, moves after "create -> cart")
ROUTES = [
    (30, "waiting", []),
    (25, "waiting", [("place", "cart", "submitted")]),
    (30, "finished", [("place", "cart", "submitted"),
                      ("fraud-reject", "submitted", "fraud-rejected"),
                      ("cancel", "fraud-rejected", "canceled")]),
    (15, "invoking", [("place", "cart", "submitted"),
                      ("fraud-approve", "submitted", "fraud-approved"),
                      ("release", "fraud-approved", "released")]),
]


def many_executions(version):
    from executions.models import Execution, HistoryEntry

    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    weights = [w for w, _, _ in ROUTES]
    batch_size = 5000
    for offset in range(0, EXECUTIONS, batch_size):
        executions, routes = [], []
        for i in range(offset, offset + batch_size):
            _, status, moves = rng.choices(ROUTES, weights)[0]
            state = moves[-1][2] if moves else "cart"
            executions.append(Execution(
                machine_id="order", machine_version=version, execution_mode="sync",
                status=status, state=state, context={"n": i}, engine_state={},
                actor="bench"))
            routes.append(moves)
        Execution.objects.bulk_create(executions, batch_size=batch_size)
        rows = []
        for execution, moves in zip(executions, routes, strict=True):
            at = start + timedelta(seconds=rng.randint(0, 86400 * 30))
            rows.append(HistoryEntry(execution=execution, machine_version=version, seq=1,
                                     kind="execution_started", at=at, context={}))
            steps = [("created", "create", "cart"), *moves]
            for seq, (tid, source, target) in enumerate(steps, start=2):
                at += timedelta(seconds=rng.randint(1, 3600))
                rows.append(HistoryEntry(execution=execution, machine_version=version,
                                         seq=seq, kind="transition_taken", at=at,
                                         transition=tid, from_state=source, to_state=target))
            if moves and moves[-1][0] == "release":
                rows.append(HistoryEntry(execution=execution, machine_version=version,
                                         seq=len(steps) + 2, kind="work_started", at=at,
                                         transition="ship", from_state="released",
                                         detail={"kind": "machine"}))
        HistoryEntry.objects.bulk_create(rows, batch_size=5000)


def many_refunds(version):
    """EXECUTIONS refunds, each with its attribute rows (amount, customer) as the runtime
    writes them, for the attribute filter."""
    from executions.models import Execution, ExecutionAttribute

    rng = random.Random(11)
    batch_size = 5000
    for offset in range(0, EXECUTIONS, batch_size):
        executions = []
        for i in range(offset, offset + batch_size):
            attributes = {"amount": float(rng.randint(1, 10_000)),
                          "customer": f"c-{rng.randint(1, 5000)}"}
            executions.append(Execution(
                machine_id="refund", machine_version=version, execution_mode="sync",
                status="waiting", state="requested", context={"n": i}, engine_state={},
                actor="bench", business_key=f"R-{i}", key_scope="always",
                attributes=attributes))
        Execution.objects.bulk_create(executions, batch_size=batch_size)
        ExecutionAttribute.objects.bulk_create([
            ExecutionAttribute(execution=execution, machine_id="refund", name=name,
                               **({"number": value} if name == "amount" else {"text": value}))
            for execution in executions for name, value in execution.attributes.items()],
            batch_size=batch_size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    configure(args.postgres)

    from django.contrib.auth import get_user_model
    from django.db import connection, reset_queries
    from django.db.models import Count
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    from executions import selectors, steps
    from executions.models import Execution
    from explorer import presenters
    from machines import diagrams
    from machines.services import save_version

    setup_test_environment()
    version = save_version((ROOT / "examples" / "order.yaml").read_text())[0]
    save_version((ROOT / "examples" / "shipment.yaml").read_text())
    user = get_user_model().objects.create_superuser("bench", "b@example.com", "bench-pass-1")
    client = Client()
    client.force_login(user)

    started = time.perf_counter()
    execution = long_execution(version, user)
    long_run = long_execution(version, user, LONG_RUN_STEPS)
    many_executions(version)
    refunds = save_version((ROOT / "examples" / "refund.yaml").read_text())[0]
    many_refunds(refunds)
    print(f"inserted {HISTORY_ROWS:,} history rows for one execution and "
          f"{EXECUTIONS:,} executions in {time.perf_counter() - started:.0f} s "
          f"({connection.vendor})\n")

    def page(url):
        def fetch():
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
            return response
        return fetch

    def count_queries(fn):
        reset_queries()
        with CaptureQueriesContext(connection) as captured:
            fn()
        return len(captured)

    def execution_queries():  # what explorer.presenters.execution_page reads
        found = selectors.execution(execution.id)
        first = max(1, HISTORY_ROWS - presenters.HISTORY_PAGE + 1)
        found_moves = selectors.moves(found, before=first)
        selectors.step_moves(found, diagrams.MANY_STEPS, found_moves)
        selectors.history_rows(found, first, HISTORY_ROWS)
        selectors.last_step_rows(found, steps.MAX_STEPS, through=HISTORY_ROWS)
        selectors.context_before(found, first)
        return selectors.children(found)

    def every_step_row():  # what the page read before: every step row, and the page
        rows = selectors.step_rows(execution)
        page_rows = list(execution.history.filter(seq__gt=HISTORY_ROWS - 200).values())
        return len(rows) + len(page_rows)

    def machine_queries():
        selectors.executions_in_states(version)
        selectors.step_counts(version.parsed(), version)
        selectors.median_stays(version)
        list(Execution.objects.filter(machine_id="order").order_by()
             .values_list("status").annotate(n=Count("pk")))
        list(Execution.objects.filter(machine_version=version).order_by()
             .values_list("machine_version_id").annotate(n=Count("pk")))
        Execution.objects.filter(machine_id="order").count()
        ids = list(Execution.objects.filter(machine_id="order").order_by("-created_at")
                   .values_list("pk", flat=True)[:50])
        return Execution.objects.in_bulk(ids)

    def history_query():  # the first page's rows, as the API's cursor page reads them
        return list(long_run.history.order_by("seq").values()[:101])

    # The attribute filter: amounts of at least 9,900 (about 1 in 100), newest first.
    attribute_query = {"machine": "refund", "attr.amount__gte": "9900"}

    def attribute_bare():  # the attribute index's rows, and the newest 50 of those
        from executions.models import ExecutionAttribute

        ids = ExecutionAttribute.objects.filter(
            machine_id="refund", name="amount", number__gte=9900).values("execution_id")
        return list(Execution.objects.filter(pk__in=ids).order_by("-created_at")[:50])

    def attribute_filtered():  # what the API's list does: ExecutionFilter, then a page
        from executions.filters import ExecutionFilter

        filters = ExecutionFilter(_query(attribute_query),
                                  queryset=selectors.listed_executions())
        assert filters.is_valid(), filters.errors
        return list(filters.qs.order_by("-created_at")[:50])

    results = []
    for name, url, bare in (
        (f"execution page, {HISTORY_ROWS:,} history rows", f"/executions/{execution.id}/",
         execution_queries),
        (f"machine page, {EXECUTIONS:,} executions", "/machines/order/", machine_queries),
        ("machine list", "/machines/", None),
        (f"execution list, {EXECUTIONS:,} executions", "/executions/", None),
        (f"history API, 1st page of {LONG_RUN_STEPS:,} rows",
         f"/api/executions/{long_run.id}/history/", history_query),
    ):
        if bare:
            page_ms, bare_ms, response = timed_pair(page(url), bare)
        else:
            (page_ms, response), bare_ms = timed(page(url)), None
        results.append((name, page_ms, bare_ms, count_queries(page(url)),
                        len(response.content) // 1024))
        if "execution page" in name:
            print(f"execution page: every step row and the page (what it read before) "
                  f"{timed(every_step_row)[0]:.1f} ms")
            path = presenters.execution_path(execution, selectors.moves(execution, before=1))
            drawn = timed(lambda path=path: diagrams.render_svg(version.parsed(), path))[0]
            print(f"execution page: its diagram, cached (target < 5 ms) {drawn:.2f} ms")
            steps_json = response.content.decode().split('id="steps-data"')[1].split(
                "</script>")[0]
            print(f"execution page: steps JSON {len(steps_json) // 1024} KB, "
                  f"{response.content.decode().count('<li data-seq')} timeline items\n")

    filtered_ms, bare_ms, found = timed_pair(attribute_filtered, attribute_bare)
    assert len(found) == 50 and all(e.attributes["amount"] >= 9900 for e in found)
    results.append((f"attribute filter, {EXECUTIONS:,} executions", filtered_ms, bare_ms,
                    count_queries(attribute_filtered), 0))
    api_url = "/api/executions/?machine=refund&attr.amount__gte=9900"
    api_ms, bare_ms, response = timed_pair(page(api_url), attribute_bare)
    results.append(("attribute filter API page (50 executions)", api_ms, bare_ms,
                    count_queries(page(api_url)), len(response.content) // 1024))

    print(f"{'page':44} {'page ms':>9} {'bare queries ms':>16} {'ratio':>6} {'queries':>8} "
          f"{'KB':>6}  target 2x")
    for name, page_ms, bare_ms, queries, size in results:
        bare = f"{bare_ms:.1f}" if bare_ms is not None else "—"
        ratio = f"{page_ms / bare_ms:.2f}" if bare_ms else "—"
        verdict = ("met" if page_ms <= 2 * bare_ms else "MISSED") if bare_ms else ""
        print(f"{name:44} {page_ms:9.1f} {bare:>16} {ratio:>6} {queries:8d} {size:6d}  "
              f"{verdict}")


def _query(values: dict):
    from django.http import QueryDict

    query = QueryDict(mutable=True)
    query.update(values)
    return query


if __name__ == "__main__":
    main()

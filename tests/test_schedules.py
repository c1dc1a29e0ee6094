"""`schedules:`: fire times (cron in a time zone, intervals, DST, missed fires), the rows a
save reconciles, and the timer loop starting each fire exactly once — with two loops at
once, after a crash between the start and the claim, and with a real cluster across a
restart."""
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.utils.html import strip_tags
from hypothesis import given, settings
from hypothesis import strategies as st

from executions import engine
from executions.models import Execution
from executions.runtime import schedules as firing
from explorer import timeline
from machines import diagrams
from machines.definition import Schedule as Declared
from machines.diffs import definition_diff
from machines.language import build, check, parse_text
from machines.models import Machine, MachineVersion, Schedule
from machines.schedules import following, next_after, upcoming
from tests.helpers import ROOT, subprocess_database_url, wait_until

AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def at(*parts, zone=AMSTERDAM) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()


def local(epoch: float, zone=AMSTERDAM) -> str:
    return datetime.fromtimestamp(epoch, zone).isoformat()


REPORT = """
id: daily-report
title: Daily report
start_at: compiling
schedules:
  - {id: weekday-morning, cron: "0 7 * * 1-5", time_zone: Europe/Amsterdam,
     input: {report: sales}}
  - {id: hourly, every: 3600}
states:
  compiling:
    actions:
      - {id: compile, state: sent, assign: {report: "input.get('report', 'all')"}}
  sent: {return: "ctx['report']"}
"""


# Fire times ---------------------------------------------------------------------------------
def test_a_cron_time_skipped_by_spring_forward_fires_right_after_the_gap():
    nightly = Declared("n", cron="30 2 * * *", time_zone="Europe/Amsterdam")
    fires = upcoming(nightly, next_after(nightly, at(2026, 3, 28, 12, 0)), 3)
    assert [local(f) for f in fires] == ["2026-03-29T03:00:00+02:00",
                                         "2026-03-30T02:30:00+02:00",
                                         "2026-03-31T02:30:00+02:00"]


def test_a_cron_time_repeated_by_fall_back_fires_once():
    nightly = Declared("n", cron="30 2 * * *", time_zone="Europe/Amsterdam")
    fires = upcoming(nightly, next_after(nightly, at(2026, 10, 24, 12, 0)), 2)
    assert [local(f) for f in fires] == ["2026-10-25T02:30:00+02:00",
                                         "2026-10-26T02:30:00+01:00"]
    assert fires[1] - fires[0] == 25 * 3600  # the day the clocks went back had 25 hours


def test_an_every_half_hour_cron_keeps_firing_through_the_repeated_hour():
    often = Declared("o", cron="*/30 * * * *", time_zone="Europe/Amsterdam")
    fires = upcoming(often, next_after(often, at(2026, 10, 25, 1, 50)), 5)
    assert [b - a for a, b in zip(fires, fires[1:], strict=False)] == [1800] * 4  # real half hours


def test_the_same_cron_in_two_zones_fires_at_their_own_local_time():
    utc = Declared("u", cron="0 9 * * *", time_zone="UTC")
    tokyo = Declared("t", cron="0 9 * * *", time_zone="Asia/Tokyo")
    start = datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp()
    assert datetime.fromtimestamp(next_after(utc, start), UTC).isoformat() == \
        "2026-06-02T09:00:00+00:00"
    assert datetime.fromtimestamp(next_after(tokyo, start), UTC).isoformat() == \
        "2026-06-02T00:00:00+00:00"


def test_fire_times_are_strictly_after_the_given_time():
    daily = Declared("d", cron="0 7 * * *", time_zone="Europe/Amsterdam")
    seven = at(2026, 5, 4, 7, 0)
    assert next_after(daily, seven) == at(2026, 5, 5, 7, 0)


def test_after_downtime_an_interval_fires_once_and_keeps_its_rhythm():
    hourly = Declared("h", every=3600)
    due = 1_000_000.0
    # down for five and a half hours: the one fire now, the next on the hour grid
    assert following(hourly, due, due + 5.5 * 3600) == due + 6 * 3600
    assert following(hourly, due, due + 1) == due + 3600  # on time: the next period


def test_after_downtime_a_cron_fires_once_then_at_its_next_time_after_now():
    daily = Declared("d", cron="0 7 * * *", time_zone="Europe/Amsterdam")
    due = at(2026, 5, 4, 7, 0)
    back = at(2026, 5, 7, 13, 0)  # three days later
    assert following(daily, due, back) == at(2026, 5, 8, 7, 0)


@settings(max_examples=200, deadline=None)
@given(every=st.integers(60, 10 * 86400), late=st.floats(0, 400 * 86400))
def test_an_interval_fires_once_whatever_the_delay_and_stays_on_its_grid(every, late):
    due = 1_700_000_000.0
    now = due + late
    after = following(Declared("e", every=every), due, now)
    assert now < after <= now + every  # the next fire is in the future, within one period
    assert (after - due) / every == round((after - due) / every)  # on the grid


@settings(max_examples=100, deadline=None)
@given(cron=st.sampled_from(["0 7 * * 1-5", "30 2 * * *", "*/30 * * * *", "0 0 L * *",
                             "15 9 1,15 * *", "0 12 * * 0#2"]),
       zone=st.sampled_from(["UTC", "Europe/Amsterdam", "America/New_York",
                             "Australia/Lord_Howe", "Asia/Kolkata"]),
       start=st.floats(1_600_000_000, 2_000_000_000))
def test_cron_fire_times_always_move_forward(cron, zone, start):
    schedule = Declared("c", cron=cron, time_zone=zone)
    fires = upcoming(schedule, next_after(schedule, start), 4)
    assert start < fires[0] and fires == sorted(set(fires))
    assert following(schedule, fires[0], fires[2]) == fires[3]  # late: skips to after now


def test_schedules_are_checked_when_saved_with_their_paths():
    document = {"id": "r", "start_at": "a", "states": {"a": {"return": 1}}, "schedules": [
        {"id": "a", "cron": "0 25 * * *"},
        {"id": "a", "every": 10, "time_zone": "Mars/Olympus", "input": [1]},
        {"id": "b", "cron": "0 1 * * *", "every": 3600, "start": "x"}]}
    problems = {p.path: p.message for p in check(document).errors}
    assert problems["schedules[0].cron"] == "'cron' '0 25 * * *': Bad hour"
    assert problems["schedules[1].id"] == "duplicate schedule id 'a'"
    assert problems["schedules[1].every"] == "'every' must be at least 60 seconds, not 10"
    assert problems["schedules[1].time_zone"] == "unknown time zone 'Mars/Olympus'"
    assert problems["schedules[1].input"].startswith("'input' must be an object")
    assert problems["schedules[2]"] == "a schedule needs exactly one of 'cron' or 'every'"
    assert problems["schedules[2].start"] == "unknown key 'start'"
    assert check({**document, "schedules": {"id": "x"}}).errors[0].message == \
        "'schedules' must be a list, not an object"


def test_every_takes_a_duration_text_like_timers_do():
    document = {"id": "r", "start_at": "a", "states": {"a": {"return": 1}}, "schedules": [
        {"id": "a", "every": "PT1H"}, {"id": "b", "every": "90m"}, {"id": "c", "every": "30s"},
        {"id": "d", "every": "P1M"}]}
    problems = {p.path: p.message for p in check(document).errors}
    assert set(problems) == {"schedules[2].every", "schedules[3].every"}
    assert problems["schedules[2].every"] == "'every' must be at least 60 seconds, not '30s'"
    assert "years and months have no fixed length" in problems["schedules[3].every"]
    document["schedules"] = document["schedules"][:2]
    machine = build(document)
    assert [s.every for s in machine.schedules] == [3600, 5400]


# Saving reconciles the rows -------------------------------------------------------------------
@pytest.mark.django_db
def test_saving_creates_keeps_changes_and_removes_schedule_rows(save_machine):
    before = time.time()
    save_machine(REPORT)
    rows = {row.name: row for row in Schedule.objects.filter(machine_id="daily-report")}
    assert set(rows) == {"weekday-morning", "hourly"}
    assert before + 3600 <= rows["hourly"].next_fire_at <= time.time() + 3600
    morning = datetime.fromtimestamp(rows["weekday-morning"].next_fire_at, AMSTERDAM)
    assert (morning.hour, morning.minute) == (7, 0) and morning.weekday() < 5
    assert rows["weekday-morning"].input == {"report": "sales"}

    # a new version: same timing keeps the fire time, new timing restarts, gone is removed
    save_machine(REPORT.replace("input: {report: sales}", "input: {report: stock}")
                 .replace("every: 3600", "every: 7200"))
    again = {row.name: row for row in Schedule.objects.filter(machine_id="daily-report")}
    assert again["weekday-morning"].next_fire_at == rows["weekday-morning"].next_fire_at
    assert again["weekday-morning"].input == {"report": "stock"}
    assert again["weekday-morning"].version == 2
    assert again["hourly"].timing["every"] == 7200
    assert again["hourly"].next_fire_at >= before + 7200
    save_machine(REPORT.replace("  - {id: hourly, every: 3600}\n", ""))
    assert list(Schedule.objects.values_list("name", flat=True)) == ["weekday-morning"]


@pytest.mark.django_db
def test_the_version_diff_lists_schedules_added_changed_and_removed(client, make_user,
                                                                    save_machine):
    save_machine(REPORT)
    save_machine(REPORT.replace("every: 3600}", "every: 7200}").replace(
        "  - {id: hourly", "  - {id: nightly, cron: '0 2 * * *'}\n  - {id: hourly").replace(
        "  - {id: weekday-morning, cron: \"0 7 * * 1-5\", time_zone: Europe/Amsterdam,\n"
        "     input: {report: sales}}\n", ""))
    diff = definition_diff(build(parse_text(REPORT)[0]),
                           MachineVersion.objects.get(machine_id="daily-report", version=2)
                           .parsed())
    assert diff.schedules == {"added": ["nightly"], "removed": ["weekday-morning"],
                              "changed": ["hourly"]}
    client.force_login(make_user("vera", "viewer"))
    page = client.get("/machines/daily-report/?compare=1..2").content.decode()
    assert "Schedules removed" in page and "<code>weekday-morning</code>" in page


# Firing --------------------------------------------------------------------------------------
def make_due(name: str, due: float) -> None:
    Schedule.objects.filter(name=name).update(next_fire_at=due)


@pytest.mark.django_db
def test_a_due_schedule_starts_one_execution_and_moves_on(save_machine):
    save_machine(REPORT)
    due = time.time() - 10
    make_due("weekday-morning", due)
    assert firing.fire_due_schedules(now=due + 10) == 1
    started = Execution.objects.get(machine_id="daily-report")
    assert started.input == {"report": "sales"} and started.actor == "schedule:weekday-morning"
    assert started.idempotency_key == firing.fire_key("weekday-morning", due)
    said = timeline.sentence({"seq": 1, "kind": engine.STARTED, "at": due,
                              "actor": started.actor, "input": started.input},
                             build(parse_text(REPORT)[0]))
    assert strip_tags(str(said.html)) == "Started by the schedule weekday-morning in compiling"
    row = Schedule.objects.get(name="weekday-morning")
    assert row.last_fired_at == due and row.next_fire_at > due + 10
    assert firing.fire_due_schedules(now=due + 10) == 0  # nothing due any more
    assert Execution.objects.count() == 1


@pytest.mark.django_db
def test_a_crash_between_the_start_and_the_claim_starts_nothing_twice(save_machine):
    save_machine(REPORT)
    due = time.time() - 5
    make_due("hourly", due)
    firing.fire_due_schedules(now=due + 5)
    make_due("hourly", due)  # as if the loop died before moving next_fire_at on
    assert firing.fire_due_schedules(now=due + 6) == 1  # claimed now, by the second run
    assert Execution.objects.filter(machine_id="daily-report").count() == 1


@pytest.mark.django_db
def test_missed_fires_after_a_long_downtime_start_one_execution(save_machine):
    save_machine(REPORT)
    now = time.time()
    make_due("hourly", now - 3 * 86400)  # three days of hourly fires missed
    assert firing.fire_due_schedules(now=now) == 1
    assert Execution.objects.count() == 1
    row = Schedule.objects.get(name="hourly")
    assert now < row.next_fire_at <= now + 3600


@pytest.mark.django_db
def test_a_schedule_that_cannot_start_does_not_hold_up_the_others(save_machine, caplog):
    save_machine(REPORT)
    ghost = Machine.objects.create(id="ghost")  # a machine row without a version to start
    now = time.time()
    Schedule.objects.create(machine=ghost, name="haunt", version=1, timing={"every": 3600},
                            input={}, next_fire_at=now - 20)
    make_due("hourly", now - 10)
    assert firing.fire_due_schedules(now=now) == 2
    assert list(Execution.objects.values_list("actor", flat=True)) == ["schedule:hourly"]
    assert Schedule.objects.get(name="haunt").next_fire_at > now  # it moved on, logged
    assert "schedule haunt of ghost could not start an execution" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_two_timer_loops_at_once_start_each_fire_once(save_machine):
    save_machine(REPORT)
    for index in range(8):  # eight machines, each with a due schedule
        save_machine(REPORT.replace("id: daily-report", f"id: report-{index}"))
    Schedule.objects.update(next_fire_at=time.time() - 1)
    env = {**os.environ, "DATABASE_URL": subprocess_database_url(),
           "DM_Q_CLUSTER_NAME": os.environ.get("DM_Q_CLUSTER_NAME", "test")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    loops = [subprocess.Popen([sys.executable, "manage.py", "run_timers", "--once"], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(2)]
    outputs = [loop.communicate(timeout=120)[0].decode() for loop in loops]
    assert all(loop.returncode == 0 for loop in loops), outputs
    per_machine = {}
    for execution in Execution.objects.all():
        per_machine[execution.machine_id] = per_machine.get(execution.machine_id, 0) + 1
    assert len(per_machine) == 9 and set(per_machine.values()) == {2}  # both schedules, once
    claimed = sum(int(text.split(" and ")[1].split()[0]) for text in outputs)
    assert claimed == 18  # every fire claimed by exactly one of the two loops


@pytest.mark.cluster
def test_the_cluster_runs_scheduled_executions_and_a_restart_does_not_repeat_them(
        cluster, save_machine):
    save_machine(REPORT)
    due = time.time()
    make_due("weekday-morning", due)
    execution = wait_until(lambda: Execution.objects.filter(
        machine_id="daily-report", status=engine.FINISHED).first(), 30,
        "the schedule never started an execution")
    assert execution.result == "sales"
    cluster.stop()
    cluster.start()
    wait_until(lambda: Schedule.objects.get(name="weekday-morning").last_fired_at == due, 10,
               "the fire was not recorded")
    time.sleep(1)  # a loop that would fire it again has had a round
    assert Execution.objects.filter(machine_id="daily-report").count() == 1


def test_the_diagram_says_on_its_start_arrow_when_schedules_start_executions():
    machine = build(parse_text(REPORT)[0])
    start_arrow = next(line for line in diagrams.to_dot(machine).splitlines()
                       if "edge-start" in line)
    assert "At 07:00 on Monday through Friday (Europe/Amsterdam)" in start_arrow
    assert "every 60 min" in start_arrow
    assert "Started on schedules: weekday-morning (At 07:00 on Monday through Friday " \
           "(Europe/Amsterdam)); hourly (every 60 min)." in diagrams.describe(machine)


# Where next runs show ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_api_and_the_machine_page_show_the_next_runs(api, client, make_user, save_machine):
    save_machine(REPORT)
    body = api("viewer").get("/api/machines/daily-report/").json()
    schedules = {s["id"]: s for s in body["schedules"]}
    morning = schedules["weekday-morning"]
    assert morning["cron"] == "0 7 * * 1-5" and morning["time_zone"] == "Europe/Amsterdam"
    assert morning["input"] == {"report": "sales"} and morning["last_fired_at"] is None
    runs = [datetime.fromisoformat(t).astimezone(AMSTERDAM) for t in morning["next_runs"]]
    assert len(runs) == 3 and runs == sorted(runs)
    assert all((r.hour, r.minute) == (7, 0) and r.weekday() < 5 for r in runs)
    assert morning["in_words"] == "At 07:00 on Monday through Friday"
    assert schedules["hourly"]["every"] == 3600 and schedules["hourly"]["in_words"] is None
    client.force_login(make_user("vera", "viewer"))
    page = client.get("/machines/daily-report/").content.decode()
    assert "Schedules" in page
    assert ("At 07:00 on Monday through Friday <span class=\"muted\">(<code>0 7 * * 1-5</code>, "
            "Europe/Amsterdam)</span>") in page
    assert page.count("<li><time") >= 6  # three next runs per schedule
    assert "<code>{&quot;report&quot;: &quot;sales&quot;}</code>" in page  # the input as JSON

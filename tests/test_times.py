"""Times in the explorer: always a date, a time and a zone, with how far from now, in the
reader's zone (their choice, else their browser's, else UTC said plainly)."""
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from executions import services
from explorer.templatetags.times import when_html
from machines.words import moment, moment_and_relative, relative

SLEEPER = """
id: sleeper
execution_mode: sync
start_at: napping
states:
  napping:
    actions:
      - {id: wake, label: wake up, wait: {seconds: 2592000}, state: awake}
      - {id: poke, on: poke, state: awake}
  awake: {return: 1}
"""

NOW = datetime(2026, 12, 1, 4, 41, tzinfo=UTC)


@pytest.mark.parametrize(("zone", "expected"), [
    ("UTC", "Dec 31, 02:01 UTC · in 29 days"),
    ("Europe/Paris", "Dec 31, 03:01 CET · in 29 days"),
    ("America/New_York", "Dec 30, 21:01 EST · in 29 days"),
    ("Asia/Dubai", "Dec 31, 06:01 UTC+04 · in 29 days"),
])
def test_a_moment_has_its_date_zone_and_distance(zone, expected):
    due = datetime(2026, 12, 31, 2, 1, 23, tzinfo=UTC)
    assert moment_and_relative(due, ZoneInfo(zone), now=NOW) == expected


def test_other_years_say_the_year_and_seconds_when_asked():
    assert moment(datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC), UTC, now=NOW,
                  seconds=True) == "Jan 2, 2027, 03:04:05 UTC"
    assert [relative(s) for s in (-90 * 60, 0.2, 45, 3 * 86400)] == [
        "in 1 h 30 min", "just now", "45 s ago", "3 days ago"]


def test_when_html_is_a_time_element_in_the_active_zone_with_a_ticking_distance():
    at = NOW + timedelta(days=29, hours=21)
    with timezone.override(ZoneInfo("Europe/Paris")):
        text = str(when_html(at, countdown=True, now=NOW))
    assert f'datetime="{at.isoformat()}"' in text and ">Dec 31, 02:41 CET</time>" in text
    assert 'data-countdown' in text and ">in 29 days<" in text
    assert "out of range" in str(when_html(1e20)) and str(when_html(None)) == "?"


@pytest.fixture
def sleeping(save_machine):
    save_machine(SLEEPER)
    return services.start("sleeper", actor="alice").execution


def _visible_times(page: str) -> list[str]:
    """Every hh:mm in the page's text (tags, scripts and attributes removed)."""
    text = re.sub(r"<script.*?</script>|<[^>]+>", " ", page, flags=re.S)
    return re.findall(r"[^\n]{0,24}\b\d\d:\d\d(?::\d\d)?\b[^\n]{0,8}", text)


@pytest.mark.django_db
def test_every_time_on_the_execution_page_has_its_date_and_zone(client, make_user, sleeping):
    client.force_login(make_user("victor", "viewer"))
    page = client.get(sleeping.get_absolute_url()).content.decode()
    times = _visible_times(page)
    assert times, "the page shows times"
    day = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{1,2}(, \d{4})?, "
    for found in times:
        assert re.search(day + r"\d\d:\d\d(:\d\d)? (UTC|[A-Z]{2,5})\b", found), found
    assert "Sleeping in" in page and re.search(r">in (29|30) days<", page)
    assert "data-countdown" in page


@pytest.mark.django_db
def test_the_browser_zone_then_the_chosen_zone(client, make_user, sleeping):
    client.force_login(make_user("victor", "viewer"))
    url = sleeping.get_absolute_url()
    assert " UTC" in client.get(url).content.decode()  # no cookie: UTC, said
    client.cookies["dm_tz"] = "Asia/Tokyo"
    page = client.get(url).content.decode()
    assert " JST" in page and "Asia/Tokyo" in page  # the header says which zone
    client.cookies["dm_tz"] = "Not/AZone<script>"
    page = client.get(url).content.decode()
    assert " JST" not in page and "Not/AZone" not in page  # an unknown zone is ignored
    response = client.post("/time-zone/", {"zone": "America/New_York", "next": url})
    assert response.status_code == 302 and response["Location"] == url
    assert " EST" in client.get(url).content.decode()  # the choice wins over the browser
    client.post("/time-zone/", {"zone": "browser"})
    client.cookies["dm_tz"] = "Asia/Tokyo"
    assert " JST" in client.get(url).content.decode()


@pytest.mark.django_db
def test_the_time_zone_page_refuses_bad_input_and_foreign_redirects(client, make_user):
    assert client.get("/time-zone/").status_code == 302  # anonymous: the login page
    client.force_login(make_user("nobody", "none"))
    assert client.get("/time-zone/").status_code == 403  # no role
    client.force_login(make_user("victor", "viewer"))
    page = client.get("/time-zone/?next=/executions/")
    assert page.status_code == 200 and b'value="Europe/Paris"' in page.content
    bad = client.post("/time-zone/", {"zone": "Mars/Olympus"})
    assert bad.status_code == 400 and b"Choose a time zone" in bad.content
    assert client.post("/time-zone/", {"zone": "x" * 5000}).status_code == 400
    away = client.post("/time-zone/", {"zone": "UTC", "next": "https://evil.example/"})
    assert away.status_code == 302 and away["Location"] == "/"
    assert client.put("/time-zone/").status_code == 405

"""Diagrams are bounded (issue 11, item 3): `dot` never runs on a machine over the size cap,
runs with a wall-clock timeout and a memory limit when it runs, and every page and the API
answer "too large to draw" with the text description instead of waiting; outcomes, failures
included, are cached so no page waits on more than one `dot`."""
import random
import subprocess
import threading
import time

import graphviz
import httpx
import pytest
import yaml
from django.test import Client

from machines import diagrams, language
from machines.diagrams import DiagramPath, DiagramUnavailable, edge_id, render_svg
from tests.helpers import assert_error


def chain(states: int, machine_id: str = "big") -> dict:
    """bench/diagrams.py's shape: approve forward, reject back, a timer forward."""
    doc = {"id": machine_id, "title": f"Chain of {states}", "start_at": "s0", "states": {}}
    for i in range(states - 1):
        doc["states"][f"s{i}"] = {"label": f"Review step {i}", "actions": [
            {"id": "approve", "on": "approve", "state": f"s{i + 1}"},
            {"id": "reject", "on": "reject", "state": f"s{max(0, i - 1)}"},
            {"id": "timeout", "wait": {"seconds": 86400}, "state": f"s{i + 1}"},
        ]}
    doc["states"][f"s{states - 1}"] = {"label": "Done", "return": True}
    return doc


def tangled(states: int = 100, machine_id: str = "tangled") -> dict:
    """Small enough for the size cap, slow for dot: three random arrows per state (100
    states take `dot` ~17 s)."""
    pick = random.Random(1)
    doc = {"id": machine_id, "start_at": "s0", "states": {}}
    for i in range(states):
        doc["states"][f"s{i}"] = {"actions": [
            {"id": f"a{j}", "on": f"a{j}", "state": f"s{pick.randrange(states)}"}
            for j in range(3)]}
    doc["states"][f"s{states - 1}"] = {"return": True}
    return doc


def build(doc: dict):
    return language.build(doc)


@pytest.fixture(autouse=True)
def fresh_cache():
    diagrams.clear_cache()
    limits = diagrams.LIMITS
    yield
    diagrams.LIMITS = limits
    diagrams.clear_cache()


class Popens:
    """Counts the processes started through subprocess.Popen (and keeps them)."""

    def __init__(self, monkeypatch):
        self.started: list[subprocess.Popen] = []
        real = subprocess.Popen

        def popen(*args, **kwargs):
            process = real(*args, **kwargs)
            self.started.append(process)
            return process

        monkeypatch.setattr(subprocess, "Popen", popen)

    def __len__(self):
        return len(self.started)


@pytest.fixture
def popens(monkeypatch):
    return Popens(monkeypatch)


# The pure core --------------------------------------------------------------------------
def test_normal_diagrams_are_drawn_as_the_graphviz_package_draws_them():
    machine = build(chain(9))
    path = DiagramPath({"s0": 1, "s1": 1}, {edge_id("s0", "approve"): (1,)}, "s1", "waiting")
    for drawn_with in (None, path):
        source = diagrams.to_dot(machine, drawn_with)
        expected = diagrams._inline(graphviz.Source(source).pipe(format="svg", encoding="utf-8"))
        assert render_svg(machine, drawn_with) == expected


def test_size_cap_is_checked_before_any_dot_starts(popens):
    with pytest.raises(DiagramUnavailable) as raised:
        render_svg(build(chain(400)))
    assert raised.value.reason == diagrams.TOO_LARGE
    assert "400 states" in raised.value.detail and "up to 200" in raised.value.detail
    diagrams.configure(max_edges=20)
    with pytest.raises(DiagramUnavailable, match="transitions and branches"):
        render_svg(build(chain(9)))
    diagrams.configure(max_dot_bytes=2000)
    with pytest.raises(DiagramUnavailable, match="KiB of Graphviz source"):
        render_svg(build(chain(9)))
    with pytest.raises(DiagramUnavailable):  # remembered: not even the DOT is built again
        diagrams.cached_svg(build(chain(9)))
    assert len(popens) == 0


def test_a_dot_past_its_timeout_is_killed_the_page_degrades_and_it_is_remembered(popens):
    diagrams.configure(timeout_seconds=0.5)
    machine = build(tangled())
    began = time.monotonic()
    with pytest.raises(DiagramUnavailable) as raised:
        render_svg(machine)
    assert time.monotonic() - began < 5
    assert raised.value.reason == diagrams.TIMEOUT and "within 0.5 s" in raised.value.detail
    [process] = popens.started
    assert process.returncode == -9  # killed and reaped: no dot left behind
    # Remembered: the same diagram, and any other drawing of the machine (a path), answer
    # at once without a second dot.
    path = DiagramPath({"s0": 1}, {}, "s0", "waiting")
    for again in (lambda: render_svg(machine), lambda: render_svg(machine, path),
                  lambda: diagrams.cached_svg(machine)):
        with pytest.raises(DiagramUnavailable, match="within 0.5 s"):
            again()
    assert len(popens) == 1
    # ...for retry_after_seconds: then dot is tried again.
    diagrams.configure(timeout_seconds=0.5, retry_after_seconds=0)
    diagrams.clear_cache()
    for _ in range(2):
        with pytest.raises(DiagramUnavailable):
            render_svg(machine)
    assert len(popens) == 3


def test_dot_out_of_memory_is_a_failure_not_a_crash(popens):
    diagrams.configure(memory_bytes=40 * 1024 * 1024)
    with pytest.raises(DiagramUnavailable) as raised:
        render_svg(build(chain(200)))
    assert raised.value.reason == diagrams.FAILED, raised.value.detail
    assert "could not draw it" in raised.value.detail
    assert len(popens) == 1


def test_threads_asking_for_a_diagram_being_drawn_wait_for_that_one_dot(popens):
    diagrams.configure(timeout_seconds=1.0)
    machine = build(tangled())
    outcomes = []

    def ask():
        try:
            outcomes.append(render_svg(machine))
        except DiagramUnavailable as exc:
            outcomes.append(exc.reason)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcomes == [diagrams.TIMEOUT] * 4
    assert len(popens) == 1


def test_dots_at_once_are_capped_and_a_request_without_a_slot_is_busy_not_remembered(popens):
    diagrams.configure(timeout_seconds=1.0, max_concurrent=1)
    slow, small = build(tangled()), build(chain(5))
    holder = threading.Thread(target=lambda: pytest.raises(DiagramUnavailable, render_svg, slow))
    holder.start()
    deadline = time.monotonic() + 5
    while not popens.started and time.monotonic() < deadline:
        time.sleep(0.01)
    began = time.monotonic()
    with pytest.raises(diagrams.DiagramBusy) as raised:
        render_svg(small)
    assert raised.value.reason == diagrams.BUSY and time.monotonic() - began < 3
    holder.join(10)
    assert len(popens) == 1  # the busy one never started a dot...
    assert render_svg(small).startswith("<svg ")  # ...and is not remembered as failed
    assert len(popens) == 2


def test_paths_are_cached_by_what_they_show(popens):
    machine = build(chain(9))
    one = DiagramPath({"s0": 1, "s1": 1}, {edge_id("s0", "approve"): (1,)}, "s1", "waiting")
    same = DiagramPath({"s1": 1, "s0": 1}, {edge_id("s0", "approve"): (1,)}, "s1", "waiting")
    later = DiagramPath({"s0": 1, "s1": 1}, {edge_id("s0", "approve"): (1,)}, "s1", "finished")
    assert render_svg(machine, one) is render_svg(machine, same)
    assert render_svg(machine, later) != render_svg(machine, one)
    assert len(popens) == 2


def test_the_cache_holds_a_bounded_number_of_bytes():
    from machines.lru import LRU

    cache = LRU(10, max_weight=100, weigh=len)
    for key in "abcd":
        cache.put(key, "x" * 40)
    assert [k for k in "abcd" if k in cache] == ["c", "d"] and cache.weight == 80
    cache.put("d", "x" * 10)
    cache.forget("c")
    assert cache.weight == 10
    assert diagrams._svgs.max_weight == diagrams.CACHE_BYTES


def test_notice_svg_escapes_what_it_says():
    svg = diagrams.notice_svg('This <script>alert(1)</script> & "that"')
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.startswith("<svg ") and 'xmlns="http://www.w3.org/2000/svg"' in svg


# Pages and API --------------------------------------------------------------------------
@pytest.fixture
def big(api):
    """A 400-state machine saved through the API (two versions, for the diff page), with an
    execution one step along."""
    editor = api("editor")
    for title in ("Chain of 400", "Chain of 400 (renamed)"):
        doc = chain(400) | {"title": title}
        response = editor.post("/api/machines/", {"source": yaml.safe_dump(doc)}, format="json")
        assert response.status_code in (200, 201), response.content[:500]
    operator = api("operator")
    started = operator.post("/api/machines/big/executions/", {}, format="json")
    assert started.status_code == 201, started.content[:500]
    execution_id = started.json()["id"]
    acted = operator.post(f"/api/executions/{execution_id}/actions/",
                          {"action": "approve", "wait": True}, format="json")
    assert acted.status_code == 200, acted.content[:500]
    return execution_id


def test_a_400_state_machine_degrades_on_every_page_and_in_the_api(big, api, make_user, popens):
    client = Client()
    client.force_login(make_user("victor", "viewer"))
    viewer = api("viewer")
    began = time.monotonic()
    pages = {
        "/": "Too large to draw", "/machines/big/": "400 states",
        "/machines/big/?compare=1..2": "400 states", f"/executions/{big}/": "400 states",
    }
    for url, expected in pages.items():
        html = client.get(url).content.decode()
        assert expected in html, url
        assert 'class="dm-svg' not in html, url
        if url != "/":
            assert 'class="diagram-notice"' in html and "Done (final)." in html
            assert '<details class="diagram-text" open>' in html
    thumbnail = client.get("/machines/big/v/2/thumbnail.svg")
    assert thumbnail.status_code == 200 and b"400 states" in thumbnail.content
    assert thumbnail["Content-Type"].startswith("image/svg+xml")
    for url in ("/api/machines/big/versions/2/diagram.svg", f"/api/executions/{big}/diagram.svg"):
        body = assert_error(viewer.get(url), 422, "diagram_too_large")
        assert body["reason"] == "too_large" and "400 states" in body["detail"]
        assert body["description"].startswith("Chain of 400 (renamed): 400 states")
    assert viewer.get("/api/machines/big/versions/2/diagram.dot").status_code == 200
    assert time.monotonic() - began < 10  # generous: no dot ran at all
    assert len(popens) == 0


def test_the_machine_list_runs_no_dot_its_thumbnails_one_each(api, save_machine, make_user,
                                                              popens):
    for n in range(3):
        save_machine(yaml.safe_dump(chain(5 + n, f"small-{n}")))
    client = Client()
    client.force_login(make_user("victor", "viewer"))
    html = client.get("/machines/").content.decode()
    assert html.count('<img src="/machines/small-') == 3 and len(popens) == 0
    image = client.get("/machines/small-0/v/1/thumbnail.svg")
    assert image.status_code == 200 and b"<svg" in image.content and b' id="' not in image.content
    assert len(popens) == 1
    html = client.get("/machines/").content.decode()
    assert html.count('<img src="/machines/small-') == 2 and html.count("<svg") >= 1
    assert len(popens) == 1


def test_execution_page_draws_its_path_once(api, save_machine, make_user, popens):
    save_machine(yaml.safe_dump(chain(6, "small")))
    operator = api("operator")
    execution_id = operator.post("/api/machines/small/executions/", {}, format="json").json()["id"]
    client = Client()
    client.force_login(make_user("victor", "viewer"))
    for _ in range(3):
        html = client.get(f"/executions/{execution_id}/").content.decode()
        assert 'class="node state visited current status-' in html
    assert len(popens) == 1
    operator.post(f"/api/executions/{execution_id}/actions/", {"action": "approve",
                                                               "wait": True}, format="json")
    client.get(f"/executions/{execution_id}/")
    assert len(popens) == 2  # a new step, a new path: drawn again


def test_admin_preview_of_a_large_machine_is_a_notice(admin_user, client, popens):
    client.force_login(admin_user)
    response = client.post("/admin/machines/machine/preview/",
                           {"source": yaml.safe_dump(chain(400, "draft"))})
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert body["valid"] and "Too large to draw" in body["svg"] and "400 states" in body["svg"]
    assert len(popens) == 0


@pytest.mark.django_db(transaction=True)
def test_a_slow_diagram_holds_only_its_own_request(live_server, save_machine, make_user, popens):
    """A machine under the size cap that dot cannot draw in time: its page answers the
    notice after the timeout, another request is answered meanwhile, and the next view of
    the page does not run dot again."""
    diagrams.configure(timeout_seconds=2.0)
    save_machine(yaml.safe_dump(tangled()))
    save_machine(yaml.safe_dump(chain(5, "small")))
    from rest_framework.authtoken.models import Token

    key = Token.objects.create(user=make_user("vera", "viewer")).key
    client = Client()
    client.force_login(make_user("victor", "viewer"))
    cookies = {"sessionid": client.cookies["sessionid"].value}
    slow: dict = {}

    def fetch_slow():
        began = time.monotonic()
        response = httpx.get(f"{live_server.url}/machines/tangled/", cookies=cookies,
                             timeout=30)
        slow.update(status=response.status_code, text=response.text,
                    seconds=time.monotonic() - began)

    thread = threading.Thread(target=fetch_slow)
    thread.start()
    deadline = time.monotonic() + 10
    while not popens.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert popens.started, "the slow page never started dot"
    other = httpx.get(f"{live_server.url}/api/machines/small/versions/1/",
                      headers={"Authorization": f"Token {key}"}, timeout=10)
    assert other.status_code == 200 and not slow  # answered while dot still runs
    thread.join(30)
    assert slow["status"] == 200 and "within 2 s" in slow["text"], slow.get("text", "")[:300]
    assert slow["seconds"] < 10
    began = time.monotonic()
    again = httpx.get(f"{live_server.url}/machines/tangled/", cookies=cookies, timeout=30)
    assert "within 2 s" in again.text and time.monotonic() - began < 2
    assert len([p for p in popens.started if p.args[0] == "dot"]) == 1
    assert all(p.returncode is not None for p in popens.started)

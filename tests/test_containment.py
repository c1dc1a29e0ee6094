"""User code cannot stall, crash or exhaust the service (issue 11): each class of attack,
end to end through the HTTP API of a live server, fails its execution with a clear error
(kind timeout / resource / crashed, and the expression's path) while other requests made
meanwhile are answered, and the service works afterwards.

The expressions run in the evaluation pool's children (executions/runtime/pool.py); the
web process only waits for them, outside any transaction."""
import threading
import time

import httpx
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from executions.runtime import pool

ATTACKS = {
    # the sandbox's stop signal swallowed by `finally: continue`
    "finally-continue": ("""n = 0
while True:
    try:
        while True:
            n += 1
    finally:
        continue""", {"timeout"}),
    # a plain runaway loop: the sandbox's own clock stops it
    "while-true": ("""n = 0
while True:
    n += 1""", {"timeout"}),
    # hashing a deep tuple recurses in C past the stack: a segfault
    "deep-hash": ("""t = ()
for i in range(300000):
    t = (t,)
d = {'k': t}
len({}.fromkeys(d.values()))""", {"crashed"}),
    # copies the sandbox's allocation budget does not see (set '|')
    "hidden-allocation": ("""a = {*range(600000)}
l = []
for i in range(200):
    l.append(a | {-i})
len(l)""", {"resource"}),
    # one C call the clock cannot interrupt: a hash flood in dict.fromkeys
    "hash-flood": ("""l = [i * 2305843009213693951 for i in range(30000)]
len({}.fromkeys(l))""", {"timeout"}),
    # pure-Python codec code the sandbox does not tick in: quadratic punycode
    "punycode": ("""s = ''.join(['%c' % (256 + i) for i in range(5000)]) * 40
len(s.encode('punycode'))""", {"timeout"}),
}

QUICK = """
id: quick
execution_mode: sync
start_at: open
states:
  open:
    actions:
      - {id: bump, on: bump, assign: {n: "ctx['n'] + 1"}}
context: {n: 0}
"""


def attack_machine(name: str, source: str) -> str:
    indented = "\n".join("            " + line for line in source.splitlines())
    return f"""
id: attack-{name}
execution_mode: sync
start_at: ready
context: {{x: 0}}
states:
  ready:
    actions:
      - {{id: go, on: go, state: attacking}}
  attacking:
    actions:
      # Automatic: its failure fails the execution (an action's own would only reject it).
      - id: run
        state: done
        assign:
          x: |
{indented}
  done: {{return: "ctx['x']"}}
"""


@pytest.fixture
def http(live_server, transactional_db, settings):
    # 2 s: building the deep tuple must finish within the limit on a busy machine
    settings.DATA_MACHINES = {**settings.DATA_MACHINES, "EXPRESSION_TIME_LIMIT": 2.0,
                              "POOL_MEMORY_MB": 256}
    pool.shutdown()  # children started with these settings
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123-pw")
    token = Token.objects.create(user=user)
    with httpx.Client(base_url=live_server.url, timeout=60,
                      headers={"Authorization": f"Token {token.key}"}) as client:
        yield client
    pool.shutdown()


def _post(client, url, body):
    response = client.post(url, json=body)
    assert response.status_code < 300, response.text[:2000]
    return response.json()


@pytest.mark.parametrize("name", list(ATTACKS))
def test_an_attack_fails_its_execution_and_nothing_else(http, name):
    source, kinds = ATTACKS[name]
    _post(http, "/api/machines/", {"source": attack_machine(name, source)})
    _post(http, "/api/machines/", {"source": QUICK})
    victim = _post(http, f"/api/machines/attack-{name}/executions/", {"input": {}})
    bystander = _post(http, "/api/machines/quick/executions/", {"input": {}})
    assert victim["status"] == "waiting"

    attacked: dict = {}

    def attack():
        began = time.monotonic()
        with httpx.Client(base_url=str(http.base_url), headers=dict(http.headers),
                          timeout=60) as client:
            attacked["response"] = client.post(
                f"/api/executions/{victim['id']}/actions/", json={"action": "go", "input": {}})
        attacked["seconds"] = time.monotonic() - began

    thread = threading.Thread(target=attack)
    thread.start()
    time.sleep(0.3)  # the attack is running in a child of the pool by now
    served = []
    while thread.is_alive() and len(served) < 5:  # other requests are answered meanwhile
        began = time.monotonic()
        bumped = _post(http, f"/api/executions/{bystander['id']}/actions/",
                       {"action": "bump", "input": {}})
        served.append(time.monotonic() - began)
        assert bumped["context"]["n"] == len(served)
        assert http.get(f"/api/executions/{bystander['id']}/").status_code == 200
    thread.join(30)
    assert not thread.is_alive()
    assert attacked["seconds"] < 15
    assert max(served, default=0) < 5

    execution = http.get(f"/api/executions/{victim['id']}/").json()
    assert execution["status"] == "failed", execution
    error = execution["error"]
    assert error["type"] == "expression_error"
    assert error["kind"] in kinds, error
    assert error["path"] == "states.attacking.actions[0].assign.x"
    assert error["state"] == "attacking"
    history = http.get(f"/api/executions/{victim['id']}/history/").json()
    entries = history["results"] if isinstance(history, dict) else history
    assert entries[-1]["kind"] == "execution_failed"

    # the service still works: a new execution of the same machine starts, bump goes on
    again = _post(http, f"/api/machines/attack-{name}/executions/", {"input": {}})
    assert again["status"] == "waiting"
    bumped = _post(http, f"/api/executions/{bystander['id']}/actions/",
                   {"action": "bump", "input": {}})
    assert bumped["context"]["n"] == len(served) + 1

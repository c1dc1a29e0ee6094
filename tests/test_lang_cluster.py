"""End to end with real worker processes (qcluster + the timer loop, as bin/serve runs
them): examples/card-payment.yaml against a fake payment service provider on 127.0.0.1.
Errors by type (a decline is never retried, an outage is), and the 3-D Secure challenge's
two timers (a reminder that sends something, a deadline the reminders do not restart).
The example's durations are shortened (minutes to seconds) so the test runs in seconds."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from executions import engine, services
from executions.models import Execution, HistoryEntry
from tests.helpers import ROOT, wait_until

pytestmark = [pytest.mark.cluster]

DEADLINE_SECONDS = 6
REMINDER_SECONDS = 2


class Psp(BaseHTTPRequestHandler):
    """POST /psp/charges answers by card token: tok_ok 200, tok_declined 402, tok_flaky 503
    then 200, tok_down always 503, tok_3ds 200 with a challenge. /psp/reminders: 200."""

    calls: dict = {}
    lock = threading.Lock()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or "{}")
        card = body.get("card") or body.get("payment")
        with self.lock:
            key = (self.path, card)
            count = self.calls[key] = self.calls.get(key, 0) + 1
        status, answer = 200, {"id": f"ch_{card}"}
        if self.path == "/psp/charges":
            if card == "tok_declined":
                status, answer = 402, {"reason": "insufficient funds"}
            elif card == "tok_down" or (card == "tok_flaky" and count == 1):
                status, answer = 503, {"error": "busy"}
            elif card.startswith("tok_3ds"):
                answer["challenge_url"] = "http://bank.example/3ds"
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def psp():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Psp)
    Psp.calls = {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/psp"
    server.shutdown()
    server.server_close()


def quick_card_payment() -> str:
    """The example as it is, with its minutes made seconds."""
    text = (ROOT / "examples" / "card-payment.yaml").read_text()
    for written, quick in (("after: PT5M", f"after: {REMINDER_SECONDS}s"),
                           ("after: PT15M", f"after: PT{DEADLINE_SECONDS}S"),
                           ("delay_seconds: 2s", "delay_seconds: 0.2s"),
                           ("max_delay_seconds: 10s", "max_delay_seconds: 0.5s")):
        assert written in text
        text = text.replace(written, quick)
    return text


def pay(card, psp_url):
    return services.start("card-payment", input={"amount": 12.5, "card": card,
                                                 "psp_url": psp_url}, actor="test").execution


def settled(execution_id, timeout=30):
    def done():
        execution = Execution.objects.get(pk=execution_id)
        return execution if execution.status in (engine.FINISHED, engine.FAILED) else None

    return wait_until(done, timeout, lambda: f"{execution_id} did not finish: "
                      f"{Execution.objects.get(pk=execution_id).status}")


def rows(execution, kind, transition=None):
    found = HistoryEntry.objects.filter(execution=execution, kind=kind)
    if transition:
        found = found.filter(transition=transition)
    return list(found.order_by("seq"))


def test_card_payments_retry_by_error_type_and_3ds_timers_keep_their_deadline(
        cluster, save_machine, psp):
    save_machine(quick_card_payment())
    ok, declined, flaky, down = (pay(card, psp) for card in (
        "tok_ok", "tok_declined", "tok_flaky", "tok_down"))
    expired, confirmed = pay("tok_3ds_a", psp), pay("tok_3ds_b", psp)

    assert settled(ok.pk).result == {"paid": True, "amount": 12.5, "charge": "ch_tok_ok"}
    declined = settled(declined.pk)
    assert declined.result == {"paid": False, "reason": "insufficient funds"}
    assert Psp.calls[("/psp/charges", "tok_declined")] == 1  # non_retryable: never again
    failed = rows(declined, engine.WORK_FAILED)[0]
    assert failed.error["type"] == "card_declined" and failed.error["raised"] is True
    assert settled(flaky.pk).result["paid"] is True
    assert Psp.calls[("/psp/charges", "tok_flaky")] == 2
    down = settled(down.pk)
    assert down.result == {"paid": False, "reason": "the PSP answered 503", "retry_later": True}
    assert Psp.calls[("/psp/charges", "tok_down")] == 4  # max_attempts
    waits = [r.detail["due"] - r.at.timestamp() for r in rows(down, engine.WORK_RETRY_SCHEDULED)]
    assert len(waits) == 3 and all(0 < wait <= 0.5 + 0.01 for wait in waits)  # max delay

    # the second challenge is confirmed after its first reminder
    wait_until(lambda: Execution.objects.get(pk=confirmed.pk).context.get("reminders"), 20,
               "no reminder was sent")
    services.trigger(confirmed.pk, "confirmed", input={}, actor="test", wait=True)
    confirmed = settled(confirmed.pk)
    assert confirmed.result["paid"] is True
    [deadline] = rows(confirmed, engine.TIMER_CANCELED, "expire")
    assert deadline.detail["purpose"] == "after"

    # the first one expires: reminders went out, and none restarted the deadline
    expired = settled(expired.pk, timeout=DEADLINE_SECONDS + 20)
    assert (expired.state, expired.result["paid"]) == ("expired", False)
    reminders = expired.result["reminders"]
    assert reminders >= 1 and Psp.calls[("/psp/reminders", str(expired.pk))] >= reminders
    [armed] = rows(expired, engine.TIMER_ARMED, "expire")  # armed once, never re-armed
    [fired] = rows(expired, engine.TIMER_FIRED, "expire")
    assert armed.detail["due"] - armed.at.timestamp() == pytest.approx(DEADLINE_SECONDS)
    assert fired.at.timestamp() >= armed.detail["due"]
    reminders_armed = rows(expired, engine.TIMER_ARMED, "remind")
    assert len(reminders_armed) == len(rows(expired, engine.TIMER_FIRED, "remind")) + 1
    assert rows(expired, engine.TIMER_CANCELED, "remind")  # the last one, on leaving


def test_state_timers_survive_a_crash_of_every_worker_and_fire_once(cluster, save_machine, psp):
    """SIGKILL the whole cluster while a challenge waits with its two timers armed; after
    the restart the deadline fires once, at its time, and nothing fires twice."""
    import signal

    save_machine(quick_card_payment())
    waiting = pay("tok_3ds_crash", psp)
    wait_until(lambda: Execution.objects.get(pk=waiting.pk).state == "challenge", 20,
               "the payment never reached its challenge")
    cluster.stop(signal.SIGKILL)
    cluster.start()
    expired = settled(waiting.pk, timeout=DEADLINE_SECONDS + 30)
    assert expired.state == "expired"
    [armed] = rows(expired, engine.TIMER_ARMED, "expire")
    assert len(rows(expired, engine.TIMER_FIRED, "expire")) == 1
    fired_reminders = rows(expired, engine.TIMER_FIRED, "remind")
    tokens = [row.detail["token"] for row in fired_reminders]
    assert len(tokens) == len(set(tokens))  # no reminder fired twice
    assert expired.result["reminders"] == len(fired_reminders) or (
        expired.result["reminders"] == len(fired_reminders) - 1)  # the last one may be cut

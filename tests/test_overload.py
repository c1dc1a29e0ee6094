"""Past capacity a web process answers 503 with Retry-After at once (workflow_site.overload),
and answers normally again once a slot is free."""
import json
import threading

from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from workflow_site.overload import ConcurrencyLimitMiddleware

LIMITED = {"WEB_OVERLOAD": {"MAX_CONCURRENT": 1, "QUEUE_SECONDS": 0.05,
                            "RETRY_AFTER_SECONDS": 2}}


def limited(view):
    with override_settings(DATA_MACHINES=LIMITED):
        return ConcurrencyLimitMiddleware(view)


def test_a_request_past_the_slots_gets_503_with_retry_after():
    inside, release = threading.Event(), threading.Event()

    def slow(request):
        if request.path.startswith("/api/"):
            inside.set()
            release.wait(5)
        return HttpResponse("done")

    middleware = limited(slow)
    factory = RequestFactory()
    answers = []
    holder = threading.Thread(
        target=lambda: answers.append(middleware(factory.post("/api/executions/x/actions/"))))
    holder.start()
    assert inside.wait(5)
    try:
        busy = middleware(factory.post("/api/executions/x/actions/"))
        page = middleware(factory.get("/executions/"))
    finally:
        release.set()
        holder.join(5)
    assert busy.status_code == 503 and busy["Retry-After"] == "2"
    assert busy["Content-Type"] == "application/json"
    assert json.loads(busy.content)["type"] == "overloaded"
    assert page.status_code == 200  # a person's page is not limited: it waits its turn
    assert answers[0].status_code == 200
    # The slot is free again: the next request is served.
    assert middleware(factory.post("/api/executions/x/actions/")).status_code == 200


def test_the_slot_is_released_when_the_view_raises():
    def broken(request):
        raise RuntimeError("boom")

    middleware = limited(broken)
    factory = RequestFactory()
    for _ in range(3):
        try:
            middleware(factory.get("/api/executions/"))
        except RuntimeError:
            pass
    assert middleware.slots.acquire(timeout=0)


def test_no_limit_when_zero():
    with override_settings(DATA_MACHINES={"WEB_OVERLOAD": {"MAX_CONCURRENT": 0}}):
        middleware = ConcurrencyLimitMiddleware(lambda request: HttpResponse("ok"))
    assert middleware.slots is None
    assert middleware(RequestFactory().get("/")).status_code == 200

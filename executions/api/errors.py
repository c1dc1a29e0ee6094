"""The service functions' refusals in the API's one error shape (api.errors registry):
NotAvailable -> 409 with `available_actions`, InvalidRequest -> 400."""
from api import errors
from api.errors import problem
from executions import runner


def not_available(exc: runner.NotAvailable):
    hint = ("available now: " + ", ".join(exc.available_actions)
            if exc.available_actions else "no action is available now")
    return (exc.reason, [problem("action", exc.reason, hint)],
            {"available_actions": exc.available_actions})


def register() -> None:
    errors.register(runner.NotAvailable, 409, "not_available", describe=not_available)
    errors.register(runner.InvalidRequest, 400, "invalid_request")

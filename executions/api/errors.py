"""The service functions' refusals in the API's one error shape (api.registry):
NotAvailable -> 409 with `available_actions`, InvalidRequest -> 400."""
from api import registry as errors
from api.registry import problem
from executions import services


def not_available(exc: services.NotAvailable):
    hint = ("available now: " + ", ".join(exc.available_actions)
            if exc.available_actions else "no action is available now")
    return (exc.reason, [problem("action", exc.reason, hint)],
            {"available_actions": exc.available_actions})


def invalid_request(exc: services.InvalidRequest):
    """Where in the body the value was wrong: `input.items[1]`, `action`, ...; every
    mismatch of an input with its schema."""
    return str(exc), [problem(path, message) for path, message in exc.problems if path], {}


def register() -> None:
    errors.register(services.NotAvailable, 409, "not_available", describe=not_available)
    errors.register(services.InvalidRequest, 400, "invalid_request", describe=invalid_request)

"""The service functions' refusals in the API's one error shape (api.registry):
NotAvailable -> 409 with `available_actions`, InvalidRequest -> 400."""
from api import registry as errors
from api.registry import problem
from executions import selectors, services


def not_available(exc: services.NotAvailable):
    hint = ("available now: " + ", ".join(exc.available_actions)
            if exc.available_actions else "no action is available now")
    return (exc.reason, [problem("action", exc.reason, hint)],
            {"available_actions": exc.available_actions})


def invalid_request(exc: services.InvalidRequest):
    """Where in the body the value was wrong: `input.items[1]`, `action`, ...; every
    mismatch of an input with its schema."""
    return str(exc), [problem(path, message) for path, message in exc.problems if path], {}


def ambiguous_id(exc: selectors.AmbiguousId):
    """The executions a short id could mean, to choose from."""
    candidates = [{"id": str(found.pk), "machine": found.machine_id, "status": found.status,
                   "state": found.state, "created_at": found.created_at.isoformat()}
                  for found in exc.candidates]
    return str(exc), [problem("id", f"{found['id']} ({found['machine']}, {found['status']})")
                      for found in candidates], {"candidates": candidates}


def register() -> None:
    errors.register(selectors.AmbiguousId, 400, "ambiguous_id", describe=ambiguous_id)
    errors.register(services.NotAvailable, 409, "not_available", describe=not_available)
    errors.register(services.InvalidRequest, 400, "invalid_request", describe=invalid_request)

"""The service functions every surface calls (API, explorer, admin, commands):
`start`, `trigger`, `cancel`, `retry`.

Each checks what the caller sent once (expressions.values: JSON objects, finite numbers,
integers within a JSON number's range, text a database can store, at most
DATA_MACHINES["MAX_INPUT_CHARS"] characters of JSON) and raises InvalidRequest with where
the problem is; then the runtime accepts it (executions/runtime/accepting.py,
docs/runtime.md). A refused action or cancel or retry raises NotAvailable with the reason
and the actions available now.
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from executions.runtime import accepting
from executions.runtime.accepting import NotAvailable, Outcome
from executions.runtime.store import limits
from expressions.values import InvalidValue, check_input, check_text, check_value

__all__ = ["InvalidRequest", "NotAvailable", "Outcome", "cancel", "retry", "start", "trigger"]


class InvalidRequest(InvalidValue):
    """The request itself is wrong (e.g. input that is not a JSON object); `path` says where
    in it, `problems` every (path, message) when there are several (an input schema)."""

    def __init__(self, message: str, path: str = "",
                 problems: list[tuple[str, str]] | None = None):
        super().__init__(message, path)
        self.problems = problems or [(path, message)]


def _matching(call):
    """The runtime's refusal of an input that breaks its schema, as an InvalidRequest."""
    try:
        return call()
    except accepting.InvalidInput as exc:
        raise InvalidRequest(exc.message, exc.path, exc.problems) from None


def _checked(value: Any, what: str) -> dict:
    try:
        return check_input(value, limits(), what)
    except InvalidValue as exc:
        raise InvalidRequest(exc.message, exc.path) from None


def _checked_text(value: Any, what: str, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value):
        raise InvalidRequest(f"The {what} must be a non-empty string.", what)
    try:
        check_text(value, what)
    except InvalidValue as exc:
        raise InvalidRequest(exc.message, exc.path) from None


def start(machine_id: str, *, input: dict | None = None, version: int | None = None,
          idempotency_key: str | None = None, mocks: dict | None = None,
          mode: str | None = None, actor: str = "system",
          user: AbstractBaseUser | None = None, wait: bool = False,
          timeout: float | None = None) -> Outcome:
    """Start an execution of a machine (its latest version unless `version` is given).

    `mode` overrides the machine's execution mode; `wait` applies the start before
    returning (up to `timeout` seconds, else the machine's timeout_seconds); `mocks`
    ({operation: expression}) replace IO operations; `idempotency_key` returns the
    execution started earlier with the same key (Outcome.created False).
    """
    checked = _checked(input, "input")
    if mocks is not None:
        _checked(mocks, "mocks")
    _checked_text(idempotency_key, "idempotency_key")
    return _matching(lambda: accepting.start(
        machine_id, input=checked, version=version, idempotency_key=idempotency_key,
        mocks=mocks, mode=mode, actor=actor, user=user, wait=wait, timeout=timeout))


def trigger(execution_id: Any, action: str, *, input: dict | None = None,
            idempotency_key: str | None = None, actor: str = "system", wait: bool = False,
            timeout: float | None = None) -> Outcome:
    """Send an action to an execution; with `wait` (or in sync mode) it is applied before
    returning, and a rejection raises NotAvailable with nothing stored."""
    checked = _checked(input, "input")
    _checked_text(action, "action", required=True)
    _checked_text(idempotency_key, "idempotency_key")
    return _matching(lambda: accepting.trigger(
        execution_id, action, input=checked, idempotency_key=idempotency_key, actor=actor,
        wait=wait, timeout=timeout))


def cancel(execution_id: Any, *, actor: str = "system", reason: str | None = None) -> Outcome:
    """Cancel an execution (and the children it invoked synchronously). A cancel cannot be
    undone, so whoever asks for one says why: the reason is required and goes to history."""
    if reason is None or (isinstance(reason, str) and not reason.strip()):
        raise InvalidRequest("Say why the execution is canceled: a reason is required.",
                             "reason")
    if not isinstance(reason, str):
        raise InvalidRequest("The reason must be a string.", "reason")
    try:
        check_value(reason, "reason")
        if len(reason) > limits().error_text:
            raise InvalidValue(f"The reason is longer than {limits().error_text:,} "
                               "characters.", "reason")
    except InvalidValue as exc:
        raise InvalidRequest(exc.message, exc.path) from None
    return accepting.cancel(execution_id, actor=actor, reason=reason)


def retry(execution_id: Any, *, actor: str = "system") -> Outcome:
    """Resume a failed execution from where it failed."""
    return accepting.retry(execution_id, actor=actor)

"""One error shape for the whole API, and the registry that maps domain exceptions to it.

Every error answer is `{"type", "detail", "errors": [{"path", "message", "hint"}]}` (plus
`available_actions` for a refused action, `warnings` for an invalid definition). DRF's own
exceptions are reshaped here; the apps' exceptions (an invalid definition, an action not
available now...) are registered by each app from its AppConfig.ready, through
api.registry, which imports no DRF:

    errors.register(VersionConflict, 409, "version_conflict", describe=...)

so this module imports no app, and views just call the services.
"""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

# The registry lives in api.registry (no DRF there, so apps register at no cost); re-exported.
from api.registry import (  # noqa: F401
    REGISTRY,
    Description,
    Mapping,
    count,
    mapping_for,
    problem,
    register,
)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"

    def __init__(self):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        super().__init__(f"The request body is larger than the limit of {limit} bytes.")


class BodyParseError(exceptions.ParseError):
    """A body that cannot be read, with where in it (`input.items[2]`, '' for all of it)."""

    def __init__(self, detail: str, path: str = "", message: str | None = None):
        super().__init__(detail)
        self.path = path
        self.message = message or detail


def error_body(type_: str, detail: str, errors=(), **extra) -> dict:
    return {"type": type_, "detail": detail, "errors": list(errors), **extra}


# The exception handler ----------------------------------------------------------------------
def exception_handler(exc, context):
    """DRF's handler (status, headers, rollback) with every body in the one shape."""
    domain = mapping_for(exc)
    if domain is not None:
        set_rollback()
        detail, errors, extra = domain.describe(exc)
        return Response(error_body(domain.type, detail, errors, **extra), status=domain.status)
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    response.data = _reshape(exc, response.data)
    return response


TYPES = {
    exceptions.ValidationError: "validation_error",
    exceptions.ParseError: "parse_error",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    PayloadTooLarge: "payload_too_large",
}


def _reshape(exc, data) -> dict:
    kind = next((name for cls, name in TYPES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        errors = list(_flatten(data, "")) or [problem("", "Invalid input.")]
        return error_body(kind, _summary(errors), errors)
    detail = str(data.get("detail", "")) if isinstance(data, dict) else str(data)
    if isinstance(exc, BodyParseError):
        return error_body(kind, detail, [problem(exc.path, exc.message)])
    return error_body(kind, detail)


def _summary(errors: list[dict]) -> str:
    if len(errors) == 1:
        only = errors[0]
        return only["message"] + (f" ({only['path']})" if only["path"] else "")
    return f"{len(errors)} problems: " + "; ".join(
        f"{e['path'] or 'body'}: {e['message']}" for e in errors)


def _flatten(data, path: str):
    """DRF's nested error dicts/lists as (path, message) rows: `input.items[2]`."""
    if isinstance(data, dict):
        for key, value in data.items():
            name = "" if key in ("non_field_errors", "detail", "__all__") else str(key)
            yield from _flatten(value, f"{path}.{name}" if path and name else path or name)
    elif isinstance(data, list):
        if all(not isinstance(item, (dict, list)) for item in data):
            for message in data:
                yield problem(path, str(message))
        else:
            for i, item in enumerate(data):
                if item:
                    yield from _flatten(item, f"{path}[{i}]")
    else:
        yield problem(path, str(data))

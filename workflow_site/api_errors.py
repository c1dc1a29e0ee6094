"""One error shape for the whole API, and request bodies no client can turn into a 500.

Every error answer is `{"type", "detail", "errors": [{"path", "message", "hint"}]}` (plus
`available_actions` for a refused action, `warnings` for an invalid definition). The
service layer's exceptions are mapped here, so views just call the services.

Bodies are read by `JSONBodyParser`/`TextBodyParser`, which refuse what would break
something further down: more than DATA_UPLOAD_MAX_MEMORY_SIZE bytes (413; DRF's own
parsers read the stream without that limit), bytes that are not UTF-8, NaN/Infinity and
1e400 (not storable as JSON), integers of more than 4300 digits, nesting deeper than
MAX_DEPTH (json recurses), and strings with NUL or lone surrogates (PostgreSQL refuses them).
"""
from __future__ import annotations

import json
import math

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from rest_framework import exceptions, status
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from machines.language import DefinitionError
from machines.services import VersionConflict

MAX_DEPTH = 64  # levels of nesting in a JSON body


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"

    def __init__(self):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        super().__init__(f"The request body is larger than the limit of {limit} bytes.")


def error_body(type_: str, detail: str, errors=(), **extra) -> dict:
    return {"type": type_, "detail": detail, "errors": list(errors), **extra}


def problem(path: str, message: str, hint: str | None = None) -> dict:
    return {"path": path, "message": message, "hint": hint}


# The exception handler ----------------------------------------------------------------------
def exception_handler(exc, context):
    """DRF's handler (status, headers, rollback) with every body in the one shape."""
    domain = _domain_error(exc)
    if domain is not None:
        set_rollback()
        return domain
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    response.data = _reshape(exc, response.data)
    return response


def _domain_error(exc) -> Response | None:
    if isinstance(exc, DefinitionError):
        errors = [p.to_dict() for p in exc.errors]
        return Response(error_body(
            "invalid_definition", _count(len(errors), "problem") + " in the definition.", errors,
            warnings=[p.to_dict() for p in exc.warnings]), status=400)
    if isinstance(exc, VersionConflict):
        return Response(error_body("version_conflict", str(exc), [problem(
            "version", f"version {exc.version} already holds a different definition",
            "omit `version` to save the next one")]), status=409)
    if isinstance(exc, ObjectDoesNotExist):
        detail = str(exc) if exc.args else "Not found."
        return Response(error_body("not_found", detail), status=404)
    return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


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
            name = "" if key in ("non_field_errors", "detail") else str(key)
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


# Bodies -----------------------------------------------------------------------------------
def read_limited(stream) -> bytes:
    """The body, or PayloadTooLarge as soon as it passes the limit."""
    if stream is None:
        return b""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge()
    return raw


def decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise exceptions.ParseError(
            f"The body is not UTF-8 text (byte {exc.start} is invalid).") from None


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is too large")
    return value


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def load_json(text: str):
    """json.loads refusing what JSON storage cannot hold; ParseError says why."""
    try:
        data = json.loads(text, parse_float=_finite, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise exceptions.ParseError(
            f"Malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.") from None
    except RecursionError:
        raise exceptions.ParseError(
            f"The JSON is nested too deeply (the limit is {MAX_DEPTH} levels).") from None
    except ValueError as exc:  # a number too large, Infinity/NaN
        raise exceptions.ParseError(f"Invalid JSON: {exc}.") from None
    check_value(data)
    return data


def check_value(value, path: str = "", depth: int = 0) -> None:
    """Refuse nesting beyond MAX_DEPTH and strings a database cannot store."""
    if depth > MAX_DEPTH:
        raise exceptions.ParseError(
            f"The JSON is nested too deeply (the limit is {MAX_DEPTH} levels).")
    if isinstance(value, str):
        check_text(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, path)
            check_value(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_value(item, f"{path}[{i}]", depth + 1)


def check_text(text: str, path: str = "") -> None:
    where = f" (at {path})" if path else ""
    if "\x00" in text:
        raise exceptions.ParseError(f"Text may not contain NUL characters{where}.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise exceptions.ParseError(f"Text contains an unpaired surrogate{where}.") from None


class JSONBodyParser(BaseParser):
    """application/json, within the limits above."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        raw = read_limited(stream)
        return load_json(decode(raw)) if raw.strip() else {}


class TextBodyParser(BaseParser):
    """A definition posted as YAML (or JSON) text: `curl --data-binary @order.yaml`."""

    media_type = "application/yaml"

    def parse(self, stream, media_type=None, parser_context=None):
        text = decode(read_limited(stream))
        check_text(text)
        return text


class TextYAMLParser(TextBodyParser):
    media_type = "text/yaml"


class ErrorShapeMixin:
    # For every API view: the one error shape and the bounded JSON parser. (A comment, not
    # a docstring: drf-spectacular would show a docstring as every view's description.)

    parser_classes = [JSONBodyParser]

    def get_exception_handler(self):
        return exception_handler

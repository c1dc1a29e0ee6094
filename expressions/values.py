"""What a stored value may be: JSON that every database we support can hold and every page
can show. One check for every surface (API bodies, explorer forms, commands) and the
service layer that stores them.
"""
from __future__ import annotations

import json
import math

MAX_DEPTH = 64  # levels of nesting in a value


class InvalidValue(ValueError):
    """A value that cannot be stored; `path` says where in it (`items[2].sku`)."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.message} (at {self.path})" if self.path else self.message


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is too large")
    return value


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def load_json(text: str):
    """json.loads refusing what JSON storage cannot hold (NaN, Infinity, overflowing floats,
    nesting past MAX_DEPTH, NUL, lone surrogates); InvalidValue says why and where."""
    try:
        data = json.loads(text, parse_float=_finite, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise InvalidValue(
            f"Malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.") from None
    except RecursionError:
        raise InvalidValue(
            f"The JSON is nested too deeply (the limit is {MAX_DEPTH} levels).") from None
    except ValueError as exc:  # a number too large, Infinity/NaN
        raise InvalidValue(f"Invalid JSON: {exc}.") from None
    check_value(data)
    return data


def check_value(value, path: str = "", depth: int = 0) -> None:
    """Refuse non-JSON types, non-finite numbers, nesting beyond MAX_DEPTH and text a
    database cannot store."""
    if depth > MAX_DEPTH:
        raise InvalidValue(f"The JSON is nested too deeply (the limit is {MAX_DEPTH} levels).",
                           path)
    if isinstance(value, str):
        check_text(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidValue(f"Object keys must be text, not {type(key).__name__}.", path)
            check_text(key, path)
            check_value(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_value(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(f"Numbers must be finite, not {value}.", path)
    elif value is not None and not isinstance(value, (bool, int)):
        raise InvalidValue(f"{type(value).__name__} is not a JSON value.", path)


def check_text(text: str, path: str = "") -> None:
    if "\x00" in text:
        raise InvalidValue("Text may not contain NUL characters.", path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue("Text contains an unpaired surrogate.", path) from None


def check_object(value, what: str = "input") -> dict:
    """An input that must be a JSON object ({} when absent), checked."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidValue(f"The {what} must be a JSON object like {{\"key\": \"value\"}}, "
                           f"not {type(value).__name__}.", what)
    check_value(value, what)
    return value

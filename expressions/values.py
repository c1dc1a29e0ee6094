"""What a stored value may be: JSON that every database we support can hold and every page
can show. One check for every surface (API bodies, explorer forms, commands) and the
service layer that stores them, and for what the runtime stores of the engine's results.

One function per kind of value, all built on `check_value`:

- `check_value`: JSON types only, finite floats, integers no larger than the largest
  float (at most 309 digits: what every JSON client reads as a number, and what
  PostgreSQL's jsonb gives back for a float such as 1e300), no NUL or lone surrogates in
  text or keys, nesting up to MAX_DEPTH;
- `check_input` (an object, at most `Limits.input` characters of JSON), `check_context` (the
  WHOLE context, at most `Limits.context`), `check_history_row` (one history row, at most
  `Limits.history_row`), `check_timestamp` (epoch seconds up to 9999-12-31);
- `bounded_error`: an error is never refused: its texts are escaped and cut to
  `Limits.error_text` characters with a note saying so;
- `printable`: what a page or the API shows of a value stored before these checks existed
  (lone surrogates escaped as `\\udXXX` text).

Sizes are counted in characters of compact JSON (`json.dumps(..., ensure_ascii=False)`).
The limits come from settings.DATA_MACHINES (the runtime and the services pass them in:
this module imports no Django).
"""
from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 64  # levels of nesting in a value
# Integers may be as large as the largest float: a JSON client reads any number as a double
# (exact up to 2**53; send larger identifiers as strings), and PostgreSQL's jsonb gives a
# float like 1e300 back as a 301-digit integer, which must still be storable.
MAX_INT = int(sys.float_info.max)  # |n| <= MAX_INT, about 1.8e308
MAX_INT_DIGITS = 309  # a JSON integer with more digits is past MAX_INT
MAX_TIMESTAMP = 253402300799.0  # 9999-12-31T23:59:59Z, the last second a datetime holds


@dataclass(frozen=True)
class Limits:
    """Size bounds, in characters of compact JSON (README: configuration)."""

    input: int = 256 * 1024  # an input (start, action, mocks)
    context: int = 1024 * 1024  # the whole context of an execution (and a work's output)
    history_row: int = 2 * 1024 * 1024  # one history row (it may carry the context)
    error_text: int = 10_000  # one text in an error; longer texts are cut with a note


class InvalidValue(ValueError):
    """A value that cannot be stored; `path` says where in it (`items[2].sku`)."""

    kind = "invalid"  # or "too_large"

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.message = message
        self.path = path


class TooLarge(InvalidValue):
    """A value past a size bound (or a number out of range)."""

    kind = "too_large"

    def __str__(self) -> str:
        return f"{self.message} (at {self.path})" if self.path else self.message


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is too large")
    return value


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _bounded_int(text: str) -> int:
    """An integer of the JSON text, refused before Python converts thousands of digits."""
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"the number {text[:12]}… has {digits:,} digits; integers may have "
                         f"at most {MAX_INT_DIGITS} (the range of a JSON number, about "
                         "±1.8e308)")
    return int(text)


def load_json(text: str):
    """json.loads refusing what JSON storage cannot hold (NaN, Infinity, overflowing floats,
    nesting past MAX_DEPTH, NUL, lone surrogates); InvalidValue says why and where."""
    try:
        data = json.loads(text, parse_float=_finite, parse_int=_bounded_int,
                          parse_constant=_no_constants)
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
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -MAX_INT <= value <= MAX_INT:
            raise TooLarge(f"The integer of {value.bit_length():,} bits is out of range: "
                           f"integers may have at most {MAX_INT_DIGITS} digits (the range of "
                           "a JSON number, about ±1.8e308); use a string for larger "
                           "numbers.", path)
    elif value is not None and not isinstance(value, bool):
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


# Sizes ------------------------------------------------------------------------------------
def json_size(value: Any) -> int:
    """Characters of compact JSON of a value that passed check_value."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def check_sized(value: Any, what: str, limit: int, path: str | None = None) -> int:
    """check_value, and at most `limit` characters of JSON; returns the size.

    It runs on every save, so it works at C speed: json.dumps counts the size (a huge value
    is refused without a walk in Python) and refuses NaN, Infinity, non-JSON types, integers
    Python cannot print and deep nesting; the text then shows any lone surrogate (it cannot
    be encoded), NUL (written `\\u0000`) and integers of more than 308 digits (a run of
    digits). Only then, or when a check is not sure, check_value walks the value to say
    exactly what is wrong and where.
    """
    path = what if path is None else path
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        check_value(value, path)
        raise InvalidValue(f"The {what} is not JSON.", path) from None
    if len(text) > limit:
        raise TooLarge(f"The {what} is {len(text):,} characters of JSON, more than the limit "
                       f"of {limit:,}.", path)
    if _suspect(text):
        check_value(value, path)  # raises, unless the text only looked suspect
    return len(text)


def _suspect(text: str) -> bool:
    """True when the JSON text may hold what check_value refuses."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return True
    return "\\u0000" in text or _LONG_DIGITS.search(text) is not None


_LONG_DIGITS = re.compile(rf"\d{{{MAX_INT_DIGITS}}}")


def check_input(value: Any, limits: Limits, what: str = "input") -> dict:
    """An input object ({} when absent): checked, and at most `limits.input` characters."""
    checked = check_object(value, what)
    check_sized(checked, what, limits.input)
    return checked


def check_context(context: Any, limits: Limits) -> int:
    """The WHOLE context of an execution, not only each value put in it; its size."""
    if not isinstance(context, dict):
        raise InvalidValue(f"The context must be an object, not {type(context).__name__}.",
                           "context")
    return check_sized(context, "context", limits.context)


def check_history_row(entry: dict, limits: Limits, where: str,
                      context: tuple[Any, int] | None = None) -> None:
    """One history row as the engine made it (its `at` and any `due` are timestamps).
    `context`: (a context checked already, its size): when the row carries that very
    object, it is counted, not checked again (a long automatic run carries it on each row).
    """
    check_timestamp(entry.get("at"), f"{where}.at")
    detail = entry.get("detail")
    if isinstance(detail, dict) and detail.get("due") is not None:
        check_timestamp(detail["due"], f"{where}.detail.due")
    if context is not None and entry.get("context") is context[0]:
        rest = check_sized({**entry, "context": None}, "history row", limits.history_row,
                           where)
        if rest + context[1] > limits.history_row:
            raise TooLarge(f"The history row is {rest + context[1]:,} characters of JSON, "
                           f"more than the limit of {limits.history_row:,}.", where)
        return
    check_sized(entry, "history row", limits.history_row, where)


def check_history_rows(entries: list[dict], limits: Limits,
                       context: tuple[Any, int] | None = None) -> None:
    """`check_history_row` for the rows of one step, with ONE json.dumps of them all when
    together they fit in one row's limit and nothing in them looks suspect (each row is then
    within bounds); otherwise row by row, to say which row and where."""
    rest = []
    for entry in entries:
        where = f"history[{entry.get('seq')}]"
        check_timestamp(entry.get("at"), f"{where}.at")
        detail = entry.get("detail")
        if isinstance(detail, dict) and detail.get("due") is not None:
            check_timestamp(detail["due"], f"{where}.detail.due")
        carries = context is not None and entry.get("context") is context[0]
        rest.append({**entry, "context": None} if carries else entry)
    try:
        text = json.dumps(rest, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        text = None
    shared = context[1] if context is not None else 0
    if text is not None and len(text) + shared <= limits.history_row and not _suspect(text):
        return
    for entry in entries:
        check_history_row(entry, limits, f"history[{entry.get('seq')}]", context)


def check_timestamp(value: Any, path: str) -> None:
    """Epoch seconds a datetime (and so every page and serializer) can hold."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (math.isfinite(value) and 0 <= value <= MAX_TIMESTAMP):
        raise TooLarge(f"The time {_short(value)} is out of range: times must be between "
                       "1970 and 9999-12-31.", path)


def _short(value: Any, limit: int = 40) -> str:
    try:
        text = repr(value) if not isinstance(value, float) else f"{value:g}"
    except ValueError:  # an int too long to print
        text = f"<integer of {value.bit_length():,} bits>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Errors: bounded, never refused -----------------------------------------------------------
def bounded_error(error: Any, limits: Limits) -> dict:
    """An error as it may be stored: every text escaped (no NUL, no lone surrogate) and cut
    to `limits.error_text` characters with a note; anything that is not JSON shown as text.
    An error is the record of what went wrong: it is bounded, never refused."""
    if not isinstance(error, dict):
        error = {"type": "error", "message": error if isinstance(error, str) else _short(error)}
    cleaned = _bounded(error, limits.error_text, 0)
    if json_size(cleaned) > 4 * limits.error_text:  # many small parts: keep the essentials
        cleaned = {key: cleaned[key] for key in ("type", "kind", "message", "path", "state")
                   if key in cleaned}
        cleaned["note"] = "other fields of this error were left out: too large"
    return cleaned


def _bounded(value: Any, limit: int, depth: int) -> Any:
    if isinstance(value, str):
        return _cut(_escaped(value), limit)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -MAX_INT <= value <= MAX_INT else _short(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= 8:
        return _cut(_short(value, limit), limit)
    if isinstance(value, dict):
        return {_cut(_escaped(str(key)), 200): _bounded(item, limit, depth + 1)
                for key, item in list(value.items())[:100]}
    if isinstance(value, (list, tuple)):
        return [_bounded(item, limit, depth + 1) for item in list(value)[:100]]
    return _cut(_short(value, limit), limit)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return (text[:limit] + f"… [cut: {len(text):,} characters, the limit is {limit:,}]")


def _escaped(text: str) -> str:
    """Text with NUL and lone surrogates written as escapes (`\\x00`, `\\ud800`)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


# Reading what was stored before the checks ------------------------------------------------
def printable(value: Any) -> Any:
    """`value` with every text a page or a JSON answer cannot encode (lone surrogates)
    escaped; the same object when there is none (the common case: one C-speed test)."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return _printable(value)
    except (ValueError, TypeError, RecursionError):
        return value
    return value


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return _escaped(value) if not value.isascii() else value
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(item) for item in value]
    return value

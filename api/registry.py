"""The registry that maps the apps' exceptions to the API's one error shape, without DRF.

Each app registers its exceptions from its AppConfig.ready (api.errors explains the shape).
This module imports neither DRF nor any app, so registering costs a management command
nothing: DRF is imported only where a request is answered (api.errors).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ObjectDoesNotExist


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def problem(path: str, message: str, hint: str | None = None) -> dict:
    return {"path": path, "message": message, "hint": hint}


# The registry -------------------------------------------------------------------------------
Description = tuple[str, list, dict]  # detail, errors, extra fields of the body


@dataclass(frozen=True)
class Mapping:
    status: int
    type: str
    describe: Callable[[BaseException], Description]


def _plain(exc: BaseException) -> Description:
    """The default: the exception's text as the detail and as one problem at its path."""
    detail = str(exc)
    return detail, [problem(getattr(exc, "path", "") or "", detail)], {}


REGISTRY: dict[type, Mapping] = {}


def register(exception_class: type, status: int, type_: str, *,
             describe: Callable[[BaseException], Description] | None = None) -> None:
    """Answer `exception_class` (and its subclasses) with `status` and `type_`.

    `describe(exc)` returns (detail, errors, extra body fields); by default the exception's
    text. The most specific registered class wins; registering a class again replaces it.
    """
    REGISTRY[exception_class] = Mapping(status, type_, describe or _plain)


def mapping_for(exc: BaseException) -> Mapping | None:
    for cls in type(exc).__mro__:
        found = REGISTRY.get(cls)
        if found is not None:
            return found
    return None


def _not_found(exc: BaseException) -> Description:
    return (str(exc) if exc.args else "Not found."), [], {}


register(ObjectDoesNotExist, 404, "not_found", describe=_not_found)

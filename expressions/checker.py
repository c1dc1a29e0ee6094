"""Static checks of expression source: does it parse, and does it stay inside the language?

The definition validator calls `check()` on save so that authors see every problem (with
line and column) before anything runs; the sandbox calls it again before evaluating, so a
definition that skipped validation still cannot run a forbidden construct.
Pure Python: no Django, no `executions` import.

Lines and columns are 1-based, as editors show them.
"""
from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

from expressions.errors import ExpressionSyntaxError
from expressions.names import ARITY

MAX_SOURCE_CHARS = 50_000

# Constructs the sandbox cannot or must not run, with the reason an author sees.
FORBIDDEN_NODES: dict[type, str] = {
    ast.Import: "imports are not allowed",
    ast.ImportFrom: "imports are not allowed",
    ast.Global: "'global' is not allowed",
    ast.Nonlocal: "'nonlocal' is not allowed",
    ast.ClassDef: "classes are not allowed",
    ast.AsyncFunctionDef: "async code is not allowed",
    ast.AsyncFor: "async code is not allowed",
    ast.AsyncWith: "async code is not allowed",
    ast.Await: "async code is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
    ast.With: "'with' is not supported",
    ast.NamedExpr: "the walrus operator ':=' is not supported; assign on its own line",
    ast.Match: "'match' is not supported; use if/elif",
    ast.TryStar: "'except*' is not supported",
}
# Attributes that let str formatting reach attributes by name ("{0.__class__}").
FORBIDDEN_ATTRIBUTES = frozenset({"format", "format_map"})


@dataclass(frozen=True)
class ExpressionProblem:
    message: str
    line: int | None
    column: int | None


SMALL_SOURCE_CHARS = 2_000  # the cache keeps 4,096 sources up to this size, 32 larger ones


def bounded_cache(function):
    """Cache `function(source)` per source, bounded in memory: 4,096 small sources (most
    expressions), but only 32 large ones (up to MAX_SOURCE_CHARS each, and a tree or a
    program weighs many times its source)."""
    small, large = lru_cache(maxsize=4096)(function), lru_cache(maxsize=32)(function)

    def cached(source: str):
        return (small if len(source) <= SMALL_SOURCE_CHARS else large)(source)

    cached.__doc__ = function.__doc__
    return cached


@bounded_cache
def parse(source: str) -> ast.Module:
    """Parse once per distinct source; the shared tree must not be mutated by callers."""
    try:
        return ast.parse(source, mode="exec")
    except SyntaxError as exc:
        raise ExpressionSyntaxError(exc.msg, exc.lineno, exc.offset) from None
    except ValueError as exc:  # e.g. null bytes in the source
        raise ExpressionSyntaxError(str(exc)) from None
    except (RecursionError, MemoryError):
        raise ExpressionSyntaxError("expression is nested too deeply") from None


def check(source: str) -> list[ExpressionProblem]:
    """Every problem in `source`, in source order; [] when it may run."""
    if len(source) > MAX_SOURCE_CHARS:
        message = f"expression is longer than {MAX_SOURCE_CHARS} characters"
        return [ExpressionProblem(message, None, None)]
    try:
        tree = parse(source)
    except ExpressionSyntaxError as exc:
        return [ExpressionProblem(exc.message, exc.line, exc.column)]
    return _forbidden_constructs(tree)


def _forbidden_constructs(tree: ast.Module) -> list[ExpressionProblem]:
    problems = []
    for node in ast.walk(tree):
        message = _why_forbidden(node)
        if message:
            line, column = _position(node)
            problems.append(ExpressionProblem(message, line, column))
    problems.sort(key=lambda p: (p.line or 0, p.column or 0))
    return problems


def _position(node: ast.AST) -> tuple[int | None, int | None]:
    """1-based line and column; for `a.b` the column of `b`, where the problem is."""
    if isinstance(node, ast.Attribute) and node.end_lineno is not None \
            and node.end_col_offset is not None:
        return node.end_lineno, node.end_col_offset - len(node.attr) + 1
    column = getattr(node, "col_offset", None)
    return getattr(node, "lineno", None), None if column is None else column + 1


def _why_forbidden(node: ast.AST) -> str | None:
    reason = FORBIDDEN_NODES.get(type(node))
    if reason:
        return reason
    if isinstance(node, ast.Attribute):
        if not isinstance(node.ctx, ast.Load):
            return f"attribute '{node.attr}' cannot be assigned or deleted"
        if node.attr.startswith("_"):
            return f"attribute '{node.attr}' is not allowed: names starting with '_' are private"
        if node.attr in FORBIDDEN_ATTRIBUTES:
            return f"'.{node.attr}()' is not allowed; use an f-string or '%' formatting"
    for name in _defined_or_used_names(node):
        if name.startswith("__"):
            return f"name '{name}' is not allowed: names starting with '__' are reserved"
    if isinstance(node, ast.Starred) and isinstance(node.ctx, ast.Store):
        return "starred assignment ('a, *b = ...') is not supported; use slices"
    if isinstance(node, (ast.FunctionDef, ast.Lambda)) and _has_decorators(node):
        return "decorators are not supported"
    return None


def _defined_or_used_names(node: ast.AST) -> tuple[str, ...]:
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.arg):
        return (node.arg,)
    if isinstance(node, ast.FunctionDef):
        return (node.name,)
    if isinstance(node, ast.ExceptHandler) and node.name:
        return (node.name,)
    if isinstance(node, ast.keyword) and node.arg:
        return (node.arg,)
    return ()


def _has_decorators(node: ast.AST) -> bool:
    return bool(getattr(node, "decorator_list", None))


# Names and arity (save time only: docs/language.md "Validation") ---------------------------
_PROSE = re.compile(r"[A-Za-z][\w ,.!?-]*")  # no quote: the hint quotes it


def check_names(source: str, known: frozenset[str]) -> list[ExpressionProblem]:
    """Names used but bound nowhere (with a did-you-mean), `io`, `output` or `error` where
    the position does not bind them, and helpers called with the wrong number of
    arguments. Run when a machine is saved, after `check()` found nothing: an expression
    stored earlier keeps running as it did."""
    try:
        tree = parse(source)
    except ExpressionSyntaxError:
        return []
    bound = _bound_names(tree)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) \
                and node.id not in known and node.id not in bound:
            problems.append(ExpressionProblem(
                _undefined(node.id, source, known | bound), node.lineno, node.col_offset + 1))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ARITY and node.func.id not in bound:
            message = _wrong_arity(node)
            if message:
                problems.append(ExpressionProblem(message, node.lineno, node.col_offset + 1))
    problems.sort(key=lambda p: (p.line or 0, p.column or 0))
    return problems


def prose_hint(source: str) -> str | None:
    """For source that does not parse: when it reads as plain text, how to write it as text."""
    text = source.strip()
    if "\n" in text or " " not in text or not _PROSE.fullmatch(text):
        return None
    try:
        parse(source)
    except ExpressionSyntaxError:
        return f"did you mean the text {text!r}? quote it: \"{text!r}\""
    return None  # it parses: its problem is something else ("import os")


def _bound_names(tree: ast.Module) -> set[str]:
    """Every name the expression binds itself, wherever: assignments, loop and
    comprehension targets, functions and their arguments, `except ... as`."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.Lambda)):
            if isinstance(node, ast.FunctionDef):
                bound.add(node.name)
            arguments = node.args
            for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                        arguments.vararg, arguments.kwarg):
                if arg is not None:
                    bound.add(arg.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound


_ONLY_IN = {
    "io": ("'io' is only available in 'invoke.call'",
           "do the IO in an invoke: {invoke: {call: \"io(...)\", success: ...}}"),
    "output": ("'output' is only bound in an invoke's 'success' branch and 'ok_if'", None),
    "error": ("'error' is only bound in an invoke's 'error' branch", None),
}


def _undefined(name: str, source: str, choices: frozenset[str] | set[str]) -> str:
    if name in _ONLY_IN:
        message, hint = _ONLY_IN[name]
        return f"{message}{f'; {hint}' if hint else ''}"
    if source.strip() == name:
        return (f"name '{name}' is not defined; did you mean the text '{name}'? "
                f"quote it as \"'{name}'\"")
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.7)
    return f"name '{name}' is not defined" + (f"; did you mean '{close[0]}'?" if close else
                                              "; expressions see ctx, input, execution and "
                                              "the helpers (docs/language.md)")


def _wrong_arity(call: ast.Call) -> str | None:
    if any(isinstance(arg, ast.Starred) for arg in call.args) \
            or any(keyword.arg is None for keyword in call.keywords):
        return None  # *args / **kwargs: counted at run time
    name = call.func.id  # type: ignore[attr-defined]
    least, most = ARITY[name]
    given = len(call.args)
    if given < least and not call.keywords or (most is not None and given > most):
        if least == most:
            wanted = f"{least} argument{'s' if least != 1 else ''}"
        elif most is None:
            wanted = f"at least {least} argument{'s' if least != 1 else ''}"
        else:
            wanted = f"{least} to {most} arguments"
        return f"{name}() takes {wanted}, not {given}"
    return None

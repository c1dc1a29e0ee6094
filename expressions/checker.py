"""Static checks of expression source: does it parse, and does it stay inside the language?

The definition validator calls `check()` on save so that authors see every problem (with
line and column) before anything runs; the sandbox calls it again before evaluating, so a
definition that skipped validation still cannot run a forbidden construct.
Pure Python: no Django, no `executions` import.

Lines and columns are 1-based, as editors show them.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache

from expressions.errors import ExpressionSyntaxError

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

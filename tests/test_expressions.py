"""expressions.checker: what the definition validator reports before anything runs."""
import ast

import pytest

from expressions.checker import (
    MAX_SOURCE_CHARS,
    ExpressionProblem,
    ExpressionSyntaxError,
    check,
    parse,
)


def test_parse_returns_the_module_and_caches_it():
    tree = parse("x = 1\nx + 1")
    assert isinstance(tree, ast.Module)
    assert len(tree.body) == 2
    assert parse("x = 1\nx + 1") is tree


def test_parse_error_is_a_value_error_with_line_and_column():
    with pytest.raises(ExpressionSyntaxError) as caught:
        parse("a = 1\nb = (2 +\n")
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.line == 2
    assert error.column == 5
    assert "never closed" in error.message


def test_check_reports_syntax_errors_with_line_and_column():
    assert check("ctx['a'] +") == [ExpressionProblem("invalid syntax", 1, 11)]
    [problem] = check("x = 1\n  y = 2")
    assert (problem.message, problem.line) == ("unexpected indent", 2)


def test_null_bytes_are_a_syntax_problem():
    [problem] = check("1\x00")
    assert "null bytes" in problem.message


def test_overlong_source_is_refused_without_parsing():
    [problem] = check("1 + " * (MAX_SOURCE_CHARS // 4 + 1) + "1")
    assert str(MAX_SOURCE_CHARS) in problem.message


@pytest.mark.parametrize("source", [
    "ctx['n'] + 1",
    "{**ctx, 'n': ctx['n'] + 1}",
    "[*ctx['items'], 3]",
    "dict(ctx, n=1) | {'m': 2}",
    "f(*args, **kwargs)",
    "sorted(ctx['items'], key=lambda item: -item)",
    "def total(items):\n    return sum(items)\ntotal([1, 2])",
    "{k: v for k, v in ctx.items() if k != 'x'}",
    "sum(x for x in range(3))",
    "f'{ctx[\"n\"]:>5}'",
    "'%s-%d' % ('a', 1)",
    "try:\n    ctx['x']\nexcept KeyError:\n    0",
    "a, b = 1, 2\na + b",
    "items = []\nfor i in range(3):\n    items.append(i)\nitems",
    "while False:\n    pass",
    "_ = 1\n_",  # a single underscore name is fine; only '__' names are refused
])
def test_the_language_passes(source):
    assert check(source) == []


@pytest.mark.parametrize("source, fragment, line, column", [
    ("import os", "imports are not allowed", 1, 1),
    ("x = 1\nfrom os import path", "imports are not allowed", 2, 1),
    ("x = 1\nctx.n = x", "attribute 'n' cannot be assigned or deleted", 2, 5),
    ("().__class__", "'__class__' is not allowed", 1, 4),
    ("ctx.get.__self__", "'__self__' is not allowed", 1, 9),
    ("ctx._private", "'_private' is not allowed", 1, 5),
    ("__import__('os')", "'__import__' is not allowed", 1, 1),
    ("__builtins__", "'__builtins__' is not allowed", 1, 1),
    ("def f(__x):\n    return 1", "'__x' is not allowed", 1, 7),
    ("def __f():\n    return 1", "'__f' is not allowed", 1, 1),
    ("'{0.__class__}'.format(1)", "'.format()' is not allowed", 1, 17),
    ("'{a}'.format_map(ctx)", "'.format_map()' is not allowed", 1, 7),
    ("global x", "'global' is not allowed", 1, 1),
    ("def f():\n    nonlocal x", "'nonlocal' is not allowed", 2, 5),
    ("class A:\n    pass", "classes are not allowed", 1, 1),
    ("async def f():\n    pass", "async code is not allowed", 1, 1),
    ("def f():\n    yield 1", "'yield' is not allowed", 2, 5),
    ("def f():\n    yield from []", "'yield' is not allowed", 2, 5),
    ("(y := 1)", "walrus", 1, 2),
    ("match ctx:\n    case _:\n        1", "'match' is not supported", 1, 1),
    ("a, *b = [1, 2]", "starred assignment", 1, 4),
    ("with ctx as c:\n    pass", "'with' is not supported", 1, 1),
    ("@decorate\ndef f():\n    pass", "decorators", 2, 1),
    ("try:\n    pass\nexcept* ValueError:\n    pass", "'except*'", 1, 1),
])
def test_forbidden_constructs_are_reported_where_they_are(source, fragment, line, column):
    problems = check(source)
    assert problems, source
    assert fragment in problems[0].message
    assert (problems[0].line, problems[0].column) == (line, column)


def test_every_problem_is_reported_in_source_order():
    problems = check("import os\nx = ctx.__dict__\ny = ctx._z")
    assert [(p.line, p.column) for p in problems] == [(1, 1), (2, 9), (3, 9)]

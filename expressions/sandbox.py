"""Run machine expressions: checked Python, rewritten so that every operation that could
escape, loop or allocate goes through a guard here, then compiled to CPython bytecode.

Why not an AST interpreter (asteval, which this module used first): walking the tree costs a
Python call or two per node, 15-25x CPython; compiled code with guards costs a few times. The
isolation does not come from the interpreter but from what the code can reach, so it is
the same either way:
- names: only the caller's names and the spec's safe builtins (no `__builtins__` at all);
  names starting with `__` are refused by `expressions.checker.check`, so the guards
  (`__dm_*`) cannot be named by the code;
- attributes: only on plain data values (str, list, dict, ...), never starting with `_`,
  read through `_attribute`/`_call_method`;
- no imports, classes, generators, `global`, async (refused by `check`);
- bounds: a time limit checked on every loop iteration and function call (raised as a
  BaseException so user `try/except` cannot swallow it), a call-depth limit, guards that
  refuse an operation BEFORE it allocates a huge string, list or integer, and an allocation
  budget per run. What it cannot bound (one pathological C-level call) is in docs/sandbox.md.

No Django here: the runtime passes the limits from settings.
"""
from __future__ import annotations

import ast
import json
import math
import operator
import re
import threading
import time
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any

from expressions import names
from expressions.checker import bounded_cache, check, parse
from expressions.errors import ExpressionError, ExpressionSyntaxError, Raised, RaisedError
from machines import durations
from machines.definition import ERROR_TYPE_PATTERN, Expr

# Bounds -------------------------------------------------------------------------------------
MAX_LENGTH = 1_000_000  # items of one list/tuple/dict, characters of one str/bytes
MAX_INT_BITS = 100_000  # about 30,000 decimal digits
MAX_INT_DIGITS = 4_300  # int(str) and str(int), as CPython's own default
MAX_FORMAT_WIDTH = 10_000  # width/precision in f-strings and '%' formatting
MAX_ALLOCATION = 64 * 2**20  # estimated bytes produced by calls and operators in one run
MAX_COMPARE_WEIGHT = 10_000_000  # size of nested values compared, hashed or printed
MAX_CALL_DEPTH = 30  # nested calls of functions defined in the expression
MAX_NESTING = 100  # depth of the value an expression returns
CLOCK_EVERY = 128  # loop iterations and calls between two looks at the clock
# Estimated bytes per item of a container a call or operator produces (with new items)
ITEM_BYTES: dict[type, int] = {list: 32, tuple: 32, dict: 96, set: 96, frozenset: 96}

SAFE_BUILTIN_NAMES = ("len min max sum sorted abs round int float str bool list dict range "
                      "enumerate zip any all").split()
DATA_TYPES = (str, bytes, list, tuple, dict, set, int, float, bool)
CONTAINERS = (list, tuple, dict, set, frozenset)
# Attribute names that do not change the value they are read from; anything else on a
# value (append, update, ...) may, so an expression using one gets copies of its inputs.
READ_ONLY_ATTRIBUTES = frozenset(
    {name for name in dir(str) if not name.startswith("_")}
    | {"get", "keys", "values", "items", "copy", "count", "index", "bit_length", "real",
       "imag", "is_integer", "hex", "decode", "isdisjoint", "issubset", "issuperset",
       "union", "intersection", "difference", "symmetric_difference"}
) - {"format", "format_map"}
EXCEPTION_CLASSES = {
    cls.__name__: cls for cls in (
        Exception, ArithmeticError, LookupError, AssertionError, AttributeError, IndexError,
        KeyError, NameError, OverflowError, RuntimeError, TypeError, ValueError,
        ZeroDivisionError,
    )
}
FILENAME = "<expression>"  # of the compiled code: its frames are the expression's own


class _Abort(BaseException):
    """Stops a run for a bound (timeout/resource). A BaseException: user `try/except` only
    catches Exception, so nothing inside the run can swallow it."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def _too_big(message: str):
    raise _Abort("resource", message)


# Public entry point ---------------------------------------------------------------------------
def evaluate(expr: Expr, names: dict, *, time_limit: float = 1.0,
             max_result_bytes: int = 262144) -> Any:
    """The JSON value of `expr` with `names` bound; raises ExpressionError."""
    if not expr.is_code:
        return _copy_data(expr.literal)
    program = _program(expr.source)
    if program.problem is not None:
        message, line, column, exception = program.problem
        raise ExpressionError(message, kind="syntax", path=expr.path, line=line,
                              column=column, exception=exception)
    if program.may_mutate or not program.changed_names.isdisjoint(names):
        try:
            names = {name: _copy_data(value) for name, value in names.items()}
        except RecursionError:
            raise ExpressionError("the values given to the expression are nested too deeply",
                                  kind="resource", path=expr.path) from None
    if program.budgeted:
        outer = getattr(_local, "budget", None)  # set when evaluating inside another's call
        _local.budget = _Budget(time_limit)
    try:
        if program.is_expression:
            value = eval(program.code, _GLOBALS, names)  # names stay untouched: no stores
        else:
            scope = {"__builtins__": _BUILTINS, **names}
            exec(program.code, scope)
            value = scope.get(_RESULT)
    except _Abort as abort:
        line, column = _where(abort.__traceback__)
        raise ExpressionError(abort.message, kind=abort.kind, path=expr.path, line=line,
                              column=column) from None
    except Raised as raised:
        line, column = _where(raised.__traceback__)
        raise RaisedError(raised.error_type, raised.message, path=expr.path, line=line,
                          column=column) from None
    except Exception as exc:
        raise _runtime_error(exc, expr.path) from None
    finally:
        if program.budgeted:
            _local.budget = outer
    kind = type(value)
    if kind is bool or kind is int or value is None:  # guards: skip the walk
        return value
    try:
        return _to_json(value, max_result_bytes)
    except _ResultProblem as problem:
        raise ExpressionError(str(problem), kind="result", path=expr.path) from None


def _runtime_error(exc: Exception, path: str) -> ExpressionError:
    line, column = _where(exc.__traceback__)
    if isinstance(exc, (RecursionError, MemoryError)):
        return ExpressionError(f"{type(exc).__name__}: {exc}", kind="resource", path=path,
                               line=line, column=column)
    return ExpressionError(str(exc), path=path, line=line, column=column,
                           exception=type(exc).__name__)


def _where(traceback) -> tuple[int | None, int | None]:
    """Line and column (1-based) of the innermost operation of the expression's own code."""
    innermost = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == FILENAME:
            innermost = traceback
        traceback = traceback.tb_next
    if innermost is None:
        return None, None
    positions = list(innermost.tb_frame.f_code.co_positions())
    line, _, column, _ = positions[innermost.tb_lasti // 2]
    return line, None if column is None else column + 1


def _copy_data(value):
    """A deep copy of JSON-like data; callables and scalars are shared."""
    kind = type(value)
    if kind is dict:
        return {key: _copy_data(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_copy_data(item) for item in value]
    return value


# Compiling: check, rewrite, compile once per distinct source -----------------------------------
_RESULT = "__dm_result"  # where a script leaves the value of its last expression


@dataclass(frozen=True)
class _Program:
    code: Any = None
    is_expression: bool = False  # one expression, no nested scope: eval() it on the names
    may_mutate: bool = False  # it may change values it was given: it gets copies
    changed_names: frozenset = frozenset()  # changed in place; given ones are copied first
    budgeted: bool = True  # it loops, calls or allocates: it needs a time and memory budget
    problem: tuple | None = None  # (message, line, column, exception) when it cannot run


class _Refused(Exception):
    """The rewrite found something the sandbox will not run."""

    def __init__(self, message: str, node: ast.AST, exception: str | None = None):
        super().__init__(message)
        self.message = message
        self.node = node
        self.exception = exception


@bounded_cache
def _program(source: str) -> _Program:
    try:
        parse(source)
    except ExpressionSyntaxError as exc:
        return _Program(problem=(exc.message, exc.line, exc.column, "SyntaxError"))
    problems = check(source)
    if problems:
        first = problems[0]
        return _Program(problem=(first.message, first.line, first.column, None))
    tree = ast.parse(source)  # a fresh tree: the rewrite changes it in place
    may_mutate, changed_names = _mutations(tree)
    try:
        tree = _Rewrite().visit(tree)
        budgeted = any(isinstance(node, ast.Name) and node.id in _BUILTINS
                       and node.id not in _BUDGET_FREE for node in ast.walk(tree))
        body = tree.body
        if (len(body) == 1 and isinstance(body[0], ast.Expr)
                and not any(isinstance(node, _NESTED_SCOPES) for node in ast.walk(tree))):
            expression = ast.fix_missing_locations(ast.Expression(body=body[0].value))
            return _Program(_compile(expression, "eval"), True, may_mutate, changed_names,
                            budgeted)
        if body and isinstance(body[-1], ast.Expr):
            body[-1] = ast.copy_location(
                ast.Assign(targets=[ast.Name(_RESULT, ast.Store())], value=body[-1].value),
                body[-1])
        return _Program(_compile(ast.fix_missing_locations(tree), "exec"), False, may_mutate,
                        changed_names, budgeted)
    except _Refused as refused:
        line, column = _position(refused.node)
        return _Program(problem=(refused.message, line, column, refused.exception))
    except SyntaxError as exc:  # from compile(): 'return' outside a function, ...
        return _Program(problem=(exc.msg, exc.lineno, exc.offset, "SyntaxError"))
    except RecursionError:
        return _Program(problem=("expression is nested too deeply", None, None, None))


def _compile(tree: Any, mode: str):
    """CPython's compile(), without its SyntaxWarnings ('1[0]': "perhaps you missed a
    comma?"): the author sees the TypeError when it runs, not a warning in the worker's log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return compile(tree, FILENAME, mode)


def _mutations(tree: ast.AST) -> tuple[bool, frozenset]:
    """(whether the code could change a value it was given, the names it changes in place).

    Changing a container in place is harmless when the name only ever holds a container
    the code built itself (`x = dict(ctx)` then `x['n'] = 2`): those names are returned, and
    the caller copies only if one of them is also a given name. Anything else that changes a
    value in place (`ctx['n'] = 2`, `x[0].append(1)`, `y.sort()` on a loop variable) means
    the inputs must be copied."""
    single_targets = {id(node.targets[0]) for node in ast.walk(tree)
                      if isinstance(node, ast.Assign) and len(node.targets) == 1}
    fresh: dict[str | None, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and id(node.targets[0]) in single_targets \
                and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            fresh[name] = fresh.get(name, True) and _builds_a_container(node.value)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) \
                and id(node) not in single_targets:
            fresh[node.id] = False
        elif isinstance(node, (ast.arg, ast.FunctionDef, ast.ExceptHandler)):
            fresh[getattr(node, "arg", None) or getattr(node, "name", None)] = False
    changed = set()
    for node in ast.walk(tree):
        in_place = (isinstance(node, ast.Subscript) and not isinstance(node.ctx, ast.Load)
                    or isinstance(node, ast.Attribute) and node.attr not in READ_ONLY_ATTRIBUTES)
        if in_place:
            target = node.value  # type: ignore[attr-defined]  # Subscript or Attribute
            if isinstance(target, ast.Name) and fresh.get(target.id):
                changed.add(target.id)
            else:
                return True, frozenset()
    return False, frozenset(changed)


def _builds_a_container(node: ast.AST) -> bool:
    """Whether the expression's value is a new container (not one it was given)."""
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in ("dict", "list", "sorted")
    return isinstance(node, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp,
                             ast.SetComp, ast.GeneratorExp))


def _position(node) -> tuple[int | None, int | None]:
    line = getattr(node, "lineno", None)
    column = getattr(node, "col_offset", None)
    return line, None if column is None or line is None else column + 1


_NESTED_SCOPES = (ast.Lambda, ast.FunctionDef, ast.ListComp, ast.SetComp, ast.DictComp,
                  ast.GeneratorExp)
# Operators that can build a big value from small ones, and their guards (by name in _BUILTINS)
_GUARDED_OPERATORS = {ast.Add: "add", ast.Mult: "multiply", ast.Pow: "power",
                      ast.LShift: "left_shift", ast.Mod: "modulo"}
_SCALAR_CONSTANTS = (int, float, bool, type(None))


def _is_scalar(node: ast.AST) -> bool:
    """A constant whose comparison with anything takes constant time."""
    return isinstance(node, ast.Constant) and type(node.value) in (*_SCALAR_CONSTANTS, str)


def _is_pure(node: ast.AST) -> bool:
    """Reading it twice is the same as reading it once (a name, a constant, `d['k']`)."""
    if isinstance(node, ast.Subscript):
        return _is_pure(node.value) and isinstance(node.slice, ast.Constant)
    return isinstance(node, (ast.Name, ast.Constant))


class _Rewrite(ast.NodeTransformer):
    """Rewrites a checked tree so that everything that could reach outside the data, loop or
    allocate calls a guard of this module (`__dm_<name>` in _BUILTINS). Plain reads,
    arithmetic on numbers and control flow stay native: they are the cheap majority."""

    def __init__(self):
        self.repeated = 0  # > 0 inside loops, functions and comprehensions

    # helpers
    @staticmethod
    def guard(name: str, node: ast.AST, *args: Any, keywords=()) -> ast.Call:
        call = ast.Call(func=ast.Name(f"__dm_{name}", ast.Load()), args=list(args),
                        keywords=list(keywords))
        return ast.copy_location(call, node)

    def repeating(self, node: ast.AST) -> ast.AST:
        self.repeated += 1
        try:
            return self.generic_visit(node)
        finally:
            self.repeated -= 1

    def charged(self, node: ast.AST) -> ast.AST:
        """A literal built again and again (in a loop or function) counts as allocation."""
        return self.guard("charge", node, node) if self.repeated else node

    def slice_parts(self, key: ast.Slice) -> list[ast.AST]:
        """`a:b:c` as three arguments of a guard, None for each one left out."""
        return [ast.Constant(None) if part is None else self.visit(part)
                for part in (key.lower, key.upper, key.step)]

    def tick(self, node: ast.AST) -> ast.Expr:
        return ast.copy_location(ast.Expr(self.guard("tick", node)), node)

    # names: the builtins stay what they are
    def visit_Name(self, node):
        if not isinstance(node.ctx, ast.Load) and node.id in _SAFE_BUILTINS:
            raise _Refused(f"'{node.id}' is a built-in name and cannot be assigned", node,
                           "NameError")
        return node

    def visit_arg(self, node):
        if node.arg in _SAFE_BUILTINS:
            raise _Refused(f"'{node.arg}' is a built-in name and cannot be assigned", node,
                           "NameError")
        return node

    # attributes: read only, on data only
    def visit_Attribute(self, node):  # only reads: check() refuses assigning attributes
        value = self.visit(node.value)
        return self.guard("attribute", node, value, ast.Constant(node.attr))

    def visit_Call(self, node):
        if isinstance(node.func, ast.Attribute):  # `value.method(...)`: one guarded call
            value = self.visit(node.func.value)
            args = [self.visit(arg) for arg in node.args]
            keywords = [self.visit(keyword) for keyword in node.keywords]
            call = ast.Call(func=ast.Name("__dm_call_method", ast.Load()),
                            args=[value, ast.Constant(node.func.attr), *args], keywords=keywords)
            return ast.copy_location(call, node)
        return self.generic_visit(node)

    # operators
    def visit_BinOp(self, node):
        self.generic_visit(node)
        name = _GUARDED_OPERATORS.get(type(node.op))
        if name is None:
            return node
        if name == "add" and any(isinstance(side, ast.Constant) and
                                 type(side.value) in _SCALAR_CONSTANTS
                                 for side in (node.left, node.right)):
            return node  # a number added to anything cannot grow it
        return self.guard(name, node, node.left, node.right)

    def visit_AugAssign(self, node):
        """`x += y` as `x = x + y`, never in place (a list `+=` itself must not double)."""
        target = node.target
        if isinstance(target, ast.Name):
            self.visit_Name(target)
            value = ast.copy_location(
                ast.BinOp(ast.Name(target.id, ast.Load()), node.op, node.value), node)
            return ast.copy_location(ast.Assign(targets=[target], value=self.visit(value)),
                                     node)
        if isinstance(target, ast.Subscript) and not isinstance(target.slice, ast.Slice):
            operator_name = f"operator_{type(node.op).__name__}"
            return ast.copy_location(ast.Expr(self.guard(
                "update_item", node, self.visit(target.value), self.visit(target.slice),
                ast.Name(f"__dm_{operator_name}", ast.Load()), self.visit(node.value))), node)
        raise _Refused("this target of an augmented assignment is not supported; write "
                       "it as `x = x + y`", target)

    def visit_Compare(self, node):
        self.generic_visit(node)
        operands = [node.left, *node.comparators]
        pairs = []
        for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
            pair = ast.copy_location(ast.Compare(left, [op], [right]), node)
            if not (_is_scalar(left) or _is_scalar(right)):
                pair = self.guard(f"compare_{type(op).__name__}", node, left, right)
            pairs.append(pair)
        if len(pairs) == 1:
            return pairs[0]
        if all(_is_pure(middle) for middle in operands[1:-1]):
            return ast.copy_location(ast.BoolOp(ast.And(), pairs), node)
        # a < f() < c: f() must run once, and c only when a < f()
        later = [ast.Lambda(args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[],
                                               kw_defaults=[], defaults=[]), body=operand)
                 for operand in operands[1:]]
        names = ast.Constant(tuple(type(op).__name__ for op in node.ops))
        return self.guard("compare_chain", node, operands[0], names, *later)

    # subscripts
    def visit_Subscript(self, node):
        value = self.visit(node.value)
        key = node.slice
        if isinstance(key, ast.Slice):
            if isinstance(node.ctx, ast.Store):
                raise _Refused("slice assignment is only supported on its own line: "
                               "`items[a:b] = values`", node)
            if isinstance(node.ctx, ast.Load):
                return self.guard("slice", node, value, *self.slice_parts(key))
            node.value = value
            node.slice = self.visit(key)
            return node
        node.value = value
        node.slice = self.visit(key)
        if not isinstance(node.slice, ast.Constant):
            node.slice = self.guard("key", node.slice, node.slice)
        return node

    def visit_Assign(self, node):
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript):
            target = node.targets[0]
            value = self.visit(node.value)
            container = self.visit(target.value)
            if isinstance(target.slice, ast.Slice):
                call = self.guard("set_slice", node, value, container,
                                  *self.slice_parts(target.slice))
            else:
                call = self.guard("set_item", node, value, container, self.visit(target.slice))
            return ast.copy_location(ast.Expr(call), node)
        targets = [self.visit(target) for target in node.targets]
        if isinstance(node.value, ast.Tuple) and all(
                isinstance(target, (ast.Tuple, ast.List)) for target in targets):
            node.value.elts = [self.visit(item) for item in node.value.elts]  # a, b = b, a
        else:
            node.value = self.visit(node.value)
        node.targets = targets
        return node

    # literals
    def visit_Starred(self, node):
        if isinstance(node.ctx, ast.Load):
            node.value = self.guard("spread", node, self.visit(node.value))
        return node

    def visit_keyword(self, node):
        node.value = self.visit(node.value)
        if node.arg is None:  # f(**kwargs)
            node.value = self.guard("spread", node, node.value)
        return node

    def visit_List(self, node):
        self.generic_visit(node)
        return self.charged(node) if isinstance(node.ctx, ast.Load) else node

    visit_Tuple = visit_List

    def visit_Set(self, node):
        self.generic_visit(node)
        for index, item in enumerate(node.elts):
            if isinstance(item, ast.Starred):  # {*items}: each item is hashed
                item.value = self.guard("keys", item, item.value)
            elif not isinstance(item, ast.Constant):
                node.elts[index] = self.guard("key", item, item)
        return self.charged(node)

    def visit_Dict(self, node):
        self.generic_visit(node)
        node.keys = [key if key is None or isinstance(key, ast.Constant)
                     else self.guard("key", key, key) for key in node.keys]
        node.values = [value if key is not None else self.guard("spread", value, value)
                       for key, value in zip(node.keys, node.values, strict=True)]
        return self.charged(node)

    def visit_JoinedStr(self, node):
        self.generic_visit(node)
        return self.guard("charge", node, node)

    def visit_FormattedValue(self, node):
        spec = ast.Constant("") if node.format_spec is None else self.visit(node.format_spec)
        formatted = self.guard("format", node, self.visit(node.value),
                               ast.Constant(node.conversion), spec)
        return ast.copy_location(ast.FormattedValue(formatted, -1, None), node)

    # loops, comprehensions and functions: the clock, the depth, the items built
    def visit_For(self, node):
        node = self.repeating(node)
        node.body.insert(0, self.tick(node.body[0]))
        return node

    visit_While = visit_For

    def comprehension(self, node, item_field: str, guard: str):
        node = self.repeating(node)
        for generator in node.generators:
            generator.ifs.insert(0, self.guard("tick", generator.target))
        item = getattr(node, item_field)
        setattr(node, item_field, self.guard(guard, item, item))
        return node

    def visit_ListComp(self, node):
        return self.comprehension(node, "elt", "item")

    def visit_GeneratorExp(self, node):
        """Generators are evaluated eagerly, as a list: no generator objects reach the code."""
        return self.visit_ListComp(ast.copy_location(ast.ListComp(node.elt, node.generators),
                                                     node))

    def visit_SetComp(self, node):
        return self.comprehension(node, "elt", "key_item")

    def visit_DictComp(self, node):
        return self.comprehension(node, "key", "key_item")

    def visit_FunctionDef(self, node):
        self.visit_arg(ast.copy_location(ast.arg(node.name), node))
        node = self.repeating(node)
        node.decorator_list = [ast.Name("__dm_function", ast.Load())]
        return node

    def visit_Lambda(self, node):
        return self.guard("function", node, self.repeating(node))

    def visit_ExceptHandler(self, node):
        """`except` matches the builtin exception classes by name; BaseException and a bare
        `except:` mean Exception, so the sandbox's own stops stay uncatchable."""
        if node.name is not None:
            self.visit_Name(ast.copy_location(ast.Name(node.name, ast.Store()), node))
        if node.type is None:
            node.type = ast.copy_location(ast.Name("__dm_Exception", ast.Load()), node)
        else:
            items = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            classes = []
            for item in items:
                name = getattr(item, "id", None)
                name = "Exception" if name == "BaseException" else name
                if name not in EXCEPTION_CLASSES:
                    raise _Refused(f"unknown exception class in except: {ast.unparse(item)}",
                                   item, "NameError")
                classes.append(ast.copy_location(ast.Name(f"__dm_{name}", ast.Load()), item))
            node.type = ast.copy_location(ast.Tuple(classes, ast.Load()), node.type)
        node.body = [self.visit(statement) for statement in node.body]
        return node


# Run time: the budget of the running evaluation, per thread ------------------------------------
_local = threading.local()


class _Budget:
    """What one evaluation may still spend: time, nested calls, allocation."""

    __slots__ = ("time_limit", "deadline", "ticks", "depth", "allocated")

    def __init__(self, time_limit: float):
        self.time_limit = time_limit
        self.deadline = time.monotonic() + time_limit
        self.ticks = self.depth = self.allocated = 0


def _tick():
    """Every loop iteration and call passes here; returns True for comprehension `if`s."""
    budget = _local.budget
    budget.ticks += 1
    if not budget.ticks % CLOCK_EVERY and time.monotonic() > budget.deadline:
        raise _Abort("timeout", f"time limit of {budget.time_limit:g} s exceeded")
    return True


def _charge(value):
    """Count what a call, operator or repeated literal produced against the run's budget."""
    kind = type(value)
    if kind is str or kind is bytes:
        size = len(value)
    elif kind in ITEM_BYTES:
        size = ITEM_BYTES[kind] * (len(value) + 1)
    elif kind is int:
        size = value.bit_length() >> 3
    else:
        return value
    _spend(size)
    return value


def _spend(size: int):
    """Count `size` estimated bytes against the running evaluation's allocation budget."""
    budget = _local.budget
    budget.allocated += size
    if budget.allocated > MAX_ALLOCATION:
        _too_big(f"the expression produced more than {MAX_ALLOCATION // 2**20} MiB of data")


def _charged(function):
    """`function` with its results charged."""
    def call(*args, **kwargs):
        return _charge(function(*args, **kwargs))
    call.__name__ = getattr(function, "__name__", "function")
    return call


def _item(value):
    """One more item of a list comprehension."""
    _spend(ITEM_BYTES[list])
    return value


def _key_item(key):
    """One more key of a dict or set comprehension."""
    _guard_key(key)
    _spend(ITEM_BYTES[dict])
    return key


def _spread(values):
    """`*values` or `**values`: its items are copied into a new list, tuple, dict or call."""
    _spend(ITEM_BYTES[list] * _length(values))
    return values


def _key(key):
    """A dict key or set item: hashing a tuple walks it, so huge shared tuples are refused."""
    if type(key) is tuple:
        _guard_key(key)
    return key


def _keys(values):
    """Items about to be hashed (set items, dict keys): refused when hashing would walk huge
    shared tuples."""
    if type(values) is tuple or any(type(value) is tuple for value in values):
        _guard_items(values)
    return values


def _function(function):
    """A function the expression defines: each call is counted against the clock and the
    call depth."""
    def call(*args, **kwargs):
        budget = _local.budget
        _tick()
        budget.depth += 1
        try:
            if budget.depth > MAX_CALL_DEPTH:
                raise _Abort("resource", f"functions nested deeper than {MAX_CALL_DEPTH} calls")
            return function(*args, **kwargs)
        finally:
            budget.depth -= 1
    call.__name__ = function.__name__
    return call


def _check_attribute(value, name: str):
    """Attributes exist only on plain data values, and never private ones or formatters."""
    if type(value) not in DATA_TYPES or name.startswith("_") or name in _FORMATTERS:
        raise AttributeError(f"'{name}' is not available on {_describe(value)}")


def _attribute(value, name: str):
    """`value.name` on plain data; a method comes back guarded and charged."""
    _check_attribute(value, name)
    found = getattr(value, name)
    return partial(_call_method, value, name) if callable(found) else found


def _call_method(value, name: str, /, *args, **kwargs):
    """`value.name(...)`: the method of a plain data value, through its guard if it has one."""
    _check_attribute(value, name)
    kind = type(value)
    if kind is dict or kind is set:  # their methods hash their arguments (or their items)
        for arg in args:
            if type(arg) in CONTAINERS:
                _keys(arg)
    guard = _GUARDED_METHODS.get((kind, name))
    if guard is not None:
        return _charge(guard(value, *args, **kwargs))
    return _charge(getattr(value, name)(*args, **kwargs))


def _slice(value, lower, upper, step):
    return _charge(value[lower:upper:step])


def _set_item(item, container, key):
    _key(key)
    if type(container) is dict and key not in container:
        _charge_items(1, dict)
    container[key] = item


def _set_slice(items, container, lower, upper, step):
    if type(container) is list:
        _check_length(len(container) + _length(items), "list")
        _charge_items(_length(items), list)
    container[lower:upper:step] = items


def _update_item(container, key, update, value):
    """`container[key] op= value`, as `container[key] = container[key] op value`."""
    _key(key)
    container[key] = update(container[key], value)


def _charge_items(count: int, kind: type):
    _spend(ITEM_BYTES[kind] * count)


def _format(value, conversion: int, spec: str) -> str:
    """One `{value!conversion:spec}` of an f-string."""
    if conversion in (114, 115, 97) or not spec:
        _guard_text(value)
    if conversion == 114:
        value = repr(value)
    elif conversion == 115:
        value = str(value)
    elif conversion == 97:
        value = ascii(value)
    _guard_format_spec(spec)
    return format(value, spec)


def _comparison(compare, membership: bool):
    def guarded(left, right):
        if type(left) in CONTAINERS:
            _guard_comparison(left, right, membership)
        return compare(left, right)
    return guarded


_COMPARISONS = {
    "Eq": operator.eq, "NotEq": operator.ne, "Lt": operator.lt, "LtE": operator.le,
    "Gt": operator.gt, "GtE": operator.ge, "Is": operator.is_, "IsNot": operator.is_not,
    "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b,
}
_GUARDED_COMPARISONS = {name: _comparison(compare, name in ("In", "NotIn"))
                        for name, compare in _COMPARISONS.items()}


def _compare_chain(first, names: tuple, *later):
    """`a < b < c` whose middle operands must run once, and only while it holds."""
    left = first
    result = True
    for name, operand in zip(names, later, strict=True):
        right = operand()
        result = _GUARDED_COMPARISONS[name](left, right)
        if not result:
            return result
        left = right
    return result


_FORMATTERS = ("format", "format_map")  # '{0.attr}' would reach attributes by name


def _describe(value) -> str:
    kind = type(value)
    if kind is set or kind is frozenset:
        return "a set"
    if callable(value):
        return "a function"
    if kind is bytes:
        return "bytes"
    if kind in (list, tuple, dict, str, int, float, bool):
        article = "an" if kind.__name__[0] in "aeiou" else "a"
        return f"{article} {kind.__name__}"
    if value is None:
        return "None"
    return f"an object of type {kind.__name__}"


# Guards: refuse before allocating ---------------------------------------------------------------
def _length(value) -> int:
    try:
        return len(value)
    except (TypeError, OverflowError):
        return 0


def _check_length(length: int, what: str):
    if length > MAX_LENGTH:
        unit = "characters" if what in ("str", "bytes", "string") else "items"
        _too_big(f"a {what} of {length:,} {unit} is more than the limit of {MAX_LENGTH:,}")


def _check_bits(bits: float, what: str):
    if bits > MAX_INT_BITS:
        _too_big(f"{what} would have about {int(bits):,} bits, more than the limit of "
                 f"{MAX_INT_BITS:,}")


def _sequence_repeat(sequence, times) -> None:
    if isinstance(times, int) and times > 0:
        _check_length(len(sequence) * times, type(sequence).__name__)


def _multiply(left, right):
    if isinstance(left, (str, bytes, list, tuple)):
        _sequence_repeat(left, right)
    elif isinstance(right, (str, bytes, list, tuple)):
        _sequence_repeat(right, left)
    elif isinstance(left, int) and isinstance(right, int):
        _check_bits(left.bit_length() + right.bit_length(), "the product")
    return left * right


def _add(left, right):
    if isinstance(left, (str, bytes, list, tuple)) and type(left) is type(right):
        _check_length(len(left) + len(right), type(left).__name__)
    return left + right


def _power(base, exponent):
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        _check_bits(exponent * math.log2(abs(base)), "the power")
    return base ** exponent


def _left_shift(value, shift):
    if isinstance(value, int) and isinstance(shift, int) and value:
        _check_bits(value.bit_length() + shift, "the shifted number")
    return value << shift


# After '%' and its optional '(key)': flags, width, precision, length modifier, conversion.
# Matched at one position at a time (never searched), so a scan is linear in the template.
_PERCENT_TAIL = re.compile(rb"[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.S)


def _modulo(left, right):
    if isinstance(left, (str, bytes)):
        _guard_percent_format(left, right)
        _guard_text(right)
    return left % right


def _percent_specs(raw: bytes):
    """(width, precision, conversion) of each '%' spec, in one pass over the template.

    A mapping key is skipped the way CPython reads it (nested parentheses count); a key
    that never closes ends the scan, as CPython refuses the template. A regex searched
    for `%(...)` took quadratic time on '%(' * 50000."""
    position = raw.find(b"%")
    while position >= 0:
        start = position + 1
        if raw[start:start + 1] == b"(":
            depth, index = 1, start + 1
            while depth:
                close = raw.find(b")", index)
                if close < 0:
                    return
                depth += raw.count(b"(", index, close) - 1
                index = close + 1
            start = index
        match = _PERCENT_TAIL.match(raw, start)
        if match is None:
            return
        yield match.groups()
        position = raw.find(b"%", match.end())


def _guard_percent_format(template, values):
    """'%*d' % (10**9, 1) and '%1000000000d' would allocate the width up front."""
    raw = template.encode("utf-8", "surrogatepass") if isinstance(template, str) else template
    if b"%" not in raw:
        return
    positional = list(values) if isinstance(values, tuple) else [values]
    index = 0
    for width, precision, conversion in _percent_specs(raw):
        for part in (width, precision):
            if part == b"*":
                number = positional[index] if index < len(positional) else 0
                index += 1
            else:
                number = int(part) if part else 0
            if isinstance(number, int) and number > MAX_FORMAT_WIDTH:
                _too_big(f"a format width of {number:,} is more than {MAX_FORMAT_WIDTH:,}")
        if conversion != b"%":
            index += 1


# re.S: a newline is a fill character like any other (f'{x:\n>1000000000}').
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?", re.S)


def _guard_format_spec(spec: str):
    match = _FORMAT_SPEC.match(spec)
    for number in match.groups() if match else ():
        if number and int(number) > MAX_FORMAT_WIDTH:
            _too_big(f"a format width of {int(number):,} is more than {MAX_FORMAT_WIDTH:,}")


def _guard_text(value):
    """Refuse to turn into text a value whose text would be huge (str(), f'{}', '%s')."""
    if type(value) in CONTAINERS:
        weight = _weight(value, MAX_LENGTH)
        if weight > MAX_LENGTH:
            _too_big(f"the text of this value would be longer than {MAX_LENGTH:,} characters")
    elif isinstance(value, int) and value.bit_length() > MAX_INT_DIGITS * 3.32:
        _too_big(f"a number with more than {MAX_INT_DIGITS:,} digits cannot become text")


def _guard_comparison(left, right, membership: bool):
    """Comparing nested values walks them; shared parts make that exponential."""
    if type(left) not in CONTAINERS:
        return
    if type(right) in CONTAINERS or membership:
        limit = MAX_COMPARE_WEIGHT
        if _weight(left, limit) + _weight(right, limit) > limit:
            _too_big("the values compared are too large (nested values shared too many times)")


def _guard_key(key):
    """Hashing a tuple walks it: refuse tuples built from parts shared too many times."""
    if type(key) is tuple and _weight(key, MAX_COMPARE_WEIGHT) > MAX_COMPARE_WEIGHT:
        _too_big("the tuple used as a key is too large")


def _guard_items(items):
    if _weight(items, MAX_COMPARE_WEIGHT) > MAX_COMPARE_WEIGHT:
        _too_big("the values compared are too large (nested values shared too many times)")


def _weight(value, limit: int) -> int:
    """Size of `value` written out as text (shared parts counted every time), computed in
    time linear in its distinct parts; stops early once above `limit`. Containers without
    nested containers, the common case, are measured at C speed."""
    memo: dict[int, int] = {}

    def flat(items, kinds) -> int:
        total = 8 * len(items)
        if str in kinds or bytes in kinds:
            total += sum(len(x) for x in items if type(x) is str or type(x) is bytes)
        return total

    def weigh(item, depth: int) -> int:
        kind = type(item)
        if kind is str or kind is bytes:
            return len(item) + 3
        if kind not in CONTAINERS:
            return item.bit_length() // 3 + 2 if kind is int else 8
        known = memo.get(id(item))
        if known is not None:
            return known
        if depth > MAX_NESTING:
            _too_big(f"values nested deeper than {MAX_NESTING} levels")
        total = 2
        children = item
        if kind is dict:
            key_kinds = set(map(type, item))
            if key_kinds.isdisjoint(CONTAINERS):
                total += flat(item, key_kinds)
            else:
                total += sum(weigh(key, depth + 1) for key in item)
            children = item.values()
        kinds = set(map(type, children))
        if kinds.isdisjoint(CONTAINERS):
            total += flat(children, kinds)
        else:
            for child in children:
                if type(child) in CONTAINERS:
                    total += weigh(child, depth + 1)
                else:
                    total += len(child) + 3 if type(child) is str else 8
                if total > limit:
                    return total
        memo[id(item)] = total
        return total

    return weigh(value, 0)


# Guarded methods of data values -------------------------------------------------------------------
def _padding(method):
    def padded(text, width, *args):
        if isinstance(width, int) and width > MAX_LENGTH:
            _too_big(f"a width of {width:,} is more than the limit of {MAX_LENGTH:,}")
        return getattr(text, method)(width, *args)
    return padded


def _expandtabs(text, tabsize=8):
    if isinstance(tabsize, int):
        tab = "\t" if isinstance(text, str) else b"\t"
        _check_length(len(text) + text.count(tab) * max(tabsize, 0), "string")
    return (text.expandtabs(tabsize))


def _replace(text, old, new, count=-1):
    if isinstance(old, type(text)) and isinstance(new, type(text)) and len(new) > len(old):
        hits = text.count(old) if old else len(text) + 1
        if count >= 0:
            hits = min(hits, count)
        _check_length(len(text) + hits * (len(new) - len(old)), "string")
    return (text.replace(old, new, count))


def _join(separator, items):
    items = list(items)
    total = len(separator) * max(len(items) - 1, 0)
    for item in items:
        total += _length(item)
        if total > MAX_LENGTH:
            _check_length(total, "string")
    return (separator.join(items))


def _translate(text, table, *args):
    if isinstance(table, dict):
        longest = max((len(v) for v in table.values() if isinstance(v, (str, bytes))), default=1)
        _check_length(len(text) * max(longest, 1), "string")
    return (text.translate(table, *args))


def _to_bytes(number, length=1, *args, **kwargs):
    if isinstance(length, int) and length > MAX_LENGTH:
        _too_big(f"{length:,} bytes is more than the limit of {MAX_LENGTH:,}")
    return (number.to_bytes(length, *args, **kwargs))


def _extend(items, more):
    _check_length(len(items) + _length(more), "list")
    _charge_items(_length(more), list)
    items.extend(more)


def _growing(method):
    """A method that adds items to its container in place: the new items are charged."""
    def grow(container, *args, **kwargs):
        before = len(container)
        result = getattr(container, method)(*args, **kwargs)
        _charge_items(len(container) - before, type(container))
        return result
    return grow


def _comparing(method):
    def compared(items, *args, **kwargs):
        _guard_items(items)
        for arg in args:
            _guard_items(arg)
        return getattr(items, method)(*args, **kwargs)
    return compared


_GUARDED_METHODS: dict[tuple[type, str], Any] = {
    **{(kind, name): _padding(name) for kind in (str, bytes)
       for name in ("ljust", "rjust", "center", "zfill")},
    **{(kind, "expandtabs"): _expandtabs for kind in (str, bytes)},
    **{(kind, "replace"): _replace for kind in (str, bytes)},
    **{(kind, "join"): _join for kind in (str, bytes)},
    **{(kind, "translate"): _translate for kind in (str, bytes)},
    (int, "to_bytes"): _to_bytes,
    (bool, "to_bytes"): _to_bytes,
    (list, "extend"): _extend,
    **{(kind, name): _growing(name) for kind, name in (
        (list, "append"), (list, "insert"), (set, "add"), (set, "update"), (dict, "update"),
        (dict, "setdefault"))},
    **{(list, name): _comparing(name) for name in ("sort", "count", "index", "remove")},
    **{(tuple, name): _comparing(name) for name in ("count", "index")},
}


# Safe builtins ------------------------------------------------------------------------------------
def _range(*args):
    numbers = range(*args)
    try:
        size = len(numbers)
    except OverflowError:
        size = MAX_LENGTH + 1
    _check_length(size, "range")
    return numbers


def _sum(items, start=0):
    items = list(items)
    if isinstance(start, (list, tuple)):
        # list + list + ... copies the growing total each time: quadratic
        total, work = len(start), 0
        for item in items:
            total += _length(item)
            work += total
            if work > 10 * MAX_LENGTH:
                _too_big("sum() of these lists would copy too much; use a comprehension")
    elif sum(item.bit_length() for item in items if type(item) is int) > 1000 * MAX_INT_BITS:
        _too_big("sum() of these numbers would take too long; they are too large")
    return sum(items, start)


def _str(*args, **kwargs):
    if args:
        _guard_text(args[0])
    return str(*args, **kwargs)


def _int(value=0, *args):
    if isinstance(value, (str, bytes)) and len(value.strip()) > MAX_INT_DIGITS:
        _too_big(f"int() of more than {MAX_INT_DIGITS:,} digits")
    return int(value, *args)


def _round(number, ndigits=None):
    if isinstance(ndigits, int) and abs(ndigits) > 400:
        _too_big("round() to more than 400 digits")
    return round(number, ndigits)


def _sorted(items, *, key=None, reverse=False):
    items = list(items)
    _guard_items(items)
    return sorted(items, key=key, reverse=reverse)


def _extreme(pick):
    def extreme(*args, **kwargs):
        if not args:
            raise TypeError(f"{pick.__name__}() expected at least 1 argument, got 0")
        items = list(args[0]) if len(args) == 1 else list(args)
        _guard_items(items)
        return pick(items, **kwargs)
    extreme.__name__ = pick.__name__
    return extreme


def _dict(*args, **kwargs):
    if args and isinstance(args[0], (list, tuple)):
        for pair in args[0]:
            if isinstance(pair, (list, tuple)) and pair:
                _guard_key(pair[0])
    return dict(*args, **kwargs)


_SAFE_BUILTINS = {
    "len": len, "abs": abs, "bool": bool, "float": float, "any": any, "all": all,
    "min": _extreme(min), "max": _extreme(max), "round": _round, "int": _int, "range": _range,
    "list": _charged(list), "sum": _charged(_sum), "sorted": _charged(_sorted),
    "str": _charged(_str), "dict": _charged(_dict),
    "enumerate": _charged(lambda items, start=0: list(enumerate(items, start))),
    "zip": _charged(lambda *iterables: list(zip(*iterables, strict=False))),
}
assert set(_SAFE_BUILTINS) == set(SAFE_BUILTIN_NAMES)


# Everyday helpers added in the language's second edition. Kept apart from _SAFE_BUILTINS:
# a machine written before them may use these names for its own variables, and still can.
_ERROR_TYPE_RE = re.compile(ERROR_TYPE_PATTERN)
MAX_FAIL_MESSAGE = 2_000
# What isinstance() accepts as a type: the builtins that name JSON types (and set)
_JSON_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": (list, tuple),
               "dict": dict}


def _set(items=()):
    items = list(items)
    _guard_items(items)
    for item in items:
        _guard_key(item)
    return set(items)


def _reversed(items):
    if isinstance(items, (dict, set, frozenset)):
        raise TypeError(f"reversed() takes a list or a str, not {_describe(items)}")
    return list(reversed(items))


def _isinstance(value, kinds):
    wanted = kinds if isinstance(kinds, (tuple, list)) else (kinds,)
    if len(wanted) > len(_JSON_TYPES) + 1:  # more than every type there is: a repeated one
        raise TypeError("isinstance() takes at most one of each type")
    types: list = []
    for kind in wanted:
        found = _TYPE_OF.get(id(kind))
        if found is None:
            raise TypeError("isinstance() takes str, int, float, bool, list, dict or set, "
                            "or a tuple of them")
        types.extend(found if isinstance(found, tuple) else (found,))
    return isinstance(value, tuple(types))


def _fail(error_type, message=""):
    if not (isinstance(error_type, str) and _ERROR_TYPE_RE.fullmatch(error_type)):
        raise TypeError(f"fail() needs an error type such as 'card_declined' (lowercase "
                        f"letters, digits, '_', '.', '-'), not {error_type!r:.60}")
    if not isinstance(message, str):
        raise TypeError(f"fail() needs a message that is a str, not {_describe(message)}")
    raise Raised(error_type, message[:MAX_FAIL_MESSAGE])


_HELPER_BUILTINS = {
    "set": _charged(_set), "reversed": _charged(_reversed), "isinstance": _isinstance,
    "add": durations.add, "duration": durations.seconds, "fail": _fail,
}
assert set(_SAFE_BUILTINS) | set(_HELPER_BUILTINS) == set(names.BUILTIN_ARITY)
assert set(EXCEPTION_CLASSES) == names.EXCEPTIONS
_TYPE_OF = {id(_SAFE_BUILTINS[name]): kind for name, kind in _JSON_TYPES.items()}
_TYPE_OF[id(_HELPER_BUILTINS["set"])] = (set, frozenset)

_GUARDED_OPERATOR_FUNCTIONS = {
    "add": _charged(_add), "multiply": _charged(_multiply), "power": _charged(_power),
    "left_shift": _charged(_left_shift), "modulo": _charged(_modulo),
}
# `container[key] op= value`, by the operator's AST class name
_UPDATE_OPERATORS = {
    "Add": _GUARDED_OPERATOR_FUNCTIONS["add"], "Sub": operator.sub,
    "Mult": _GUARDED_OPERATOR_FUNCTIONS["multiply"], "Div": operator.truediv,
    "FloorDiv": operator.floordiv, "Mod": _GUARDED_OPERATOR_FUNCTIONS["modulo"],
    "Pow": _GUARDED_OPERATOR_FUNCTIONS["power"],
    "LShift": _GUARDED_OPERATOR_FUNCTIONS["left_shift"], "RShift": operator.rshift,
    "BitOr": operator.or_, "BitXor": operator.xor, "BitAnd": operator.and_,
    "MatMult": operator.matmul,
}

# The builtins of compiled expressions: the safe builtins, and the guards the rewrite calls
# under names the code itself cannot write (check() refuses names starting with '__').
# Builtins, not globals: a run's globals are then only its names, quick to set up.
_BUILTINS = {
    **_SAFE_BUILTINS,
    **_HELPER_BUILTINS,
    **{f"__dm_{name}": cls for name, cls in EXCEPTION_CLASSES.items()},
    **{f"__dm_compare_{name}": guard for name, guard in _GUARDED_COMPARISONS.items()},
    **{f"__dm_operator_{name}": function for name, function in _UPDATE_OPERATORS.items()},
    **{f"__dm_{name}": function for name, function in _GUARDED_OPERATOR_FUNCTIONS.items()},
    "__dm_tick": _tick, "__dm_charge": _charge, "__dm_item": _item, "__dm_key_item": _key_item,
    "__dm_spread": _spread, "__dm_key": _key, "__dm_keys": _keys, "__dm_function": _function,
    "__dm_attribute": _attribute, "__dm_call_method": _call_method, "__dm_slice": _slice,
    "__dm_set_item": _set_item, "__dm_set_slice": _set_slice,
    "__dm_update_item": _update_item, "__dm_format": _format,
    "__dm_compare_chain": _compare_chain,
}
_GLOBALS = {"__builtins__": _BUILTINS}
# Builtins that never read the running evaluation's budget: a program using only these
# (a guard such as `ctx['n'] < 900`) runs without setting one up.
_BUDGET_FREE = frozenset(
    {"len", "abs", "bool", "float", "any", "all", "min", "max", "round", "int", "range",
     "isinstance", "add", "duration", "fail",
     "__dm_key", "__dm_keys", "__dm_format", "__dm_compare_chain"}
    | {f"__dm_{name}" for name in EXCEPTION_CLASSES}
    | {f"__dm_compare_{name}" for name in _GUARDED_COMPARISONS})


# The result: JSON only, bounded in size -----------------------------------------------------
class _ResultProblem(Exception):
    """Why the result is not acceptable; `where` collects the path on the way out."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem
        self.where: list = []

    def __str__(self):
        path = "result" + "".join(
            f"[{key!r:.40}]" if isinstance(key, str) else f"[{key}]" for key in self.where)
        if len(path) > 80:
            path = f"{path[:40]}…{path[-30:]}"
        return self.problem.format(path=path)


_SCALARS = (str, int, bool, type(None), float)
_SMALL_INT_BITS = 64  # at most 20 digits
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)  # for exact sizes


def _to_json(value, max_bytes: int):
    """A fresh JSON copy of `value` (tuples become lists), or _ResultProblem naming where
    it is not JSON or too big. The size is counted while walking, so a shared-value bomb
    stops as soon as it passes the bound. (Faster than json.dumps + loads for small
    results, which is what guards and assigns return.)"""
    remaining = max_bytes

    def spend(amount: int):
        nonlocal remaining
        remaining -= amount
        if remaining < 0:
            raise _ResultProblem(f"the result is larger than {max_bytes:,} bytes of JSON "
                                 "(reached at {path})")

    def scalar(item) -> int:
        """The JSON size of one of _SCALARS, or _ResultProblem when it cannot be JSON."""
        kind = type(item)
        if kind is str:
            return len(item) + 2
        if kind is int:
            bits = item.bit_length()
            if bits > MAX_INT_DIGITS * 3.32:
                raise _ResultProblem("{path} is a number of more than " +
                                     f"{MAX_INT_DIGITS:,} digits")
            return bits // 3 + 1
        if kind is float:
            if math.isnan(item):
                raise _ResultProblem("{path} is NaN, not JSON")
            if math.isinf(item):
                raise _ResultProblem("{path} is infinite, not JSON")
            return 8
        return 5  # bool, None

    def convert(item, depth: int):
        kind = type(item)
        if kind in _SCALARS:
            spend(scalar(item))
            return item
        if kind is not dict and kind is not list and kind is not tuple:
            raise _ResultProblem("{path} is " + _describe(item) + ", not JSON")
        if depth >= MAX_NESTING:
            raise _ResultProblem("{path} is nested deeper than " + f"{MAX_NESTING} levels")
        size = 2
        if kind is dict:
            try:
                size += len("".join(item)) + 4 * len(item)  # at C speed: every key is a str
            except TypeError:
                key = next(key for key in item if type(key) is not str)
                raise _ResultProblem("{path} has a key that is " + _describe(key)
                                     + f" ({key!r:.40}), not a string") from None
            out: Any = dict(item)  # at C speed; nested values are replaced by their copies
            for key, child in item.items():
                child_kind = type(child)
                if child_kind is str:  # inline: the common cases, and this runs a lot
                    size += len(child) + 2
                elif child_kind is int and child.bit_length() < _SMALL_INT_BITS:
                    size += 20
                else:
                    try:
                        if child_kind in _SCALARS:
                            size += scalar(child)
                        else:
                            spend(size)
                            size = 0
                            out[key] = convert(child, depth + 1)
                    except _ResultProblem as problem:
                        problem.where.insert(0, key)
                        raise
        else:
            out = []
            for index, child in enumerate(item):
                try:
                    child_kind = type(child)
                    if child_kind is str:
                        size += len(child) + 3
                        out.append(child)
                    elif child_kind is int and child.bit_length() < _SMALL_INT_BITS:
                        size += 20
                        out.append(child)
                    elif child_kind in _SCALARS:
                        size += 1 + scalar(child)
                        out.append(child)
                    else:
                        spend(size + 1)
                        size = 0
                        out.append(convert(child, depth + 1))
                except _ResultProblem as problem:
                    problem.where.insert(0, index)
                    raise
                if size > 65536:
                    spend(size)
                    size = 0
        spend(size)
        return out

    result = convert(value, 0)
    if (max_bytes - remaining) * 6 > max_bytes:  # escapes may make it up to 6x: measure
        size = len(_ENCODER.encode(result).encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise _ResultProblem(f"the result is {size:,} bytes of JSON, more than "
                                 f"{max_bytes:,}")
    return result

"""Run machine expressions: asteval with only the spec's names, bounded in time and memory.

asteval alone is not a sandbox (see ../shared/notes/dependencies.md section 1), so this
module adds what it lacks: a whitelisted symbol table rebuilt for every run, attribute
access limited to plain data values, a step and wall-clock budget checked on every AST
node (raised as a BaseException so user `try/except` cannot swallow it), and guards that
refuse an operation BEFORE it allocates a huge string, list or integer. What it cannot
bound (one pathological C-level call) is written down in docs/sandbox.md.

No Django here: the runner passes the limits from settings.
"""
from __future__ import annotations

import ast
import json
import math
import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

from asteval import Interpreter
from asteval.astutils import Procedure

from machines.definition import Expr
from machines.expressions import ExpressionSyntaxError, check, parse

# Bounds -------------------------------------------------------------------------------------
MAX_LENGTH = 1_000_000  # items of one list/tuple/dict, characters of one str/bytes
MAX_INT_BITS = 100_000  # about 30,000 decimal digits
MAX_INT_DIGITS = 4_300  # int(str) and str(int), as CPython's own default
MAX_FORMAT_WIDTH = 10_000  # width/precision in f-strings and '%' formatting
MAX_ALLOCATION = 64 * 2**20  # estimated bytes produced by calls and operators in one run
MAX_COMPARE_WEIGHT = 10_000_000  # size of nested values compared, hashed or printed
MAX_CALL_DEPTH = 30  # nested calls of functions defined in the expression
MAX_NESTING = 100  # depth of the value an expression returns
MAX_STEPS = 20_000_000  # AST nodes run in one evaluation: seconds of work, past any 1 s limit
# Estimated bytes per item of a container a call or operator produces (with new items)
ITEM_BYTES = {list: 32, tuple: 32, dict: 96, set: 96, frozenset: 96}

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


class ExpressionError(Exception):
    """An expression failed; says which one (path), where in it (line, column) and why."""

    def __init__(self, message, *, kind="runtime", path=None, line=None, column=None,
                 exception=None):
        super().__init__(message)
        self.message = message
        self.kind = kind  # syntax | runtime | timeout | resource | result
        self.path = path
        self.line = line
        self.column = column
        self.exception = exception  # the Python exception class name, e.g. "KeyError"

    def __str__(self):
        text = f"{self.exception} {self.message}" if self.exception else self.message
        if self.path:
            text += f" in {self.path}"
        if self.line is not None:
            text += f", line {self.line}"
        if self.column is not None:
            text += f", column {self.column}"
        return text

    def to_dict(self) -> dict:
        return {"type": "expression_error", "kind": self.kind, "message": self.message,
                "path": self.path, "line": self.line, "column": self.column,
                "exception": self.exception}


class _Abort(BaseException):
    """Stops a run for a bound (timeout/resource). A BaseException: asteval and user
    `try/except` only catch Exception, so nothing inside the run can swallow it."""

    def __init__(self, kind: str, message: str, node: ast.AST | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.node = node


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
    if program.may_mutate:
        try:
            symtable = {name: _copy_data(value) for name, value in names.items()}
        except RecursionError:
            raise ExpressionError("the values given to the expression are nested too deeply",
                                  kind="resource", path=expr.path) from None
    else:
        symtable = dict(names)
    idle = _idle_interpreters()
    interpreter = idle.pop() if idle else _Interpreter()
    try:
        value = interpreter.execute(program.body, symtable, expr.path, time_limit)
    finally:
        idle.append(interpreter)
    kind = type(value)
    if kind is bool or kind is int or value is None:  # guards: skip the walk
        return value
    try:
        return _to_json(value, max_result_bytes)
    except _ResultProblem as problem:
        raise ExpressionError(str(problem), kind="result", path=expr.path) from None


@dataclass(frozen=True)
class _Program:
    body: ast.AST | None  # the module, or its only expression (two nodes fewer to run)
    may_mutate: bool = False
    problem: tuple | None = None  # (message, line, column, exception) when it cannot run


@lru_cache(maxsize=4096)
def _program(source: str) -> _Program:
    """Parse and check once per distinct source."""
    try:
        tree = parse(source)
    except ExpressionSyntaxError as exc:
        return _Program(None, problem=(exc.message, exc.line, exc.column, "SyntaxError"))
    problems = check(source)
    if problems:
        first = problems[0]
        return _Program(None, problem=(first.message, first.line, first.column, None))
    body = tree
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
        body = tree.body[0].value
    return _Program(body, may_mutate=_may_mutate(tree))


def _may_mutate(tree: ast.AST) -> bool:
    """Whether the code could change a value it was given (so it must get copies)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Subscript, ast.Attribute)) and not isinstance(node.ctx, ast.Load):
            return True
        if isinstance(node, ast.Attribute) and node.attr not in READ_ONLY_ATTRIBUTES:
            return True
    return False


def _copy_data(value):
    """A deep copy of JSON-like data; callables and scalars are shared."""
    kind = type(value)
    if kind is dict:
        return {key: _copy_data(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_copy_data(item) for item in value]
    return value


# Interpreters: one in use per evaluation, reused within a thread -------------------------------
_local = threading.local()


def _idle_interpreters() -> list:
    """This thread's interpreters not in use (a nested evaluation, e.g. an io mock, takes
    another one)."""
    try:
        return _local.idle
    except AttributeError:
        _local.idle = []
        return _local.idle


_MISSING = object()
_FORMATTERS = ("format", "format_map")  # '{0.attr}' would reach attributes by name


class _Interpreter(Interpreter):
    """asteval with budgets, guarded operators and calls, and the missing `*`/`**` support."""

    def __init__(self):
        super().__init__(symtable={}, use_numpy=False, builtins_readonly=False)
        self.readonly_symbols = frozenset(SAFE_BUILTIN_NAMES)
        self.handlers_by_type = self._handlers_by_type()

    def _handlers_by_type(self) -> dict:
        allowed = (set(self.node_handlers) - {"import", "importfrom", "with"}
                   | {"generatorexp", "starred"})
        handlers = {}
        for name, cls in vars(ast).items():
            if isinstance(cls, type) and issubclass(cls, ast.AST) and name[0].isupper():
                if name.lower() in allowed:
                    handlers[cls] = getattr(self, f"on_{name.lower()}", self.unimplemented)
        return handlers

    def execute(self, tree: ast.AST, symtable: dict, path: str, time_limit: float):
        """Run `tree`; translate every way it can fail into an ExpressionError."""
        self.error = []
        self.error_msg = self.retval = self._interrupt = None
        self._calldepth = self.steps = self.depth = self.allocated = 0
        self.code_text = []
        self.symtable = symtable
        self.expr = tree
        self.time_limit = time_limit
        self.deadline = time.monotonic() + time_limit
        try:
            return self.run(tree)
        except _Abort as abort:
            line, column = _position(abort.node)
            raise ExpressionError(abort.message, kind=abort.kind, path=path, line=line,
                                  column=column) from None
        except Exception as exc:
            raise self._runtime_error(exc, path) from None
        finally:
            self.symtable = {}

    def _runtime_error(self, exc: Exception, path: str) -> ExpressionError:
        holder = self.error[0] if self.error else None  # the innermost failure
        exception = holder.exc if holder is not None and holder.exc else type(exc)
        message = holder.msg if holder is not None and holder.msg else str(exc)
        line, column = _position(holder.node if holder is not None else None)
        if line is None and holder is not None and holder.lineno:
            line = holder.lineno
        if issubclass(exception, (RecursionError, MemoryError)):
            return ExpressionError(f"{exception.__name__}: {message}", kind="resource",
                                   path=path, line=line, column=column)
        return ExpressionError(message, path=path, line=line, column=column,
                               exception=exception.__name__)

    # Dispatch with budgets: every node passes here -----------------------------------------
    def run(self, node, expr=None, lineno=None, with_raise=True):
        if self.error or self.retval is not None or self._interrupt is not None:
            if self.error:
                return None
            if self.retval is not None:
                return self.retval
            if isinstance(self._interrupt, (ast.Break, ast.Continue)):
                return self._interrupt
        if node is None:
            return None
        if node.__class__ is ast.Constant:
            return node.value
        self.steps += 1
        if not self.steps & 127:
            if time.monotonic() > self.deadline:
                raise _Abort("timeout", f"time limit of {self.time_limit:g} s exceeded", node)
            if self.steps > MAX_STEPS:
                raise _Abort("timeout", f"step limit of {MAX_STEPS} exceeded", node)
        handler = self.handlers_by_type.get(node.__class__)
        if handler is None:
            return self.unimplemented(node)
        try:
            return handler(node)
        except _Abort as abort:
            if abort.node is None:
                abort.node = node
            raise
        except Exception:
            if with_raise:
                self.raise_exception(node, expr=self.expr)
            elif not self.error:  # record it, so that on_try sees the failure
                try:
                    self.raise_exception(node, expr=self.expr)
                except Exception:
                    pass

    def charge(self, value):
        """Count what a call or operator produced against the run's allocation budget."""
        kind = type(value)
        if kind is str or kind is bytes:
            self.allocated += len(value)
        elif kind in CONTAINERS:
            self.allocated += ITEM_BYTES[kind] * len(value)
        elif kind is int:
            self.allocated += value.bit_length() >> 3
        else:
            return value
        if self.allocated > MAX_ALLOCATION:
            _too_big(f"the expression produced more than {MAX_ALLOCATION // 2**20} MiB of data")
        return value

    # Names, attributes, assignment ---------------------------------------------------------
    def value(self, node):
        """run(), without its bookkeeping for the leaves (names, constants) that most nodes
        are: they cannot loop or allocate."""
        kind = node.__class__
        if kind is ast.Name:
            found = self.symtable.get(node.id, _MISSING)
            if found is _MISSING:
                found = _SAFE_BUILTINS.get(node.id, _MISSING)
            if found is not _MISSING:
                return found
        elif kind is ast.Constant:
            return node.value
        return self.run(node)

    def on_name(self, node):
        found = self.symtable.get(node.id, _MISSING)
        if found is _MISSING:
            found = _SAFE_BUILTINS.get(node.id, _MISSING)
            if found is _MISSING:
                raise NameError(f"name '{node.id}' is not defined")
        return found

    def on_attribute(self, node):
        if not isinstance(node.ctx, ast.Load):
            raise AttributeError(f"cannot assign or delete attribute '{node.attr}'")
        value = self.value(node.value)
        attr = node.attr
        if type(value) not in DATA_TYPES or attr.startswith("_") or attr in _FORMATTERS:
            raise AttributeError(f"'{attr}' is not available on {_describe(value)}")
        guard = _GUARDED_METHODS.get((type(value), attr))
        if guard is not None:
            return partial(guard, value)
        return getattr(value, attr)

    def node_assign(self, node, val):
        kind = node.__class__
        if kind is ast.Name:
            if node.id in self.readonly_symbols:
                raise NameError(f"'{node.id}' is a built-in name and cannot be assigned")
            self.symtable[node.id] = val
        elif kind is ast.Subscript:
            target = self.value(node.value)
            key = self.value(node.slice)
            if isinstance(key, slice) and isinstance(target, list):
                _check_length(len(target) + _length(val), "list")
            _guard_key(key)
            target[key] = val
        elif kind in (ast.Tuple, ast.List):
            values = list(val) if not isinstance(val, (list, tuple)) else val
            if len(values) != len(node.elts):
                raise ValueError(f"expected {len(node.elts)} values to unpack, got {len(values)}")
            for target_node, item in zip(node.elts, values, strict=True):
                self.node_assign(target_node, item)
        else:
            raise SyntaxError(f"cannot assign to {kind.__name__}")

    def on_expr(self, node):
        return self.value(node.value)

    def on_assign(self, node):
        value = self.value(node.value)
        for target in node.targets:
            self.node_assign(target, value)

    def on_augassign(self, node):
        """`x += y` as `x = x + y` (never in place), without building new AST nodes."""
        target = node.target
        if target.__class__ is ast.Name:
            current = self.on_name(target)
        elif target.__class__ is ast.Subscript:
            current = self.value(target.value)[self.value(target.slice)]
        else:
            raise SyntaxError(f"cannot assign to {target.__class__.__name__}")
        operator = _BINARY_OPERATORS[node.op.__class__]
        self.node_assign(target, self.charge(operator(current, self.value(node.value))))

    def _comp_save_syms(self, node):
        """Names a comprehension rebinds, to restore after it (asteval deep-copies them)."""
        saved, deleted = {}, set()
        for generator in node.generators:
            for name in self._extract_names_from_target(generator.target):
                if name in self.readonly_symbols:
                    raise NameError(f"'{name}' is a built-in name and cannot be assigned")
                if name in self.symtable:
                    saved[name] = self.symtable[name]
                else:
                    deleted.add(name)
        return saved, deleted

    # Literals with * and ** ------------------------------------------------------------------
    def _items(self, nodes) -> list:
        out = []
        for item in nodes:
            if item.__class__ is ast.Starred:
                values = self.value(item.value)
                _check_length(len(out) + _length(values), "list")
                out.extend(values)
            else:
                out.append(self.value(item))
        return out

    def on_list(self, node):
        return self._items(node.elts)

    def on_tuple(self, node):
        return tuple(self._items(node.elts))

    def on_set(self, node):
        items = self._items(node.elts)
        for item in items:
            _guard_key(item)
        return set(items)

    def on_dict(self, node):
        out = {}
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            if key_node is None:  # {**other}
                other = self.value(value_node)
                _check_length(len(out) + _length(other), "dict")
                out.update(other)
            else:
                key = self.value(key_node)
                _guard_key(key)
                out[key] = self.value(value_node)
        return out

    def on_assert(self, node):
        if not self.value(node.test):
            message = "" if node.msg is None else self.value(node.msg)
            raise AssertionError(message)

    def on_delete(self, node):
        for target in node.targets:
            if target.__class__ is ast.Name:
                if target.id in self.readonly_symbols or target.id not in self.symtable:
                    raise NameError(f"cannot delete '{target.id}'")
                del self.symtable[target.id]
            elif target.__class__ is ast.Subscript:
                container = self.run(target.value)
                del container[self.run(target.slice)]
            else:
                raise SyntaxError(f"cannot delete {target.__class__.__name__}")

    def on_starred(self, node):
        raise SyntaxError("'*' unpacking is only allowed in lists, tuples, sets and calls")

    def on_generatorexp(self, node):
        """Generators are evaluated eagerly, as a list: no generator objects reach the code."""
        return self.on_listcomp(node)

    def on_setcomp(self, node):
        items = self.on_listcomp(node)
        for item in items:
            _guard_key(item)
        return self.charge(set(items))

    def on_listcomp(self, node):
        return self.charge(super().on_listcomp(node))

    def on_dictcomp(self, node):
        return self.charge(super().on_dictcomp(node))

    def do_generator(self, gnodes, node, out):
        """asteval's, with dict keys checked before they are hashed."""
        generator = gnodes[0]
        for value in self.run(generator.iter):
            self.node_assign(generator.target, value)
            if all(self.run(test) for test in generator.ifs):
                if len(gnodes) > 1:
                    self.do_generator(gnodes[1:], node, out)
                elif isinstance(out, list):
                    out.append(self.value(node.elt))
                else:
                    key = self.value(node.key)
                    _guard_key(key)
                    out[key] = self.value(node.value)

    # Operators ------------------------------------------------------------------------------
    def on_binop(self, node):
        left = self.value(node.left)
        right = self.value(node.right)
        return self.charge(_BINARY_OPERATORS[node.op.__class__](left, right))

    def on_compare(self, node):
        left = self.value(node.left)
        result = True
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.value(right_node)
            if type(left) in CONTAINERS:
                _guard_comparison(left, right, op)
            result = _COMPARISONS[op.__class__](left, right)
            if not result:
                return result
            left = right
        return result

    def on_subscript(self, node):
        value = self.value(node.value)
        key = self.value(node.slice)
        if type(key) is tuple:
            _guard_key(key)
        return value[key]

    def on_formattedvalue(self, node):
        value = self.value(node.value)
        if node.conversion in (114, 115, 97) or node.format_spec is None:
            _guard_text(value)
        if node.conversion == 114:
            value = repr(value)
        elif node.conversion == 115:
            value = str(value)
        elif node.conversion == 97:
            value = ascii(value)
        spec = "" if node.format_spec is None else self.value(node.format_spec)
        _guard_format_spec(spec)
        return format(value, spec)

    def on_joinedstr(self, node):
        return self.charge("".join(self.run(part) for part in node.values))

    # Calls ----------------------------------------------------------------------------------
    def on_call(self, node):
        func = self.value(node.func)
        if not callable(func):
            raise TypeError(f"{_describe(func)} is not callable")
        args = self._items(node.args)
        kwargs = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                kwargs.update(self.value(keyword.value))
            elif keyword.arg in kwargs:
                raise SyntaxError(f"keyword argument repeated: {keyword.arg}")
            else:
                kwargs[keyword.arg] = self.value(keyword.value)
        if isinstance(func, Procedure):
            self.depth += 1
            if self.depth > MAX_CALL_DEPTH:
                raise _Abort("resource", f"functions nested deeper than {MAX_CALL_DEPTH} calls",
                             node)
            try:
                return func(*args, **kwargs)
            finally:
                self.depth -= 1
        return self.charge(func(*args, **kwargs))

    def on_try(self, node):
        """try/except matching on the caught exception's class (names or tuples of names)."""
        failed = False
        for statement in node.body:
            self.run(statement, with_raise=False)
            if self.error:
                failed = True
                caught = self.error[0].exc_info[1]
                for handler in node.handlers:
                    if handler.type is None or isinstance(caught, _handled(handler.type)):
                        self.error = []
                        self.error_msg = None
                        if handler.name is not None:
                            self.symtable[handler.name] = caught
                        for line in handler.body:
                            self.run(line)
                        break
                break
        if not failed:
            for statement in node.orelse:
                self.run(statement)
        for statement in node.finalbody:
            self.run(statement)


def _handled(type_node: ast.AST) -> tuple:
    """The exception classes an `except` clause names (the builtin ones by name)."""
    nodes = type_node.elts if isinstance(type_node, ast.Tuple) else [type_node]
    classes = []
    for item in nodes:
        name = getattr(item, "id", None)
        if name in ("BaseException",):
            name = "Exception"  # bounds stay uncatchable
        if name not in EXCEPTION_CLASSES:
            raise NameError(f"unknown exception class in except: {ast.unparse(item)}")
        classes.append(EXCEPTION_CLASSES[name])
    return tuple(classes)


def _position(node) -> tuple[int | None, int | None]:
    line = getattr(node, "lineno", None)
    column = getattr(node, "col_offset", None)
    return line, None if column is None or line is None else column + 1


def _describe(value) -> str:
    kind = type(value)
    if kind is set or kind is frozenset:
        return "a set"
    if isinstance(value, Procedure) or callable(value):
        return "a function"
    if kind.__name__ == "generator":
        return "a generator"
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


_PERCENT_SPEC = re.compile(rb"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)")


def _modulo(left, right):
    if isinstance(left, (str, bytes)):
        _guard_percent_format(left, right)
        _guard_text(right)
    return left % right


def _guard_percent_format(template, values):
    """'%*d' % (10**9, 1) and '%1000000000d' would allocate the width up front."""
    raw = template.encode("utf-8", "surrogatepass") if isinstance(template, str) else template
    if b"%" not in raw:
        return
    positional = list(values) if isinstance(values, tuple) else [values]
    index = 0
    for match in _PERCENT_SPEC.finditer(raw):
        width, precision, conversion = match.groups()
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


_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?")


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


def _guard_comparison(left, right, op):
    """Comparing nested values walks them; shared parts make that exponential."""
    if type(left) not in CONTAINERS:
        return
    if type(right) in CONTAINERS or op.__class__ in (ast.In, ast.NotIn):
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
    items.extend(more)


def _comparing(method):
    def compared(items, *args, **kwargs):
        _guard_items(items)
        for arg in args:
            _guard_items(arg)
        return getattr(items, method)(*args, **kwargs)
    return compared


_GUARDED_METHODS = {
    **{(kind, name): _padding(name) for kind in (str, bytes)
       for name in ("ljust", "rjust", "center", "zfill")},
    **{(kind, "expandtabs"): _expandtabs for kind in (str, bytes)},
    **{(kind, "replace"): _replace for kind in (str, bytes)},
    **{(kind, "join"): _join for kind in (str, bytes)},
    **{(kind, "translate"): _translate for kind in (str, bytes)},
    (int, "to_bytes"): _to_bytes,
    (bool, "to_bytes"): _to_bytes,
    (list, "extend"): _extend,
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
    "len": len, "abs": abs, "bool": bool, "float": float, "list": list, "any": any, "all": all,
    "min": _extreme(min), "max": _extreme(max), "sum": _sum, "sorted": _sorted,
    "round": _round, "int": _int, "str": _str, "dict": _dict, "range": _range,
    "enumerate": lambda items, start=0: list(enumerate(items, start)),
    "zip": lambda *iterables: list(zip(*iterables, strict=False)),
}
assert set(_SAFE_BUILTINS) == set(SAFE_BUILTIN_NAMES)

_BINARY_OPERATORS = {
    ast.Add: _add, ast.Sub: lambda a, b: a - b, ast.Mult: _multiply,
    ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: _modulo,
    ast.Pow: _power, ast.LShift: _left_shift, ast.RShift: lambda a, b: a >> b,
    ast.BitOr: lambda a, b: a | b, ast.BitXor: lambda a, b: a ^ b,
    ast.BitAnd: lambda a, b: a & b, ast.MatMult: lambda a, b: a @ b,
}
_COMPARISONS = {
    ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
    ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}


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
            out = {}
            for key, child in item.items():
                try:
                    if type(key) is not str:
                        raise _ResultProblem("{path} has a key that is " + _describe(key)
                                             + f" ({key!r:.40}), not a string")
                    child_kind = type(child)
                    if child_kind is str:  # inline: the common cases, and this runs a lot
                        size += len(key) + len(child) + 6
                        out[key] = child
                    elif child_kind is int and child.bit_length() < _SMALL_INT_BITS:
                        size += len(key) + 24
                        out[key] = child
                    elif child_kind in _SCALARS:
                        size += len(key) + 4 + scalar(child)
                        out[key] = child
                    else:
                        spend(size + len(key) + 4)
                        size = 0
                        out[key] = convert(child, depth + 1)
                except _ResultProblem as problem:
                    if type(key) is str:
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

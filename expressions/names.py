"""The names an expression may use, and how many arguments each function takes: one list
that the save-time checks (machines/language.py), the sandbox and the engine's helpers
agree on (each asserts it). docs/language.md "Expressions" is the public list.

Pure Python: no Django.
"""
from __future__ import annotations

# Function -> (fewest, most) positional arguments; None: any number.
BUILTIN_ARITY: dict[str, tuple[int, int | None]] = {
    "len": (1, 1), "min": (1, None), "max": (1, None), "sum": (1, 2), "sorted": (1, 1),
    "abs": (1, 1), "round": (1, 2), "int": (0, 2), "float": (0, 1), "str": (0, 1),
    "bool": (0, 1), "list": (0, 1), "dict": (0, 1), "range": (1, 3), "enumerate": (1, 2),
    "zip": (0, None), "any": (1, 1), "all": (1, 1),
    # the second edition's everyday helpers
    "set": (0, 1), "reversed": (1, 1), "isinstance": (2, 2), "add": (2, 2),
    "duration": (1, 1), "fail": (1, 2),
}
# Bound by the engine per step (fixed by the step's time and seed, executions.engine.helpers)
HELPER_ARITY: dict[str, tuple[int, int | None]] = {
    "time": (0, 0), "now": (0, 0), "today": (0, 0), "uuid4": (0, 0), "randint": (2, 2),
    "random": (0, 0),
}
# Exception classes an expression may catch or raise (the sandbox's EXCEPTION_CLASSES)
EXCEPTIONS = frozenset({
    "Exception", "ArithmeticError", "LookupError", "AssertionError", "AttributeError",
    "IndexError", "KeyError", "NameError", "OverflowError", "RuntimeError", "TypeError",
    "ValueError", "ZeroDivisionError",
})
EVERYWHERE = frozenset({"ctx", "input", "execution"}) | set(BUILTIN_ARITY) \
    | set(HELPER_ARITY) | EXCEPTIONS
IO_ARITY = (1, None)  # io(operation, *args, **kwargs)
ARITY = {**BUILTIN_ARITY, **HELPER_ARITY, "io": IO_ARITY}


def available(*extra: str) -> frozenset[str]:
    """The names bound in an expression position: everywhere's, and `extra` (`output`,
    `error`, `io`) where the position binds them."""
    return EVERYWHERE | frozenset(extra)

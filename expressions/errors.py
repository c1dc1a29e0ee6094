"""The errors of expressions: the checker's (source that does not parse) and the sandbox's
(an expression that failed). The engine imports only these, not the sandbox."""
from __future__ import annotations


class ExpressionSyntaxError(ValueError):
    """The source does not parse as Python."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


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

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


class Raised(BaseException):
    """fail(type, message) in an expression: a BaseException, so the expression's own
    `try/except` cannot swallow a failure the author meant."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class RaisedError(ExpressionError):
    """An expression failed on purpose with fail(type, message): the error has the
    author's type, which `retry` and `error` branches match (docs/language.md)."""

    def __init__(self, error_type: str, message: str, *, path=None, line=None, column=None):
        super().__init__(message, kind="raised", path=path, line=line, column=column)
        self.error_type = error_type

    def to_dict(self) -> dict:
        return {"type": self.error_type, "message": self.message, "raised": True,
                "path": self.path, "line": self.line, "column": self.column}

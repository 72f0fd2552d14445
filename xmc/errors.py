"""Exceptions the user sees. Each one says what is wrong, where, and (when we know) how to fix it."""

from __future__ import annotations

from pathlib import Path


class XMCError(Exception):
    """Base class of every error xmc raises on purpose."""


class DataFormatError(XMCError, ValueError):
    """Input data is malformed. Carries the file, the 1-based line and the field at fault."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        where = ""
        if self.path is not None:
            where = self.path
            if line is not None:
                where += f":{line}"
            where += ": "
        if field is not None:
            where += f"[{field}] "
        super().__init__(where + message)
        self.message = message


class ParamError(XMCError, ValueError):
    """A parameter value is invalid; the message names the field, the value and the fix."""


class BundleError(XMCError):
    """A model bundle is missing, corrupt, of a foreign format or of an unsupported version."""


def require(ok: bool, name: str, value: object, fix: str) -> None:
    """Raise ``ParamError`` naming the field, its value and the fix unless ``ok`` (every params check)."""
    if not ok:
        raise ParamError(f"{name}={value!r} is invalid: {fix}")

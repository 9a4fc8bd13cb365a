"""The one exception type meant for people: what went wrong, where, and how to fix it."""

from __future__ import annotations

from pathlib import Path


class MlxlabError(Exception):
    """An error meant for the user: where it happened, what was wrong, how to fix it.

    The CLI prints `str(error)` and exits 1; anything else escaping is a bug.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 column: int | None = None, hint: str | None = None):
        self.message = message
        self.path = Path(path) if path is not None else None
        self.line = line
        self.column = column
        self.hint = hint
        super().__init__(str(self))

    def where(self) -> str:
        """`file:line:column` (as much of it as is known), or '' when no file is involved."""
        if self.path is None:
            return ""
        parts = [str(self.path)]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        where = self.where()
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class UsageError(MlxlabError):
    """The command line itself is wrong (a missing path, a bad flag value): the CLI exits 2."""

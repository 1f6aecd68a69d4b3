"""User-facing errors: one line, naming the file, line and field, mapped to a non-zero exit by the CLI."""

from __future__ import annotations


class TuneforgeError(Exception):
    """An error caused by the user's input (file, config, model name), not by a bug."""

    exit_code = 2


class DataError(TuneforgeError):
    """A problem in a data file; `code` uses OpenAI's data-check codes where one applies."""

    def __init__(self, message: str, *, path: str = "", line: int | None = None,
                 field: str | None = None, code: str = "invalid"):
        self.path, self.line, self.field, self.code, self.detail = path, line, field, code, message
        where = path + (f":{line}" if line is not None else "")
        head = f"{where}: " if where else ""
        fld = f" [{field}]" if field else ""
        super().__init__(f"{head}{code}{fld}: {message}")


class ConfigError(TuneforgeError):
    """A bad config key or value."""


class ModelError(TuneforgeError):
    """A base model that cannot be found or loaded."""

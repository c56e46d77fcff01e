"""Errors a user can fix, told apart from bugs.

A command (``asr_kd.cli``) shows a :class:`UserError` as one line on stderr,
``error: <what, which file or value, what was expected, the fix>``, and exits with status 2; any
other exception is a bug and keeps its traceback. Each class also derives from the built-in
exception that code and tests already expect (``except ValueError`` still catches a
:class:`ConfigError`), so raising one changes nothing for library callers.

Usage:
    raise ConfigError(f"distill.k={k} > k={store.k} stored in {index}; expected <= {store.k}")
    raise MissingFileError(f"no prepared subset {subset!r}: {path} missing (found {found})")
"""

from __future__ import annotations

__all__ = ["BadFileError", "ConfigError", "MissingFileError", "OutputExistsError", "UserError"]


class UserError(Exception):
    """A mistake in the command line, the config or the files given: one line, status 2."""


class ConfigError(UserError, ValueError):
    """A setting (or a pair of settings) that cannot work: names the key, the value, the fix."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the run needs is not there: names the path and what makes it."""


class BadFileError(UserError, ValueError):
    """A file is there but unusable (truncated, foreign, holds code): names it and the fix."""


class OutputExistsError(UserError, FileExistsError):
    """What a run would write is already there (a finished run, another corpus): names it and
    the way on (``resume=true``, another ``out_dir``)."""

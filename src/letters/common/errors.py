"""One clear line for every bad input: the error type the entry points turn into an exit."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class LettersError(Exception):
    """A problem with the user's input (data, config, checkpoint, image), stated in one line.

    The message names the file or config key and what is wrong with it; entry points print
    it without a traceback, because the traceback would only point into our own code.
    """


class ConfigError(LettersError):
    """A config value is out of range; raised before any data is decoded or training starts."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """An exception's message cut to one line, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def user_error_line(error: BaseException) -> str | None:
    """The one line a user is shown for ``error``: a LettersError's message, or an OSError's
    file and reason (a full disk, a folder that cannot be written or made...); None for
    anything else, a bug, which keeps its traceback."""
    if isinstance(error, LettersError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or first_line(error)}"
    return None


def exit_on_user_error(function: Callable[..., T]) -> Callable[..., T]:
    """Print a LettersError (or an OSError naming its file) as ``error: <message>`` and exit
    1, unless HYDRA_FULL_ERROR=1."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (LettersError, OSError) as error:
            line = user_error_line(error)
            if line is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {line}", file=sys.stderr, flush=True)
            sys.exit(1)

    return wrapper

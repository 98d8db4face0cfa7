"""Atomic writes: a crash or kill mid-write leaves the old file or the new one, never half."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from letters.errors import LettersError


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync it, then rename it over.

    A write that fails (a full disk, a file-size limit, a folder that cannot be written) ends
    in one LettersError naming ``path``; the previous file at ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:  # e.g. its folder cannot be made: name the folder too
        where = "" if error.filename in (None, str(path)) else f": {error.filename}"
        raise LettersError(f"{path}: cannot be written ({reason(error)}{where})") from error
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:  # torch.save reports a short write as RuntimeError
        Path(temporary).unlink(missing_ok=True)
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        raise LettersError(
            f"{path}: could not be written ({reason(error)}; a full disk or a file-size "
            f"limit?); {kept}"
        ) from error
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, RuntimeError) and "unexpected pos" in str(error):
        return "the file was cut short"  # torch.save's words for a write that stopped
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def write_json(path: str | os.PathLike, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_atomically(path, lambda handle: handle.write(text.encode()))

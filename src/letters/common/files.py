"""Atomic writes: a crash or kill mid-write leaves the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from letters.common.errors import LettersError, first_line


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync it, then rename it over.

    The file gets the mode a plain ``open(path, "w")`` would give a new file (0o666 less the
    umask: 0644 under umask 022), not mkstemp's private 0600.

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
        # A file system that refuses modes (some network or FAT mounts) keeps mkstemp's.
        with contextlib.suppress(OSError, AttributeError):  # AttributeError: no fchmod
            os.fchmod(descriptor, 0o666 & ~umask())
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


PROC_STATUS = "/proc/self/status"  # Linux (4.7 and later) shows the umask there
_umask_lock = threading.Lock()
_umask_of_process: dict[int, int] = {}  # pid -> umask, where /proc cannot tell


def umask() -> int:
    """The process's umask, without changing it even for a moment where possible.

    ``os.umask`` can only read the umask by setting it, which for an instant gives files that
    other threads create a wrong mode; Linux shows it in /proc/self/status instead (since 4.7).
    Elsewhere it is read with ``os.umask`` once per process, under a lock.
    """
    try:
        with open(PROC_STATUS, encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    pid = os.getpid()
    with _umask_lock:
        if pid not in _umask_of_process:
            mask = os.umask(0o077)  # while it is changed, new files are private, not open
            os.umask(mask)
            _umask_of_process[pid] = mask
        return _umask_of_process[pid]


def reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, RuntimeError) and "unexpected pos" in str(error):
        return "the file was cut short"  # torch.save's words for a write that stopped
    return first_line(error)


def write_json(path: str | os.PathLike, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_atomically(path, lambda handle: handle.write(text.encode()))


def shown_path(path: Path) -> Path:
    """Relative to the working directory when inside it: shorter, and ready to paste."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except (OSError, ValueError):
        return path

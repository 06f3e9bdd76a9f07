"""Small helpers for one-line error messages."""

from __future__ import annotations

import errno
from pathlib import Path


def first_line(error: BaseException) -> str:
    """The first line of an exception's text (libraries raise multi-line messages; ours quote one line)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def os_error_line(error: OSError, where: Path) -> str:
    """A one-line reason for a file-system error under ``where`` (e.g. a run root), with the fix."""
    path = error.filename or where
    if error.errno == errno.ENOSPC:
        return f"no space left on the device of {path}; free space and rerun the same command (finished work is kept)"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write in {where} ({error.strerror}: {path}); make it writable, or pass another --run-root"
    return f"{error.strerror or error} ({path}); fix it and rerun the same command"

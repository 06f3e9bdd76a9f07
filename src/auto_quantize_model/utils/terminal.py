"""What a CLI prints when the terminal or the disk fails it: one line, never a traceback."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path


def say(line: str, *, err: bool = False) -> None:
    """Print one line; a closed terminal (``| head`` that exited) is no reason to stop the work."""
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr if err else sys.stdout, flush=True)


def silence_broken_stdout() -> None:
    """Python flushes stdout at exit; a closed pipe there would print 'Exception ignored ... BrokenPipeError'."""
    try:
        sys.stdout.flush()
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def os_error_line(error: OSError, where: Path) -> str:
    """A one-line reason for a file-system error under ``where`` (a run root), with the fix."""
    path = error.filename or where
    if error.errno == errno.ENOSPC:
        return f"no space left on the device of {path}; free space and rerun the same command (finished work is kept)"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write in {where} ({error.strerror}: {path}); make it writable, or pass another --run-root"
    return f"{error.strerror or error} ({path}); fix it and rerun the same command"

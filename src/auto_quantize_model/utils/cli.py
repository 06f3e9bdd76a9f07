"""What every command-line tool of the project does the same way.

A script builds its parser with ``formatter_class=HelpFormatter`` (every option's default is shown in
``--help``), calls ``add_version_flag(parser)`` (``--version``: package version and git commit) and ends
with ``cli_main(main)`` instead of ``sys.exit(main())``::

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    ...
    if __name__ == "__main__":
        cli_main(main)

``cli_main`` turns a Ctrl-C into one line and exit status 130, and a stdout closed early (``| head``)
into a quiet exit with status 141, as a shell reports for a command killed by SIGINT / SIGPIPE.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from auto_quantize_model.utils.version import version_text

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's own line breaks and appends ``(default: X)`` to each option that has one.

    Nothing is appended for options without a real default (``None``, ``False`` of a switch) or whose
    help already says what the default is (a library-held default, described in words).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not _has_default(action) or "default" in text.lower():
            return action.help
        shown = _format_default(action.default).replace("%", "%%")  # help strings are %-formatted by argparse
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def _has_default(action: argparse.Action) -> bool:
    default = action.default
    if default is None or default is argparse.SUPPRESS or isinstance(default, bool) or default == []:
        return False
    return bool(action.option_strings) or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)


def _format_default(default: Any) -> str:
    if isinstance(default, (list, tuple)):
        return " ".join(str(item) for item in default)
    return str(default)


class _VersionAction(argparse.Action):
    """``--version``: reads the git commit only when asked (it runs ``git``)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the package version and git commit, then exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option_string: Any = None):
        print(version_text(parser.prog))
        parser.exit()


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--version`` (prints ``PROG (auto-quantize-model X.Y.Z, git COMMIT)`` and exits 0)."""
    parser.add_argument("--version", action=_VersionAction)


def cli_main(main: Callable[[], int | None]) -> NoReturn:
    """Run ``main()`` and exit with its status; Ctrl-C exits 130 with one line, a closed stdout 141 silently."""
    try:
        try:
            status = main()
        finally:
            sys.stdout.flush()  # a closed pipe surfaces here, while it can still be handled
    except KeyboardInterrupt:
        _say(f"{Path(sys.argv[0]).name}: interrupted (Ctrl-C)")
        status = EXIT_INTERRUPTED
    except BrokenPipeError:
        _discard_stdout()
        status = EXIT_BROKEN_PIPE
    sys.exit(status)


def say(line: str, *, err: bool = False) -> None:
    """Print one line; a closed terminal is no reason to stop the work (a long run piped into ``head``)."""
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr if err else sys.stdout, flush=True)


def _say(line: str) -> None:
    say(line, err=True)  # stderr may be a closed pipe as well


def _discard_stdout() -> None:
    """Point stdout at /dev/null: Python's flush at exit would otherwise print 'Exception ignored ... BrokenPipe'."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)

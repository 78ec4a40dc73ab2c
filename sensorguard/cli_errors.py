"""How a verb fails: :class:`CliError`, the exit codes, and any exception told as one line.

Split from :mod:`sensorguard.cli`: its :func:`~sensorguard.cli.main` dispatches the verbs and hands
what they raise to :func:`failed`, which tells a user's mistake as it is and a bug as an
``internal error``. Nothing here imports a verb, so every verb's module imports :class:`CliError`
at top level (when it lived in :mod:`sensorguard.cli`, which imports them, they imported it late).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from sensorguard.service.logs import first_line

EXIT_ERROR = 1
EXIT_USAGE = 2
# (serve also exits 74, EX_IOERR: EXIT_UNSAVED in service/state_writes.py, when its final save to state_dir
# failed, a worker's too, or a worker had to be killed before it)


class CliError(Exception):
    """A problem to report as one line, without a traceback."""


def failed(args: argparse.Namespace, exc: Exception) -> int:
    """Users get one line, never a traceback; SENSORGUARD_DEBUG=1 re-raises for bug reports."""
    if os.environ.get("SENSORGUARD_DEBUG") == "1":
        raise exc
    prefix = "" if is_user_error(exc) else "internal error: "
    print(f"sensorguard {args.verb}: error: {prefix}{_one_line(exc)}", file=sys.stderr)
    return EXIT_ERROR


def stdout_gone() -> bool:
    """Whether standard output is a pipe whose reader has left (poll says POLLERR)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # (no descriptor: a test's capture; no poll: Windows)
        return False


def is_user_error(exc: BaseException) -> bool:
    """Errors a user causes (bad data, bundle, config, argument, file) versus bugs."""
    names = {"CliError", "BundleError", "DataError", "ConfigError", "ValueError", "ClusterError"}
    return isinstance(exc, OSError) or any(kind.__name__ in names for kind in type(exc).__mro__)  # (subclasses:
    # pandas' OutOfBoundsDatetime, train --drift's NoDriftBaseline were called internal errors)


# what the OS's words mean where a command made a folder or read one (demo --workdir naming a file said
# "File exists", train --registry naming a file "Not a directory": a walk)
_OS_SAYS = {errno.EEXIST: "is a file, not a directory: give a folder path",
            errno.ENOTDIR: "a part of this path is a file, not a directory: give a folder path"}


def _one_line(exc: BaseException) -> str:
    if type(exc).__name__ == "ConfigError":  # every problem at once, one per line
        return str(exc).strip()
    if isinstance(exc, OSError) and exc.strerror:
        said = exc.strerror
        if exc.errno == errno.ENOTDIR or (exc.errno == errno.EEXIST and os.path.isfile(str(exc.filename))):
            said = _OS_SAYS[exc.errno]  # (EEXIST of a folder made twice keeps the OS's words)
        return f"{exc.filename or ''}: {said}".lstrip(": ")
    return first_line(exc, limit=10_000)

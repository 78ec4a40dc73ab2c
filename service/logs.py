"""Logging for the long-running verbs: plain lines or JSON lines, and a rate limiter for noisy causes.

The daemon logs through the standard library only; :func:`configure_logging` decides the format
once, in the CLI (never at import time). A flood of bad messages must not become a flood of log
lines, so repeated causes go through :class:`RateLimiter`: one line per key per interval, with the
number of occurrences since the last line.

>>> limiter = RateLimiter(interval_s=10.0, clock=iter([0.0, 1.0, 2.0, 12.0]).__next__)
>>> [limiter.hit("bad_ts") for _ in range(4)]
[1, None, None, 3]
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TextIO

# Attributes every LogRecord has; anything else was passed with ``extra=`` and goes into JSON lines.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``, ``worker``
    (a worker process's instance, when given) and extras."""

    def __init__(self, who: str = "") -> None:
        super().__init__()
        self.who = who

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **({"worker": self.who} if self.who else {}),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is at each line, as logging's own last resort does:
    one holding the stream of its time wrote to a closed file once that stream was replaced (a test's
    capture: the next test's daemon threads then printed "--- Logging error ---" tracebacks, which a
    check for "no traceback" read as the CLI's own; CI)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:  # (StreamHandler's attribute, read at each line)
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # (StreamHandler.__init__ and setStream set it: the property wins)
        pass


def configure_logging(json_lines: bool = False, level: str = "INFO", stream=None, who: str = "") -> None:
    """Route the root logger to ``stream`` (stderr) as plain or JSON lines; replaces earlier handlers.
    ``who``: a worker's instance, said in each line (two workers' lines read alike: a walk)."""
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    if json_lines:
        handler.setFormatter(JsonFormatter(who))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {f'[{who}] ' if who else ''}%(name)s: "
                                               "%(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("amqtt").setLevel(max(logging.WARNING, root.level))  # the demo broker is chatty
    logging.getLogger("transitions").setLevel(logging.WARNING)


class RateLimiter:
    """``hit(key)`` returns how many hits to report when a line is due for ``key``, else None."""

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def hit(self, key: str) -> int | None:
        now = self._clock()
        with self._lock:
            count = self._count.get(key, 0) + 1
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._count[key] = count
                return None
            self._last[key] = now
            self._count[key] = 0
            return count


class LineBudget:
    """At most ``lines`` log lines of one kind every ``interval_s``: :meth:`take` says whether the
    next may be written, how many were left out before it, and whether it is the first one left out
    of its interval (to say at once that lines are being left out, and later how many).

    Each sensor fault is worth its line, until a flood of junk machines with one implausible reading
    each wrote ten lines a message, 50,000 for 5,000 messages (a walk): the events are still
    published and counted, the log keeps its first lines of each interval.

    >>> clock = iter([0.0, 1.0, 2.0, 3.0, 61.0]).__next__
    >>> budget = LineBudget(lines=2, interval_s=60.0, clock=clock)
    >>> [budget.take() for _ in range(5)]
    [(True, 0, False), (True, 0, False), (False, 0, True), (False, 0, False), (True, 2, False)]
    """

    def __init__(self, lines: int = 100, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.lines, self.interval_s, self._clock = lines, interval_s, clock
        self._lock = threading.Lock()
        self._start, self._used, self._left_out = -float("inf"), 0, 0

    def take(self) -> tuple[bool, int, bool]:
        now = self._clock()
        with self._lock:
            if now - self._start >= self.interval_s:
                self._start, self._used = now, 0
            if self._used >= self.lines:
                self._used += 1
                self._left_out += 1
                return False, 0, self._used == self.lines + 1
            self._used += 1
            left_out, self._left_out = self._left_out, 0
            return True, left_out, False


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line for a log or an error message: its first line, else its type;
    a longer one ends at its last whole sentence that fits, else its last whole word (torch's
    message of a damaged file ended "... high likelihood that your checkpoint file is").

    >>> first_line(RuntimeError("Reading failed. The file may be damaged or cut short."), 30)
    'Reading failed.'
    >>> first_line(RuntimeError("no sentence end anywhere in this long message"), 20)
    'no sentence end ...'
    """
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    line = lines[0]
    if len(line) <= limit:
        return line
    cut = line[:limit]
    if (end := cut.rfind(". ")) > limit // 3:
        return cut[:end + 1]
    return (cut[:cut.rfind(" ")] if " " in cut else cut).rstrip(",;: ") + " ..."


def counted(n: int, noun: str) -> str:
    """``1 asset``, ``2 assets``: a count and its noun as a line says it (walks read "1 assets
    restored ... sent nothing" and "1 assets'").

    >>> counted(1, "asset"), counted(0, "asset"), counted(3, "reading")
    ('1 asset', '0 assets', '3 readings')
    """
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def some(names: Sequence[object], shown: int = 3, quote: bool = True) -> str:
    """The first ``shown`` of ``names`` for a log line, then how many more: a line names a few
    (assets, channels), never a flood of them.

    >>> some(["a", "b", "c", "d", "e"]), some(["x.y"], quote=False)
    ("'a', 'b', 'c' and 2 more", 'x.y')
    """
    listed = ", ".join(repr(n) if quote else str(n) for n in names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


def joined_and_left(before: Sequence[str], after: Sequence[str]) -> str:
    """The members as a line says them, with who joined and who left since the last listing (a
    worker that died or stopped, one that joined: the log said nothing of either, a review).

    >>> joined_and_left(["a", "b"], ["a", "c"])
    "'a', 'c' ('c' joined; 'b' left)"
    """
    joined, left = [m for m in after if m not in before], [m for m in before if m not in after]
    said = "; ".join(f"{some(names, quote=True)} {verb}" for names, verb in ((joined, "joined"), (left, "left"))
                     if names)
    return f"{some(after, 8)} ({said})"


def span(seconds: float) -> str:
    """A duration in words (a stream's age limit, how far ahead a replay left its stamps).

    >>> span(7 * 86400), span(5400), span(90), span(0.5)
    ('7 days', '1.5 hours', '1.5 minutes', '0.5 s')
    """
    for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size:
            n = seconds / size
            return f"{n:.3g} {unit}" + ("" if n == 1 else "s")
    return f"{seconds:.3g} s"

"""The value types of the command line's flags: each parses one argument or says in one line what
it expected (argparse prints that line and exits 2, never a traceback)."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path


def csv_list(text: str) -> list[str]:
    """``a,b,c`` as a list of names, each once."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    repeated = sorted({t for t in items if items.count(t) > 1})
    if repeated:  # a model with a channel twice trains, and then nothing can load it
        raise argparse.ArgumentTypeError(f"expected each name once, got {', '.join(repeated)} more than once")
    return items


def number(kind: type, what: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse type: ``kind(text)`` that ``ok`` accepts, else one line saying ``what`` was expected."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


def path_text(text: str) -> str:
    """A file or folder name. An empty one is the working folder to Path: ``report --out ''`` wrote
    its plots there and ``score --out ''`` said ".: is a directory" (a walk)."""
    if not text:  # (" " is a name POSIX allows: a review)
        raise argparse.ArgumentTypeError("expected a file or folder name, got an empty one")
    return text


positive_int = number(int, "a positive integer", lambda v: v >= 1)
non_negative_int = number(int, "an integer >= 0", lambda v: v >= 0)
positive_float = number(float, "a positive number", lambda v: 0 < v < math.inf)
rate = number(float, "a number in (0, 1)", lambda v: 0 < v < 1)
level = number(float, "a number in (0, 1]", lambda v: 0 < v <= 1)
share = number(float, "a number in [0, 1]", lambda v: 0 <= v <= 1)
non_negative_float = number(float, "a number >= 0", lambda v: 0 <= v < math.inf)
seed = number(int, "an integer from 0 to 2**32 - 1", lambda v: 0 <= v < 2**32)  # numpy's seeds
port = number(int, "a port from 0 to 65535 (0: a free one)", lambda v: 0 <= v <= 65535)


def too_big(rows: float, columns: int, what: str) -> str | None:
    """Why ``rows`` x ``columns`` of float64 (kept about four times over while a table is built and
    written) will not fit in this machine's memory, else None: ``simulate --rows 1e11`` said
    "internal error: Unable to allocate 745. GiB" after its work had begun (a README walk)."""
    import os

    need = rows * (columns + 2) * 8 * 4
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # (no sysconf: not Linux or macOS)
        return None
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):  # a container's
        try:  # cgroup v2, v1: past it the kernel kills the process (137), without a word
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            have = min(have, int(text))
    if need <= have:
        return None
    return (f"{what} would need about {need / 2**30:,.0f} GiB of memory, and this machine has "
            f"{have / 2**30:,.0f} GiB")


def server_list(text: str) -> tuple[str, ...]:
    """``nats://HOST:PORT[,nats://HOST:PORT...]`` as a tuple (an argparse type)."""
    servers = tuple(part.strip() for part in text.split(",") if part.strip())
    from sensorguard.service.settings_checks import nats_url

    bad = [s for s in servers if not nats_url(s)]
    if not servers or bad:
        raise argparse.ArgumentTypeError(f"expected nats://HOST:PORT[,nats://HOST:PORT...], got {text!r}")
    return servers


def utc_time(text: str) -> str:
    """A date or time (``2026-02-01``, ``2026-02-01T08:00:00Z``) as ISO 8601 UTC (an argparse type);
    without an offset it is read as UTC."""
    import pandas as pd

    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"expected a date or time such as 2026-02-01 or 2026-02-01T08:00:00Z, "
                                         f"got {text!r}") from None
    if stamp is pd.NaT:
        raise argparse.ArgumentTypeError(f"expected a date or time, got {text!r}")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.isoformat()


def duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h`` or ``1d`` as seconds (an argparse type)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 15m, 2h or 1d, got {text!r}") from None
    if not seconds < float("inf"):  # (1e400 said "at least 0": a walk)
        raise argparse.ArgumentTypeError(f"expected a finite duration, got {text!r}")
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"expected a duration of at least 0, got {text!r}")
    return seconds


def maintenance_span(text: str) -> float:
    """``maintenance start --until``: a :func:`duration` over 0 that ends before 2200 (the daemon's
    limit on a time), said with the flag's name here: ``0`` and ``1000000d`` passed and the daemon
    answered "until must be a future time in epoch seconds, before 2200", a field never typed (a walk)."""
    import time

    from sensorguard.service.payload import TS_MAX

    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration over 0 (how long the maintenance lasts), got {text!r}")
    if time.time() + seconds >= TS_MAX:
        raise argparse.ArgumentTypeError(f"a maintenance must end before the year 2200, got {text!r}; leave --until "
                                         "out for one that lasts until maintenance end")
    return seconds


def shelving(text: str) -> float:
    """``shelve --for``: a :func:`duration` of at most the daemon's limit (7 days), said with the
    flag's name here (the daemon's refusal names its message field, ``for_s``)."""
    from sensorguard.service.command_messages import MAX_SHELVE_S

    seconds = duration(text)
    if seconds > MAX_SHELVE_S:
        raise argparse.ArgumentTypeError(f"at most {MAX_SHELVE_S / 86400:g}d: a shelved alert must come back by "
                                         f"itself (ISA-18.2), got {text!r}")
    return seconds


_NEGATIVE_DURATION = re.compile(r"-\d[\d.]*[a-zA-Z]+")  # -1h, -30m: argparse takes them for options


def attach_negative_durations(argv: Sequence[str]) -> list[str]:
    """``--for -1h`` as ``--for=-1h``: argparse reads a value that starts with ``-`` and is not a
    plain number as the next option, and answered "expected one argument" instead of saying what
    is wrong with the duration."""
    out: list[str] = []
    for token in argv:
        if (_NEGATIVE_DURATION.fullmatch(token) and out and out[-1].startswith("--") and "=" not in out[-1]
                and out[-1] != "--"):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out

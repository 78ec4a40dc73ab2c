"""The plots a report wrote in its folder, listed there (:data:`WRITTEN_LIST`), so the next report
into it removes the ones it does not write again: an earlier report's plots, of another model or
file, read as this one's (a walk). Only listed names go; a user's files beside them stay.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

WRITTEN_LIST = ".sensorguard-report"  # the plots the reports wrote in its folder, one name a line


def listed(out_dir: Path) -> set[str]:
    """The plots ``out_dir``'s list names (none: no report listed any)."""
    try:
        return set((out_dir / WRITTEN_LIST).read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError):
        return set()


def list_plots(out_dir: Path, names: set[str], adding: bool = False) -> None:
    """Write ``out_dir``'s list (``adding``: to what it names: a plot is listed before it is written)."""
    with contextlib.suppress(OSError):  # (no list written: nothing to forget next time)
        names = names | listed(out_dir) if adding else names
        (out_dir / WRITTEN_LIST).write_text("".join(f"{name}\n" for name in sorted(names)), encoding="utf-8")


def forget_earlier(out_dir: Path, paths: list[Path], earlier: set[str], notes: list[str] | None) -> None:
    """Remove the plots an earlier report in ``out_dir`` listed and this one did not write (of another
    model or file, they read as this one's: a walk), and list this one's. Only listed names go: a
    user's ``scores_for_meeting.png`` beside them stays (a review)."""
    names = {p.name for p in paths}
    for name in sorted(earlier - names):
        old = out_dir / name
        if name.endswith(".png") and "/" not in name and old.is_file():
            old.unlink()
            if notes is not None:
                notes.append(f"{old}: an earlier report's plot, removed (this report wrote none of that name)")
    list_plots(out_dir, names)

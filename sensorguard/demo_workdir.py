"""The demo's working folder: the files a demo left there are its own to replace, a user's are not.

``demo --workdir .`` where the README's steps had trained replaced that ``model/`` and
``normal.csv`` unasked (a walk). A demo marks what it left (:data:`MARK`), and the next run takes
the folder again only while its model and history are as the mark says.
"""

from __future__ import annotations

import json
from pathlib import Path

from sensorguard.cli_errors import CliError

MARK = ".sensorguard-demo"  # the files a demo wrote in its folder, as it left them (JSON): its own to replace
WRITTEN = ("model", "normal.csv", "mosquitto.conf", "nats")  # and plant-*.csv
OWN = ("model", "normal.csv")  # what a user may also keep there (the README's steps write both)


def claim_workdir(workdir: Path) -> None:
    """Make ``workdir`` the demo's, or refuse: ``demo --workdir .`` where the README's steps had
    trained replaced that ``model/`` and ``normal.csv`` unasked (a walk). A folder whose model and
    history are as a demo left them (its mark), or an earlier sensorguard's demo folder (its
    plant files, no mark), is taken again, its earlier run's plant files
    removed (more assets left some). A model or history changed since is a user's (a review)."""
    if workdir.is_dir() and not _demos(workdir):
        taken = sorted(name for name in WRITTEN if (workdir / name).exists())
        taken += sorted(p.name for p in workdir.glob("plant-*.csv"))
        if taken:
            raise CliError(f"--workdir {workdir} holds {', '.join(taken)}, which the demo would replace: give a new "
                           "or empty folder (or one a demo made, as it left it)")
    workdir.mkdir(parents=True, exist_ok=True)
    mark_workdir(workdir)  # what is there now is the demo's (or nothing); marked again as it writes
    for old in workdir.glob("plant-*.csv"):
        old.unlink()


def mark_workdir(workdir: Path) -> None:
    """Note the model and history the demo has there now (none: None), which :func:`claim_workdir`
    reads: at its start, after writing the history and after saving the model. A mark that
    took any file while the demo wrote let a model trained after a run stopped midway be
    replaced (a review)."""
    left = {name: _stamp(workdir / name) for name in OWN}
    (workdir / MARK).write_text(json.dumps(left) + "\n")


def _stamp(path: Path) -> str | None:
    """What tells a demo's file from a later one of the same name: a bundle's creation time, a
    file's size and modification time (None: none there)."""
    if not path.exists():
        return None
    try:
        if path.is_dir():
            return str(json.loads((path / "bundle.json").read_text(encoding="utf-8")).get("created"))
        stat = path.stat()
        return f"{stat.st_size}:{stat.st_mtime_ns}"
    except (OSError, ValueError, AttributeError):  # (there but unreadable: not the demo's, a review)
        return "?"


def _demos(workdir: Path) -> bool:
    """Whether ``workdir``'s model and history are a demo's: as its mark says it left them, or, with
    no mark, beside a demo's plant files (a folder an earlier version made)."""
    try:
        text = (workdir / MARK).read_text(encoding="utf-8")
    except FileNotFoundError:  # (a mosquitto.conf alone may be a user's: a review)
        return any(workdir.glob("plant-*.csv"))
    except (OSError, UnicodeDecodeError):
        return False
    try:
        left = json.loads(text)
    except ValueError:
        return False
    return isinstance(left, dict) and all(_stamp(workdir / name) in (None, left.get(name)) for name in OWN)

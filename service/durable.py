"""Files that survive a crash: written whole or not at all, and renames that stick.

Why a module of its own: the bundle, the registry's pointers, the daemon's per-asset state and
its operators' controls are all written this way, and none of them should import the bundle's
model code to do it.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_UMASK = os.umask(0o022)  # the process's, read once at import (setting it is process-wide)
os.umask(_UMASK)


def temp_folder(directory: str | os.PathLike, prefix: str) -> Path:
    """A new temporary directory in ``directory`` with the mode a plain ``mkdir`` would give it:
    ``mkdtemp`` makes it 0700, so a bundle trained by one account could not be read by the service's
    (a walk: the bundle folder 0700, ``bundle.json`` 0600, ``model.pt`` 0644). The umask rules, as
    for any file a tool writes (the systemd units set ``UMask=0027``: group-readable)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=directory))
    os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp


def write_durably(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: temp file in the same directory, fsync, rename; its
    mode as ``open`` would give it (``mkstemp`` makes it 0600: :func:`temp_folder`)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc  # (a write's error names no file: where?)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_leftovers(directory: str | os.PathLike, names: tuple[str, ...]) -> int:
    """Remove the temporary files :func:`write_durably` left beside ``names`` in ``directory`` (a
    process killed between writing one and its rename: ``kill -9``, the OOM killer, a power cut in the
    fsync); how many. Only for a folder no other process writes (``serve`` holds its lock): kept, each
    such crash left one more, as large as the file, for good."""
    made = re.compile("|".join(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}" for name in names))
    gone = 0
    for path in Path(directory).iterdir() if Path(directory).is_dir() else ():
        if made.fullmatch(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            gone += 1
    return gone


def fsync_path(path: Path) -> None:
    """Make a rename or a new entry in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

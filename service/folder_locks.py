"""One ``serve`` to a ``state_dir`` and a ``record_dir``: a lock held while it runs.

Two instances started from one settings file (the scaling-out example gives each its own
partitions, client id and metrics port) shared its ``state_dir``: each save replaced the other's
``assets.json`` and ``controls.json``, so a restart raised alerts again under new ids and lost
holds, and one instance's start moved the other's recordings while it ran (a walk). Each folder
now holds a ``.sensorguard.lock`` (``flock``), taken before anything in it is read or moved and
released when the process ends, however it ends (``kill -9`` too); a second ``serve`` is
refused in one line naming the holder. A supervisor's workers use subfolders of their parent's
and take no lock of their own. The lock is the host's (``flock``): a folder shared over NFS
without lock support is held on each host alone, and one where locks fail is served unheld, said
in one line.

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> with held_folders({"state_dir": folder}, "site-a") as refused:
...     refused
[]
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

log = logging.getLogger("sensorguard.service.serve")

LOCK_FILE = ".sensorguard.lock"


@contextlib.contextmanager
def held_folders(folders: Mapping[str, str | None], instance: str) -> Iterator[list[str]]:
    """Hold the lock of each folder given (setting name -> folder; None: not set) while the
    ``with`` block runs; yields why a folder could not be held, a line each (empty: all held).
    ``instance`` is written in the lock file, so a refusal names who holds it."""
    handles: list[int] = []
    refused: list[str] = []
    held: set[Path] = set()  # (state_dir and record_dir one folder: held once, not refused by itself; a review)
    try:
        for name, folder in folders.items():
            if not folder or (where := Path(folder).resolve()) in held:
                continue
            path = where / LOCK_FILE
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except PermissionError:  # (another user's lock file, a sudo start's: flock needs no write access)
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
            except OSError:  # (a read-only folder: its saves fail and say so; no lock to take)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                refused.append(f"{name}: {folder!r} is in use by another sensorguard serve ({holder}): give each "
                               f"instance its own {name}")
                continue
            except OSError as exc:  # (NFS without its lock daemon: ENOLCK; a filesystem without locks)
                os.close(fd)
                log.warning("%s %s cannot be locked (%s): serving without the check that no other serve uses it",
                            name, folder, exc.strerror or exc)
                continue
            held.add(where)
            with contextlib.suppress(OSError):  # (read-only: the holder is not named, the lock holds all the same)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()}, instance {instance!r}\n".encode(), 0)
            handles.append(fd)
        yield refused
    finally:
        for fd in handles:
            os.close(fd)  # (releases the lock; the file stays, naming the last holder)


def locked(path: Path) -> bool | None:
    """Whether a lock file's ``flock`` is held now by some process (True), free (False), or cannot be
    told (None: no such file, no access, no locks on that filesystem). The file itself outlives its
    holder, naming the last one: only the lock says a holder is running."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # (releases the shared lock just taken)
    return False

"""Unusable state files moved out of the way, never lost: ``<name>.bad`` and the earlier copies.

A state file the daemon cannot read (``assets.json``, ``controls.json``) must not stop it, and
must not be overwritten either: it often says what went wrong. It moves to ``<name>.bad``; the
copies of earlier incidents move one place older (``<name>.bad.1`` to ``.bad.4``), and only the
newest :data:`KEPT_ASIDE` stay, so a file that breaks at every start fills no disk.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sensorguard.service.durable import write_durably
from sensorguard.service.state_writes import ASSETS as STATE_FILE

log = logging.getLogger(__name__)

KEPT_ASIDE = 5  # copies of an unusable state file kept: <name>.bad (the newest) to <name>.bad.4


def set_aside(directory: str | os.PathLike, name: str = STATE_FILE) -> Path:
    """Move an unusable state file (``name``: ``assets.json``, or ``controls.json``) out of the way,
    to ``<name>.bad`` (kept for inspection, earlier ones shifted: :func:`_rotate_into`); return where it went."""
    path = Path(directory) / name
    aside = path.with_name(name + ".bad")
    os.replace(path, _incoming(aside))  # first: a move that fails shifts no earlier copy
    _rotate_into(aside)
    return aside


def keep_copy(aside: Path, text: str) -> None:
    """Keep ``text`` as the newest copy at ``aside`` (``<name>.bad``), earlier ones shifted as by
    :func:`set_aside`; the same text as the newest copy (an incident met again, its rewrite having
    failed) takes no second place."""
    write_durably(_incoming(aside), text)  # first: a write that fails (a full disk) shifts no earlier copy
    _rotate_into(aside)


def _incoming(aside: Path) -> Path:
    """Where a new copy lands before it becomes ``aside`` (:func:`_rotate_into`)."""
    return aside.with_name(f".{aside.name}.incoming")


def _rotate_into(aside: Path) -> None:
    """Make the copy at :func:`_incoming` the newest at ``aside``: earlier copies move one place older
    (``<name>.bad`` to ``<name>.bad.1``, and so on; the oldest of :data:`KEPT_ASIDE` dropped). A
    second incident used to overwrite the first's copy, often the one that said what went wrong
    first. A copy equal to the newest one replaces it in place; a shift that fails costs the
    oldest copies, never the new one."""
    incoming = _incoming(aside)
    if aside.exists() and aside.read_bytes() == incoming.read_bytes():
        os.replace(incoming, aside)
        return
    try:
        for k in range(KEPT_ASIDE - 1, 0, -1):
            newer = aside if k == 1 else aside.with_name(f"{aside.name}.{k - 1}")
            if newer.exists():
                os.replace(newer, aside.with_name(f"{aside.name}.{k}"))
    except OSError as err:
        log.warning("could not shift the earlier copies of %s (%s): the newest one replaces it", aside,
                    err.strerror or err)
    os.replace(incoming, aside)


def move_aside(directory: str | os.PathLike, name: str = STATE_FILE) -> tuple[bool, str]:
    """:func:`set_aside`, never raising: whether the file moved, and the words for the caller's log
    line (``moved to <dir>/<name>.bad``, or ``could not move it aside (<why>)``). One wording for
    every unusable file: ``assets.json`` at start and at a relayout, ``controls.json``."""
    try:
        return True, f"moved to {set_aside(directory, name)}"
    except OSError as err:
        return False, f"could not move it aside ({err.strerror or err})"

"""Recordings follow their assets when ``serve --workers N`` or the partition list changes.

``serve --workers N`` records into ``<record_dir>/w<k>`` (one daemon: ``<record_dir>``). After the
worker count or the partitions changed, at start and before any recorder opens its folder,
:func:`adopt_orphans` moves:

- the normal recordings of a folder no recorder writes any more into the first worker's: trimmed
  by no recorder, they stayed past the size and age bounds, yet ``retrain --recorded`` read them;
- an alert's readings (``alerts/``, ``false_alarms/``, ``faults/``) into the folder of the worker
  that serves its asset now, wherever they were: its acknowledgement searches only the folder of
  the worker serving the asset, so a file left elsewhere was never filed ("none of its readings is
  recorded here") and a false alarm was never learned. A file whose name is taken there becomes the
  alert's next part (``<alert id>+<k>.parquet``), so the acknowledgement still finds it;
- the guard bands after recent clears (``guard_bands.json``) into the folder of the worker serving
  each asset: left behind, the rest of a fault's tail was recorded as normal data.

An asset that no partition matches stays where it is (a folder no recorder writes: the first
worker's). Files keep their times, so the recorder that adopts them trims them by age as its own.
A file that cannot be moved is logged and left; nothing here stops a start.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from sensorguard.service.command_messages import alert_asset
from sensorguard.service.folder_locks import LOCK_FILE, locked
from sensorguard.service.record_files import ALERTS, FALSE_ALARMS, FAULTS, GUARD_FILE, alert_of, part_number

log = logging.getLogger(__name__)

ALERT_FOLDERS = (ALERTS, FALSE_ALARMS, FAULTS)
Owner = Callable[[str], Path | None]  # asset -> the recording folder of the worker serving it (None: none)


def adopt_orphans(root: str | Path, owned: list[Path], owner: Owner = lambda asset: None) -> int:
    """Move recordings where the workers of ``owned`` (their recording folders, the first taking
    what no worker owns) write them now; how many files moved."""
    root = Path(root)
    if not root.is_dir():
        return 0
    mine = {Path(o).resolve() for o in owned}
    first, moved, left = Path(owned[0]), 0, set()
    foreign = _foreign(root, mine)
    for path in sorted(root.glob("**/*.parquet")):
        if _inside(path, foreign):
            continue
        origin = path.parent.parent
        kept = origin.resolve() in mine
        if path.parent.name in ALERT_FOLDERS:
            target = owner(alert_asset(alert_of(path))) or (origin if kept else first)
        else:
            target = origin if kept else first
        if Path(target).resolve() == origin.resolve():
            continue
        folder = Path(target) / path.parent.name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(path, _free_name(Path(target), folder, path, origin))
            moved += 1
            left |= {path.parent, origin}
        except OSError as exc:
            log.warning("could not move recording %s into %s: %s", path, folder, exc.strerror or exc)
    moved_bands = _move_guards(root, owned, owner, foreign)
    for folder in sorted(left, key=lambda f: len(f.parts), reverse=True):  # the folders emptied, deepest first
        if folder.resolve() not in mine and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    if moved or moved_bands:
        log.info("moved %d recordings and %d guard bands into the folders of the workers recording them now",
                 moved, moved_bands)
    return moved


def _foreign(root: Path, mine: set[Path]) -> set[Path]:
    """The folders below ``root`` that another running ``serve`` holds as its own ``record_dir`` (its
    lock, held: a supervisor's workers take none): left alone. A node of a cluster started with the
    parent of the other nodes' record dirs moved their recordings, alert files and guard bands from
    under them while they ran, and their acknowledgements found nothing (a walk). A stopped serve's
    folder (its lock file stays, its lock free) is adopted, as before: instances run side by side,
    then one serve. One whose lock cannot be told (a filesystem without locks, where a serve runs
    unheld) is left alone too (a review)."""
    held = {folder: locked(folder / LOCK_FILE) for folder in
            {lock.parent.resolve() for lock in root.glob(f"*/**/{LOCK_FILE}")} - mine}
    # (with recordings: a serve's state_dir inside this record_dir holds a lock file too, and nothing to move)
    found = {folder for folder, lock in held.items() if lock is not False
             and ((folder / GUARD_FILE).is_file() or any(folder.glob("**/*.parquet")))}
    for folder in sorted(found):
        if held[folder]:
            log.warning("record_dir %s holds %s, another running sensorguard serve's record_dir: its recordings are "
                        "left alone (give each instance its own record_dir, side by side)", root, folder)
        else:  # (a filesystem without locks, no access to the lock file)
            log.warning("record_dir %s holds %s, another sensorguard serve's record_dir whose lock cannot be told "
                        "here: its recordings are left alone (if no serve uses it, remove its %s to have them "
                        "adopted)", root, folder, LOCK_FILE)
    return found


def _inside(path: Path, folders: set[Path]) -> bool:
    return bool(folders) and any(parent in folders for parent in path.resolve().parents)


def _free_name(recorder: Path, folder: Path, path: Path, origin: Path) -> Path:
    """Where ``path`` goes in ``folder`` of ``recorder``: its own name when free; an alert's file
    whose name is taken there (in any of the recorder's alert folders: its acknowledgement moves
    them all) becomes the alert's next part; another file is prefixed with its old folder's name."""
    if path.parent.name not in ALERT_FOLDERS:
        dest = folder / path.name
        return dest if not dest.exists() else folder / f"{origin.name}-{path.name}"
    stem = path.stem.partition("+")[0]
    parts = [p for f in ALERT_FOLDERS for pattern in (f"{stem}.parquet", f"{stem}+*.parquet")
             for p in (recorder / f).glob(pattern)]
    if not any(p.name == path.name for p in parts):
        return folder / path.name
    return folder / f"{stem}+{1 + max(part_number(p) for p in parts)}.parquet"


def _read_bands(path: Path) -> dict[str, float]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(a): float(u) for a, u in saved.items() if isinstance(u, int | float)} if isinstance(saved, dict) else {}


def _move_guards(root: Path, owned: list[Path], owner: Owner, foreign: set[Path] = frozenset()) -> int:
    """Each asset's guard band into the guard file of the worker serving it (the later band when
    two files hold one); how many bands moved. Files no worker reads any more are removed; those
    of another serve's record_dir (``foreign``) are left alone."""
    mine = {Path(o).resolve(): Path(o) for o in owned}
    files = [p for p in [root / GUARD_FILE, *root.glob(f"*/{GUARD_FILE}")]
             if p.is_file() and p.parent.resolve() not in foreign]
    if not files:
        return 0
    bands: dict[Path, dict[str, float]] = {folder: {} for folder in mine}
    moved = 0
    for file in files:
        here = file.parent.resolve()
        for asset, until in _read_bands(file).items():
            target = owner(asset)
            target = target.resolve() if target is not None else (here if here in mine else Path(owned[0]).resolve())
            moved += target != here
            bands.setdefault(target, {})[asset] = max(until, bands.get(target, {}).get(asset, until))
    if not moved:
        return 0
    for folder, held in bands.items():
        path = mine.get(folder, folder) / GUARD_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(held), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not move the guard bands into %s: %s", path, exc.strerror or exc)
            return 0  # the old files stay: read where they were
    for file in files:
        if file.parent.resolve() not in mine:
            file.unlink(missing_ok=True)
    return moved

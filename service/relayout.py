"""Per-asset state follows its asset when ``serve --workers N`` or the partition list changes.

Worker ``k`` keeps its assets' state in ``<state_dir>/w<k>`` (one daemon: ``<state_dir>``), and
the worker count and partition list decide which worker serves an asset. After a change, an
asset's saved alert state, drift baseline, holds and acknowledgeable alerts sat in a folder the
worker now serving it never reads: an alert up was raised again under a new id (the old one never
cleared), the drift baseline started over, a maintenance stopped holding it, an operator's ack
of its alert failed as unknown. At start, before any daemon loads, :func:`relayout_states` moves
each asset's entries of ``assets.json`` and ``controls.json`` into the folder of the worker whose
partitions match its readings topic. An asset no partition matches stays where it is.

Each file is written atomically, the folders that gain before those that lose, and an asset
leaves a folder only once its new one was written: a failed write or a start stopped half-way
leaves an asset in two folders, never in none, and the next start keeps the copy in the folder
that serves it (else the newer file's) and drops the other. A file that cannot be read (and, for
``assets.json``, not be set aside) takes no asset in and gives none away. Nothing here stops a
start: a failure is logged and the assets stay where they were.

>>> import tempfile
>>> from sensorguard.service.alerts import AlertState
>>> from sensorguard.service.config import load_settings
>>> from sensorguard.service.state import load_states, save_states
>>> from sensorguard.service.worker_plans import worker_settings
>>> root = Path(tempfile.mkdtemp())
>>> _ = save_states(root, {"b/pump": AlertState("alerting", alert_id="b/pump@1")}, {})  # one daemon ran
>>> s = load_settings({"model": None, "broker": "mqtt://h", "partition": ["a/#", "b/#"],
...                    "state_dir": str(root)}, {}, require_model=False)
>>> relayout_states(str(root), worker_settings(s, 2))  # now two workers: "b/#" is w1's
1
>>> load_states(root / "w1")[0]["b/pump"].alert_id, load_states(root)[0]
('b/pump@1', {})
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sensorguard.service.alerts import AlertState
from sensorguard.service.commands import AlarmControls
from sensorguard.service.config import Settings
from sensorguard.service.drift import DriftState
from sensorguard.service.instances import serves_asset
from sensorguard.service.logs import counted, first_line
from sensorguard.service.set_aside import move_aside
from sensorguard.service.state import (
    STATE_FILE,
    StateError,
    load_states,
    save_states,
    saved_extras,
)
from sensorguard.service.state_writes import CONTROLS

log = logging.getLogger(__name__)

WORKER_FOLDER = re.compile(r"w\d+")
Entry = tuple[AlertState, DriftState | None, bool]  # assets.json's: alert state, drift baseline, announced


@dataclass(frozen=True)
class _Moves:
    """Where entries go: ``gain[folder][asset]`` = the folder whose entry it takes; ``drop[folder]``
    = the assets it loses (moved away, or an older copy of one kept elsewhere)."""

    gain: dict[Path, dict[str, Path]]
    drop: dict[Path, set[str]]


def relayout_states(state_dir: str, plans: Sequence[Settings]) -> int:
    """Move every asset's saved state and controls into the folder of the plan (worker) serving it
    now; how many assets moved. ``plans``: the workers' settings (one: the plain daemon). A state
    file that cannot be read is set aside (``assets.json.bad``), as its daemon would."""
    root = Path(state_dir)
    if not root.is_dir():
        return 0
    folders = [root, *sorted(d for d in root.iterdir() if WORKER_FOLDER.fullmatch(d.name) and d.is_dir())]
    targets = [_key(Path(plan.state_dir or state_dir)) for plan in plans]
    owner = asset_owner(plans, targets)
    folders = [_key(f) for f in folders]
    moved = _move_states(folders, owner) | _move_controls(folders, owner)
    for folder in folders[1:]:  # a worker folder left empty by a smaller layout
        if folder not in targets and folder.is_dir() and not any(folder.iterdir()):
            _quietly(folder.rmdir)
    if moved:
        log.info("moved the saved state of %s into the folders of the workers serving them now",
                 counted(len(moved), "asset"))
    return len(moved)


def asset_owner(plans: Sequence[Settings], folders: Sequence[Path]) -> Callable[[str], Path | None]:
    """asset -> the folder (of ``folders``, one per plan) of the worker whose partitions match its
    readings topic; None when none does."""
    pairs = list(zip(folders, plans, strict=True))

    def owner(asset: str) -> Path | None:
        return next((folder for folder, plan in pairs if serves_asset(plan, asset)), None)

    return owner


def _move_states(folders: list[Path], owner: Callable[[str], Path | None]) -> set[str]:
    held: dict[Path, dict[str, Entry]] = {}
    judged: dict[str, float] = {}  # each asset's last judged window goes where it goes (the newest of its copies)
    faults: dict[str, list[dict]] = {}  # and its open sensor faults, the newest copy's (a folder rewritten lost them)
    channels: dict[str, list[dict]] = {}  # and its last window's top channels, the newest copy's
    past: dict[str, dict[str, float]] = {}  # and its channels walked past their sensor limits, the newest copy's
    silent: dict[str, tuple[float, float]] = {}  # and its silence, the newest copy's (unless judged since)
    returned: dict[str, float] = {}  # and its return from one, the newest copy's (unless judged or silent since)
    for folder in folders:
        extras = saved_extras(folder)
        listed, named, walked = extras.faults, extras.channels, extras.past
        for asset, since in extras.silences.items():
            if asset not in silent or since[0] >= silent[asset][0]:
                silent[asset] = since
        for asset, ts in extras.returned.items():
            returned[asset] = max(ts, returned.get(asset, ts))
        for asset, ts in extras.judged.items():
            if asset not in judged or ts >= judged[asset]:
                judged[asset] = ts
                for kept, found in ((faults, listed), (channels, named), (past, walked)):
                    if asset in found:
                        kept[asset] = found[asset]
                    else:
                        kept.pop(asset, None)
        try:
            alerts, drift, unannounced = load_states(folder)
        except StateError as exc:  # as the daemon would: kept for inspection, the folder starts empty
            moved, where = move_aside(folder)
            # (the daemon's own words: it finds no file after this, and said nothing; a walk)
            log.warning("%s; %s%s", first_line(exc), where,
                        ", starting without its saved asset state" if moved else ": no asset moves into or out of it")
            if not moved:
                continue
            alerts, drift, unannounced = {}, {}, set()
        held[folder] = {a: (alerts[a], drift.get(a), a not in unannounced) for a in alerts}
    silent = {asset: since for asset, since in silent.items()
              if since[0] >= max(judged.get(asset, -math.inf), returned.get(asset, -math.inf))}
    returned = {asset: ts for asset, ts in returned.items()
                if ts > judged.get(asset, -math.inf) and asset not in silent}
    moves = _plan({f: set(e) for f, e in held.items()}, _ages(held, STATE_FILE), owner, set(folders) - set(held))

    def write(folder: Path, entries: dict[str, Entry]) -> None:
        if not entries and folder not in moves.gain:
            if (folder / STATE_FILE).exists():
                os.remove(folder / STATE_FILE)
            return
        save_states(folder, {a: e[0] for a, e in entries.items()},
                    {a: e[1] for a, e in entries.items() if e[1] is not None},
                    {a for a, e in entries.items() if not e[2]}, judged, faults, channels,
                    {a: s for a, s in silent.items() if a in entries},
                    {a: ts for a, ts in returned.items() if a in entries}, past)

    failed: set[str] = set()
    for folder, incoming in moves.gain.items():  # gains first: a stop here leaves copies, not losses
        merged = {**held.get(folder, {}), **{a: held[src][a] for a, src in incoming.items()}}
        if _quietly(write, folder, merged):
            held[folder] = merged
        else:  # they stay where they are
            failed |= set(incoming)
    for folder, lost in moves.drop.items():
        if lost - failed:  # (a failure leaves a copy: the next start drops it)
            _quietly(write, folder, {a: e for a, e in held[folder].items() if a not in lost - failed})
    return {a for incoming in moves.gain.values() for a in incoming} - failed


def _move_controls(folders: list[Path], owner: Callable[[str], Path | None]) -> set[str]:
    held: dict[Path, AlarmControls] = {}
    for folder in folders:
        path = folder / CONTROLS
        if not path.exists():
            continue
        # as the daemon would: a file it cannot read is set aside, with a line that says the holds
        # are lost and where to re-issue them from. Only skipped, the root's file of a single daemon
        # upgraded to --workers stayed where no worker reads it, its holds gone unsaid (a walk)
        controls = AlarmControls(str(folder))
        if controls.unreadable and path.exists():  # (it could not be set aside: left alone)
            log.warning("%s: no asset moves into or out of it", path)
            continue
        held[folder] = controls
    blocked = {f for f in folders if (f / CONTROLS).exists()} - set(held)
    moves = _plan({f: c.assets() for f, c in held.items()}, _ages(held, CONTROLS), owner, blocked)
    failed: set[str] = set()
    for folder, incoming in moves.gain.items():
        target = held.setdefault(folder, AlarmControls(str(folder)))
        for asset, src in incoming.items():
            doc = held[src].export(asset)
            if doc is not None:
                target.adopt(asset, doc, save=False)
        if not _quietly(target.save, strict=True):
            failed |= set(incoming)
    for folder, lost in moves.drop.items():
        if lost - failed:
            held[folder].forget(lost - failed)  # (a failed save is logged: the next start drops the copy)
            if not held[folder].assets() and folder not in moves.gain:
                _quietly(os.remove, folder / CONTROLS)
    return {a for incoming in moves.gain.values() for a in incoming} - failed


def _plan(held: dict[Path, set[str]], age: dict[Path, float], owner: Callable[[str], Path | None],
          blocked: set[Path]) -> _Moves:
    """Each asset's entry goes to its owner's folder (none, or one whose file is unusable: it stays)
    from the owner's own copy if it has one (an older layout's folder kept a stale copy; a start
    stopped half-way wrote the owner's first), else from the newest file holding it; every other
    copy is dropped."""
    gain: dict[Path, dict[str, Path]] = {}
    drop: dict[Path, set[str]] = {}
    for asset in sorted(set().union(*held.values())):
        have = [f for f in held if asset in held[f]]
        dest = owner(asset)
        source = dest if dest in have else max(have, key=lambda f: age[f])
        if dest is None or dest in blocked:
            dest = source
        if dest != source:
            gain.setdefault(dest, {})[asset] = source
        for folder in have:
            if folder != dest:
                drop.setdefault(folder, set()).add(asset)
    return _Moves(gain, drop)


def _ages(held: dict[Path, object], name: str) -> dict[Path, float]:
    """When each folder's file was last written (the newer copy of an asset wins)."""
    return {f: (f / name).stat().st_mtime if (f / name).exists() else 0.0 for f in held}


def _quietly(write: Callable[..., object], *args: object, **kwargs: object) -> bool:
    """Run one file operation; False, with a log line, when it fails (a full disk, a read-only
    folder): the assets it concerned stay where they were."""
    try:
        write(*args, **kwargs)
        return True
    except OSError as exc:
        log.warning("moving saved asset state: %s failed (%s): left as it was",
                    getattr(write, "__name__", "a write"), exc.strerror or exc)
        return False


def _key(path: Path) -> Path:
    return path.resolve()

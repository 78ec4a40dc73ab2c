"""Per-asset state follows its asset when ``serve --workers N`` or the partition list changes.

Worker ``k`` keeps its assets' state in ``<state_dir>/w<k>`` (one daemon: ``<state_dir>``), and
the worker count and partition list decide which worker serves an asset. After a change, an
asset's saved alert state, drift baseline, holds and acknowledgeable alerts sat in a folder the
worker now serving it never reads: an alert up was raised again under a new id (the old one never
cleared), the drift baseline started over, a maintenance stopped holding it, an operator's ack
of its alert failed as unknown. At start, before any daemon loads, :func:`relayout_states` moves
each asset's entries of ``assets.json`` and ``controls.json`` into the folder of the worker whose
partitions match its readings topic. An asset no partition matches stays where it is.

Each file is written atomically, the folders that gain before those that lose: a start stopped
half-way leaves an asset in two folders, never in none, and the next start keeps the entry of the
file written last (the newer) and drops the other.

>>> import tempfile
>>> from sensorguard.service.alerts import AlertState
>>> from sensorguard.service.config import load_settings
>>> from sensorguard.service.state import load_states, save_states
>>> from sensorguard.service.workers import worker_settings
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
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from paho.mqtt.client import topic_matches_sub

from sensorguard.service.alerts import AlertState
from sensorguard.service.commands import CONTROLS_FILE, AlarmControls
from sensorguard.service.config import Settings
from sensorguard.service.drift import DriftState
from sensorguard.service.logs import first_line
from sensorguard.service.state import STATE_FILE, StateError, load_states, save_states, set_aside

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
    filters = [(t, plan.readings_filters(), plan.topic_prefix) for t, plan in zip(targets, plans, strict=True)]

    def owner(asset: str) -> Path | None:
        for target, subscriptions, prefix in filters:
            if any(topic_matches_sub(f, f"{prefix}/{asset}/readings") for f in subscriptions):
                return target
        return None

    folders = [_key(f) for f in folders]
    moved = _move_states(folders, owner) | _move_controls(folders, owner)
    for folder in folders[1:]:  # a worker folder left empty by a smaller layout
        if folder not in targets and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    if moved:
        log.info("moved the saved state of %d assets into the folders of the workers serving them now", len(moved))
    return len(moved)


def _move_states(folders: list[Path], owner: Callable[[str], Path | None]) -> set[str]:
    held: dict[Path, dict[str, Entry]] = {}
    for folder in folders:
        try:
            alerts, drift, unannounced = load_states(folder)
        except StateError as exc:  # as the daemon would: kept for inspection, the folder starts empty
            try:
                log.warning("%s; moved to %s", first_line(exc), set_aside(folder))
            except OSError as err:
                log.warning("%s; could not move it aside (%s): left as it is", first_line(exc), err.strerror or err)
                continue
            alerts, drift, unannounced = {}, {}, set()
        held[folder] = {a: (alerts[a], drift.get(a), a not in unannounced) for a in alerts}
    moves = _plan({f: set(e) for f, e in held.items()}, _ages(held, STATE_FILE), owner)

    def write(folder: Path, entries: dict[str, Entry]) -> None:
        if not entries and (folder / STATE_FILE).exists() and folder not in moves.gain:
            os.remove(folder / STATE_FILE)
            return
        save_states(folder, {a: e[0] for a, e in entries.items()},
                    {a: e[1] for a, e in entries.items() if e[1] is not None},
                    {a for a, e in entries.items() if not e[2]})

    for folder, incoming in moves.gain.items():  # gains first: a stop here leaves copies, not losses
        held[folder] = {**held.get(folder, {}), **{a: held[src][a] for a, src in incoming.items()}}
        write(folder, held[folder])
    for folder, lost in moves.drop.items():
        write(folder, {a: e for a, e in held[folder].items() if a not in lost})
    return {a for incoming in moves.gain.values() for a in incoming}


def _move_controls(folders: list[Path], owner: Callable[[str], Path | None]) -> set[str]:
    present = [f for f in folders if (f / CONTROLS_FILE).exists()]
    held = {f: AlarmControls(str(f)) for f in present}
    gain = {}
    moves = _plan({f: c.assets() for f, c in held.items()}, _ages(held, CONTROLS_FILE), owner)
    for folder, incoming in moves.gain.items():
        gain[folder] = held.get(folder) or AlarmControls(str(folder))
        for asset, src in incoming.items():
            doc = held[src].export(asset)
            if doc is not None:
                gain[folder].adopt(asset, doc, save=False)
        gain[folder].save()
    for folder, lost in moves.drop.items():
        held[folder].forget(lost)
        if not held[folder].assets() and folder not in moves.gain:
            os.remove(folder / CONTROLS_FILE)
    return {a for incoming in moves.gain.values() for a in incoming}


def _plan(held: dict[Path, set[str]], age: dict[Path, float], owner: Callable[[str], Path | None]) -> _Moves:
    """Each asset's entry goes from the newest folder holding it to its owner's (or stays in that
    newest folder when no plan serves it); every other copy is dropped."""
    gain: dict[Path, dict[str, Path]] = {}
    drop: dict[Path, set[str]] = {}
    for asset in sorted(set().union(*held.values())):
        have = [f for f in held if asset in held[f]]
        newest = max(have, key=lambda f: age[f])
        dest = owner(asset) or newest
        if dest != newest:
            gain.setdefault(dest, {})[asset] = newest
        for folder in have:
            if folder != dest:
                drop.setdefault(folder, set()).add(asset)
    return _Moves(gain, drop)


def _ages(held: dict[Path, object], name: str) -> dict[Path, float]:
    """When each folder's file was last written (the newer copy of an asset wins)."""
    return {f: (f / name).stat().st_mtime if (f / name).exists() else 0.0 for f in held}


def _key(path: Path) -> Path:
    return path.resolve()

"""Alerts a daemon recorded (``serve --record-dir``), read back for the retrain gate.

``faults/`` holds the alerts acknowledged as real: a retrained model or a new line must still catch
them (``training.retrain_gate``). ``alerts/`` holds the ones nobody answered yet. They bind
nothing (each may be a false alarm the next acknowledgement teaches), but a candidate that stops
raising the ones the current model raises is said: one real fault acknowledged as a false alarm
lifted a line threefold, and the model then raised nothing on the other faults it had recorded,
with no word but its new threshold (a walk).

An alert's verdict is its id's, wherever its parts lie (:func:`answers`): in cluster mode an alert
is filed in parts by each worker that owned its asset while it was up, and an acknowledgement moves
only the parts of the worker that answers it. Read over the workers' record dirs together (a parent
folder of copies), the parts left in another worker's ``alerts/`` follow their answer (a cluster
walk: one false alarm of two was learned, the other's parts stayed unanswered).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sensorguard.service.bundle import Bundle
from sensorguard.service.command_messages import alert_ms
from sensorguard.service.logs import some
from sensorguard.service.record_files import ALERTS, ANSWER, FALSE_ALARMS, FAULTS, alert_of
from sensorguard.training.data import SensorData, series_from_frame
from sensorguard.training.retrain_gate import alerts_on

UNANSWERED_CHECKED = 50  # the newest unanswered alerts a candidate is checked on (each is scored twice)


def answers(directory: str | Path) -> dict[str, str]:
    """Each alert id acknowledged anywhere below ``directory`` -> the folder its answer filed a part in
    (``false_alarms`` or ``faults``; both, from two answers: ``faults``, never learned as normal, and
    said: :func:`both_ways_note`)."""
    alarms, faults = _answered(directory)
    return {**dict.fromkeys(alarms, FALSE_ALARMS), **dict.fromkeys(faults, FAULTS)}  # (a fault's answer wins)


def _answered(directory: str | Path) -> tuple[set[str], set[str]]:
    """The ids of the alerts with a part (or a kept answer, ``ANSWER``) in a ``false_alarms/`` folder, and
    in a ``faults/`` one."""
    alarms, faults = ({alert_of(path) for suffix in ("parquet", ANSWER.lstrip("."))  # (an answer kept without parts)
                       for path in Path(directory).glob(f"**/{folder}/*.{suffix}")}
                      for folder in (FALSE_ALARMS, FAULTS))
    return alarms, faults


def both_ways_note(directory: str | Path) -> str | None:
    """A line naming the alerts answered as a false alarm on one worker and as a fault on another
    (a correction after the asset moved, or two operators): taken as faults, not learned (a review:
    that was done without a word)."""
    alarms, faults = _answered(directory)
    both = sorted(alarms & faults)
    if not both:
        return None
    return (f"note: {len(both)} alert(s) answered both as a false alarm and as a fault ({some(both)}): taken as "
            f"faults, not learned as normal (each answer moves its own worker's parts: {FALSE_ALARMS}/ and "
            f"{FAULTS}/ of different record dirs)")


def filed(path: Path, directory: str | Path, said: dict[str, str]) -> str | None:
    """The folder a recorded file counts in: ``None`` for normal readings, else its alert's answer
    (``false_alarms`` / ``faults``) or ``alerts`` while none was given anywhere in the store."""
    folders = set(path.relative_to(directory).parts[:-1]) & {ALERTS, FALSE_ALARMS, FAULTS}
    return said.get(alert_of(path), ALERTS) if folders else None


def known_faults(directory: str | Path, channels: Sequence[str]) -> list[tuple[str, SensorData]]:
    """The readings of alerts acknowledged as real (``faults/`` of a recording): ``(alert id,
    data)`` each, the faults a retrained model must still catch. Unreadable files are skipped."""
    return _alerts(directory, FAULTS, channels, "known fault")


def unanswered_alerts(directory: str | Path, channels: Sequence[str],
                      newest: int = UNANSWERED_CHECKED) -> list[tuple[str, SensorData]]:
    """The readings of the ``newest`` alerts nobody answered yet (``alerts/``), as :func:`known_faults`."""
    return _alerts(directory, ALERTS, channels, "unanswered alert", newest)


def _alerts(directory: str | Path, folder: str, channels: Sequence[str], what: str,
            newest: int | None = None) -> list[tuple[str, SensorData]]:
    frames: dict[str, list[pd.DataFrame]] = {}  # an alert up through a restart was written in parts
    said = answers(directory)
    paths = sorted(path for kind in (ALERTS, FALSE_ALARMS, FAULTS)  # serve --workers: under w<k>/
                   for path in Path(directory).glob(f"**/{kind}/*.parquet") if filed(path, directory, said) == folder)
    if newest is not None:  # (by the raise time in the id, <asset>@<ms>)
        ids = set(sorted({alert_of(p) for p in paths}, key=lambda a: alert_ms(a) or 0)[-newest:])
        paths = [p for p in paths if alert_of(p) in ids]
    for path in paths:
        try:
            frames.setdefault(alert_of(path), []).append(pd.read_parquet(path))
        except Exception as exc:  # noqa: BLE001 - a damaged file must not stop a retrain
            print(f"skipping {what} {path}: {str(exc).splitlines()[0][:120]}")
    out = []
    for name, parts in frames.items():
        try:
            out.append((name, series_from_frame(pd.concat(parts, ignore_index=True), name, time_column="ts",
                                                channels=channels, asset_column="asset")))
        except Exception as exc:  # noqa: BLE001
            print(f"skipping {what} {name}: {str(exc).splitlines()[0][:120]}")
    return out


def dropped_alerts_note(new: Bundle, old: Bundle, unanswered: Sequence[tuple[str, SensorData]]) -> str | None:
    """A line when ``new`` raises nothing on unanswered alerts ``old`` raises on, else None."""
    dropped = [name for name, data in unanswered if alerts_on(old, data) and not alerts_on(new, data)]
    if not dropped:
        return None
    return (f"it raises no alert on {len(dropped)} of the {len(unanswered)} unanswered recorded alerts "
            f"({some(dropped, 3)}) that the current one raises: if those were real faults, a false alarm "
            "acknowledged wrongly has blinded it (answer them with `sensorguard ack`)")

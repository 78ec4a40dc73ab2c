"""What ``controls.json`` and the audit logs hold, read back: the checks an
:class:`~sensorguard.service.commands.AlarmControls` file passes before its alerts and sends are
used, and where the accepted commands are found again when the file is unreadable.

Apart from :mod:`~sensorguard.service.commands` because they read files, not commands: a hand-edited
or damaged file is skipped entry by entry where it can be, never trusted whole.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from sensorguard.service.json_values import is_number
from sensorguard.service.logs import some
from sensorguard.service.state_writes import AUDIT, AUDIT_ROTATED

log = logging.getLogger(__name__)

SENDS_KEPT = 64  # per asset, sends carried out (until a day past expiry): a revived session's copy is not carried out
SEND_KEPT_S = 86_400.0  # a send's expires is taken as at most this far ahead, and it is kept this long past it


def audit_files(folder: Path) -> list[str]:
    """The audit logs that may hold the commands accepted for ``folder``'s controls, the most recently
    written first: its own, and with ``serve --workers`` its workers' (``w0/``, ...) or, for a
    worker's, the single process's before it. Naming only the folder's own, a hold lifted since in a
    worker's log was re-issued from it (a walk)."""
    folders = [folder, *sorted(folder.glob("w[0-9]*"))]
    if re.fullmatch(r"w\d+", folder.name):
        folders.append(folder.parent)
    found = [(p, _written(p)) for f in folders for name in (AUDIT, AUDIT_ROTATED) if (p := f / name).is_file()]
    return [str(p) for p, _ in sorted(found, key=lambda found: found[1], reverse=True)]


def _written(path: Path) -> float:
    """When ``path`` was last written (0: gone meanwhile, a worker rotating its log: a review)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def usable_alerts(alerts: dict[str, Any], where: str) -> dict[str, dict]:
    """The recent alerts of ``alerts`` as :meth:`AlarmControls.raised` writes them; the others are
    skipped alone, with one log line, as ``assets.json`` skips a bad entry. Copied unchecked, one
    without ``acked`` (a hand edit) failed every window of its asset and every housekeeping round,
    lost the operator's ack and ended the daemon with a traceback, and each save wrote it back (a
    walk); setting the whole file aside for it lost every hold in it (a review)."""
    kept, skipped = {}, []
    for alert_id, raw in alerts.items():
        if (isinstance(raw, dict) and isinstance(raw.get("asset"), str)
                and all(isinstance(raw.get(k), bool) for k in ("acked", "false_alarm"))):
            times = {k: raw[k] for k in ("raised_at", "acked_at") if k in raw}  # (optional: null is none)
            if all(v is None or is_number(v) for v in times.values()):
                kept[alert_id] = {k: v for k, v in raw.items() if v is not None or k not in times}
                continue
        skipped.append(alert_id)
    if skipped:
        log.warning("%s: skipped %d recent alerts that are not as the daemon writes them (%s; an asset, and acked "
                    "and false_alarm true or false, are needed): they can no longer be acknowledged", where,
                    len(skipped), some(skipped))
    return kept


def read_sends(raw: Any) -> dict[str, float]:
    """An asset's sends carried out (``{send: expires}``) as ``controls.json`` holds them; ValueError for
    anything else (a file of an older version has none: empty)."""
    if not isinstance(raw, dict):
        raise ValueError("sends must map each send to its expires")
    latest = time.time() + SEND_KEPT_S  # (a file of an older version kept them until 2200: a review)
    return {str(k): min(float(v), latest) for k, v in list(raw.items())[-SENDS_KEPT:]}


def newest(alerts: dict[str, dict]) -> dict[str, str]:
    """Each asset's newest alert id in ``alerts`` (kept in raise order)."""
    return {e.get("asset", ""): alert_id for alert_id, e in alerts.items()}

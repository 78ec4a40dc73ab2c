"""No-data markers in a table's values: what a historian writes where a sensor gave nothing.

Two kinds are read as missing, each with a note. Values of magnitude :data:`NO_DATA` or more
(3.4e38, float32's largest; and infinities) in any file, as the daemon does with a reading. And,
in normal data a model is fitted or calibrated on, round markers (``-9999``, ``99999``,
``-32768``, ``65535``) far outside the channel's other values: learned as normal, one such row set
the channel's scale and its sensor limits (``-40153 .. 30206`` for a temperature near 50), so a
sensor stuck at -9999 live was never ``out_of_range`` and faults were missed (a walk). A file
being scored keeps them as values: live, such a reading is an ``out_of_range`` sensor fault, and
offline must read as live does.

>>> import numpy as np
>>> values = np.array([[50.1, 6.0], [-9999.0, 6.1], [49.8, 9999.0], [50.3, 6.2]])
>>> [note] = no_data_markers(values, ("temp", "pressure"), normal=True)
>>> note
'2 values far from the rest of their channel read as missing (a no-data marker?): temp -9999 (1), pressure 9999 (1)'
>>> int(np.isnan(values).sum())
2
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sensorguard.service.logs import counted
from sensorguard.service.payload import NO_DATA

MARKERS = (999.0, 9999.0, 99999.0, 999999.0, 9999999.0, 32767.0, 32768.0, 65535.0)  # and their negatives
FAR = 20.0  # a marker this many times the other values' range away from their median is not a reading


def no_data_markers(values: np.ndarray, channels: Sequence[str], normal: bool) -> list[str]:
    """Read the no-data markers in ``values`` (rows x channels, in place) as missing; the notes saying so."""
    notes = []
    huge = np.abs(values) >= NO_DATA  # (NaN compares False)
    if huge.any():  # a historian's "no data" (3.4e38, float32's largest): one such row set a channel's scale
        infinite = int(np.isinf(values).sum())  # (inf and -inf: an export's division by zero, not a marker)
        markers = int(huge.sum()) - infinite
        values[huge] = np.nan
        said = ([f"{counted(markers, 'value')} of magnitude {NO_DATA:g} or more (a historian's no-data marker)"]
                if markers else []) + ([f"{counted(infinite, 'infinite value')}"] if infinite else [])
        notes.append(f"{' and '.join(said)} read as missing")
    if normal:
        found = [f for j, name in enumerate(channels) if (f := _round_markers(values[:, j], name))]
        if found:
            count = sum(n for _, n in found)
            whose = "their" if count > 1 else "its"
            notes.append(f"{count} value{'s' if count > 1 else ''} far from the rest of {whose} "
                         "channel read as missing (a no-data marker?): " + ", ".join(said for said, _ in found))
    return notes


def _round_markers(column: np.ndarray, name: str) -> tuple[str, int] | None:
    """Read one channel's round markers far from its other values as missing (in place): what is
    said of them and how many, or None."""
    marked = np.isin(np.abs(column), MARKERS)
    if not marked.any():
        return None
    others = column[np.isfinite(column) & ~marked]
    if len(others) < 2:
        return None  # nothing to tell a marker from a level by
    median = float(np.median(others))
    spread = max(float(others.max() - others.min()), 0.01 * abs(median), 1e-9)
    far = marked & (np.abs(column - median) > FAR * spread)
    if not far.any():
        return None
    kinds, counts = np.unique(column[far], return_counts=True)
    column[far] = np.nan
    return f"{name} " + ", ".join(f"{k:g} ({c})" for k, c in zip(kinds, counts, strict=True)), int(far.sum())

"""The clean series every stage works on: values, times and segment ids, and how to cut it.

``training.data`` builds one from a table (loading and cleaning); splits, folds and calibration
take rows out of it with :meth:`SensorData.take`, which remembers where a cut (rows left out of
continuous readings) differs from a gap in the readings (where the daemon starts afresh).
Several series (machines, or files and recorded readings) join into one with :func:`concat_series`;
:func:`drop_labeled` leaves labeled rows out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from sensorguard.service.cleaning import CleaningPolicy
from sensorguard.training.machines import machine_rows
from sensorguard.training.tables import DataError

LEARNED = "\0learned"  # (a label key no column can have) rows of alerts acknowledged as false alarms


@dataclass(frozen=True)
class SensorData:
    """A clean series: ``values`` is ``(T, C)`` float64, ``times`` epoch seconds, ``segments`` ids."""

    values: np.ndarray
    times: np.ndarray
    segments: np.ndarray
    channels: tuple[str, ...]
    sample_period: float | None
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    source_times: np.ndarray | None = None  # every input row's time, in file order (for per-row output)
    cleaning: CleaningPolicy | None = None  # the policy the rows were cleaned with
    faulted: np.ndarray | None = None  # (T, C) bool: a sensor fault open on the channel at the row
    assets: np.ndarray | None = None  # per row, its machine (files with an asset column); None: one machine
    source_assets: np.ndarray | None = None  # every input row's machine, in file order
    source_values: np.ndarray | None = None  # every input row's raw values (NaN: missing), in file order
    gap_starts: np.ndarray | None = None  # per row: a gap in the readings ends there (None: from the segments)
    left_out: tuple[str, ...] = ()  # the file's other columns (not its clock or machine): live readings may carry them
    asset_column: str | None = None  # the column that named the machines (None: one machine)

    def __len__(self) -> int:
        return len(self.values)

    def learned(self) -> np.ndarray:
        """Per row, whether it belongs to an alert acknowledged as a false alarm (``load_recorded``):
        rows to learn as normal, so every split and fold trains on them and none calibrates or
        judges with them. One such stretch in the newest rows set a retrained line 9x higher:
        the calibration block's tail was the episode the model had never trained on (a walk)."""
        flags = self.labels.get(LEARNED)
        return np.zeros(len(self), dtype=bool) if flags is None else flags.astype(bool)

    def blocks(self) -> list[tuple[str | None, slice]]:
        """Each machine's rows as ``(asset, slice)``: machines are contiguous, each sorted by time."""
        if self.assets is None or not len(self):
            return [(None, slice(0, len(self)))]
        cuts = np.flatnonzero(self.assets[1:] != self.assets[:-1]) + 1
        bounds = [0, *cuts.tolist(), len(self)]
        return [(str(self.assets[a]), slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def take(self, mask: np.ndarray) -> SensorData:
        """The rows where ``mask`` holds; a run of dropped rows splits the segment there (a cut, not a
        gap in the readings: :meth:`fresh_starts` keeps telling the two apart)."""
        cut = np.cumsum(~mask)
        return SensorData(
            self.values[mask],
            self.times[mask],
            renumber((self.segments + cut)[mask]),
            self.channels,
            self.sample_period,
            {k: v[mask] for k, v in self.labels.items()},
            self.notes,
            cleaning=self.cleaning,
            faulted=None if self.faulted is None else self.faulted[mask],
            assets=None if self.assets is None else self.assets[mask],
            gap_starts=self.fresh_starts()[mask],
            left_out=self.left_out,
            asset_column=self.asset_column,  # (a split lost it, and a retrained bundle with it: a review)
        )

    def fresh_starts(self) -> np.ndarray:
        """Per row, whether a gap in the readings ends there: the daemon starts its windows afresh
        after one (a machine's first reading is where its history begins, not a gap; a split or a
        cross-fitting fold cut out of continuous readings is none either)."""
        if self.gap_starts is not None:
            return self.gap_starts
        fresh = np.r_[False, self.segments[1:] != self.segments[:-1]] if len(self) else np.zeros(0, dtype=bool)
        for _, rows in self.blocks():
            fresh[rows.start : rows.start + 1] = False
        return fresh

    def rows_of(self, times: np.ndarray, assets: np.ndarray | None = None) -> np.ndarray:
        """Row of each given (asset and) time in this series, -1 where the row was dropped in cleaning."""
        times = np.asarray(times)
        out = np.full(len(times), -1, dtype=np.int64)
        everything = np.arange(len(times))
        groups = {} if assets is None else machine_rows(assets)
        for asset, rows in self.blocks():
            own = everything if asset is None or assets is None else groups.get(asset, everything[:0])
            block = self.times[rows]
            if not len(block) or not len(own):
                continue
            idx = np.clip(np.searchsorted(block, times[own]), 0, len(block) - 1)
            hit = block[idx] == times[own]
            out[own[hit]] = idx[hit] + rows.start
        return out

    def fingerprint(self) -> dict:
        """Rows, time range and a content hash: enough to tell later which data trained a model."""
        digest = hashlib.sha256(np.ascontiguousarray(self.values).tobytes()).hexdigest()[:16]
        finite = self.times[np.isfinite(self.times)]  # (machines are blocks: the last row is not the latest)
        span = [_iso(finite.min()), _iso(finite.max())] if len(finite) else [None, None]
        spans = [[_iso(a), _iso(b)] for a, b in time_spans(finite)]
        return {"rows": len(self), "time_range": span, "sha256_16": digest, "channels": list(self.channels),
                **({"time_spans": spans} if len(spans) > 1 else {}),
                **({"asset_column": self.asset_column} if self.asset_column is not None else {})}



def renumber(segment: np.ndarray) -> np.ndarray:
    """Segment ids counted from 0, one more at each change."""
    if not len(segment):
        return segment
    return np.concatenate([[0], np.cumsum(segment[1:] != segment[:-1])])


SPAN_GAP_S = 3600.0  # a gap longer than this between rows parts the time spans a fingerprint lists
SPANS_KEPT = 20  # spans listed at most: the data parted at their largest gaps


def time_spans(times: np.ndarray) -> list[tuple[float, float]]:
    """The stretches of time ``times`` cover, parted at gaps over ``SPAN_GAP_S`` (at most
    ``SPANS_KEPT``, parted at the largest such gaps), first to last: a model retrained on March's
    rows and December's recorded ones did not see February's, and ``calibrate`` warned that a
    stretch between them was its training rows (a walk).

    >>> time_spans(np.array([0.0, 60.0, 120.0, 90_000.0, 90_060.0]))
    [(0.0, 120.0), (90000.0, 90060.0)]
    """
    if not len(times):
        return []
    t = np.sort(times)
    gaps = np.flatnonzero(np.diff(t) > SPAN_GAP_S)
    if len(gaps) >= SPANS_KEPT:
        gaps = np.sort(gaps[np.argsort(np.diff(t)[gaps], kind="stable")[::-1][: SPANS_KEPT - 1]])
    starts, ends = np.r_[0, gaps + 1], np.r_[gaps, len(t) - 1]
    return [(float(t[a]), float(t[b])) for a, b in zip(starts, ends, strict=True)]


def _iso(seconds: float) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").isoformat()


def utc_stamps(seconds: np.ndarray) -> pd.DatetimeIndex:
    """Epoch seconds (NaN: none) as UTC times to the microsecond. Straight from float seconds,
    ``30.037`` came back as ``30.036999941``, so ``score``'s stamps no longer joined the input's
    (a walk); a float64 epoch second holds about 0.2 us, so the microsecond is what it says."""
    return pd.to_datetime(np.round(np.asarray(seconds, dtype=np.float64) * 1e6), unit="us", utc=True)


def concat_series(parts: Sequence[SensorData], notes: Sequence[str] = ()) -> SensorData:
    """Several series (machines) as one: each keeps its own segments, so no window spans two."""
    parts = [p for p in parts if len(p)]
    if not parts:
        raise DataError("no complete rows after cleaning")
    for p in parts[1:]:
        if p.channels != parts[0].channels:
            raise DataError(f"series have different channels: {list(parts[0].channels)} and {list(p.channels)}")
    offsets = np.cumsum([0] + [int(p.segments.max()) + 1 for p in parts[:-1]])
    periods = [p.sample_period for p in parts if p.sample_period]
    return SensorData(
        values=np.concatenate([p.values for p in parts]),
        times=np.concatenate([p.times for p in parts]),
        segments=np.concatenate([p.segments + off for p, off in zip(parts, offsets, strict=True)]),
        channels=parts[0].channels,
        sample_period=float(np.median(periods)) if periods else None,
        labels={k: np.concatenate([p.labels[k] if k in p.labels else np.zeros(len(p), dtype=np.int8) for p in parts])
                for k in dict.fromkeys(k for p in parts for k in p.labels)},  # (a part without one: 0, normal)
        notes=tuple(notes),
        cleaning=None if parts[0].cleaning is None else replace(
            parts[0].cleaning, sample_period=float(np.median(periods)) if periods else None),
        assets=np.concatenate([p.assets for p in parts]) if all(p.assets is not None for p in parts) else None,
        faulted=_faulted(parts),
        gap_starts=np.concatenate([p.fresh_starts() for p in parts]),  # a part's first row is no gap, nor a cut
        left_out=tuple(dict.fromkeys(c for p in parts for c in p.left_out)),
        asset_column=next((p.asset_column for p in parts if p.asset_column is not None), None),
    )


def _faulted(parts: list[SensorData]) -> np.ndarray | None:
    """The parts' sensor-fault marks, a part without any counting as none open (``calibrate --data X
    --recorded DIR`` once lost X's marks because the recording had none, and X's faulted windows were
    calibrated on); None when no part has marks."""
    if all(p.faulted is None for p in parts):
        return None
    return np.concatenate([np.zeros(p.values.shape, dtype=bool) if p.faulted is None else p.faulted for p in parts])


def drop_labeled(data: SensorData, column: str) -> SensorData:
    """Remove rows labeled anomalous (training sees normal data only); the series splits there."""
    bad = data.labels[column] > 0
    if not bad.any():
        return data
    kept = data.take(~bad)
    note = f"{int(bad.sum())} rows labeled anomalous in {column!r}: left out of training"
    return replace(kept, notes=(*data.notes, note))

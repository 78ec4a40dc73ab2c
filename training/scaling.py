"""The per-channel scaler, with a floor that real plant channels cannot break.

Every error and score is in standardized units, ``(x - center) / scale``, so a scale that is far too
small turns a normal step into thousands of units and the model then learns nothing (validation
loss stays at the level of predicting the center) while every later row alerts. Real channels do
this: a flow that reads 32.0 in most rows, a vibration RMS that moves in its fourth decimal while
the machine idles, a pressure quantized to a few levels, a channel constant for the whole training
period. So the scale is the larger of the channel's spread and a floor with a physical meaning:

- spread: the larger of the standard deviation and IQR/1.349 of the training rows (equal for a
  Gaussian channel; the standard deviation is the larger for a channel that idles and then moves,
  or has rare spikes, and those moves were normal in training);
- resolution: the channel's quantization step (the median gap between its distinct values), so one
  step of a quantized sensor is at most one unit;
- level: ``REL_LEVEL`` of the channel's typical magnitude (median of ``|x|``), the accuracy an
  industrial sensor is specified to (0.1-1 % of reading), so a change smaller than what the sensor
  can resolve is never several units;
- full scale: ``FULL_SCALE`` of the channel's largest magnitude (one part per million: finer than
  any industrial sensor resolves), for channels that sit at zero. An absolute floor (1e-6) did
  this before, and it set the scale of a channel measured in small units (a displacement of
  about 1e-6 m with a spread of 1e-7) ten times its spread: a 5-sigma shift there was caught
  in 18 % of its rows instead of 97 % (a walk).

A channel constant over the whole training block shows no spread at all: the only scale the data
offers is its own magnitude, so one unit is ``max(|value|, 1)``. Such channels are named in the
train summary: the model knows nothing about how they move, and a large change in one still scores.

The scaler records which floor set each scale in ``bundle.json`` so a user can see why a channel is
less sensitive than its training spread suggests.

A spiky channel (an error counter, a retry count: it sits still and jumps now and then as part of
normal work) is one whose spread a handful of rows carry: more than ``SPIKE_SHARE`` of its squared
deviation from the median lies in the 1 % of rows farthest from it. Its standard deviation is set
by how many spikes a stretch happens to hold, so each cross-fitting fold measured it in other units
than the served model, and the pooled line broke the promise (simulated servers: 3.6 false alerts
a day against 1). :func:`spiky_scale` gives such channels the scale of all the rows, which
``train`` pins in every fit (``set_by``: ``spikes``); a Gaussian channel's top 1 % carry about 9 %.

>>> values = np.column_stack([np.r_[np.full(95, 32.0), np.full(5, 33.0)], np.linspace(0, 1, 100)])
>>> fit = fit_scaler(values)
>>> fit.reason, [round(float(s), 3) for s in fit.scale_]
(('resolution', 'spread'), [1.0, 0.371])
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

REL_LEVEL = 1e-3
FULL_SCALE = 1e-6  # of the channel's largest |value| in training
SPIKE_SHARE = 0.5  # a channel whose farthest 1 % of rows carry more of its squared spread is spiky


@dataclass(frozen=True)
class ScalerFit:
    """Per-channel ``center_`` and ``scale_``, and which rule set each scale (spread or a floor)."""

    center_: np.ndarray
    scale_: np.ndarray
    spread: np.ndarray
    floor: np.ndarray
    reason: tuple[str, ...]
    constant: tuple[int, ...]

    def record(self, channels: tuple[str, ...]) -> dict:
        """The part of ``bundle.json`` that says how the scale of each channel was chosen."""
        return {
            "rule": (f"max(std, IQR/1.349, resolution, {REL_LEVEL:g} x level, {FULL_SCALE:g} x largest |value|); "
                     "constant: max(|value|, 1); spikes (farthest 1 % of rows carry over "
                     f"{SPIKE_SHARE:g} of the squared spread): all the training rows' scale"),
            "spread": [float(f"{v:.6g}") for v in self.spread],
            "floor": [float(f"{v:.6g}") for v in self.floor],
            "set_by": list(self.reason),
            "constant_in_training": [channels[i] for i in self.constant],
        }

    def pinned(self, scale: np.ndarray | None) -> ScalerFit:
        """This fit with the channels where ``scale`` is finite measured in that scale instead
        (:func:`spiky_scale`: every fold in the same units); None or all NaN: unchanged."""
        if scale is None or not np.isfinite(scale).any():
            return self
        which = np.isfinite(scale)
        reason = tuple("spikes" if w else r for r, w in zip(self.reason, which, strict=True))
        constant = tuple(j for j in self.constant if not which[j])  # still (no spike in these rows): not constant
        return replace(self, scale_=np.where(which, scale, self.scale_), reason=reason, constant=constant)


def fit_scaler(values: np.ndarray) -> ScalerFit:
    """Center (median) and floored scale per channel of ``(T, C)`` training rows."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or len(values) == 0:
        raise ValueError(f"values must be a non-empty (T, C) array, got shape {values.shape}")
    center = np.median(values, axis=0)
    q75, q25 = np.percentile(values, [75, 25], axis=0)
    biggest = np.max(np.abs(values), axis=0)
    biggest = np.where(np.isfinite(biggest) & (biggest > 0), biggest, 1.0)
    std = (values / biggest).std(axis=0) * biggest  # values near 1e200 squared overflow to inf
    spread = np.maximum(std, (q75 - q25) / 1.349)
    resolution = np.array([_resolution(values[:, j]) for j in range(values.shape[1])])
    level = REL_LEVEL * np.median(np.abs(values), axis=0)
    floors = np.stack([resolution, level, FULL_SCALE * biggest])  # (an all-zero channel is constant: below)
    floor = floors.max(axis=0)
    names = ("resolution", "level", "full_scale")
    reason = ["spread" if s >= f else names[int(np.argmax(floors[:, j]))]
              for j, (s, f) in enumerate(zip(spread, floor, strict=True))]
    constant = np.ptp(values, axis=0) == 0
    floor = np.where(constant, np.maximum(np.abs(center), 1.0), floor)
    for j in np.flatnonzero(constant):
        reason[j] = "constant"
    scale = np.maximum(spread, floor)
    return ScalerFit(center, scale, spread, floor, tuple(reason), tuple(int(j) for j in np.flatnonzero(constant)))


def spike_share(values: np.ndarray) -> np.ndarray:
    """Per channel, the share of the squared deviation from the median that the 1 % of rows
    farthest from it carry (0 for a constant channel)."""
    values = np.asarray(values, dtype=np.float64)
    squared = (values - np.median(values, axis=0)) ** 2
    top = np.sort(squared, axis=0)[-max(1, round(0.01 * len(values))):].sum(axis=0)
    total = squared.sum(axis=0)
    return np.divide(top, total, out=np.zeros_like(total), where=total > 0)


def spiky_scale(values: np.ndarray) -> np.ndarray:
    """All the rows' scale for the spiky channels (``spike_share`` above ``SPIKE_SHARE``), NaN for
    the rest: what :meth:`ScalerFit.pinned` takes.

    >>> counter = np.linspace(0, 0.01, 1000); counter[[100, 500, 900]] = 5.0
    >>> np.round(spiky_scale(np.column_stack([counter, np.linspace(0, 1, 1000)])), 3)
    array([0.273,   nan])
    """
    values = np.asarray(values, dtype=np.float64)
    spiky = spike_share(values) > SPIKE_SHARE
    return np.where(spiky, fit_scaler(values).scale_, np.nan) if spiky.any() else np.full(len(spiky), np.nan)


def spiky_channels(training: dict, channels: int) -> np.ndarray | None:
    """Which channels a bundle's scaler measured as spiky (``set_by`` ``spikes`` in its training
    record), for weighing their errors (``calibrate.channel_weights``); None for a bundle trained
    before the rule or without a well-formed record."""
    scaling = training.get("scaling")
    set_by = scaling.get("set_by") if isinstance(scaling, dict) else None
    if not isinstance(set_by, list) or len(set_by) != channels:
        return None
    return np.array([r == "spikes" for r in set_by])


def _resolution(column: np.ndarray) -> float:
    """The quantization step: median gap between distinct values (0 for a constant channel)."""
    distinct = np.unique(column[np.isfinite(column)])
    if len(distinct) < 2:
        return 0.0
    return float(np.median(np.diff(distinct)))

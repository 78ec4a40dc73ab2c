"""Fitting a bundle's level monitor (``service.level``) on the normal training rows.

Standardize (mean, standard deviation; 1 for a constant channel), keep the fewest principal
components that explain 90 % of the variance, and set the limits from out-of-fold T^2 and Q
values: five contiguous time folds, each scored by a monitor fitted on the other four. In-sample
they are small by construction (the components were chosen on those very rows); out-of-fold they
show how far normal operation wanders between parts of the training span, which is what the live
term meets too. The limits are ``SHARE`` and ``Q_SHARE`` times their 99th percentiles. Q counts
the channels :func:`_fold_fits` keeps, in every fold alike.

>>> rng = np.random.default_rng(0)
>>> common = rng.normal(size=(600, 1))
>>> rows = np.hstack([common + 0.1 * rng.normal(size=(600, 1)) for _ in range(4)])
>>> monitor = fit_level(rows)
>>> monitor.loadings.shape, bool(monitor.limit > 0)
((4, 1), True)
"""

from __future__ import annotations

import numpy as np

from sensorguard.service.level import Q_SHARE, QUANTILE, SHARE, VARIANCE, LevelMonitor
from sensorguard.training.scaling import SPIKE_SHARE, spike_share

FOLDS = 5
MIN_ROWS = 50  # fewer finite rows: no monitor (five folds of ten rows each)


def _principal(rows: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """``(mean, scale, loadings, eigen)`` of ``rows``: the kept components of the standardized rows;
    and ``(C,)`` which channels vary in them (the others get the scale 1)."""
    mean = rows.mean(axis=0)
    spread = rows.std(axis=0)
    varies = spread > 1e-12 * np.maximum(np.abs(mean), 1.0)
    scale = np.where(varies, spread, 1.0)  # constant: 1, as scikit-learn
    z = (rows - mean) / scale
    _, s, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    eigen = s**2 / max(len(rows) - 1, 1)
    total = eigen.sum()
    if not total > 0:  # every channel constant: nothing to monitor
        raise ValueError("the training rows do not vary")
    kept = min(int(np.searchsorted(np.cumsum(eigen) / total, VARIANCE) + 1), len(eigen))
    keep = eigen[:kept] > 1e-12 * total  # (a direction with no variance would divide by zero)
    return (mean, scale, vt[:kept][keep].T, eigen[:kept][keep]), varies


def _statistics(fitted: tuple[np.ndarray, ...], rows: np.ndarray,
                q_kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """T^2 and Q of ``rows`` about the mean of the monitor ``fitted`` (``_principal``'s)."""
    monitor = LevelMonitor(*fitted, limit=1.0, q_channels=q_kept)
    return monitor.t2(rows - fitted[0]), monitor.q(rows - fitted[0])


def _fold_fits(rows: np.ndarray, parts: list[np.ndarray],
               varies: np.ndarray) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray]:
    """Each fold's monitor (fitted on the other folds' rows), and the channels Q counts ``(C,)``:
    those that vary in every fit (``varies``: in all the rows) and are not spiky.

    A channel constant in a fit has the scale 1, in raw units, not a spread: a step of a pressure
    constant in pascals read as a huge residual. One that varies only in one stretch (a valve
    opened late) is constant in the fit without it, so the out-of-fold limit never saw its Q and
    the served monitor, which counts it, alerted on its own training rows (found by review: 15 %
    of them). A spiky channel (``training.scaling``: its farthest 1 % of rows carry most of its
    spread; a setpoint that moves now and then) has a small standard deviation its rare moves
    are tens of (a term of 47 on normal rows, review). The reconstruction error, with the
    scaler's floors and its pinned scale for spiky channels, watches them all."""
    kept = varies & (spike_share(rows) <= SPIKE_SHARE)
    fits = []
    for part in parts:  # (one fold's rows at a time: each a copy of most of them)
        fitted, fold_varies = _principal(np.delete(rows, part, axis=0))
        fits.append(fitted)
        kept &= fold_varies
    return fits, kept


def window_terms(monitor: LevelMonitor | None, values: np.ndarray, segments: np.ndarray, focus: int) -> np.ndarray:
    """The level term of the window ending at each row ``(T,)`` over ``monitor``'s fitted limits
    (the line's calibration then scales them): the larger of the mean T^2 over its ``limit`` and
    the mean Q over its ``q_limit``, of the row and the ``focus - 1`` before it
    in its segment, each about the level followed up to the row before it, as live (the level starts
    at the training mean and follows the rows, here every one: they are normal data; each segment
    from the mean, as another machine's rows start: live a level carries over a gap, so a term
    here reads higher after one, never lower). About the
    training mean alone, a 10,000-row plant's last block (its calibration block) read as wandering
    and the line was raised 2.2x. 0 where it cannot be had (a row not finite, fewer than ``focus``
    rows yet, no monitor): no term there, the error alone decides."""
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros(len(values))
    if monitor is None or not len(values):
        return out
    segments = np.asarray(segments)
    cuts = np.flatnonzero(segments[1:] != segments[:-1]) + 1
    rate = 1.0 / monitor.follow
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(values)], strict=True):
        if b - a < focus:
            continue
        levels = np.empty((b - a, values.shape[1]))
        level = monitor.mean.copy()
        for r, row in enumerate(values[a:b]):
            levels[r] = level
            if np.isfinite(row).all():
                level = level + rate * (row - level)
        deviations = values[a:b] - levels
        sums = _window_means(monitor.t2(deviations) / monitor.limit, focus)
        if monitor.q_limit > 0:
            sums = np.maximum(sums, _window_means(monitor.q(deviations) / monitor.q_limit, focus))
        out[a + focus - 1 : b] = np.where(np.isfinite(sums), sums, 0.0)
    return out


def _window_means(per_row: np.ndarray, focus: int) -> np.ndarray:
    """The mean of each ``focus`` rows in a row (inf where one is not finite)."""
    return np.convolve(np.nan_to_num(per_row, nan=np.inf), np.ones(focus), mode="valid") / focus


def fit_level(rows: np.ndarray, channels: tuple[str, ...] = ()) -> LevelMonitor | None:
    """The level monitor of the normal ``rows`` ``(n, C)`` of ``channels`` (rows with a missing
    value left out); None when there are fewer than ``MIN_ROWS`` of them or they do not vary."""
    rows = np.asarray(rows, dtype=np.float64)
    rows = rows[np.isfinite(rows).all(axis=1)]
    if len(rows) < MIN_ROWS:
        return None
    try:
        fitted, varies = _principal(rows)
        parts = np.array_split(np.arange(len(rows)), FOLDS)
        folds, kept = _fold_fits(rows, parts, varies)
        held = [_statistics(fold, rows[part], kept) for fold, part in zip(folds, parts, strict=True)]
    except ValueError:  # (a fold whose rows do not vary)
        return None
    limit = SHARE * float(np.quantile(np.concatenate([t2 for t2, _ in held]), QUANTILE))
    if not np.isfinite(limit) or limit <= 0:
        return None
    q_limit = Q_SHARE * float(np.quantile(np.concatenate([q for _, q in held]), QUANTILE))
    # no Q part where it is 0 up to rounding (one channel, or none counted: every direction is kept)
    if not (np.isfinite(q_limit) and q_limit > 1e-12):
        return LevelMonitor(*fitted, limit=limit, channels=tuple(channels))
    return LevelMonitor(*fitted, limit=limit, channels=tuple(channels), q_limit=q_limit, q_channels=kept)

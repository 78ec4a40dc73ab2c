"""Fitting a bundle's level monitor (``service.level``) on the normal training rows.

Standardize (mean, standard deviation; 1 for a constant channel), keep the fewest principal
components that explain 90 % of the variance, and set the limit from out-of-fold T^2 values: five
contiguous time folds, each scored by a monitor fitted on the other four. In-sample T^2 is
small by construction (the components were chosen on those very rows); out-of-fold it shows how
far normal operation wanders between parts of the training span, which is what the live term
meets too. The limit is ``SHARE`` times their 99th percentile.

>>> rng = np.random.default_rng(0)
>>> common = rng.normal(size=(600, 1))
>>> rows = np.hstack([common + 0.1 * rng.normal(size=(600, 1)) for _ in range(4)])
>>> monitor = fit_level(rows)
>>> monitor.loadings.shape, bool(monitor.limit > 0)
((4, 1), True)
"""

from __future__ import annotations

import numpy as np

from sensorguard.service.level import QUANTILE, SHARE, VARIANCE, LevelMonitor

FOLDS = 5
MIN_ROWS = 50  # fewer finite rows: no monitor (five folds of ten rows each)


def _principal(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, scale, loadings, eigen)`` of ``rows``: the kept components of the standardized rows."""
    mean = rows.mean(axis=0)
    scale = rows.std(axis=0)
    scale = np.where(scale > 1e-12 * np.maximum(np.abs(mean), 1.0), scale, 1.0)  # constant: 1, as scikit-learn
    z = (rows - mean) / scale
    _, s, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    eigen = s**2 / max(len(rows) - 1, 1)
    total = eigen.sum()
    if not total > 0:  # every channel constant: nothing to monitor
        raise ValueError("the training rows do not vary")
    kept = min(int(np.searchsorted(np.cumsum(eigen) / total, VARIANCE) + 1), len(eigen))
    keep = eigen[:kept] > 1e-12 * total  # (a direction with no variance would divide by zero)
    return mean, scale, vt[:kept][keep].T, eigen[:kept][keep]


def _t2(fitted: tuple[np.ndarray, ...], rows: np.ndarray) -> np.ndarray:
    """T^2 of ``rows`` about the mean of the monitor ``fitted`` (``_principal``'s)."""
    return LevelMonitor(*fitted, limit=1.0).t2(rows - fitted[0])


def window_terms(monitor: LevelMonitor | None, values: np.ndarray, segments: np.ndarray, focus: int) -> np.ndarray:
    """The level term of the window ending at each row ``(T,)`` over ``monitor``'s fitted ``limit``
    (the line's calibration then scales it): the mean T^2 of the row and the ``focus - 1`` before it
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
        t2 = monitor.t2(values[a:b] - levels) / monitor.limit
        sums = np.convolve(np.nan_to_num(t2, nan=np.inf), np.ones(focus), mode="valid") / focus
        out[a + focus - 1 : b] = np.where(np.isfinite(sums), sums, 0.0)
    return out


def fit_level(rows: np.ndarray, channels: tuple[str, ...] = ()) -> LevelMonitor | None:
    """The level monitor of the normal ``rows`` ``(n, C)`` of ``channels`` (rows with a missing
    value left out); None when there are fewer than ``MIN_ROWS`` of them or they do not vary."""
    rows = np.asarray(rows, dtype=np.float64)
    rows = rows[np.isfinite(rows).all(axis=1)]
    if len(rows) < MIN_ROWS:
        return None
    try:
        fitted = _principal(rows)
        parts = np.array_split(np.arange(len(rows)), FOLDS)
        held = np.concatenate([_t2(_principal(np.delete(rows, part, axis=0)), rows[part]) for part in parts])
    except ValueError:  # (a fold whose rows do not vary)
        return None
    limit = SHARE * float(np.quantile(held, QUANTILE))
    if not np.isfinite(limit) or limit <= 0:
        return None
    return LevelMonitor(*fitted, limit=limit, channels=tuple(channels))

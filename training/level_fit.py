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
    mean, scale, loadings, eigen = fitted
    return np.sum((((rows - mean) / scale) @ loadings) ** 2 / eigen, axis=1)


def fit_level(rows: np.ndarray) -> LevelMonitor | None:
    """The level monitor of the normal ``rows`` ``(n, C)`` (rows with a missing value left out);
    None when there are fewer than ``MIN_ROWS`` of them or they do not vary."""
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
    return LevelMonitor(*fitted, limit=limit)

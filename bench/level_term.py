"""A score change measured, not built: a Hotelling T^2 term beside sensorguard's reconstruction score.

Run it as ``bench/detection.py`` (same arguments), with sensorguard's per-row score replaced by
``max(score, T^2 / (M limit))`` and the line left as calibrated:

- T^2 per row in the principal subspace of the training rows (StandardScaler; the fewest
  components explaining 90 % of the variance), ``limit`` the 99th percentile of its out-of-fold
  training values (five time folds, each fold's scaler and PCA fitted on the other four: a plant
  that wanders while it trains gets a wide limit);
- ``TAU`` rows > 0 (default 2,000): T^2 is taken about a level that starts at the training mean
  and moves towards each row whose combined score is under the line (``mu += (z - mu) / TAU``), so
  the normal level can wander while an alerting fault is not learned away; ``TAU=0``: about the
  training mean (it broke the promise on the simulated plant's later hours: 17.7 false alerts a day);
- ``M`` (default 2): the term's share of the line; ``M=0`` runs the shipped score through the same
  code, the row to compare with.

docs/benchmarks.md (issue 9, session 52) has what it measured and what building it into the
product would take; this script is the reference those numbers came from. Per row, where the
product would step per scored window, so a built version will not match it to the digit.

    M=2 TAU=2000 OMP_NUM_THREADS=1 python bench/level_term.py --only pump
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.detection as detection  # noqa: E402
import bench.detection_baselines as baselines  # noqa: E402
import bench.detection_tep as detection_tep  # noqa: E402

M = float(os.environ.get("M", "2"))
TAU = float(os.environ.get("TAU", "2000"))
VARIANCE = 0.90
LEVEL = 0.99
FOLDS = 5


def fit_monitor(values: np.ndarray) -> tuple[StandardScaler, np.ndarray, np.ndarray, np.ndarray]:
    """Scaler, mean, loadings ``(C, a)`` and eigenvalues ``(a,)`` of the kept components."""
    scaler = StandardScaler().fit(values)
    pca = PCA().fit(scaler.transform(values))
    kept = min(int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), VARIANCE) + 1), len(pca.mean_))
    return scaler, pca.mean_, pca.components_[:kept].T, pca.explained_variance_[:kept]


def t2(monitor: tuple, values: np.ndarray) -> np.ndarray:
    scaler, mean, loadings, eigen = monitor
    return np.sum(((scaler.transform(values) - mean) @ loadings) ** 2 / eigen, axis=1)


def out_of_fold_limit(values: np.ndarray) -> float:
    parts = np.array_split(np.arange(len(values)), FOLDS)
    held = [t2(fit_monitor(np.delete(values, part, axis=0)), values[part]) for part in parts]
    return float(np.quantile(np.concatenate(held), LEVEL))


def with_level_term(fit_sensorguard):
    def fit(train, options):
        fitted, bundle, summary = fit_sensorguard(train, options)
        if M <= 0:
            return fitted, bundle, summary
        rows = train.values[np.isfinite(train.values).all(axis=1)]
        monitor, limit = fit_monitor(rows), out_of_fold_limit(rows)

        def score(test):
            base = np.asarray(fitted.score(test), dtype=np.float64)
            out = base.copy()
            _, mean, loadings, eigen = monitor
            z = monitor[0].transform(np.nan_to_num(test.values))
            centre = mean.copy()  # stays the training mean with TAU = 0
            for i in np.flatnonzero(np.isfinite(test.values).all(axis=1)):
                term = float(np.sum(((z[i] - centre) @ loadings) ** 2 / eigen)) / (M * limit)
                combined = max(base[i], term) if np.isfinite(base[i]) else term
                if np.isfinite(base[i]):
                    out[i] = combined
                if TAU > 0 and combined < 1.0:
                    centre += (z[i] - centre) / TAU
            return out

        return replace(fitted, score=score), bundle, summary

    return fit


if __name__ == "__main__":
    patched = with_level_term(baselines.fit_sensorguard)
    detection.fit_sensorguard = detection_tep.fit_sensorguard = baselines.fit_sensorguard = patched
    raise SystemExit(detection.main(sys.argv[1:]))

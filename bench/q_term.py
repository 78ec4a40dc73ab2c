"""A lead, measured and not built: sensorguard's score with a Q (SPE) term beside it (session 58).

Why: on the first proxy of the issue's hidden bench PCA's Q alone ranks the rows better than
sensorguard's score (docs/benchmarks.md, session 55). This wraps the bench's ``fit_sensorguard`` so
each row's score is ``max(error / line, Q / (K x Q's training 99th percentile))``: Q from the
classic PCA of the training rows (the components explaining 90 % of their variance, as the bench's
PCA T^2/Q baseline), on the readings as the sensor watch holds them; the level term and the alert
machine as shipped, so every number of ``bench/detection.py`` comes out for the wrapped score.
``--parts`` instead prints ``bench/score_parts.py``'s ranking table with ``max(combined, Q / (k
Q's limit))`` for k = 1, 2, 4 beside the shipped parts.

Run: ``K=8 OMP_NUM_THREADS=1 python bench/q_term.py --only recordings --recordings 24`` (any
``bench/detection.py`` arguments; K defaults to 8); ``OMP_NUM_THREADS=1 python bench/q_term.py
--parts --only pump``. Asserts nothing.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.detection as detection  # noqa: E402
import bench.detection_baselines as baselines  # noqa: E402
import bench.detection_tep as tep  # noqa: E402
import bench.score_parts as score_parts  # noqa: E402
from sensorguard.service.bundle_checks import default_rules  # noqa: E402
from sensorguard.service.sensors import watch_rows  # noqa: E402

K = float(os.environ.get("K", "8"))
shipped_fit, shipped_parts = baselines.fit_sensorguard, score_parts.parts


def with_q(train, options):
    """``fit_sensorguard`` whose score has the Q term beside it (none where Q is always 0: one channel)."""
    fitted, bundle, summary = shipped_fit(train, options)
    monitor = baselines.fit_pca_monitor(train.values)
    q_lim = float(np.quantile(monitor.statistics(train.values)[1], baselines.LIMIT_LEVEL))
    if not q_lim > 1e-12:
        return fitted, bundle, summary

    def held(test):
        if bundle.sensors is None:
            return test.values
        values = test.values.copy()
        rules = replace(bundle.sensors, silence_s=default_rules(bundle).stale_after)
        for _, rows in test.blocks():
            values[rows], _, _ = watch_rows(test.times[rows], test.values[rows], rules)
        return values

    def score(test):
        error = fitted.score(test)
        q = monitor.statistics(held(test))[1] / (K * q_lim)
        return np.where(np.isfinite(error), np.maximum(error, q), error)

    return replace(fitted, score=score, info=f"{fitted.info}, Q term K={K:g}"), bundle, summary


def parts_with_q(case, options):
    out = shipped_parts(case, options)
    combined, _ = out["combined"]
    q, q_lim = out["q"]
    for k in (1, 2, 4):
        out[f"cq{k}"] = (np.maximum(combined, q / (k * q_lim)), 1.0)
    return out


if __name__ == "__main__":
    if "--parts" in sys.argv:
        sys.argv.remove("--parts")
        score_parts.parts = parts_with_q
        score_parts.PARTS = (*score_parts.PARTS, "cq1", "cq2", "cq4")
        raise SystemExit(score_parts.main(sys.argv[1:]))
    detection.fit_sensorguard = tep.fit_sensorguard = with_q
    raise SystemExit(detection.main(sys.argv[1:]))

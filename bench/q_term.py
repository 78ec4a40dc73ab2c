"""The level term's Q part (service/level.py), measured: every number of ``bench/detection.py``
with the Q limit's share set from ``QS`` (``training.level_fit.Q_SHARE``; 0: no Q part, as
bundles before format 6 score).

Why: the share was chosen among 2, 4 and 8 on every set (docs/benchmarks.md, session 59); this
reruns that choice. Session 58's wrapper, which measured the lead before it was built (Q about the
training mean, in-sample limit, no calibration factor), is in the history at 767c662.

Run: ``QS=2 OMP_NUM_THREADS=1 python bench/q_term.py --only recordings --recordings 24`` (any
``bench/detection.py`` arguments). Asserts nothing.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.detection as detection  # noqa: E402
import sensorguard.training.crossfit as crossfit  # noqa: E402
import sensorguard.training.level_fit as level_fit  # noqa: E402
import sensorguard.training.train as train  # noqa: E402

shipped_fit = level_fit.fit_level


def fit_with_share(*args, **kwargs):
    """``fit_level`` with the Q limit's share from ``QS`` (none at 0)."""
    monitor = shipped_fit(*args, **kwargs)
    if monitor is None or level_fit.Q_SHARE > 0:
        return monitor
    return replace(monitor, q_limit=0.0)


if __name__ == "__main__":
    level_fit.Q_SHARE = float(os.environ.get("QS", str(level_fit.Q_SHARE)))
    crossfit.fit_level = train.fit_level = fit_with_share
    raise SystemExit(detection.main(sys.argv[1:]))

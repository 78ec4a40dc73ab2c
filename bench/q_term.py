"""The level term's Q part (service/level.py), measured: every number of ``bench/detection.py``
with the Q limit's share set from ``QS`` (``training.level_fit.Q_SHARE``; 0: no Q part, as
bundles before format 6 score: ``fit_level`` then fits none).

Why: the share was chosen among 2, 4 and 8 on every set (docs/benchmarks.md, session 59); this
reruns that choice. Session 58's wrapper, which measured the lead before it was built (Q about the
training mean, in-sample limit, no calibration factor; ``K=...``, ``--parts``), is at 767c662:
``git show 767c662:bench/q_term.py``.

Run: ``QS=2 OMP_NUM_THREADS=1 python bench/q_term.py --only recordings --recordings 24`` (any
``bench/detection.py`` arguments). Asserts nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.detection as detection  # noqa: E402
import sensorguard.training.level_fit as level_fit  # noqa: E402

if __name__ == "__main__":
    if "K" in os.environ or "--parts" in sys.argv:
        raise SystemExit("K and --parts were session 58's wrapper: git show 767c662:bench/q_term.py")
    level_fit.Q_SHARE = float(os.environ.get("QS", str(level_fit.Q_SHARE)))
    print(f"the level term's Q part: its limit {level_fit.Q_SHARE:g} times the out-of-fold 99th percentile"
          + (" (0: no Q part)" if level_fit.Q_SHARE <= 0 else ""))
    raise SystemExit(detection.main(sys.argv[1:]))

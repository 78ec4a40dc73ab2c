"""How the pump proxy's two sizes were chosen: the classic baselines alone, on a grid.

``bench/detection_pump.py`` has two free sizes, the faults' ``severity`` and the temperatures'
``warming``. For each pair on the grid this prints, pooled over the 24 recordings (seeds 100-123,
test rows after the 400 training rows, per row), the F1 / false-alarm rate / missed-alarm rate of
three classic detectors whose figures on the real bench are published: PCA T^2/Q (99th-percentile
limits), T^2 alone with its F limit, and IsolationForest per sample, and how far each is from its
published triple (``off``: the sum of the three absolute differences). The shipped pair is the one
nearest, summed over the three detectors (docs/benchmarks.md, session 49). sensorguard is never run here, so
its numbers cannot have chosen the sizes.

Run: ``python bench/pump_calibration.py`` (1-2 minutes), ``--severity 0.6 --warming 0.3`` for
one pair. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.detection_baselines import fit_iforest_rows, fit_pca_t2_f, fit_pca_t2q  # noqa: E402
from bench.detection_data import split_case  # noqa: E402
from bench.detection_pump import TRAIN_ROWS, recording  # noqa: E402
from bench.detection_tables import print_table  # noqa: E402
from sensorguard.training.evaluate import detection_metrics  # noqa: E402

SEVERITIES = (0.3, 0.5, 0.6, 0.7, 1.0)
WARMINGS = (0.0, 0.3, 0.4, 0.5)
SEEDS = range(100, 124)
# F1, false-alarm rate, missed-alarm rate published for the real bench (SKAB's outlier leaderboard)
PUBLISHED = {"pca_t2q": (0.76, 0.266, 0.250), "pca_t2_f": (0.66, 0.172, 0.379), "iforest_row": (0.40, 0.069, 0.721)}


def baselines(severity: float, warming: float) -> list[dict]:
    """One table row per baseline: its pooled triple at these sizes and how far it is from the published one."""
    preds: dict[str, list[np.ndarray]] = {}
    labels = []
    for seed in SEEDS:
        case = split_case(recording(seed, severity, warming)[0], f"pump {seed}", TRAIN_ROWS)
        labels.append(case.labels.astype(bool))
        for fitted in (fit_pca_t2q(case.train), fit_pca_t2_f(case.train), fit_iforest_rows(case.train, 0)):
            preds.setdefault(fitted.name, []).append(np.nan_to_num(fitted.score(case.test), nan=0.0) >= 1.0)
    lab = np.concatenate(labels)
    rows = []
    for name, parts in preds.items():
        m = detection_metrics(np.concatenate(parts), lab)
        f1, far, mar = m["f1"], m["false_alarm_rate"], m["missed_alarm_rate"]
        off = sum(abs(a - b) for a, b in zip((f1, far, mar), PUBLISHED[name], strict=True))
        rows.append({"severity": severity, "warming": warming, "detector": name, "f1": f1, "far": far, "mar": mar,
                     "off": off})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--severity", type=float, default=None, help="one severity instead of the grid")
    parser.add_argument("--warming", type=float, default=None, help="one warming instead of the grid")
    args = parser.parse_args(argv)
    severities = SEVERITIES if args.severity is None else (args.severity,)
    warmings = WARMINGS if args.warming is None else (args.warming,)
    rows = [row for w in warmings for s in severities for row in baselines(s, w)]
    print_table(rows, ("severity", "warming", "detector", "f1", "far", "mar", "off"))
    pairs = {(r["severity"], r["warming"]) for r in rows}
    off = {p: sum(r["off"] for r in rows if (r["severity"], r["warming"]) == p) for p in pairs}
    best = min(sorted(off), key=off.get)
    print(f"\nnearest the published figures (sum of |difference| over the nine numbers): severity {best[0]:g}, "
          f"warming {best[1]:g} ({off[best]:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How well each part of the score ranks, one recording at a time, and where the line sits.

Why: on the pump proxy of the issue's hidden bench sensorguard's pooled ``alert`` F1 is far below
PCA T^2/Q's (docs/benchmarks.md, issue 9). That gap has two possible sources: the score ranks the
faulty rows worse, or the line is drawn in the wrong place. This script tells them apart. Per
recording, each score is judged with a threshold the labels choose (an upper bound on what any
line can reach on that recording): ROC AUC, and the best F1 with at most 10 % of the normal rows
over the threshold (``best_f1_far``). Beside it, ``line_x``: the line actually drawn over that best
threshold (1: the line is where the labels would put it; 2: twice as high).

Scores: sensorguard's ``combined`` score as the daemon judges it (``max(error / line, level
term)``, the term following its level), its ``error`` part alone, its ``term`` alone (the error
left out), and PCA's ``t2``, ``q`` and ``t2q`` (the larger of each over its training 99th
percentile, the bench's baseline). Rows: the test rows after the 400 training rows, labels of
the recording.

Run: ``OMP_NUM_THREADS=1 python bench/score_parts.py --only pump`` (about 2 minutes; ``--only
recordings``, ``--recordings N``). Prints one line per recording and the means; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.detection_baselines import LIMIT_LEVEL, fit_pca_monitor, fit_sensorguard  # noqa: E402
from bench.detection_data import Case, pump_cases, recordings_cases  # noqa: E402
from sensorguard.service.alerts import alert_steps, judge_series, step_masks  # noqa: E402
from sensorguard.service.bundle_checks import default_rules  # noqa: E402
from sensorguard.training.train import TrainOptions  # noqa: E402

FAR = 0.10  # the hidden bench's false-alarm target
PARTS = ("combined", "error", "term", "t2", "q", "t2q")


def best_f1_far(score: np.ndarray, labels: np.ndarray, far: float = FAR) -> tuple[float, float]:
    """The best F1 over thresholds that put at most ``far`` of the normal rows at or above them,
    and that threshold (nan where no finite score); rows without a score are left out."""
    finite = np.isfinite(score)
    s, y = score[finite], labels[finite].astype(np.int64)
    if not len(s) or y.sum() == 0 or y.sum() == len(y):
        return float("nan"), float("nan")
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order], s[order]
    last = np.r_[ss[1:] != ss[:-1], True]  # a threshold takes every row tied at it
    tp, fp = np.cumsum(ys)[last], np.cumsum(1 - ys)[last]
    f1 = 2 * tp / (tp + fp + ys.sum())
    f1[fp / max(len(ys) - ys.sum(), 1) > far] = 0.0
    k = int(np.argmax(f1))
    return float(f1[k]), float(ss[last][k])


def parts(case: Case, options: TrainOptions) -> dict[str, tuple[np.ndarray, float]]:
    """Each score of the module docstring on the case's test rows, with the line it is judged at."""
    fitted, bundle, _ = fit_sensorguard(case.train, options)
    error = np.asarray(fitted.score(case.test), dtype=np.float64)  # error / line
    mask, alert_mask = step_masks(case.test.segments, fitted.window, fitted.hop, fitted.alert_hop)
    rules = replace(default_rules(bundle), alert_steps=alert_steps(fitted.hop, fitted.alert_hop))
    level = None if fitted.level is None else fitted.level(case.test)

    def judged(score: np.ndarray) -> np.ndarray:
        return judge_series(score, mask, case.test.times, rules, fitted.drift, alert_mask=alert_mask, level=level)[1]

    monitor = fit_pca_monitor(case.train.values)
    t2, q = monitor.statistics(case.test.values)
    t2_train, q_train = monitor.statistics(case.train.values)
    t2_lim, q_lim = (float(np.quantile(x, LIMIT_LEVEL)) for x in (t2_train, q_train))
    return {"combined": (judged(error), 1.0), "error": (error, 1.0),
            "term": (judged(np.where(np.isfinite(error), 0.0, np.nan)), 1.0),
            "t2": (t2, t2_lim), "q": (q, q_lim), "t2q": (np.maximum(t2 / t2_lim, q / q_lim), 1.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("pump", "recordings"), default="pump")
    parser.add_argument("--recordings", type=int, default=24, help="recordings (default 24)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    cases = pump_cases(False, args.recordings) if args.only == "pump" else recordings_cases(False, args.recordings)
    options = TrainOptions(seed=args.seed, progress=False)
    print(f"{args.only}, {len(cases)} recordings; per part: AUC / best F1 at <= {FAR:.0%} false alarms / line_x")
    table: dict[str, list[tuple[float, float, float]]] = {name: [] for name in PARTS}
    for case in cases:
        labels = case.labels.astype(bool)
        cells = []
        for name, (score, line) in parts(case, options).items():
            finite = np.isfinite(score)
            auc = float(roc_auc_score(labels[finite], score[finite])) if 0 < labels[finite].sum() < finite.sum() \
                else float("nan")
            f1, best = best_f1_far(score, labels)
            line_x = line / best if best > 0 else float("nan")
            table[name].append((auc, f1, line_x))
            cells.append(f"{name} {auc:.3f}/{f1:.3f}/{line_x:.2f}")
        print(f"{case.name[:26]:26s} " + "  ".join(cells), flush=True)
    print("\nmean AUC / mean best F1 / median line_x")
    for name, rows in table.items():
        auc, f1, line_x = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
        print(f"{name:9s} {np.nanmean(auc):.3f} / {np.nanmean(f1):.3f} / {np.nanmedian(line_x):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

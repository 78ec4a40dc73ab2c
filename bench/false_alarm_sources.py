"""Where the false alarms of the two test-bench proxies come from: the faults, or normal drift.

Why: on both proxies of the issue's hidden bench (``detection_data.recordings_cases`` and
``pump_cases``) most false-alarm rows sit after a fault has ended, which reads as alerts that do
not clear. This script separates the two causes. Both simulators draw a recording's normal rows
before its faults and add the faults on top, so the same recording can be drawn without them:
identical normal rows, no fault anywhere (checked here: the script stops if a normal row differs).
Each detector is fitted once, on the 400 training rows both versions share, and run on both test
parts. A false alarm that stays when the faults are gone was raised by the normal rows alone
(drift beyond the training rows, or noise); the rest is what the faults left behind (an alert that
started in a fault and outlasted it, or a raise near one).

Columns, pooled over the recordings (rows after the 400 training rows, labels of the faulty
version): ``normal`` rows, ``fa`` false-alarm rows with the faults, ``fa_no_faults`` false-alarm
rows on the same normal rows drawn without them, ``stay`` the rows alarmed in both runs,
``drift_share`` = ``stay`` over ``fa`` (the share of the false-alarm rows that the normal rows
raise alone), ``after_fault`` false-alarm rows after the recording's last faulty row.
Detectors: sensorguard's ``alert`` state (default ``train`` options) and PCA T^2/Q's ``alert``
state, through the daemon's default rules.

Run: ``OMP_NUM_THREADS=1 python bench/false_alarm_sources.py`` (about 3 minutes; ``--only pump`` or
``--only recordings``, ``--recordings N``, ``--no-level``). Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.detection_baselines import detect, fit_pca_t2q, fit_sensorguard  # noqa: E402
from bench.detection_data import MIN_NORMAL_ROWS, RECORDING_FAULT_SHARE, RECORDING_ROWS, Case, split_case  # noqa: E402
from bench.detection_pump import TRAIN_ROWS, recording  # noqa: E402
from bench.detection_tables import print_table  # noqa: E402
from sensorguard.service.bundle_checks import default_rules  # noqa: E402
from sensorguard.training.simulate import simulate  # noqa: E402
from sensorguard.training.train import TrainOptions  # noqa: E402

COLUMNS = ("detector", "normal", "fa", "fa_no_faults", "stay", "drift_share", "after_fault")


def pump_pair(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The pump recording of ``seed`` with its fault, and the same recording without it."""
    frame, _ = recording(seed)
    clean, _ = recording(seed, severity=0.0)
    return frame, clean, TRAIN_ROWS


def recordings_pair(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The first proxy's recording of ``seed`` with its faults, and the same plant without them."""
    frame = simulate(rows=RECORDING_ROWS, channels=8, seed=seed, anomalies=True,
                     anomaly_rate=RECORDING_FAULT_SHARE, anomalies_from=MIN_NORMAL_ROWS)
    return frame, simulate(rows=RECORDING_ROWS, channels=8, seed=seed, anomalies=False), MIN_NORMAL_ROWS


def cases(pair: Callable[[int], tuple[pd.DataFrame, pd.DataFrame, int]], seed: int) -> tuple[Case, Case]:
    """The faulty case and its fault-free twin (the faulty version's labels), normal rows checked equal."""
    frame, clean, rows = pair(seed)
    values = [c for c in frame.columns if c not in ("timestamp", "anomaly")]
    normal = frame["anomaly"].to_numpy() == 0
    if not np.array_equal(frame.loc[normal, values].to_numpy(), clean.loc[normal, values].to_numpy()):
        raise SystemExit(f"seed {seed}: the recording without faults differs on a normal row; the split is void")
    twin = clean.assign(anomaly=frame["anomaly"].to_numpy())
    return split_case(frame, f"seed={seed}", rows), split_case(twin, f"seed={seed} without faults", rows)


def section(title: str, pair: Callable[[int], tuple[pd.DataFrame, pd.DataFrame, int]], count: int,
            options: TrainOptions) -> None:
    totals: dict[str, np.ndarray] = {}
    for seed in range(100, 100 + count):
        faulty, twin = cases(pair, seed)
        sg, bundle, _ = fit_sensorguard(faulty.train, options)
        rules = default_rules(bundle)
        normal = ~faulty.labels.astype(bool)
        after = np.zeros(len(normal), dtype=bool)
        if not normal.all():  # (both simulators put a fault in every test part)
            after[np.flatnonzero(~normal).max() + 1 :] = True
        for fitted in (sg, fit_pca_t2q(faulty.train)):
            with_faults, without = detect(fitted, faulty.test, rules).alert, detect(fitted, twin.test, rules).alert
            row = np.array([normal.sum(), (with_faults & normal).sum(), (without & normal).sum(),
                            (with_faults & without & normal).sum(), (with_faults & after).sum()])
            totals[fitted.name] = totals.get(fitted.name, 0) + row
    print(f"\n== {title}: {count} recordings, false-alarm rows with the faults and without them ==")
    print_table([{"detector": name, "normal": int(t[0]), "fa": f"{int(t[1])} ({t[1] / t[0]:.1%})",
                  "fa_no_faults": f"{int(t[2])} ({t[2] / t[0]:.1%})", "stay": int(t[3]),
                  "drift_share": f"{t[3] / t[1]:.0%}" if t[1] else "-", "after_fault": int(t[4])}
                 for name, t in totals.items()], COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("pump", "recordings"))
    parser.add_argument("--recordings", type=int, default=24, help="recordings per proxy (seeds 100 on)")
    parser.add_argument("--no-level", action="store_true", help="sensorguard without its level term")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.manual_seed(args.seed)
    options = TrainOptions(progress=False, seed=args.seed, level=not args.no_level)
    if args.only in (None, "pump"):
        section("pump proxy", pump_pair, args.recordings, options)
    if args.only in (None, "recordings"):
        section("first proxy (simulated test-bench recordings)", recordings_pair, args.recordings, options)


if __name__ == "__main__":
    main()

"""Detection quality of the default ``sensorguard train`` model against two classic baselines.

What it measures: on the same windows, the conv autoencoder trained with default settings
(``train_bundle(data, TrainOptions(progress=False))``) is compared with

- ``iforest``: scikit-learn ``IsolationForest`` on flattened standardized windows (score
  ``-score_samples``, higher = more anomalous), and
- ``pca``: a PCA reconstruction detector (sklearn ``PCA`` with as many components as the
  autoencoder's bottleneck, fit on the same training windows; score = mean squared reconstruction
  error, the same definition of error the autoencoder uses).

Why: an autoencoder only earns its complexity if it beats cheap detectors. To keep the comparison
fair every detector sees the same split (train / validation / calibration blocks of
``split_by_time``), the same scaler (the bundle's), the same window length, and gets its threshold
from the same calibration windows with the same method and rate (``pick_threshold``, POT at 0.1%
by default). So the calibrated F1 is compared at the false-alarm rate each detector picks for
itself; best-F1 (``best_f1_threshold``) and ROC AUC are threshold-free and show the ranking quality
alone. ``alertF1`` is the F1 of the alert state after the daemon's raise/clear rules
(``service.alerts``, defaults raise after 3, clear after 5 windows below 0.8, stepped every ``hop``
rows), i.e. what an operator would see.

Data sets: (a) the simulated plant (8 channels, 30k normal rows for training, a 20k-row labeled
test set with injected faults); (b) the real NAB univariate files under /work/shared/data/nab,
each trained on its first normal part (first 40% of rows, cut before the first labeled window) and
tested on the rest. Every row with a full window gets the score of the window ending at that row;
metrics are point-wise over those rows.

Run: ``python bench/detection.py`` (full) or ``python bench/detection.py --quick`` (smaller
simulated data, 3 NAB files). Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.alerts import AlertRules, alert_series, hop_mask  # noqa: E402
from service.bundle import Bundle  # noqa: E402
from service.scorer import Scorer  # noqa: E402
from training.calibrate import pick_threshold  # noqa: E402
from training.data import SensorData, series_from_frame, split_by_time  # noqa: E402
from training.evaluate import best_f1_threshold, detection_metrics  # noqa: E402
from training.simulate import simulate  # noqa: E402
from training.train import TrainOptions, train_bundle  # noqa: E402

NAB_ROOT = Path(os.environ.get("SENSORGUARD_NAB", "/work/shared/data/nab"))
MIN_NORMAL_ROWS = 400
QUICK_NAB_FILES = (
    "realKnownCause/ambient_temperature_system_failure.csv",
    "realKnownCause/ec2_request_latency_system_failure.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv",
)
DETECTORS = ("autoencoder", "iforest", "pca")


@dataclass
class Result:
    """One detector on one data set: per-row scores normalized so 1.0 is its calibrated threshold."""

    detector: str
    score: np.ndarray  # per test row, NaN where no full window
    labels: np.ndarray
    alert: np.ndarray
    train_s: float


def windows_of(std: np.ndarray, segments: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, C, window)`` windows inside segments and the row each ends at (as ``score_series``)."""
    pieces, ends = [], []
    starts = np.concatenate([[0], np.flatnonzero(segments[1:] != segments[:-1]) + 1])
    stops = np.concatenate([starts[1:], [len(segments)]])
    for a, b in zip(starts, stops, strict=True):
        if b - a >= window:
            pieces.append(sliding_window_view(std[a:b], window, axis=0))
            ends.append(np.arange(a + window - 1, b))
    if not pieces:
        return np.empty((0, std.shape[1], window), np.float32), np.empty(0, np.int64)
    return np.concatenate(pieces).astype(np.float32), np.concatenate(ends)


class Baseline:
    """A sklearn detector on flattened standardized windows; ``errors`` is higher = more anomalous."""

    def __init__(self, kind: str, components: int, seed: int = 0) -> None:
        self.kind = kind
        if kind == "iforest":
            self.model = IsolationForest(n_estimators=100, random_state=seed, n_jobs=1)
        else:
            self.model = PCA(n_components=components, random_state=seed)

    def fit(self, windows: np.ndarray) -> Baseline:
        self.model.fit(windows.reshape(len(windows), -1))
        return self

    def errors(self, windows: np.ndarray) -> np.ndarray:
        flat = windows.reshape(len(windows), -1)
        if self.kind == "iforest":
            return -self.model.score_samples(flat)
        recon = self.model.inverse_transform(self.model.transform(flat))
        return np.mean((recon - flat) ** 2, axis=1)


def run_dataset(train: SensorData, test: SensorData, labels: np.ndarray, options: TrainOptions) -> list[Result]:
    """Train all detectors on ``train`` (normal), score every row of ``test``."""
    rules = AlertRules()
    started = time.perf_counter()
    bundle, _ = train_bundle(train, options)
    ae_seconds = time.perf_counter() - started
    scorer = Scorer(bundle, device="cpu")
    window = bundle.window
    mask = hop_mask(test.segments, window, bundle.hop)
    ae_score = scorer.score_series(test.values, test.segments).score
    results = [Result("autoencoder", ae_score, labels, alert_series(ae_score, mask, test.times, rules), ae_seconds)]
    splits = split_by_time(train, options.split)
    std = _standardizer(bundle)
    train_w, _ = windows_of(std(splits.train.values), splits.train.segments, window)
    cal_w, _ = windows_of(std(splits.calibration.values), splits.calibration.segments, window)
    test_w, test_rows = windows_of(std(test.values), test.segments, window)
    per_day = 86400.0 / (bundle.sample_period * bundle.hop) if bundle.sample_period else None
    for kind in ("iforest", "pca"):
        started = time.perf_counter()
        det = Baseline(kind, bundle.config.latent, options.seed).fit(train_w)
        threshold, _ = pick_threshold(det.errors(cal_w), options.threshold_method, options.false_alarm_rate, per_day)
        seconds = time.perf_counter() - started
        score = np.full(len(test.values), np.nan)
        if len(test_w):
            score[test_rows] = det.errors(test_w) / threshold
        results.append(Result(kind, score, labels, alert_series(score, mask, test.times, rules), seconds))
    return results


def _standardizer(bundle: Bundle):
    def std(values: np.ndarray) -> np.ndarray:
        return ((values - bundle.center_) / bundle.scale_).astype(np.float32)

    return std


def metrics_row(res: Result) -> dict:
    keep = np.isfinite(res.score)
    score, labels = res.score[keep], res.labels[keep]
    point = detection_metrics(score >= 1.0, labels)
    alert = detection_metrics(res.alert[keep], labels)
    _, best = best_f1_threshold(score, labels)
    auc = roc_auc_score(labels, score) if 0 < labels.sum() < len(labels) else float("nan")
    return {
        "detector": res.detector,
        "precision": point["precision"],
        "recall": point["recall"],
        "f1": point["f1"],
        "fa_rate": point["false_alarm_rate"],
        "best_f1": best,
        "auc": auc,
        "alert_f1": alert["f1"],
        "events": f"{point['events_detected']}/{point['events']}",
        "train_s": res.train_s,
        "tp": point["tp"],
        "fp": point["fp"],
        "fn": point["fn"],
        "tn": point["tn"],
    }


COLUMNS = ("detector", "precision", "recall", "f1", "fa_rate", "best_f1", "auc", "alert_f1", "events", "train_s")


def print_table(rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> None:
    def fmt(v) -> str:
        if isinstance(v, float):
            return "nan" if np.isnan(v) else (f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}")
        return str(v)

    cells = [[fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


# --- data sets -----------------------------------------------------------------------------------


def simulated(quick: bool, options: TrainOptions) -> None:
    rows_train, rows_test = (10_000, 8_000) if quick else (30_000, 20_000)
    print(
        f"\n== simulated plant: train simulate(rows={rows_train}, channels=8, seed=0), "
        f"test simulate(rows={rows_test}, channels=8, seed=1, anomalies=True) =="
    )
    train = series_from_frame(simulate(rows=rows_train, channels=8, seed=0), "simulated-normal")
    test = series_from_frame(
        simulate(rows=rows_test, channels=8, seed=1, anomalies=True), "simulated-faults", label_column="anomaly"
    )
    labels = test.labels["anomaly"]
    print(f"test rows {len(test)}, anomalous rows {int(labels.sum())} ({labels.mean():.1%})")
    rows = [metrics_row(r) for r in run_dataset(train, test, labels, options)]
    print_table(rows)


def nab_files(quick: bool) -> list[tuple[str, Path, list]]:
    windows = json.loads((NAB_ROOT / "labels" / "combined_windows.json").read_text())
    found = sorted(p.relative_to(NAB_ROOT / "data").as_posix() for p in (NAB_ROOT / "data").rglob("*.csv"))
    if quick:
        found = [f for f in QUICK_NAB_FILES if f in found] or found[:3]
    return [(name, NAB_ROOT / "data" / name, windows.get(name)) for name in found]


def nab(quick: bool, options: TrainOptions) -> None:
    print("\n== NAB real univariate series (train: first normal part, test: the rest) ==")
    if not (NAB_ROOT / "data").is_dir() or not (NAB_ROOT / "labels" / "combined_windows.json").is_file():
        print(f"skipped: NAB data not found under {NAB_ROOT} (set SENSORGUARD_NAB to its directory)")
        return
    per_file: list[dict] = []
    pooled: dict[str, list[Result]] = {d: [] for d in DETECTORS}
    for name, path, wins in nab_files(quick):
        if wins is None:
            print(f"skip {name}: no entry in combined_windows.json")
            continue
        if not wins:
            print(f"skip {name}: no labeled anomaly window (nothing to detect)")
            continue
        frame = pd.read_csv(path)
        stamps = pd.to_datetime(frame["timestamp"])
        label = np.zeros(len(frame), dtype=np.int64)
        for start, end in wins:
            label[((stamps >= pd.Timestamp(start)) & (stamps <= pd.Timestamp(end))).to_numpy()] = 1
        first_window = int(np.argmax(label))
        n_train = min(int(0.4 * len(frame)), first_window)
        if n_train < MIN_NORMAL_ROWS:
            print(f"skip {name}: only {n_train} normal rows before the first labeled window (need {MIN_NORMAL_ROWS})")
            continue
        frame["anomaly"] = label
        train = series_from_frame(frame.iloc[:n_train].drop(columns="anomaly"), f"{name}[train]")
        test = series_from_frame(frame.iloc[n_train:].reset_index(drop=True), f"{name}[test]", label_column="anomaly")
        labels = test.labels["anomaly"]
        try:
            results = run_dataset(train, test, labels, options)
        except Exception as exc:  # a file the pipeline refuses is reported, not fatal
            print(f"skip {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            continue
        for res in results:
            row = metrics_row(res)
            row["file"] = name.split("/")[-1][:40]
            row["rows"] = f"{n_train}/{len(test)}"
            per_file.append(row)
            pooled[res.detector].append(res)
        print(f"done {name}: train {n_train} rows, test {len(test)} rows, {int(labels.sum())} anomalous")
    if not per_file:
        print("no NAB file could be used")
        return
    print("\nper file (train/test rows; score normalized by each detector's own calibrated threshold)")
    print_table(
        per_file,
        ("file", "rows", "detector", "precision", "recall", "f1", "fa_rate", "best_f1", "auc", "alert_f1", "train_s"),
    )
    print(f"\nmean over {len(per_file) // len(DETECTORS)} files")
    means = []
    for det in DETECTORS:
        rows = [r for r in per_file if r["detector"] == det]
        means.append(
            {
                "detector": det,
                "events": "-",
                **{k: float(np.nanmean([r[k] for r in rows])) for k in COLUMNS if k not in ("detector", "events")},
            }
        )
    print_table(means)
    wins = {
        det: sum(
            r["f1"] > max(o["f1"] for o in per_file if o["file"] == r["file"] and o["detector"] != det)
            for r in per_file
            if r["detector"] == det
        )
        for det in DETECTORS
    }
    print(
        "files where the detector has the strictly highest calibrated F1: "
        + ", ".join(f"{d} {n}" for d, n in wins.items())
    )
    print("\npooled over all rows of all files (totals; AUC and best-F1 on scores normalized per file)")
    pooled_rows = []
    for det in DETECTORS:
        res = Result(
            det,
            np.concatenate([r.score for r in pooled[det]]),
            np.concatenate([r.labels for r in pooled[det]]),
            np.concatenate([r.alert for r in pooled[det]]),
            sum(r.train_s for r in pooled[det]),
        )
        pooled_rows.append(metrics_row(res))
    print_table(pooled_rows, (*COLUMNS, "tp", "fp", "fn", "tn"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller simulated data and 3 NAB files")
    parser.add_argument("--only", choices=("simulated", "nab"), help="run one data set only")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    options = TrainOptions(progress=False)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}; "
        f"threshold {options.threshold_method} at false-alarm rate {options.false_alarm_rate:g} for every detector"
    )
    started = time.perf_counter()
    if args.only in (None, "simulated"):
        simulated(args.quick, options)
    if args.only in (None, "nab"):
        nab(args.quick, options)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

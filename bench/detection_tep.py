"""Tennessee Eastman (TEP) section of the detection benchmark, in the protocol of ``tep/SOURCE.md``.

What it measures: every detector is trained and calibrated once on ``d00.dat`` (500 normal rows,
25 hours at 3 minutes) and nothing from a test file chooses a threshold, a window or a setting.
Each test file is then scored standalone (so a window detector has no score on its first
``window - 1`` rows: those count as not alarmed), and per detector and basis it reports:

- ``far_d00``: alarmed rows / 960 on ``d00_te.dat`` (all normal);
- ``far_pre``: alarmed rows / rows on rows 1-160 (1-based) of the 21 fault runs, pooled;
- per fault: detection rate (alarmed share of rows 161-960) and delay (rows, and hours, from row
  161 to the first alarm at or after it; "-" when never), and over the faults except 3, 9 and 15
  (invisible to every published method) the mean detection rate, how many were caught and the
  mean delay in hours over those caught;
- ``promised/d`` (what the detector's calibration predicts, see ``detection_baselines``) vs
  ``observed/d``: alarm raises (0 -> 1) on ``d00_te.dat`` per day of its 48 hours, and
  ``obs/d_pre`` the same on the 21 pre-fault parts (7 days together).

Bases: sensorguard's ``alert`` state (``alert_series`` over the bundle's hop mask, default rules)
and its ``anomaly`` (score >= 1); for each baseline its per-row ``decision`` and its ``alert``
state through the same default rules, stepped every row (``naive``: every hop, like sensorguard).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.detection_baselines import (
    bases,
    detect,
    fit_iforest_rows,
    fit_pca_t2_f,
    fit_pca_t2q,
    fit_sensorguard,
    fit_window,
)
from bench.detection_data import (
    TEP_FAULT_ROW,
    TEP_FAULTS,
    TEP_INVISIBLE,
    TEP_PERIOD_S,
    load_tep,
    tep_missing,
)
from bench.detection_tables import print_table, raises
from sensorguard.service.bundle_checks import default_rules
from sensorguard.training.train import TrainOptions

SHORT = {"sensorguard": "sg", "pca_t2q": "t2q", "pca_t2_f": "t2f", "iforest": "if", "naive": "naive"}
SUFFIX = {"alert": ".alert", "anomaly": ".anom", "alert|sensor": ".alert|sensor", "decision": ""}
JUDGED = tuple(k for k in TEP_FAULTS if k not in TEP_INVISIBLE)
SUMMARY = (
    "detector", "basis", "far_d00", "far_pre", "det_mean", "det_all", "caught", "delay_h",
    "promised/d", "observed/d", "obs/d_pre",
)


def tep_section(tep_dir: Path, options: TrainOptions) -> None:
    print("\n== Tennessee Eastman process (train/calibrate on d00.dat only; test d00_te, d01_te..d21_te) ==")
    missing = tep_missing(tep_dir)
    if missing:
        print(missing)
        return
    data = load_tep(tep_dir)
    print(f"train {len(data.train)} rows x {len(data.train.channels)} channels, period {data.train.sample_period:g} s; "
          f"test runs of {len(data.tests[0])} rows, fault from row {TEP_FAULT_ROW + 1} (1-based)")
    sg, bundle, summary = fit_sensorguard(data.train, options)
    fitted = [
        sg,
        fit_pca_t2q(data.train),
        fit_pca_t2_f(data.train),
        fit_iforest_rows(data.train, options.seed, name="iforest"),
        fit_window("naive", bundle, data.train, options),
    ]
    for line in summary.lines():
        print(f"  sensorguard {line}")
    for f in fitted[1:]:
        print(f"  {f.name}: {f.info} (train {f.train_s:.2f} s)")
    preds: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    promised: dict[str, float | None] = {}
    for k, test in data.tests.items():
        for f in fitted:
            det = detect(f, test, default_rules(bundle))
            promised[det.name] = det.promised_per_day
            for basis, pred in bases(det):
                preds.setdefault((det.name, basis), {})[k] = pred
    print("\nsummary (det_mean, caught, delay_h over faults except 3, 9, 15; det_all over all 21)")
    skip = bundle.window - 1  # rows before the first full window: the window detectors cannot alarm there
    print(f"(far_* and observed/d count rows {skip + 1}-960 of d00_te and {skip + 1}-160 of the fault runs for every "
          "detector: before a window has filled only the per-sample ones can alarm)")
    print_table([summary_row(name, basis, runs, promised[name], skip) for (name, basis), runs in preds.items()],
                SUMMARY)
    codes = {key: SHORT[key[0]] + SUFFIX[key[1]] for key in preds}
    print("\ncolumns: " + ", ".join(f"{c} = {n} {b}" for (n, b), c in codes.items()))
    print("\nper-fault detection rate (share of rows 161-960 alarmed; * = nearly invisible fault)")
    rate_rows = [
        {"fault": _fault_name(k), **{codes[key]: float(runs[k][TEP_FAULT_ROW:].mean()) for key, runs in preds.items()}}
        for k in TEP_FAULTS
    ]
    means = {codes[key]: _mean_rate(runs, JUDGED) for key, runs in preds.items()}
    rate_rows.append({"fault": "mean excl 3,9,15", **means})
    print_table(rate_rows, ("fault", *codes.values()))
    print(f"\nper-fault delay: rows (hours) from row 161 to the first alarm at/after it; 1 row = {TEP_PERIOD_S:g} s")
    delay_rows = [
        {"fault": _fault_name(k), **{codes[key]: _delay_text(runs[k]) for key, runs in preds.items()}}
        for k in TEP_FAULTS
    ]
    print_table(delay_rows, ("fault", *codes.values()))


def summary_row(name: str, basis: str, runs: dict[int, np.ndarray], promised: float | None, skip: int = 0) -> dict:
    """One detector's summary; the false-alarm columns leave out each run's first ``skip`` rows."""
    normal = runs[0][skip:]
    pre = np.concatenate([runs[k][skip:TEP_FAULT_ROW] for k in TEP_FAULTS])
    delays = [d for d in (first_alarm_delay(runs[k]) for k in JUDGED) if d is not None]
    d00_days = len(normal) * TEP_PERIOD_S / 86400.0
    pre_days = len(pre) * TEP_PERIOD_S / 86400.0
    pre_raises = sum(int(raises(runs[k][skip:TEP_FAULT_ROW]).sum()) for k in TEP_FAULTS)
    return {
        "detector": name,
        "basis": basis,
        "far_d00": float(normal.mean()),
        "far_pre": float(pre.mean()),
        "det_mean": _mean_rate(runs, JUDGED),
        "det_all": _mean_rate(runs, TEP_FAULTS),
        "caught": f"{len(delays)}/{len(JUDGED)}",
        "delay_h": float(np.mean(delays)) * TEP_PERIOD_S / 3600.0 if delays else None,
        "promised/d": promised,
        "observed/d": int(raises(normal).sum()) / d00_days,
        "obs/d_pre": pre_raises / pre_days,
    }


def first_alarm_delay(pred: np.ndarray) -> int | None:
    """Rows from the fault's first row to the first alarm at or after it; None when never alarmed."""
    hits = np.flatnonzero(pred[TEP_FAULT_ROW:])
    return int(hits[0]) if len(hits) else None


def _mean_rate(runs: dict[int, np.ndarray], faults: tuple[int, ...]) -> float:
    return float(np.mean([runs[k][TEP_FAULT_ROW:].mean() for k in faults]))


def _delay_text(pred: np.ndarray) -> str:
    delay = first_alarm_delay(pred)
    return "-" if delay is None else f"{delay} ({delay * TEP_PERIOD_S / 3600.0:.2f}h)"


def _fault_name(k: int) -> str:
    return f"{k:02d}{'*' if k in TEP_INVISIBLE else ''}"

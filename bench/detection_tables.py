"""Metrics and plain-text tables of the detection benchmark.

Two views of a detector. The ranking view says how well it orders rows: the threshold-free ROC
AUC and best F1 beside the F1 at its own calibrated limit, and ``best_f1_far10``, the best F1 at
no more than 10 % false alarms (the regime the issue's hidden test bench is judged in). The
operator view (false- and missed-alarm rates, events caught, delay, false alerts per day promised
vs observed) says what a person on shift would live with. It is built from additive counts so
that several files pool correctly: events never merge across files and per-day rates weigh each
file by its days.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from sensorguard.training.evaluate import best_f1_threshold, detection_metrics

RANKING = ("detector", "precision", "recall", "f1", "fa_rate", "best_f1", "best_f1_far10", "auc", "alert_f1", "events",
           "train_s")
FEW_FALSE_ALARMS = 0.10  # best_f1_far10: the best F1 the labels allow at no more than this share of normal rows
OPERATOR = ("detector", "basis", "f1", "far", "mar", "ev_recall", "delay", "promised/d", "observed/d")


def raises(pred: np.ndarray) -> np.ndarray:
    """Rows where an alarm starts (0 -> 1; a series starting alarmed counts at row 0)."""
    pred = np.asarray(pred, dtype=bool)
    return pred & ~np.concatenate([[False], pred[:-1]])


def ranking_row(name: str, score: np.ndarray, alert: np.ndarray, labels: np.ndarray, train_s: float) -> dict:
    """Point metrics of ``score >= 1`` and of the alert state, best F1 and AUC (on finite scores only)."""
    keep = np.isfinite(score)
    score, labels = score[keep], labels[keep]
    point = detection_metrics(score >= 1.0, labels)
    alerted = detection_metrics(alert[keep], labels)
    _, best = best_f1_threshold(score, labels)
    _, best_few = best_f1_threshold(score, labels, FEW_FALSE_ALARMS)
    auc = roc_auc_score(labels, score) if 0 < labels.sum() < len(labels) else float("nan")
    return {
        "detector": name,
        "precision": point["precision"],
        "recall": point["recall"],
        "f1": point["f1"],
        "fa_rate": point["false_alarm_rate"],
        "best_f1": best,
        "best_f1_far10": best_few,
        "auc": auc,
        "alert_f1": alerted["f1"],
        "events": f"{point['events_detected']}/{point['events']}",
        "train_s": train_s,
        "tp": point["tp"],
        "fp": point["fp"],
        "fn": point["fn"],
        "tn": point["tn"],
    }


@dataclass(frozen=True)
class Counts:
    """Additive operator counts of one 0/1 alarm series against labels (sum them to pool files).

    normal_days and promised_count are None when the sample period or the promise is unknown.
    """

    tp: int
    fp: int
    fn: int
    tn: int
    events: int
    detected: int
    delay_rows: float  # summed over detected events
    false_raises: int  # alarms that start on a normal row
    normal_days: float | None
    promised_count: float | None  # promised false alerts per day x normal_days

    def __add__(self, other: Counts) -> Counts:
        def both(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a + b

        return Counts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn,
            self.events + other.events, self.detected + other.detected, self.delay_rows + other.delay_rows,
            self.false_raises + other.false_raises, both(self.normal_days, other.normal_days),
            both(self.promised_count, other.promised_count),
        )


def counts(pred: np.ndarray, labels: np.ndarray, period_s: float | None, promised: float | None) -> Counts:
    pred = np.asarray(pred, dtype=bool)
    normal = np.asarray(labels) == 0
    m = detection_metrics(pred, labels)
    delay = m["mean_detection_delay_rows"]
    days = float(normal.sum()) * period_s / 86400.0 if period_s else None
    return Counts(
        m["tp"], m["fp"], m["fn"], m["tn"], m["events"], m["events_detected"],
        delay * m["events_detected"] if delay is not None else 0.0,
        int((raises(pred) & normal).sum()), days,
        promised * days if promised is not None and days is not None else None,
    )


def operator_row(name: str, basis: str, c: Counts) -> dict:
    """F1, false/missed-alarm rates, event recall, mean delay (rows) and false alerts per day."""
    precision = c.tp / (c.tp + c.fp) if c.tp + c.fp else 0.0
    recall = c.tp / (c.tp + c.fn) if c.tp + c.fn else 0.0
    days = c.normal_days
    return {
        "detector": name,
        "basis": basis,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "far": c.fp / (c.fp + c.tn) if c.fp + c.tn else 0.0,
        "mar": c.fn / (c.fn + c.tp) if c.fn + c.tp else 0.0,
        "ev_recall": f"{c.detected}/{c.events}",
        "delay": c.delay_rows / c.detected if c.detected else None,
        "promised/d": c.promised_count / days if c.promised_count is not None and days else None,
        "observed/d": c.false_raises / days if days else None,
    }


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return "nan"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def print_table(rows: list[dict], columns: tuple[str, ...]) -> None:
    cells = [[fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))

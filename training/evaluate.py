"""Detection metrics on labeled data: how often alarms are right, and how fast faults are caught.

Point-wise counts alone mislead on sensor faults: a 300-row drift caught after 20 rows is a success
for an operator but a recall of 0.07 row by row. So the faults are also counted as events
(contiguous runs of label 1) with the delay until the first alarm inside them.

Empty denominators: every ratio (precision, recall, f1, rates, event_recall) is 0.0 when there is
nothing to divide by, as scikit-learn's ``zero_division=0``; the mean delays are None when no event
was detected (a mean over nothing has no value). The dict keys are always the same.

>>> m = detection_metrics(np.array([0, 1, 1, 0, 0, 0]), np.array([0, 0, 1, 1, 0, 0]))
>>> m["precision"], m["recall"], m["events_detected"], m["mean_detection_delay_rows"]
(0.5, 0.5, 1, 0.0)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def detection_metrics(
    pred: np.ndarray, labels: np.ndarray, times: np.ndarray | None = None
) -> dict[str, Any]:
    """Point-wise and event-level metrics of 0/1 predictions against 0/1 labels, row by row.

    pred: alarms per row (nonzero = alarm); the caller decides what NaN scores mean before this.
    times: per-row times (datetime64, pandas datetimes or epoch seconds), for the delay in seconds;
    ``mean_detection_delay_s`` is None without them.
    """
    pred_b, label_b = _as_bool(pred, "pred"), _as_bool(labels, "labels")
    if pred_b.shape != label_b.shape:
        raise ValueError(f"pred and labels must have the same length, got {len(pred_b)} and {len(label_b)}")
    tp = int(np.sum(pred_b & label_b))
    fp = int(np.sum(pred_b & ~label_b))
    fn = int(np.sum(~pred_b & label_b))
    tn = int(np.sum(~pred_b & ~label_b))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    starts, stops = event_bounds(label_b)
    first = _first_alarm_from(pred_b)[starts] if len(starts) else np.array([], dtype=np.int64)
    detected = first < stops
    delays = first[detected] - starts[detected]
    delay_s = None
    if times is not None and detected.any():
        seconds = to_seconds(times)
        if len(seconds) != len(pred_b):
            raise ValueError(f"times must have one entry per row, got {len(seconds)} for {len(pred_b)} rows")
        delay_s = float(np.mean(seconds[first[detected]] - seconds[starts[detected]]))
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "false_alarm_rate": _ratio(fp, fp + tn),
        "missed_alarm_rate": _ratio(fn, fn + tp),
        "events": len(starts),
        "events_detected": int(detected.sum()),
        "event_recall": _ratio(int(detected.sum()), len(starts)),
        "mean_detection_delay_rows": float(delays.mean()) if len(delays) else None,
        "mean_detection_delay_s": delay_s,
    }


def false_alerts(pred: np.ndarray, labels: np.ndarray, period_s: float | None,
                 lead: int | None = None) -> dict[str, Any]:
    """The alerts an operator was paged for on normal operation, as the promise counts them: alarms
    that start (0 -> 1, or on at the first row) on a row labelled normal and last into no labelled
    row, and the days of normal rows they fell in (None without a sample period). The promise is a
    rate per asset per day. An alarm raised just before a labelled fault and still up in it is
    that fault's detection (its delay is 0), not also a false alert (both were counted: a walk);
    with ``lead``, only one raised at most ``lead`` rows before the fault's first row (a window: one
    that saw the fault's onset where the labels put it a little late). One raised earlier was raised
    on normal operation, and is a false alert too: a model alerting from the first row into a fault
    read "0 raised on normal rows", consistent with its promise beside a false-alarm rate of 1.0
    (a walk).

    >>> false_alerts(np.array([1, 0, 1, 1, 0, 1]), np.array([0, 0, 0, 0, 1, 1]), 21600.0)
    {'raised': 2, 'normal_days': 1.0}
    >>> false_alerts(np.array([0, 1, 1, 1, 0, 0]), np.array([0, 0, 0, 1, 1, 0]), 21600.0)["raised"]
    0
    >>> [false_alerts(np.array([0, 1, 1, 1, 0, 0]), np.array([0, 0, 0, 1, 1, 0]), None, lead)["raised"]
    ...  for lead in (1, 2)]
    [1, 0]
    """
    pred_b, label_b = _as_bool(pred, "pred"), _as_bool(labels, "labels")
    starts = pred_b & ~np.r_[False, pred_b[:-1]]
    run = np.cumsum(starts)  # each row's alarm run (1, 2, ...), where an alarm is up
    at = np.flatnonzero(starts)  # each run's first row
    hit = np.flatnonzero(pred_b & label_b)
    runs, first = np.unique(run[hit], return_index=True)  # each run reaching a labelled row, and the first such
    begun = at[runs - 1]
    detections = begun if lead is None else begun[hit[first] - begun <= lead]
    false = starts & ~label_b
    false[detections] = False
    days = float((~label_b).sum()) * period_s / 86400.0 if period_s else None
    return {"raised": int(false.sum()), "normal_days": days}


def pool_metrics(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`detection_metrics` of several series (machines) pooled: counts and events summed,
    ratios from the sums, delays averaged over all detected events.

    >>> a = detection_metrics(np.array([1, 1, 0]), np.array([0, 1, 1]))
    >>> pool_metrics([a, a])["tp"], pool_metrics([a, a])["events"], pool_metrics([a, a])["precision"]
    (2, 2, 0.5)
    """
    total = {k: sum(p[k] for p in parts) for k in ("tp", "fp", "tn", "fn", "events", "events_detected")}
    tp, fp, fn, tn = total["tp"], total["fp"], total["fn"], total["tn"]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)

    def mean_delay(key: str) -> float | None:
        pairs = [(p[key], p["events_detected"]) for p in parts if p[key] is not None and p["events_detected"]]
        weight = sum(n for _, n in pairs)
        return sum(d * n for d, n in pairs) / weight if weight else None

    return {
        **{k: total[k] for k in ("tp", "fp", "tn", "fn")},
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "false_alarm_rate": _ratio(fp, fp + tn),
        "missed_alarm_rate": _ratio(fn, fn + tp),
        "events": total["events"],
        "events_detected": total["events_detected"],
        "event_recall": _ratio(total["events_detected"], total["events"]),
        "mean_detection_delay_rows": mean_delay("mean_detection_delay_rows"),
        "mean_detection_delay_s": mean_delay("mean_detection_delay_s"),
    }


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray,
                      max_false_alarm_rate: float = 1.0) -> tuple[float, float]:
    """The score threshold (alarm when ``score >= threshold``) with the best point-wise F1, and that F1.

    Reported beside the calibrated threshold to show how far the false-alarm-driven choice is from
    the best one the labels allow. Rows with NaN scores are ignored. Returns ``(nan, 0.0)`` when no
    threshold can reach a positive F1 (no labeled anomalies or no finite scores).

    max_false_alarm_rate: only thresholds alarming on at most this share of the normal rows count,
    the best F1 where few false alarms are allowed (an operator's regime: the best F1 overall often
    sits where a detector alarms on a third of the normal rows).

    >>> best_f1_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    (0.35, 0.8)
    >>> best_f1_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]), max_false_alarm_rate=0.0)
    (0.8, 0.6666666666666666)
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    label_b = _as_bool(labels, "labels")
    if scores.shape != label_b.shape:
        raise ValueError(f"scores and labels must have the same length, got {len(scores)} and {len(label_b)}")
    keep = ~np.isnan(scores)
    scores, label_b = scores[keep], label_b[keep]
    positives = int(label_b.sum())
    if positives == 0:
        return math.nan, 0.0
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    tp = np.cumsum(label_b[order])
    # a threshold at a score admits every row with that score: use the last row of each tie group
    last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    f1 = 2 * tp[last] / (last + 1 + positives)
    negatives = len(label_b) - positives
    false_alarms = (last + 1 - tp[last]) / max(negatives, 1)
    f1 = np.where(false_alarms <= max_false_alarm_rate, f1, -1.0)
    best = int(np.argmax(f1))
    if f1[best] <= 0:  # no threshold allowed has a true alarm
        return math.nan, 0.0
    return float(ranked[last[best]]), float(f1[best])


def event_bounds(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop (exclusive) rows of each contiguous run of nonzero labels."""
    flags = _as_bool(labels, "labels").astype(np.int8)
    edges = np.diff(np.concatenate([[0], flags, [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def to_seconds(times: Any) -> np.ndarray:
    """Epoch seconds (float) from numbers, datetime64 values or (tz-aware) pandas datetimes."""
    arr = np.asarray(times)
    if arr.dtype.kind in "iuf":
        return arr.astype(np.float64)
    stamps = pd.to_datetime(pd.Index(times), utc=True)
    return np.asarray((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1), dtype=np.float64)


def _first_alarm_from(pred: np.ndarray) -> np.ndarray:
    """For each row, the index of the first alarm at or after it (``len(pred)`` when none)."""
    n = len(pred)
    idx = np.where(pred, np.arange(n), n)
    return np.minimum.accumulate(idx[::-1])[::-1]


def _as_bool(values: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; decide what a missing value means before scoring")
    return arr != 0


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den else 0.0

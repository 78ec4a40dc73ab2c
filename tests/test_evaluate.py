"""Detection metrics checked on hand-built tables with exact expected values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sensorguard.training.evaluate import best_f1_threshold, detection_metrics, event_bounds


def test_hand_built_table():
    #            0  1  2  3  4  5  6  7  8  9
    labels = [0, 1, 1, 1, 0, 0, 1, 1, 0, 0]
    pred = [1, 0, 0, 1, 1, 0, 0, 0, 0, 1]
    m = detection_metrics(np.array(pred), np.array(labels))
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 3, 2, 4)
    assert m["precision"] == pytest.approx(0.25)
    assert m["recall"] == pytest.approx(0.2)
    assert m["f1"] == pytest.approx(2 * 0.25 * 0.2 / 0.45)
    assert m["false_alarm_rate"] == pytest.approx(3 / 5)
    assert m["missed_alarm_rate"] == pytest.approx(4 / 5)
    assert (m["events"], m["events_detected"]) == (2, 1)
    assert m["event_recall"] == pytest.approx(0.5)
    assert m["mean_detection_delay_rows"] == pytest.approx(2.0)
    assert m["mean_detection_delay_s"] is None


def test_delays_in_rows_and_seconds():
    # three events caught 0, 1 and 5 rows in: a mean of 2 (their median, 1, and two events' mean,
    # equal to their median, could not tell a median from a mean: a test audit)
    labels = np.array([0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    pred = np.array([0, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0])
    seconds = np.arange(len(labels)) * 10.0
    m = detection_metrics(pred, labels, times=seconds)
    assert m["events_detected"] == 3
    assert m["mean_detection_delay_rows"] == pytest.approx(2.0)  # (0 + 1 + 5) / 3
    assert m["mean_detection_delay_s"] == pytest.approx(20.0)
    stamps = pd.date_range("2026-01-01", periods=len(labels), freq="10s", tz="UTC")
    assert detection_metrics(pred, labels, times=stamps)["mean_detection_delay_s"] == pytest.approx(20.0)
    as_dt64 = stamps.tz_localize(None).to_numpy()
    assert detection_metrics(pred, labels, times=as_dt64)["mean_detection_delay_s"] == pytest.approx(20.0)


def test_alarm_before_event_does_not_count_as_detection():
    m = detection_metrics(np.array([1, 0, 0, 0]), np.array([0, 0, 1, 1]))
    assert m["events_detected"] == 0 and m["event_recall"] == 0.0
    assert m["mean_detection_delay_rows"] is None


def test_no_events():
    m = detection_metrics(np.array([0, 1, 0]), np.array([0, 0, 0]))
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (0, 1, 2, 0)
    assert m["recall"] == 0.0 and m["precision"] == 0.0 and m["f1"] == 0.0
    assert m["missed_alarm_rate"] == 0.0
    assert m["false_alarm_rate"] == pytest.approx(1 / 3)
    assert m["events"] == 0 and m["event_recall"] == 0.0
    assert m["mean_detection_delay_rows"] is None and m["mean_detection_delay_s"] is None


def test_no_predicted_positives():
    m = detection_metrics(np.zeros(4, dtype=int), np.array([0, 1, 1, 0]), times=np.arange(4.0))
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["missed_alarm_rate"] == 1.0 and m["false_alarm_rate"] == 0.0
    assert m["mean_detection_delay_s"] is None


def test_all_positive():
    m = detection_metrics(np.ones(5, dtype=int), np.ones(5, dtype=int), times=np.arange(5.0))
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (5, 0, 0, 0)
    assert m["precision"] == m["recall"] == m["f1"] == 1.0
    assert m["false_alarm_rate"] == 0.0 and m["missed_alarm_rate"] == 0.0
    assert m["events"] == 1 and m["mean_detection_delay_rows"] == 0.0 and m["mean_detection_delay_s"] == 0.0


def test_empty_input_and_bad_shapes():
    m = detection_metrics(np.array([], dtype=int), np.array([], dtype=int))
    assert m["tp"] == 0 and m["events"] == 0 and m["f1"] == 0.0
    with pytest.raises(ValueError, match="same length"):
        detection_metrics(np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="NaN"):
        detection_metrics(np.array([0.0, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="one entry per row"):
        detection_metrics(np.array([1, 1]), np.array([1, 1]), times=np.arange(3.0))


def test_event_bounds():
    starts, stops = event_bounds(np.array([1, 1, 0, 1, 0, 0, 1]))
    assert starts.tolist() == [0, 3, 6] and stops.tolist() == [2, 4, 7]


def test_best_f1_threshold_exact():
    scores = np.array([0.1, 0.9, 0.4, np.nan, 0.8, 0.3, 0.95])
    labels = np.array([0, 1, 0, 1, 1, 0, 0])
    # >= 0.8 predicts {0.95, 0.9, 0.8}: tp 2 of 2 positives with finite scores, fp 1 -> F1 = 4/5
    threshold, f1 = best_f1_threshold(scores, labels)
    assert threshold == 0.8 and f1 == pytest.approx(0.8)


def test_best_f1_threshold_perfect_split_and_ties():
    threshold, f1 = best_f1_threshold(np.array([0.2, 0.5, 0.5, 2.0, 3.0]), np.array([0, 0, 0, 1, 1]))
    assert (threshold, f1) == (2.0, 1.0)
    # a tie across classes cannot be split: the threshold admits both tied rows
    threshold, f1 = best_f1_threshold(np.array([1.0, 1.0, 0.1]), np.array([1, 0, 0]))
    assert threshold == 1.0 and f1 == pytest.approx(2 / 3)


def test_best_f1_threshold_within_a_false_alarm_budget():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    labels = np.array([1, 0, 1, 1, 0, 0, 0, 0])  # 3 faulty rows, 5 normal ones
    # >= 0.6: tp 3, fp 1 (20 % of the normal rows), F1 6/7; >= 0.9 alone: tp 1, fp 0, F1 2/4
    assert best_f1_threshold(scores, labels) == (0.6, pytest.approx(6 / 7))
    assert best_f1_threshold(scores, labels, max_false_alarm_rate=0.2) == (0.6, pytest.approx(6 / 7))
    assert best_f1_threshold(scores, labels, max_false_alarm_rate=0.1) == (0.9, pytest.approx(0.5))
    # no threshold within the budget has a true alarm: the tie admits the normal row too
    threshold, f1 = best_f1_threshold(np.array([1.0, 1.0, 0.1]), np.array([1, 0, 0]), max_false_alarm_rate=0.0)
    assert math.isnan(threshold) and f1 == 0.0


def test_best_f1_threshold_without_positives():
    threshold, f1 = best_f1_threshold(np.array([0.1, 0.2]), np.array([0, 0]))
    assert math.isnan(threshold) and f1 == 0.0
    threshold, f1 = best_f1_threshold(np.array([np.nan, np.nan]), np.array([1, 0]))
    assert math.isnan(threshold) and f1 == 0.0

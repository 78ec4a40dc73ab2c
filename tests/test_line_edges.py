"""Edges of the alert line's arithmetic (``training.line``) and of the held-out pieces it is set
from (``training.crossfit``), found by a mutation audit: each test pins a behaviour that a
one-character change to the code left unseen."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sensorguard.service.bundle import Bundle
from sensorguard.training.line import calibrate_bundle, drift_rule, reading_period, threshold_bundle
from sensorguard.training.series import SensorData


def _series(times: list[float], segments: list[int]) -> SensorData:
    n = len(times)
    return SensorData(values=np.zeros((n, 3)), times=np.asarray(times, dtype=np.float64),
                      segments=np.asarray(segments), channels=("a", "b", "c"), sample_period=10.0)


def test_irregular_readings_are_counted_at_their_mean_step_within_segments(tiny_bundle: Bundle) -> None:
    """The daemon scores every ``hop`` readings, so a day holds as many windows as readings come:
    steps of 10, 10, 10, 0.1, 0.1 s and, after a gap of hours (a new segment), one of 10 s are a
    reading every 40.2 / 6 = 6.7 s. The median (10 s) promised 1.5x too few alerts, and the gap
    counted as a step made the day look almost empty."""
    irregular = replace(tiny_bundle, sample_period=10.0, regular=False)
    data = _series([0.0, 10.0, 20.0, 30.0, 30.1, 30.2, 10_000.0, 10_010.0], [0, 0, 0, 0, 0, 0, 1, 1])
    assert reading_period(data, irregular) == pytest.approx(40.2 / 6)


def test_a_regular_grid_is_counted_at_its_sample_period(tiny_bundle: Bundle) -> None:
    """On a regular grid the daemon steps the grid: its windows a day follow the sample period,
    not the steps the calibration rows happen to show (readings jittered up to 0.3 periods are
    kept as they came, here a mean step of 10.1 s on a 10 s grid)."""
    regular = replace(tiny_bundle, sample_period=10.0, regular=True)
    assert reading_period(_series([0.0, 10.3, 19.8, 30.4, 40.4], [0, 0, 0, 0, 0]), regular) == 10.0


def test_the_drift_baseline_leaves_out_scores_on_the_line_and_zeros() -> None:
    """The drift baseline is the typical log score of normal windows below the line. A window
    exactly on the line (score 1) is an anomaly, not normal, and a score of 0 has no logarithm
    (it would make the baseline minus infinity): only the 0.5s set it, at log 0.5."""
    assert drift_rule(np.array([0.5, 1.0, 0.0, 0.5])).baseline == pytest.approx(np.log(0.5))


def test_the_rows_the_refusal_asks_for_are_enough(tiny_bundle: Bundle) -> None:
    """Too few calibration rows are refused with how many are needed: 10 windows, so
    ``window + 9`` rows in a row (25 for a window of 16). Those 25 rows must then calibrate, or
    the message sends the user round in circles; 24 rows (9 windows) are refused."""
    rng = np.random.default_rng(0)
    rows = tiny_bundle.window + 9
    enough = SensorData(values=rng.normal(0, 1, (rows, 3)), times=np.arange(rows, dtype=np.float64),
                        segments=np.zeros(rows, dtype=int), channels=tiny_bundle.channels, sample_period=1.0)
    calibrated = calibrate_bundle(tiny_bundle, enough, method="quantile", false_alarm_rate=0.1)
    assert calibrated.calibration["windows"] == 10
    refused = f"hold 9 windows of {tiny_bundle.window} rows; need at least 10, so at least {rows} rows"
    with pytest.raises(ValueError, match=refused):
        calibrate_bundle(tiny_bundle, enough.take(np.arange(rows) > 0), method="quantile", false_alarm_rate=0.1)


def _errors(rows: int = 4000, seed: int = 0) -> list[np.ndarray]:
    """Held-out per-channel window errors of one segment: exponential, as normal errors roughly are."""
    return [np.random.default_rng(seed).exponential(1.0, (rows, 3))]


def test_without_a_false_alert_target_the_line_is_a_window_rate(tiny_bundle: Bundle) -> None:
    """``false_alerts_per_day=None`` asks for no alert promise: the line is the window-rate fit
    (POT at one window in a thousand), with no alert record claiming a promise nobody asked for."""
    line = threshold_bundle(tiny_bundle, _errors(), {}, false_alerts_per_day=None)
    assert line.calibration["method"] == "pot" and "alerts" not in line.calibration
    assert line.calibration["false_alarm_rate"] == 1e-3


def test_the_drift_baseline_is_set_from_scores_not_raw_errors(tiny_bundle: Bundle) -> None:
    """The daemon's drift rule compares its log *scores* (error over the line) with the baseline:
    a baseline taken from raw errors would sit log(threshold) away and widen or tighten the line
    by that factor from the first window."""
    pieces = _errors()
    line = threshold_bundle(tiny_bundle, pieces, {}, weigh_channels=False, drift=True)
    scores = pieces[0].mean(axis=1) / line.threshold_
    expected = np.mean(np.log(scores[(scores > 0) & (scores < 1)]))
    assert line.calibration["drift"]["baseline"] == pytest.approx(expected)


def test_a_bundle_with_a_level_term_says_a_window_rate_line_leaves_it_uncalibrated(tiny_bundle: Bundle) -> None:
    """Only a line for false alerts a day calibrates the level term; a window-rate line keeps the
    term at its fitted limit and must say so (and an alerts line must not)."""
    from sensorguard.training.level_fit import fit_level

    values = np.random.default_rng(1).normal(0, 1, (400, 3))
    with_level = replace(tiny_bundle, level=fit_level(values))
    window_rate = threshold_bundle(with_level, _errors(), {}, false_alarm_rate=1e-3)
    assert "only a line for false alerts a day calibrates it" in window_rate.calibration["level_note"]
    assert "level_note" not in threshold_bundle(with_level, _errors(), {}).calibration


def test_calibration_data_of_other_channels_is_refused(tiny_bundle: Bundle) -> None:
    """Normal data with other channels (or the same in another order) would set a line from errors
    of the wrong sensors: it is refused, naming both lists."""
    rows = 40
    data = SensorData(values=np.zeros((rows, 3)), times=np.arange(rows, dtype=np.float64),
                      segments=np.zeros(rows, dtype=int), channels=("b", "a", "c"), sample_period=1.0)
    refused = r"data channels \['b', 'a', 'c'\] do not match the bundle's \['a', 'b', 'c'\]"
    with pytest.raises(ValueError, match=refused):
        calibrate_bundle(tiny_bundle, data)


def test_only_the_run_right_after_a_gap_starts_the_daemons_windows_afresh() -> None:
    """A segment after a gap in the readings starts the daemon's windows afresh (one window far
    over the line raises alone there); a sensor fault inside that segment cuts its windows into two
    runs, but the daemon's windows went on through the fault, so the second run is no fresh start."""
    from sensorguard.training.crossfit import clean_pieces

    faulted = np.zeros((20, 1), dtype=bool)
    faulted[14] = True
    data = SensorData(np.zeros((20, 1)), np.r_[np.arange(10.0), 100.0 + np.arange(10.0)],
                      np.r_[np.zeros(10, int), np.ones(10, int)], ("a",), 1.0, faulted=faulted)
    pieces, starts, left_out = clean_pieces(np.ones((20, 1)), data, window=1)
    assert [len(p) for p in pieces] == [10, 4, 5] and left_out == 1
    assert starts == [False, True, False]


def test_the_level_term_is_left_out_where_the_window_has_no_error() -> None:
    """The level term's line is raised until the score the daemon judges adds no alert on held-out
    normal windows; a window with no error (before a full window, or unscored) is judged by
    nothing live, so its term must be NaN beside the NaN error rather than count as a window."""
    from sensorguard.training.crossfit import clean_pieces_beside

    data = SensorData(np.zeros((6, 2)), np.arange(6.0), np.zeros(6, int), ("a", "b"), 1.0)
    errors = np.r_[np.full((2, 2), np.nan), np.ones((4, 2))]
    pieces, terms, starts, left_out = clean_pieces_beside(errors, np.full(6, 0.5), data, window=2)
    assert len(pieces) == 1 and np.array_equal(pieces[0], errors, equal_nan=True)
    assert terms is not None and np.array_equal(terms[0], [np.nan, np.nan, 0.5, 0.5, 0.5, 0.5], equal_nan=True)
    assert (starts, left_out) == ([False], 0)


def test_a_window_rate_line_puts_the_level_term_back_at_its_fitted_limit(tiny_bundle: Bundle) -> None:
    """A bundle calibrated before had its level term's line lifted (x3 here) for the old data; a
    line set again by window rate does not calibrate the term, and says its line is the fitted
    limit, so the old lift must not survive the new calibration unseen."""
    from sensorguard.training.level_fit import fit_level

    lifted = replace(fit_level(np.random.default_rng(1).normal(0, 1, (400, 3))), calibrated=3.0)
    line = threshold_bundle(replace(tiny_bundle, level=lifted), _errors(), {}, false_alarm_rate=1e-3)
    assert line.level is not None and line.level.calibrated == 1.0
    assert "its fitted limit" in line.calibration["level_note"]

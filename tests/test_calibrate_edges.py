"""Edges of the window-rate line and the channel weights pinned with values worked by hand (a
mutation audit: each of these changed without a test failing): the argument boundaries, POT's
branches and guards, the record's quantiles, ``just_above`` at and below 0, the spiky cap on few
windows and beside flat channels, and the leader counts."""

import math

import numpy as np
import pytest
from scipy import stats

from sensorguard.training.calibrate import (
    channel_weights,
    just_above,
    largest_windows,
    line_leaders,
    pick_threshold,
)


@pytest.fixture
def thousand():
    """1,000 exponential errors: the 98th percentile leaves exactly 20 peaks above it (the least POT fits)."""
    return np.random.default_rng(0).exponential(1.0, 1000)


def test_a_false_alarm_rate_of_one_is_refused():
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        pick_threshold(np.arange(20.0), "quantile", 1.0)


def test_ten_calibration_windows_are_enough_and_nine_are_not():
    assert pick_threshold(np.arange(10.0), "quantile", 0.1)[1]["windows"] == 10
    with pytest.raises(ValueError, match="at least 10 calibration windows, got 9"):
        pick_threshold(np.arange(9.0), "quantile", 0.1)


def test_the_record_holds_each_quantile_it_names():
    """0..1000: the q quantile is 1000 q, so each key's value is its own."""
    _, record = pick_threshold(np.arange(1001.0), "quantile", 0.01)
    assert record["error_quantiles"] == {"0.5": 500.0, "0.9": 900.0, "0.99": 990.0, "0.999": 999.0,
                                         "max": 1000.0, "mean": 500.0}
    assert record["expected_false_alarms_per_day"] is None  # no windows a day given: no count claimed


def test_just_above_is_above_at_zero_and_below_it():
    """x (1 + 1e-6) is not above 0 nor above a negative value: those take the next float up."""
    assert just_above(0.0) > 0.0
    assert -1.0 < just_above(-1.0) < -1.0 + 1e-12
    assert just_above(2.0) == 2.0 * (1 + 1e-6)


def test_a_rate_inside_the_observed_range_is_the_plain_quantile_under_pot(thousand):
    """At 2 % or more the quantile is inside the data: POT does not extrapolate."""
    threshold, record = pick_threshold(thousand, "pot", 0.05)
    assert record["method"] == "pot" and "shape" not in record["params"]
    assert threshold == float(np.quantile(thousand, 0.95))


def test_pot_fits_from_exactly_twenty_peaks(thousand):
    threshold, record = pick_threshold(thousand, "pot", 1e-4)
    assert record["params"]["peaks"] == 20 and record["method"] == "pot" and "fallback" not in record["params"]
    assert threshold > thousand.max()


def test_pot_with_an_exponential_tail_is_the_exponential_quantile(thousand, monkeypatch):
    """A fitted shape of 0 is the exponential tail: init + scale ln(peaks / (rate n)) = init + ln 200."""
    monkeypatch.setattr(stats.genpareto, "fit", lambda data, floc=0: (0.0, 0.0, 1.0))
    threshold, record = pick_threshold(thousand, "pot", 1e-4)
    init = float(np.quantile(thousand, 0.98))
    assert record["method"] == "pot" and threshold == pytest.approx(init + math.log(200), rel=1e-12)


def test_a_runaway_heavy_tail_over_ten_times_the_largest_error_falls_back(thousand, monkeypatch):
    """Shape 1, scale 1 at 2e-4 (ratio 0.01): init + 99, over 10 x the largest error (8.15): the quantile."""
    monkeypatch.setattr(stats.genpareto, "fit", lambda data, floc=0: (1.0, 0.0, 1.0))
    threshold, record = pick_threshold(thousand, "pot", 2e-4)
    assert 10 * thousand.max() < float(np.quantile(thousand, 0.98)) + 99 < 100 * thousand.max()
    assert record["method"] == "quantile" and "out of range" in record["params"]["fallback"]
    assert threshold == float(np.quantile(thousand, 1 - 2e-4))


def test_a_spiky_channel_is_capped_on_fewer_than_a_hundred_windows():
    """50 windows: the largest 1 % is one window (at least one). Typical errors 1, 2, 2 (one spike of
    100): weights 1, 1/2, 1/2; the spike's extreme 100 against the others' weighted 1 caps it at 1/100."""
    errors = np.c_[np.ones(50), np.full(50, 2.0), np.r_[100.0, np.zeros(49)]]
    w = channel_weights([errors], np.array([False, False, True]))
    expected = np.array([1.0, 0.5, 0.01])
    np.testing.assert_allclose(w, expected / expected.mean(), rtol=1e-12)


def test_a_spiky_channel_beside_channels_that_never_moved_keeps_its_weight():
    """The other channels' errors are all 0: nothing to compare the spikes with, no cap (a cap of 0
    would leave the spiky channel out of the score). Typical 0, 0, 2: floor 0.02, weights 50, 50, 1/2."""
    errors = np.c_[np.zeros(50), np.zeros(50), np.r_[100.0, np.zeros(49)]]
    w = channel_weights([errors], np.array([False, False, True]))
    expected = np.array([50.0, 50.0, 0.5])
    np.testing.assert_allclose(w, expected / expected.mean(), rtol=1e-12)


def test_the_largest_windows_are_one_percent_rounded_up():
    """2,050 windows: 1 % is 20.5, so 21 (more than the least, 20), largest first."""
    assert largest_windows(np.arange(2050.0)).tolist() == list(range(2049, 2028, -1))
    assert len(largest_windows(np.arange(10.0))) == 10


def test_a_channel_that_leads_no_large_window_is_not_named():
    """One channel leads every window: it alone is named, not the others at a share of 0."""
    errors = np.c_[np.full(100, 5.0), np.ones(100), np.ones(100)]
    assert line_leaders([errors], ("a", "b", "c")) == {"windows": 20, "shares": [["a", 1.0]]}


def test_the_start_share_reads_the_largest_finite_window_means():
    """The earliest fold's share of the 20 largest windows (a window's error the mean over its
    channels; unscored windows left out before ranking, not after)."""
    from sensorguard.training.crossfit import start_share

    early = np.r_[np.full((20, 1), np.nan), np.zeros((20, 1))]  # 20 unscored windows, then 20 at 0
    assert start_share([early, np.full((20, 1), 5.0)], [0, 1]) == (0.0, 20)
    assert start_share([np.full((20, 1), 5.0), early], [0, 1]) == (1.0, 20)
    # fold 0's windows [3, 3] (mean 3) lead fold 1's [0, 5] (mean 2.5, though its largest channel is 5)
    assert start_share([np.full((20, 2), 3.0), np.tile([0.0, 5.0], (20, 1))], [0, 1]) == (1.0, 20)
    assert start_share([], []) == (0.0, 0)


def test_only_scored_windows_with_a_sensor_fault_count_as_left_out():
    """A fault at a segment's first row reaches the windows ending at rows 0-3 (window 4); rows 0-2
    have no full window and no score: only row 3's is a window left out for the fault."""
    from sensorguard.training.crossfit import clean_pieces
    from sensorguard.training.series import SensorData

    faulted = np.zeros((10, 1), bool)
    faulted[0] = True
    data = SensorData(np.zeros((10, 1)), np.arange(10.0), np.zeros(10, int), ("a",), 1.0, faulted=faulted)
    errors = np.r_[np.full(3, np.nan), np.ones(7)][:, None]
    pieces, _, left_out = clean_pieces(errors, data, window=4)
    assert left_out == 1
    assert [int(np.isfinite(p).sum()) for p in pieces] == [0, 6]


def test_cross_fitting_holds_out_no_learned_row_and_scores_the_last_fold_on_its_own_rows(tiny_bundle):
    """Rows acknowledged as false alarms train every fold and are scored in none; the served fold's
    held-out losses are those of the last time block (rows 240-299 of 300), not of all the rows."""
    from sensorguard.training.crossfit import cross_fit, fold_masks, held_out_losses
    from sensorguard.training.series import LEARNED, SensorData
    from sensorguard.training.train import TrainOptions

    rng = np.random.default_rng(0)
    t = np.arange(300.0)
    values = np.c_[np.sin(t / 9), np.cos(t / 7), np.sin(t / 5)] + 0.1 * rng.standard_normal((300, 3))
    learned = (t >= 130) & (t < 160)
    data = SensorData(values, 1.7e9 + t, np.zeros(300, int), ("a", "b", "c"), 1.0, labels={LEARNED: learned})
    result = cross_fit(data, tiny_bundle, TrainOptions(progress=False, seed=0), epochs=0)
    assert sum(len(p) for p in result.pieces) == 300 - 30 and sorted(set(result.folds)) == [0, 1, 2, 3, 4]
    last = data.take(fold_masks(data.times)[-1])
    assert len(last) == 60 and result.losses == held_out_losses(result.fit, last)

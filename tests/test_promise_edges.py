"""Edges of the alert promise pinned with values worked by hand (a mutation audit: each of these
changed without a test failing): the autocorrelation time, the effective samples' boundaries and
pooling, the branch for a tail of fewer than 2 values, the exponential tail's formula, the
intervals' floors, and the level term's bisection."""

import math

import numpy as np
import pytest
from scipy import stats

from sensorguard.service.alerts import AlertRules
from sensorguard.training.promise import (
    _autocorrelation_time,
    _observed,
    _tail_ci,
    alert_threshold,
    combined_line,
    effective_fraction,
)

ONE = AlertRules(raise_after=1)  # the raise statistic is the error itself


def step(n: int) -> np.ndarray:
    """n/2 zeros then n/2 ones: centred at +-1/2, its lag-k autocorrelation is (n - 3k) / n (k <= n/2)."""
    return np.r_[np.zeros(n // 2), np.ones(n // 2)]


def alternating(n: int) -> np.ndarray:
    """+1, -1, ...: the lag-1 autocorrelation is -(n - 1) / n, so the sum stops at once: tau 1."""
    return np.tile([1.0, -1.0], n // 2)


def test_the_autocorrelation_time_of_a_ramp_and_a_step_worked_by_hand():
    """0..7 centred: lag 1 26.25/42, lag 2 11.5/42, lag 3 negative (stop): tau 1 + 2 (37.75/42).
    A step of 100: (100 - 3k)/100 stays above 0.05 up to k = 31: tau 1 + 2 (3100 - 3 * 496) / 100."""
    assert _autocorrelation_time(np.arange(8.0)) == pytest.approx(117.5 / 42, rel=1e-9)
    assert _autocorrelation_time(step(100)) == pytest.approx(33.24, rel=1e-9)
    assert _autocorrelation_time(alternating(100)) == 1.0


def test_pieces_of_exactly_8_samples_are_measured_when_none_reaches_acf_min():
    """With no series of ACF_MIN samples, those of at least 8 get their own time: three ramps of 8
    are 42/117.5 independent per sample, not one per piece (1/8)."""
    assert effective_fraction([np.arange(8.0)] * 3) == pytest.approx(42 / 117.5, rel=1e-9)


def test_a_series_of_exactly_acf_min_samples_is_measured_and_shorter_ones_take_its_time():
    """A step of 64 (tau 1 + 2 * 650 / 64 = 21.3125: lags 1..20 above 0.05) is measured; a piece of
    10 beside it is not (it would read tau 1, alternating), so it takes the step's time."""
    assert _autocorrelation_time(step(64)) == pytest.approx(21.3125, rel=1e-9)
    assert effective_fraction([step(64), alternating(10)]) == pytest.approx(1 / 21.3125, rel=1e-9)


def test_an_unmeasured_piece_takes_the_pooled_time_and_leaves_the_fraction_as_it_was():
    """Pooled is the length-weighted harmonic time: an unmeasured piece then counts as the measured
    ones do together, (100 / 1 + 100 / 33.24) / 200 independent per sample, with or without it (a
    length-weighted arithmetic time, 17.12, passed every test)."""
    measured = (100 / 1.0 + 100 / 33.24) / 200
    assert effective_fraction([alternating(100), step(100)]) == pytest.approx(measured, rel=1e-9)
    assert effective_fraction([alternating(100), step(100), alternating(10)]) == pytest.approx(measured, rel=1e-9)


def test_calibration_needs_ten_alert_steps_and_ten_are_enough():
    """raise_after 3 at hop 1: 12 rows hold 10 alert steps (accepted), 11 rows 9 (refused)."""
    errors = np.random.default_rng(0).exponential(1.0, 12)
    threshold, record = alert_threshold([errors], 1, AlertRules(), 100.0, target=1.0)
    assert record["samples"] == 10 and record["raise_after"] == 3 and threshold > 0
    with pytest.raises(ValueError, match="hold 9 alert steps; need at least 10"):
        alert_threshold([errors[:11]], 1, AlertRules(), 100.0, target=1.0)


def test_one_value_above_the_90th_percentile_is_no_tail_the_line_is_just_above_it():
    """99 windows at 1.0 and one at 5.0: the 90th percentile is 1.0 and a single excess (4.0) is
    above it, fewer than 2: no tail to fit, no quantile: the line is just above 5.0, and nothing
    seen raises. 1 a day of 1,000 steps is no capped target: no note says so."""
    errors = np.r_[np.ones(99), 5.0]
    threshold, record = alert_threshold([errors], 1, ONE, 1000.0, target=1.0)
    assert record["tail"] == "none" and "fewer than 2 values" in record["tail_note"]
    assert threshold == 5.0 * (1 + 1e-6)
    assert record["observed_alerts"] == 0 and record["raise_after"] == 1
    assert record["promised_per_day"] == 1.0 and "promise_note" not in record


def test_the_exponential_tail_is_the_documented_formula():
    """Excesses over the 90th percentile u, mean sigma; the scale's 90 % bound from chi^2 on the
    effective excess count (excesses x 1 / tau); the line u + bound * ln(fraction / p), the point
    estimate at it from sigma, the margin over the largest value seen."""
    errors = np.convolve(np.random.default_rng(2).exponential(1.0, 403), np.ones(4) / 4, mode="valid")
    threshold, record = alert_threshold([errors], 1, ONE, 1000.0, target=1.0)
    p = 1.0 / 1000.0
    u = float(np.quantile(errors, 0.9))
    excess = errors[errors > u] - u
    sigma, frac = float(excess.mean()), len(excess) / len(errors)
    eff = 1 / _autocorrelation_time(errors)
    assert eff < 0.5  # (overlapping windows: the effective count is not the raw one)
    n = len(excess) * eff
    bound = sigma * 2 * n / stats.chi2.ppf(0.1, 2 * n)
    assert record["tail"] == "exponential" and record["effective_samples"] == round(len(errors) * eff, 1)
    assert threshold == pytest.approx(u + bound * math.log(frac / p), rel=1e-9)
    assert record["tail_scale_bound"] == pytest.approx(bound, rel=1e-9)
    assert record["point_estimate_per_day"] == pytest.approx(1000 * frac * math.exp(-(threshold - u) / sigma), abs=1e-4)
    assert record["margin"] == pytest.approx(threshold / errors.max() - 1, abs=1e-4)
    assert record["promised_ci95"] == _tail_ci(threshold, u, sigma, frac, n, 1000.0)


def test_a_line_on_all_zero_errors_is_a_positive_float32():
    """Nothing but zeros: just above 0 is the smallest subnormal (5e-324), 0 in the daemon's float32,
    where every score divides by it; the line is floored at 1e-12."""
    threshold, record = alert_threshold([np.zeros(100)], 1, AlertRules(), 1000.0, target=1.0)
    assert record["tail"] == "none" and np.float32(threshold) > 0 and threshold == 1e-12
    assert record["observed_alerts"] == 0


def test_observed_alerts_over_less_than_a_day_are_a_rate_per_day():
    """One alert in half a day: 2 a day, its Garwood interval (0.0253, 5.5716) over 0.5 days."""
    errors = np.r_[np.full(20, 0.1), np.full(5, 3.0), np.full(20, 0.1)]
    record = _observed([errors], threshold=1.0, hop=1, rules=AlertRules(), days=0.5)
    assert record["observed_alerts"] == 1 and record["observed_per_day"] == 2.0
    assert record["observed_ci95"] == [pytest.approx(0.0506, abs=1e-4), pytest.approx(11.1433, abs=1e-4)]


def test_the_tail_interval_counts_at_least_one_effective_excess():
    """Half an effective excess counts as one. With one, worked by hand at a line one scale past the
    start: Garwood (-ln 0.975, 5.5716) times exp(-1 / s) at the scale's chi^2(2) bounds, where
    chi2.ppf(q, 2) = -2 ln(1 - q): exp(-1 / s) is 0.025 low and 0.975 high."""
    expected = [pytest.approx(-math.log(0.975) * 0.025, abs=1e-4), pytest.approx(5.57164 * 0.975, abs=2e-4)]
    assert _tail_ci(1.0, 0.0, 1.0, 1.0, 1.0, 1.0) == expected
    assert _tail_ci(1.0, 0.0, 1.0, 1.0, 0.5, 1.0) == expected


def test_the_level_terms_factor_is_the_smallest_that_adds_no_alert_to_a_thousandth():
    """Three windows in a row with the term at 2.0 (the error far below its line) raise while
    2.0 / factor >= 1: the smallest factor that raises nothing is just above 2, found to 0.1 %; a
    search that starts at the term's largest value (2.0, where they score 1.0 and raise) must not
    stop there."""
    errors = np.full(50, 0.1)
    terms = np.zeros(50)
    terms[20:23] = 2.0
    alone = {"calibration_days": 1.0, "observed_alerts": 0, "threshold": 1.0}
    record, factor = combined_line([errors], [terms], 1.0, alone, 1, AlertRules())
    assert 2.0 < factor <= 2.0 * 1.001
    assert record["observed_alerts"] == 0 and record["level_factor"] == round(factor, 6)
    terms[40] = 100.0  # a lone window far above (one window alone raises nothing): the search starts at 100.1
    record, factor = combined_line([errors], [terms], 1.0, alone, 1, AlertRules())
    assert 2.0 < factor <= 2.0 * 1.001 and record["observed_alerts"] == 0

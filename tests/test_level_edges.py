"""Edges of the level term (service/level.py, training/level_fit.py) a mutation audit found unpinned.

Each expected value is worked by hand from the rule the module's docstring states, not copied
from a run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sensorguard.service.alerts import AlertRules, AlertState, judge
from sensorguard.service.drift import DriftRule, DriftState, drift_step
from sensorguard.service.level import LevelMonitor
from sensorguard.training.level_fit import fit_level


def monitor(**change) -> LevelMonitor:
    fields = {"mean": np.zeros(3), "scale": np.ones(3), "loadings": np.eye(3), "eigen": np.ones(3), "limit": 1.0,
              **change}
    return LevelMonitor(**fields)


def two_channels(rho: float, rows: int = 2000) -> np.ndarray:
    """Two channels whose sample correlation is exactly ``rho``: standardized, their first principal
    component explains ``(1 + rho) / 2`` of the variance."""
    rng = np.random.default_rng(7)
    x, e = rng.normal(size=rows), rng.normal(size=rows)
    x = (x - x.mean()) / x.std()
    e = e - e.mean()
    e = e - (e @ x) / (x @ x) * x  # orthogonal to x
    e = e / e.std()
    return np.column_stack([x, rho * x + math.sqrt(1 - rho**2) * e])


# --- the fit -----------------------------------------------------------------------------------------


def test_the_fit_keeps_the_fewest_components_explaining_90_percent():
    """First component's share 0.85 (< 0.90): both kept; 0.95: one."""
    assert fit_level(two_channels(0.7)).loadings.shape == (2, 2)
    assert fit_level(two_channels(0.9)).loadings.shape == (2, 1)


def test_every_direction_kept_leaves_no_q_part():
    """Both of two channels' components kept: the residual is rounding (~1e-16), and a Q limit
    made of it would read every row's rounding as a fault; there is no Q part."""
    both = fit_level(two_channels(0.7))
    assert both.q_limit == 0.0 and both.q_channels is None


def test_the_limits_are_twice_and_four_times_the_out_of_fold_99th_percentiles():
    """The module's rule, rebuilt from its parts: five contiguous folds, each scored (T^2 and Q about
    its monitor's mean, Q over the channels it counts) by a monitor fitted on the other four; the
    limit is 2 x the 99th percentile of those T^2 values, the Q limit 4 x that of the Q values. A
    spiky setpoint (the last channel) is left out of Q, in the limit as in the served monitor."""
    rng = np.random.default_rng(11)
    common = rng.normal(size=(600, 1))
    rows = np.hstack([common * (c + 1) + 0.3 * rng.normal(size=(600, 1)) + 10 * c for c in range(4)]
                     + [np.where(np.arange(600) % 100 == 7, 50.5, 50.0)[:, None]])
    fitted = fit_level(rows)
    assert fitted is not None and fitted.q_limit > 0 and fitted.q_channels.tolist() == [True] * 4 + [False]
    t2s, qs = [], []
    for part in np.array_split(np.arange(600), 5):
        fold = fit_level(np.delete(rows, part, axis=0))
        t2s.append(fold.t2(rows[part] - fold.mean))
        qs.append(fold.q(rows[part] - fold.mean))
    assert fitted.limit == pytest.approx(2.0 * np.quantile(np.concatenate(t2s), 0.99), rel=1e-9)
    assert fitted.q_limit == pytest.approx(4.0 * np.quantile(np.concatenate(qs), 0.99), rel=1e-9)


def test_the_fit_needs_fifty_complete_rows_and_leaves_out_only_rows_with_a_gap():
    """Five folds of ten rows each at least; a row with one missing value is left out, its
    neighbours are not (the mean is that of the complete rows)."""
    rows = two_channels(0.9, rows=60)
    assert fit_level(rows[:49]) is None and fit_level(rows[:50]) is not None
    gappy = rows.copy()
    gappy[[3, 17, 40], 1] = np.nan
    fitted = fit_level(gappy)
    assert fitted is not None
    np.testing.assert_allclose(fitted.mean, np.delete(rows, [3, 17, 40], axis=0).mean(axis=0))


def test_channels_that_only_vary_by_rounding_count_as_constant_and_small_real_spreads_do_not():
    """A channel is constant where its spread is at most 1e-12 of its magnitude (at least 1): a
    pressure of 101,325 Pa jittering by 1e-10 and a channel at 0 jittering by 1e-14 get the scale 1
    and no part in Q; a flow of 100 varying by 0.01, with the others, is a channel like any."""
    rng = np.random.default_rng(5)
    common = rng.normal(size=(600, 1))
    varying = np.hstack([common * (c + 1) + 0.2 * rng.normal(size=(600, 1)) for c in range(3)])
    flow = 100.0 + 0.01 * (common + 0.2 * rng.normal(size=(600, 1)))
    pressure = 101_325.0 + 1e-10 * rng.normal(size=(600, 1))
    tiny = 1e-14 * rng.normal(size=(600, 1))
    fitted = fit_level(np.hstack([varying, flow, pressure, tiny]))
    assert fitted.scale[4:].tolist() == [1.0, 1.0]
    assert fitted.scale[3] == pytest.approx(np.std(flow))
    assert fitted.q_channels.tolist() == [True, True, True, True, False, False]


def test_the_fitted_monitor_carries_its_channels():
    """Its key is that of its channels, so a level learned under it is read back as its own."""
    for rows in (two_channels(0.7), two_channels(0.9), two_channels(0.9)[:, [0, 1, 0]] + [0, 0, 1]):
        names = tuple("abc"[: rows.shape[1]])
        assert fit_level(rows, names).channels == names


# --- calibration's terms --------------------------------------------------------------------------------


def test_calibration_terms_worked_by_hand():
    """One channel, limit 1 (its calibrated factor 3 is the line's, not the fitted limit's), follow 2:
    rows 2, NaN, 2, 2 leave the level at 0, 1, 1 (a NaN row moves nothing), 1.5 before each row;
    T^2 4, NaN, 1, 0.25; focus 2: a window with the NaN row has no term (0), the last (1 + 0.25) / 2."""
    from sensorguard.training.level_fit import window_terms

    single = LevelMonitor(np.zeros(1), np.ones(1), np.ones((1, 1)), np.ones(1), limit=1.0, follow=2.0,
                          calibrated=3.0)
    values = np.array([[2.0], [np.nan], [2.0], [2.0]])
    assert window_terms(single, values, np.zeros(4, dtype=int), 2).tolist() == pytest.approx([0, 0, 0, 0.625])
    # a segment exactly focus rows long has its one window: rows 2, 2 about 0 then 1: (4 + 1) / 2
    assert window_terms(single, values[2:], np.zeros(2, dtype=int), 2).tolist() == pytest.approx([0, 2.5])


# --- monitors that cannot work are refused -----------------------------------------------------------


@pytest.mark.parametrize(("change", "why"), [
    ({"loadings": np.zeros((3, 0)), "eigen": np.zeros(0)}, "shapes do not fit"),  # no component: T^2 always 0
    ({"eigen": np.array([1.0, 0.0, 1.0])}, "scale and eigenvalues > 0"),  # a weight of 1 / sqrt(0)
    ({"calibrated": 0.0}, "calibrated > 0"),  # a line of 0
    ({"q_limit": math.inf}, "q_limit >= 0"),  # a Q part that could never count
])
def test_a_monitor_with_a_degenerate_field_is_refused(change, why):
    with pytest.raises(ValueError, match=why):
        monitor(**change)


def test_a_follow_of_one_row_is_allowed_and_jumps_to_the_windows_mean():
    """follow >= 1 is the documented bound; at 1 every step is the whole way."""
    one = monitor(follow=1.0)
    state = one.step(DriftState(), np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    assert state.level == pytest.approx((2.0, 2.0, 2.0))


def test_channel_lists_that_join_to_the_same_text_have_different_keys():
    assert monitor(channels=("ab", "c")).key != monitor(channels=("a", "bc")).key


# --- the term's arithmetic ----------------------------------------------------------------------------


def test_t2_is_taken_in_standard_deviations_of_each_channel():
    """Scale 2 on channel a: a deviation of 4 raw units is 2 standard deviations, T^2 4; limit 2."""
    scaled = monitor(scale=np.array([2.0, 1.0, 1.0]), limit=2.0)
    assert scaled.term(np.array([[4.0, 0.0, 0.0]]), DriftState()) == pytest.approx(4.0 / 2.0)
    assert scaled.t2(np.array([[0.0, 3.0, 0.0]])).tolist() == pytest.approx([9.0])


def test_q_counts_the_residuals_of_the_counted_channels_whatever_moved():
    """One kept direction (1, 1, 1) / sqrt(3); channel c is not counted by Q. A deviation (0, 0, 3)
    leaves the residual (0, 0, 3) - (1, 1, 1) = (-1, -1, 2): the counted channels' part is
    (-1, -1), so Q is 2, though only the uncounted channel moved."""
    direction = np.full((3, 1), 1 / math.sqrt(3))
    q_monitor = monitor(loadings=direction, eigen=np.ones(1), q_limit=1.0, q_channels=np.array([True, True, False]))
    assert q_monitor.q(np.array([[0.0, 0.0, 3.0]])).tolist() == pytest.approx([2.0])
    assert q_monitor.q(np.array([[3.0, 0.0, 0.0]])).tolist() == pytest.approx([(2.0**2 + 1.0**2)])






def test_shares_come_from_t2_when_it_is_the_larger_part_and_carry_the_calibration():
    """A monitor with a Q part, calibrated 2: a row along the kept direction has T^2 (3^2 / (1 x 2))
    = 4.5 and no residual; its shares are T^2's, all on channel a, and add up to the term."""
    t2_monitor = monitor(loadings=np.array([[1.0], [0.0], [0.0]]), eigen=np.ones(1), calibrated=2.0,
                         q_limit=1.0, q_channels=np.ones(3, dtype=bool))
    rows = np.array([[3.0, 0.0, 0.0]])
    assert t2_monitor.term(rows, DriftState()) == pytest.approx(4.5)
    assert t2_monitor.contributions(rows, DriftState()).tolist() == pytest.approx([4.5, 0.0, 0.0])


# --- following the level ---------------------------------------------------------------------------------


def test_the_level_moves_towards_the_windows_mean_not_its_last_row():
    """follow 2, two rows: 1 - (1 - 1/2)^2 = 3/4 of the way from 0 to their mean 2, so 1.5."""
    state = monitor(follow=2.0).step(DriftState(), np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 4.0]]))
    assert state.level == pytest.approx((1.5, 1.5, 1.5))


def test_a_level_step_keeps_the_drift_baseline():
    """The level and the drift offset share one state: moving the level must keep the offset and
    the count of windows the baseline learned from."""
    stepped = monitor().step(DriftState(offset=0.25, updates=7), np.ones((2, 3)))
    assert (stepped.offset, stepped.updates) == (0.25, 7) and stepped.level


def test_a_normal_window_moves_both_the_drift_baseline_and_the_level():
    """judge steps the drift rule on the error's score, then the level: the level's step must not
    undo the baseline's (the error 0.2 over a baseline of 0.1: the offset moves off 0)."""
    rule = DriftRule(baseline=math.log(0.1))
    rows = np.full((4, 3), 0.5)
    _, drift, _, _ = judge(AlertState(), DriftState(), 0.2, 0.0, AlertRules(), rule,
                           level=monitor(limit=100.0), rows=rows)
    expected = drift_step(DriftState(), 0.2, rule)
    assert expected.offset > 0
    assert (drift.offset, drift.updates) == (expected.offset, expected.updates) and drift.level


# --- the monitor in bundle.json ---------------------------------------------------------------------------


def test_every_field_of_a_monitor_survives_the_bundle(tiny_bundle, tmp_path):
    """A monitor whose follow and calibrated factor are not the defaults reads back with them (the
    round trip in test_level compares to_dict with to_dict, which a field missing from both passes)."""
    from dataclasses import replace

    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.bundle_loading import load_bundle

    saved = monitor(follow=500.0, calibrated=3.0, limit=2.5, q_limit=0.5, q_channels=np.array([True, False, True]))
    loaded = load_bundle(save_bundle(replace(tiny_bundle, level=saved), tmp_path / "b")).level
    assert (loaded.follow, loaded.calibrated, loaded.limit, loaded.q_limit) == (500.0, 3.0, 2.5, 0.5)
    assert loaded.q_channels.tolist() == [True, False, True] and loaded.line == 7.5


def test_a_record_without_follow_or_calibration_gets_the_documented_defaults():
    """A bundle from before those fields: the level follows FOLLOW_ROWS (2,000) rows, uncalibrated."""
    record = {"mean": [0.0, 0.0], "scale": [1.0, 1.0], "loadings": [[1.0], [0.0]], "eigen": [1.0], "limit": 3.0}
    loaded = LevelMonitor.from_dict(record, ("a", "b"))
    assert loaded.follow == 2000.0 and loaded.calibrated == 1.0 and loaded.q_limit == 0.0 and loaded.line == 3.0
    with pytest.raises(ValueError, match="level must be an object"):
        LevelMonitor.from_dict([record], ("a", "b"))


def test_a_consistent_monitor_of_another_channel_count_is_refused_by_the_bundle():
    """Two channels' monitor, shapes fitting each other, in a three-channel bundle."""
    record = {"mean": [0.0, 0.0], "scale": [1.0, 1.0], "loadings": [[1.0], [0.0]], "eigen": [1.0], "limit": 3.0}
    with pytest.raises(ValueError, match="level has 2 channels, the bundle 3"):
        LevelMonitor.from_dict(record, ("a", "b", "c"))


def test_a_blocked_row_has_no_level_rows():
    """A window with a sensor fault open gets no term offline, as live; the others get their newest
    ``focus`` rows."""
    from sensorguard.service.level import LevelRows

    values = np.arange(18.0).reshape(6, 3)
    rows = LevelRows(monitor(), values, 2, blocked=np.array([False, False, False, True, False, False]))
    assert rows.at(3) is None
    assert rows.at(4).tolist() == values[3:5].tolist()


def test_top_channels_names_the_three_largest_with_their_share_of_the_whole():
    from sensorguard.service.level import top_channels

    named = top_channels(np.array([1.0, 3.0, 0.0, 4.0]), ("a", "b", "c", "d"))  # of 8 in all
    assert named == [{"name": "d", "share": 0.5}, {"name": "b", "share": 0.375}, {"name": "a", "share": 0.125}]

"""The level term (service/level.py, training/level_fit.py): fit, bundle, judge, state, attribution."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from sensorguard.service.alerts import AlertRules, AlertState, judge, judge_rows
from sensorguard.service.bundle import BundleError, save_bundle
from sensorguard.service.bundle_loading import load_bundle
from sensorguard.service.drift import DriftState
from sensorguard.service.level import LevelMonitor, LevelRows, top_channels
from sensorguard.service.state import StateError, decode_asset, encode_asset
from sensorguard.training.level_fit import MIN_ROWS, fit_level


def correlated(rows: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Channels that move together (one latent factor) with a little noise of their own."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=(rows, 1))
    return np.hstack([common * (c + 1) + 0.2 * rng.normal(size=(rows, 1)) + 10 * c for c in range(channels)])


def monitor_of(channels: int = 3, limit: float = 4.0, follow: float = 50.0) -> LevelMonitor:
    return LevelMonitor(mean=np.zeros(channels), scale=np.ones(channels), loadings=np.eye(channels),
                        eigen=np.ones(channels), limit=limit, follow=follow)


# --- fit ---------------------------------------------------------------------------------------------


def test_the_fit_keeps_the_principal_subspace_and_an_out_of_fold_limit():
    rows = correlated(600)
    monitor = fit_level(rows)
    assert monitor is not None and monitor.loadings.shape == (3, 1)  # one factor explains > 90 %
    np.testing.assert_allclose(monitor.mean, rows.mean(axis=0))
    # in-sample T^2 has mean ~ the components kept (1); the limit is twice its out-of-fold 99th percentile
    assert 2.0 * 2.0 < monitor.limit < 2.0 * 30.0


@pytest.mark.parametrize(("case", "rows", "fitted"), [
    ("too few rows", correlated(MIN_ROWS - 1), False),
    ("every channel constant", np.ones((400, 3)), False),
    ("one channel constant", np.hstack([correlated(400)[:, :2], np.full((400, 1), 32.0)]), True),
    ("missing values left out", np.vstack([correlated(400), np.full((5, 3), np.nan)]), True),
    ("wildly different magnitudes", correlated(400) * np.array([1e-4, 1.0, 1e5]), True),
])
def test_the_fit_on_awkward_channels(case, rows, fitted):
    monitor = fit_level(rows)
    assert (monitor is not None) == fitted, case
    if monitor is not None:
        assert np.isfinite(monitor.term(rows[-8:][np.isfinite(rows[-8:]).all(axis=1)], ())), case
        assert (monitor.scale > 0).all() and math.isfinite(monitor.limit)


@pytest.mark.parametrize(("change", "why"), [
    ({"scale": np.array([1.0, 0.0, 1.0])}, "scale and eigenvalues > 0"),
    ({"eigen": np.array([1.0, np.nan, 1.0])}, "finite"),
    ({"loadings": np.eye(2)}, "shapes do not fit"),
    ({"limit": 0.0}, "limit > 0"),
    ({"follow": math.inf}, "follow >= 1"),
])
def test_a_monitor_that_cannot_work_is_refused(change, why):
    fields = {"mean": np.zeros(3), "scale": np.ones(3), "loadings": np.eye(3), "eigen": np.ones(3), "limit": 1.0,
              **change}
    with pytest.raises(ValueError, match=why):
        LevelMonitor(**fields)


def test_the_bundle_keeps_its_monitor_and_refuses_a_broken_one(tiny_bundle, tmp_path):
    monitor = fit_level(correlated(400))
    path = save_bundle(replace(tiny_bundle, level=monitor), tmp_path / "b")
    loaded = load_bundle(path).level
    assert loaded is not None and loaded.limit == monitor.limit
    np.testing.assert_array_equal(loaded.loadings, monitor.loadings)
    meta = json.loads((path / "bundle.json").read_text())
    meta["level"]["mean"] = [0.0, 1.0]  # two channels for a three-channel bundle
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="level is not a usable level monitor"):
        load_bundle(path)
    del meta["level"]  # a bundle from before the term: none, scored as before
    (path / "bundle.json").write_text(json.dumps(meta))
    assert load_bundle(path).level is None


# --- the term --------------------------------------------------------------------------------------


def test_contributions_add_up_to_the_term_and_name_the_channel_that_moved():
    rng = np.random.default_rng(0)
    monitor = fit_level(rng.normal(size=(600, 3)))  # independent channels: every one is a component
    rows = rng.normal(size=(4, 3))
    rows[:, 2] += 8.0  # channel 2 leaves its level
    term = monitor.term(rows, ())
    shares = monitor.contributions(rows, ())
    assert term > 1.0 and (shares >= 0).all()
    assert shares.sum() == pytest.approx(term, rel=1e-9)
    assert top_channels(shares, ("a", "b", "c"))[0]["name"] == "c"


def test_the_term_is_taken_about_the_assets_level():
    monitor = monitor_of()
    rows = np.full((2, 3), 2.0)
    assert monitor.term(rows, ()) == pytest.approx(3.0)  # 3 x 2^2 / 4 about the training mean
    assert monitor.term(rows, (2.0, 2.0, 2.0)) == 0.0
    assert monitor.term(rows, (1.0, 2.0)) == pytest.approx(3.0)  # another channel count: the training mean
    assert math.isnan(monitor.term(np.array([[1.0, np.nan, 0.0]]), ()))  # nothing to judge


def test_the_window_decides_by_the_larger_of_score_and_term():
    monitor, rules = monitor_of(), AlertRules(raise_after=1)
    far = np.full((2, 3), 4.0)  # term 12
    state, _, event, score = judge(AlertState(), DriftState(), 0.2, 0.0, rules, None, level=monitor, rows=far)
    assert score == pytest.approx(12.0) and event is not None and event.kind == "raised"
    _, _, event, score = judge(AlertState(), DriftState(), 0.2, 0.0, rules, None, level=monitor, rows=None)
    assert score == 0.2 and event is None  # no rows (a sensor fault open): the reconstruction score alone


# --- following normal operation, guarded --------------------------------------------------------------


def _run(values: np.ndarray, monitor: LevelMonitor, score: float = 0.3, hop: int = 4):
    n = len(values)
    mask = np.zeros(n, dtype=bool)
    mask[hop - 1 :: hop] = True
    return judge_rows(np.full(n, score), mask, np.arange(n, dtype=np.float64), AlertRules(), None,
                      level=LevelRows(monitor, values, hop))


def test_a_drifting_normal_level_stays_quiet_while_a_slow_fault_still_raises():
    """The plant's level moves by 5 standard deviations over 40,000 rows (normal: the level follows
    it); a fault moves it by 6 over 1,500 rows, slow enough that no window jumps, and raises. About
    the training mean alone the drift alerts: the following is what keeps it quiet."""
    rows = correlated(2000)
    monitor = fit_level(rows)
    along = rows.std(axis=0)  # (the channels move together: in the principal subspace, as a load change)
    tail = correlated(40_000, seed=3)
    drifted = tail + np.linspace(0, 5, len(tail))[:, None] * along
    alert, _, _ = _run(drifted, monitor)
    assert alert.sum() == 0
    fixed = replace(monitor, follow=1e12)  # (a level that never moves: the training mean)
    assert _run(drifted, fixed)[0].sum() > 0
    fault = tail[:4000].copy()
    fault[1000:2500] += np.linspace(0, 6, 1500)[:, None] * along
    fault[2500:] += 6 * along
    alert, _, _ = _run(fault, monitor)
    assert alert[:1000].sum() == 0 and alert[1000:2500].any()
    raised = 1000 + int(np.argmax(alert[1000:]))
    assert alert[raised:].all()  # not learned away: the level is frozen while the alert is up


def test_only_windows_judged_normal_and_learning_move_the_level():
    monitor, rules = monitor_of(limit=100.0), AlertRules(raise_after=1)
    near = np.full((4, 3), 1.0)
    _, moved, _, _ = judge(AlertState(), DriftState(), 0.3, 0.0, rules, None, level=monitor, rows=near)
    assert moved.level and moved.level[0] > 0
    _, kept, _, _ = judge(AlertState(), DriftState(), 0.3, 0.0, rules, None, learn=False, level=monitor, rows=near)
    assert kept.level == ()  # a maintenance: nothing learned
    up = AlertState("alerting", alert_id="x")
    _, frozen, _, _ = judge(up, DriftState(), 0.3, 0.0, rules, None, level=monitor, rows=near)
    assert frozen.level == ()  # an alert up freezes it
    _, over, _, _ = judge(AlertState(), DriftState(), 1.5, 0.0, AlertRules(), None, level=monitor, rows=near)
    assert over.level == ()  # a window over the line (pending) teaches nothing


def test_the_level_is_saved_and_restored_with_the_assets_state():
    drift = DriftState(0.1, 3, (1.0, 2.5, -3.0))
    assert decode_asset(encode_asset(AlertState(), drift))[1] == drift
    assert b"level" not in encode_asset(AlertState(), DriftState(0.1, 3))  # nothing learned: not written
    bad = encode_asset(AlertState(), drift).replace(b"-3.0", b'"x"')
    with pytest.raises(StateError, match="drift level"):
        decode_asset(bad)


# --- the line calibrated on the combined score ---------------------------------------------------------


def test_without_a_term_the_line_stays_where_the_errors_set_it():
    from sensorguard.training.promise import alert_threshold, combined_line

    rng = np.random.default_rng(0)
    errors = [np.convolve(rng.exponential(1.0, 4000), np.ones(4) / 4, mode="valid")]
    line, _ = alert_threshold(errors, 2, AlertRules(), 2000.0, 1.0)
    terms = [np.zeros(len(errors[0]))]  # (no term where there is none: the errors alone)
    combined, record, factor = combined_line(errors, terms, line, 2, AlertRules(), 2000.0, 1.0)
    assert factor == pytest.approx(1.0, rel=1e-9) and combined == pytest.approx(line, rel=1e-9)
    assert record["error_threshold"] == line and record["threshold"] == combined


def test_a_term_that_crosses_on_normal_rows_raises_both_lines_and_the_promise_counts_it():
    """Held-out normal windows whose term passes 1 now and then (the plant wandered between folds):
    calibrated on the errors alone the line would promise 1 a day and see many more; calibrated on
    the combined score both parts move up together and what is observed is inside the promise."""
    from sensorguard.training.promise import alert_threshold, combined_line

    rng = np.random.default_rng(1)
    n = 20_000
    errors = [np.convolve(rng.exponential(1.0, n + 3), np.ones(4) / 4, mode="valid")]
    terms = [np.convolve(rng.exponential(0.5, n + 19), np.ones(20) / 20, mode="valid") * 2.2]
    rules, per_day = AlertRules(), 2000.0
    line, alone = alert_threshold(errors, 2, rules, per_day, 1.0)
    combined = [np.maximum(errors[0] / line, terms[0])]
    raises = np.sum(np.diff(np.r_[0, judge_rows(combined[0], np.arange(n) % 2 == 1, np.arange(n, dtype=float),
                                                 rules)[0]]) == 1)
    assert raises / (n / 2 / per_day) > 2.0  # the errors' line alone: the term breaks its promise
    new_line, record, factor = combined_line(errors, terms, line, 2, rules, per_day, 1.0)
    assert factor > 1.0 and new_line == pytest.approx(line * factor)
    assert record["observed_per_day"] <= record["promised_ci95"][1]


def test_train_calibrates_the_term_with_the_line_and_calibrate_starts_again_from_its_fitted_limit(trained):
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.train import calibrate_bundle
    from tests.conftest import plant_frame

    bundle = trained[0]
    alerts = bundle.calibration["alerts"]
    assert bundle.level is not None and alerts["level_factor"] == round(bundle.level.calibrated, 6)
    assert alerts["threshold"] == pytest.approx(alerts["error_threshold"] * bundle.level.calibrated)
    held = series_from_frame(plant_frame(rows=2000, channels=3, seed=5), "held", policy=bundle.cleaning)
    once = calibrate_bundle(bundle, held)
    twice = calibrate_bundle(once, held)
    assert once.level.limit == bundle.level.limit  # the fitted limit is kept; the factor is the line's
    assert twice.level.calibrated == pytest.approx(once.level.calibrated, rel=1e-12)
    assert twice.threshold_ == pytest.approx(once.threshold_, rel=1e-12)


def test_a_combined_line_below_the_errors_own_is_not_taken():
    """The term only adds crossings; a combined line under the error's (the estimate's noise) would
    lower the error's line too and break its promise: the error's line stays, the observed count is
    the combined score's."""
    from sensorguard.training.promise import alert_threshold, combined_line

    rng = np.random.default_rng(0)
    errors = [np.convolve(rng.exponential(1.0, 4000), np.ones(4) / 4, mode="valid")]
    line, alone = alert_threshold(errors, 2, AlertRules(), 2000.0, 1.0)
    terms = [np.full(len(errors[0]), 0.2)]  # (a floor under the errors: it changes their autocorrelation)
    raw, _ = alert_threshold([np.maximum(errors[0] / line, 0.2)], 2, AlertRules(), 2000.0, 1.0)
    assert raw < 1.0  # (the case: the combined score's own line is under the error's)
    combined, record, factor = combined_line(errors, terms, line, 2, AlertRules(), 2000.0, 1.0)
    assert factor == 1.0 and combined == line and "error's kept" in record["level_note"]
    assert record["promised_ci95"] == alone["promised_ci95"]

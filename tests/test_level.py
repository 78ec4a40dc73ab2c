"""The level term (service/level.py, training/level_fit.py): fit, bundle, judge, state, attribution."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from sensorguard.service.alerts import AlertRules, AlertState, judge, judge_rows
from sensorguard.service.bundle import BundleError, save_bundle
from sensorguard.service.bundle_loading import load_bundle
from sensorguard.service.drift import DriftState
from sensorguard.service.level import LevelMonitor, LevelRows, top_channels
from sensorguard.service.state_entry import StateError, decode_asset, encode_asset
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
        assert np.isfinite(monitor.term(rows[-8:][np.isfinite(rows[-8:]).all(axis=1)], DriftState())), case
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
    assert loaded is not None and loaded.to_dict() == monitor.to_dict()  # every field (limit and loadings alone
    assert loaded.q_limit > 0 and loaded.q_channels is not None  # passed a monitor saved with no mean: a test audit)
    for name in ("mean", "scale", "loadings", "eigen"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(monitor, name))
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
    term = monitor.term(rows, DriftState())
    shares = monitor.contributions(rows, DriftState())
    assert term > 1.0 and (shares >= 0).all()
    assert shares.sum() == pytest.approx(term, rel=1e-9)
    assert top_channels(shares, ("a", "b", "c"))[0]["name"] == "c"


def test_the_term_is_taken_about_the_assets_level():
    monitor = monitor_of()
    rows = np.full((2, 3), 2.0)
    assert monitor.term(rows, DriftState()) == pytest.approx(3.0)  # 3 x 2^2 / 4 about the training mean
    assert monitor.term(rows, DriftState(level=(2.0, 2.0, 2.0))) == 0.0
    assert monitor.term(rows, DriftState(level=(1.0, 2.0))) == pytest.approx(3.0)  # another count: the mean
    assert math.isnan(monitor.term(np.array([[1.0, np.nan, 0.0]]), DriftState()))  # nothing to judge


def test_a_level_learned_under_other_channels_is_not_read_as_this_models():
    """A daemon restarted with a model of the same channels in another order (a CSV's columns
    swapped) keeps each asset's saved state: read as its own, the level made every window a fault."""
    ab = replace(monitor_of(2), channels=("a", "b"))
    ba = replace(monitor_of(2), channels=("b", "a"))
    learned = ab.step(DriftState(), np.array([[30.0, 0.0]] * 5000))  # the level went to a = 30
    assert learned.level_key == ab.key != ba.key and learned.level[0] > 29
    rows = np.array([[30.0, 0.0]])
    assert ab.term(rows, learned) < 0.01  # about its own level
    assert ba.term(rows, learned) == pytest.approx(ba.term(rows, DriftState()))  # the training mean instead
    assert decode_asset(encode_asset(AlertState(), learned))[1] == learned  # the key is saved with it


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


def test_a_term_that_adds_no_alert_keeps_its_fitted_line():
    from sensorguard.training.promise import alert_threshold, combined_line

    rng = np.random.default_rng(0)
    errors = [np.convolve(rng.exponential(1.0, 4000), np.ones(4) / 4, mode="valid")]
    line, alone = alert_threshold(errors, 2, AlertRules(), 2000.0, 1.0)
    terms = [np.full(len(errors[0]), 0.5)]  # under the line everywhere: it adds no alert
    record, factor = combined_line(errors, terms, line, alone, 2, AlertRules())
    assert factor == 1.0 and record["threshold"] == line
    assert record["promised_ci95"] == alone["promised_ci95"]


def test_a_term_that_raises_on_held_out_normal_rows_has_its_line_lifted_just_enough():
    """Held-out normal windows whose term passes the line now and then (a plant that wandered): the
    term's line goes up by the smallest factor at which the combined score raises no more alerts
    there than the error alone did; the error's line and promise stay."""
    from sensorguard.training.promise import _observed, alert_threshold, combined_line

    rng = np.random.default_rng(1)
    n, rules = 20_000, AlertRules()
    errors = [np.convolve(rng.exponential(1.0, n + 3), np.ones(4) / 4, mode="valid")]
    terms = [np.convolve(rng.exponential(0.5, n + 19), np.ones(20) / 20, mode="valid") * 2.2]
    line, alone = alert_threshold(errors, 2, rules, 2000.0, 1.0)
    days = alone["calibration_days"]

    def raised(factor: float) -> int:
        return _observed([np.maximum(errors[0] / line, terms[0] / factor)], 1.0, 2, rules, days)["observed_alerts"]

    assert raised(1.0) > alone["observed_alerts"]  # the term's own false alerts
    record, factor = combined_line(errors, terms, line, alone, 2, rules)
    assert factor > 1.0 and record["threshold"] == line and record["promised_per_day"] == alone["promised_per_day"]
    assert record["observed_alerts"] == raised(factor) <= alone["observed_alerts"]
    assert raised(factor / 1.01) > alone["observed_alerts"]  # the smallest such factor


def test_train_calibrates_the_term_with_the_line_and_calibrate_starts_again_from_its_fitted_limit(trained):
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.line import calibrate_bundle
    from tests.conftest import plant_frame

    bundle = trained[0]
    assert any(line.startswith("level term      T^2 in ") for line in trained[1].lines())  # said in the summary
    alerts = bundle.calibration["alerts"]
    assert bundle.level is not None and alerts["level_factor"] == round(bundle.level.calibrated, 6)
    assert alerts["threshold"] == bundle.threshold_  # (the error's line: the term's has its own factor)
    held = series_from_frame(plant_frame(rows=2000, channels=3, seed=5), "held", policy=bundle.cleaning)
    once = calibrate_bundle(bundle, held)
    twice = calibrate_bundle(once, held)
    assert once.level.limit == bundle.level.limit  # the fitted limit is kept; the factor is the line's
    assert twice.level.calibrated == pytest.approx(once.level.calibrated, rel=1e-12)
    assert twice.threshold_ == pytest.approx(once.threshold_, rel=1e-12)



def test_calibration_terms_follow_the_level_as_the_daemon_does():
    """The held-out windows' terms are taken about a level that follows their rows from the training
    mean, as live: a block that sits 3 standard deviations off the mean reads as off at its start
    and as normal once the level has followed it (about the mean alone it read as wandering, and
    the 10,000-row plant's term line went up 2.2x)."""
    from sensorguard.training.level_fit import window_terms

    monitor = monitor_of(2, limit=2.0, follow=50.0)
    block = np.full((600, 2), 3.0)
    terms = window_terms(monitor, block, np.zeros(600, dtype=int), 4)
    assert terms[:3].tolist() == [0.0, 0.0, 0.0]  # no full focus yet
    assert terms[3] == pytest.approx(9.0, rel=0.1) and terms[-1] < 1e-3
    segments = np.r_[np.zeros(300, dtype=int), np.ones(300, dtype=int)]  # each segment from the mean (another
    # machine's rows, or after a gap: live the level carries over a gap, so this reads higher, never lower)
    assert window_terms(monitor, block, segments, 4)[303] == pytest.approx(terms[3])


def test_the_daemon_hands_the_term_the_same_rows_offline_does_to_the_last_bit():
    """Live, the window's newest rows were a strided view of the buffer; offline, a slice of the
    series: the same values summed in another order, and 1 term in 17 differed in its last bit
    (found by review): at a score of exactly 1.0 live and offline could part."""
    from sensorguard.service.asset_buffer import DueWindow
    from sensorguard.service.batch_scoring import term_rows

    rng = np.random.default_rng(3)
    monitor = fit_level(rng.normal(size=(2000, 52)) * rng.uniform(0.1, 100, 52))  # (TEP's 52 channels: the
    bundle = SimpleNamespace(level=monitor, scored_samples=4)  # vectorized sums differ at this width)
    for _ in range(300):
        series = rng.normal(size=(32, 52)) * rng.uniform(0.1, 100, 52)
        live = term_rows(DueWindow("a", 0.0, np.ascontiguousarray(series.T), 0.0), bundle)
        offline = LevelRows(monitor, series, 4).at(31)
        state = DriftState(level=tuple(rng.normal(size=52).tolist()))
        assert monitor.term(live, state) == monitor.term(offline, state)
        assert monitor.step(state, live) == monitor.step(state, offline)


def test_the_drift_rule_learns_from_the_error_its_baseline_came_from():
    """The drift baseline is the error's (``line.drift_rule``): learning from the larger of error
    and term widened the line on normal data (1.15x on a stationary stream, found by review)."""
    from sensorguard.service.drift import DriftRule, drift_step

    rule = DriftRule(baseline=math.log(0.1))
    monitor = monitor_of(limit=10.0)
    rows = np.full((4, 3), 1.3)  # term 0.507, over the error's 0.1, under the line
    _, drift, _, score = judge(AlertState(), DriftState(), 0.1, 0.0, AlertRules(), rule, level=monitor, rows=rows)
    assert score == pytest.approx(0.507) and drift.offset == drift_step(DriftState(), 0.1, rule).offset


def test_on_large_data_the_monitor_is_not_fitted_on_the_calibration_block(tmp_path):
    """Above the cross-fitting size the line is calibrated on the last block: a monitor fitted on
    it too read its terms as in-sample, too low, and set the term's line too low (found by review)."""
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.splits import split_by_time
    from sensorguard.training.train import TrainOptions, train_bundle
    from tests.conftest import plant_frame

    frame = plant_frame(rows=6000, channels=3, seed=2)
    frame.loc[4800:, ["c0", "c1", "c2"]] += 5.0  # the calibration block sits elsewhere
    data = series_from_frame(frame, "big")
    bundle, _ = train_bundle(data, TrainOptions(max_epochs=1, progress=False, seed=0))
    splits = split_by_time(data)
    fitted_on = np.vstack([splits.train.values, splits.validation.values])
    np.testing.assert_allclose(bundle.level.mean, fitted_on.mean(axis=0))


# --- the Q part: the residual outside the principal subspace -----------------------------------------------


def test_a_row_that_breaks_the_channels_correlation_is_seen_by_q_not_by_t2():
    """Three channels that move together: a row where one leaves the others, by a step no larger
    than their usual joint swing, stays inside T^2's limit and far outside Q's (the classic
    monitor's residual); the term is the larger part, and its shares name the channel."""
    rows = correlated(600)
    monitor = fit_level(rows)
    assert monitor is not None and monitor.q_limit > 0
    broken = rows[-4:].copy()
    broken[:, 1] += 5.0  # 2.5 of channel 1's standard deviations, off the line the three share
    t2, q, _, _ = monitor._parts(broken, DriftState())
    assert t2 < 1.0 < q and monitor.term(broken, DriftState()) == q
    shares = monitor.contributions(broken, DriftState())
    assert shares.sum() == pytest.approx(q, rel=1e-9)
    assert top_channels(shares, ("a", "b", "c"))[0]["name"] == "b"
    assert replace(monitor, q_limit=0.0).term(broken, DriftState()) == pytest.approx(t2)  # (before format 6)


def test_q_has_no_part_where_it_cannot_be_measured():
    """One channel (every direction kept: Q is 0 up to rounding) has no Q part; a channel constant
    in training is left out of Q: its scale is 1 in raw units, so a step of 1,000 pascals read as a
    residual of a million (the reconstruction error, with the scaler's floors, watches it)."""
    assert fit_level(correlated(600, channels=1)).q_limit == 0.0
    rows = np.hstack([correlated(600), np.full((600, 1), 101_325.0)])
    monitor = fit_level(rows)
    assert monitor.q_limit > 0 and monitor.q_channels.tolist() == [True, True, True, False]
    moved = rows[-4:].copy()
    moved[:, 3] += 1000.0
    assert monitor.q(moved - monitor.mean).tolist() == monitor.q(rows[-4:] - monitor.mean).tolist()


@pytest.mark.parametrize(("case", "column"), [
    ("a valve opened for the last 15 % of the rows", np.r_[np.zeros(1700), np.full(300, 1.0)]),
    ("a channel that moves in one stretch only", np.r_[np.zeros(900), np.linspace(0, 1, 100), np.zeros(1000)]),
    ("a setpoint that moves now and then (spiky)", np.where(np.arange(2000) % 100 == 7, 50.5, 50.0)),
])
def test_q_leaves_out_channels_the_folds_cannot_measure_and_stays_quiet_on_its_training_rows(case, column):
    """Found by review: a channel constant in the fold fit without its stretch was left out of the
    out-of-fold Q the limit came from, and counted by the served monitor: 15 % of the training
    windows' terms were over the line. A spiky channel's rare moves are tens of its standard
    deviations: terms of 47 on normal rows. Q now leaves such channels out in every fold alike."""
    rows = np.hstack([correlated(2000, channels=6), column[:, None]])
    monitor = fit_level(rows)
    assert monitor.q_limit > 0 and monitor.q_channels.tolist() == [True] * 6 + [False], case
    q_parts = np.array([monitor._parts(rows[i - 4 : i], DriftState())[1] for i in range(4, 2001, 4)])
    assert np.mean(q_parts > 1.0) < 0.01 and q_parts.max() < 2.0, case  # (T^2's part is as before)


def test_the_q_limit_is_out_of_fold_and_kept_in_the_bundle(tiny_bundle, tmp_path):
    from sensorguard.service.level import Q_SHARE, QUANTILE

    rows = correlated(600)
    monitor = fit_level(rows)
    in_sample = float(np.quantile(monitor.q(rows - monitor.mean), QUANTILE))
    assert monitor.q_limit > Q_SHARE * in_sample  # out of fold: the parts the fit did not see read higher
    path = save_bundle(replace(tiny_bundle, level=monitor), tmp_path / "b")
    loaded = load_bundle(path).level
    assert loaded.q_limit == monitor.q_limit and loaded.q_channels.tolist() == [True, True, True]
    meta = json.loads((path / "bundle.json").read_text())
    assert meta["format_version"] == 6
    (path / "bundle.json").write_text(json.dumps({**meta, "level": {**meta["level"], "q_channels": [1, 1]}}))
    with pytest.raises(BundleError, match="q_channels must be a list of true/false"):
        load_bundle(path)
    (path / "bundle.json").write_text(json.dumps({**meta, "level": {**meta["level"], "q_channels": [True]}}))
    with pytest.raises(BundleError, match="q_channels has shape"):
        load_bundle(path)
    for value, said in ((None, "null"), (True, "true/false"), ("1.5", "a string")):  # (float() took true as 1.0)
        (path / "bundle.json").write_text(json.dumps({**meta, "level": {**meta["level"], "q_limit": value}}))
        with pytest.raises(BundleError, match=f"q_limit must be a number, got {said}"):
            load_bundle(path)
    edited = {k: v for k, v in meta["level"].items() if k != "q_channels"}  # a hand edit: Q would count every channel
    (path / "bundle.json").write_text(json.dumps({**meta, "level": edited}))
    with pytest.raises(BundleError, match="q_limit needs q_channels"):
        load_bundle(path)
    del meta["level"]["q_limit"]  # a format 5 bundle: no Q part, scored as before
    (path / "bundle.json").write_text(json.dumps({**meta, "format_version": 5}))
    assert load_bundle(path).level.q_limit == 0.0
    with pytest.raises(ValueError, match="q_limit >= 0"):
        replace(monitor, q_limit=-1.0)


def test_calibration_terms_hold_the_q_part_as_the_daemon_judges_it():
    """``window_terms`` (calibration's) and ``LevelRows.at`` through ``term`` (the daemon's and
    score's) agree on a series whose later rows break the correlation."""
    from sensorguard.training.level_fit import window_terms

    monitor = replace(fit_level(correlated(600)), follow=1e12)  # (a fixed level: the two follow it alike)
    series = correlated(200, seed=4)
    series[120:, 2] += 6.0
    terms = window_terms(monitor, series, np.zeros(200, dtype=int), 4)
    live = [monitor.term(LevelRows(monitor, series, 4).at(i), DriftState()) for i in range(3, 200)]
    np.testing.assert_allclose(terms[3:], live, rtol=1e-9)
    assert terms[130:].min() > 1.0 > terms[20:110].max()


def test_the_terms_arithmetic_on_a_monitor_worked_by_hand():
    """T^2 and Q pinned on a two-channel monitor (an audit: the calibrated factor dropped from either
    line, or the eigenvalue not square-rooted, passed every test). One kept direction, channel a, of
    variance 4; T^2 line 2 x 3, Q line 5 x 3."""
    monitor = LevelMonitor(np.zeros(2), np.ones(2), np.array([[1.0], [0.0]]), np.array([4.0]), limit=2.0,
                           calibrated=3.0, channels=("a", "b"), q_limit=5.0)
    assert monitor.term(np.array([[2.0, 0.0]]), DriftState()) == pytest.approx((2.0 / 2.0) ** 2 / 6.0)
    assert monitor.term(np.array([[0.0, 3.0]]), DriftState()) == pytest.approx(9.0 / 15.0)
    assert monitor.line == 6.0 and monitor.q_line == 15.0
    # a row that is not finite moves no level (a NaN level was the term's NaN for good: an audit)
    learned = DriftState(level=(1.0, 1.0), level_key=monitor.key)
    assert monitor.step(learned, np.array([[math.nan, 0.0]])).level == (1.0, 1.0)
    assert monitor.step(DriftState(), np.array([[math.inf, 0.0]])).level == (0.0, 0.0)
    assert monitor.step(learned, np.array([[3.0, 3.0]])).level[0] == pytest.approx(1.0 + 2.0 / monitor.follow)


def test_the_term_sets_the_score_whenever_it_is_the_larger_on_every_row():
    """An error's score of 0.4 under a term of 0.507 is the term's, judged or not (an audit: the term
    winning only over twice the score, or left out of the rows between judged windows in score's
    column, passed every test)."""
    monitor = monitor_of(limit=10.0, follow=1e12)
    rows = np.full((4, 3), 1.3)  # term 0.507
    assert judge(AlertState(), DriftState(), 0.4, 0.0, AlertRules(), None, level=monitor, rows=rows)[3] == \
        pytest.approx(0.507)
    mask = np.zeros(8, dtype=bool)
    mask[3] = True
    _, adjusted, _ = judge_rows(np.full(8, 0.1), mask, np.arange(8.0), AlertRules(),
                                level=LevelRows(monitor, np.full((8, 3), 1.3), 4))
    assert adjusted[3:] == pytest.approx([0.507] * 5)


import math

import numpy as np
import pytest

from sensorguard.training.calibrate import pick_threshold


@pytest.fixture
def errors():
    return np.random.default_rng(0).exponential(1.0, 50_000)


def test_quantile_hits_the_target_rate(errors):
    threshold, record = pick_threshold(errors, "quantile", 0.01)
    assert record["observed_exceedance"] == pytest.approx(0.01, rel=0.05)
    assert threshold == pytest.approx(np.log(100), rel=0.05)


def test_pot_extrapolates_beyond_the_data(errors):
    # exponential tail: true 1e-6 quantile is ln(1e6) = 13.8, beyond the 50k samples' reach
    threshold, record = pick_threshold(errors, "pot", 1e-6)
    assert record["method"] == "pot"
    assert threshold == pytest.approx(np.log(1e6), rel=0.15)
    assert threshold > errors.max()


def test_pot_falls_back_to_quantile_on_few_windows():
    small = np.random.default_rng(0).exponential(1.0, 200)
    threshold, record = pick_threshold(small, "pot", 1e-4)
    assert record["method"] == "quantile" and "fallback" in record["params"]
    assert threshold == pytest.approx(np.quantile(small, 1 - 1e-4))


def test_mean_std_uses_gaussian_tail():
    normal = np.random.default_rng(0).normal(10, 2, 100_000)
    threshold, record = pick_threshold(normal, "mean_std", 0.0013499)
    assert record["params"]["k"] == pytest.approx(3.0, abs=0.01)
    assert threshold == pytest.approx(16.0, rel=0.01)


def test_record_for_bundle(errors):
    _, record = pick_threshold(errors, "quantile", 0.001, windows_per_day=86400)
    assert record["expected_false_alarms_per_day"] == pytest.approx(86.4)
    assert len(record["errors_sample"]) == 2000
    assert set(record["error_quantiles"]) >= {"0.5", "0.99", "max"}
    # the values, not only the keys (zeros passed: a test audit): exponential(1) quantiles, and a
    # sorted sample of the errors (report draws it)
    quantiles = record["error_quantiles"]
    assert quantiles["0.5"] == pytest.approx(math.log(2), rel=0.03) and quantiles["0.99"] == pytest.approx(
        math.log(100), rel=0.05)
    assert quantiles["max"] == errors.max() and quantiles["mean"] == pytest.approx(1.0, rel=0.02)
    sample = np.array(record["errors_sample"])
    assert (np.diff(sample) >= 0).all() and np.isin(sample, np.round(errors, 6)).mean() > 0.5
    assert np.median(sample) == pytest.approx(math.log(2), rel=0.1)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"method": "magic"}, "method"), ({"false_alarm_rate": 1.5}, r"\(0, 1\)"), ({"false_alarm_rate": 0}, "rate")],
)
def test_bad_arguments(errors, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pick_threshold(errors, **kwargs)


def test_too_few_windows():
    with pytest.raises(ValueError, match="at least 10"):
        pick_threshold(np.ones(5), "quantile", 0.01)


def test_channel_weights_even_out_typical_errors_with_a_floor():
    from sensorguard.training.calibrate import WEIGHT_FLOOR, channel_weights

    rng = np.random.default_rng(0)
    typical = np.array([1.0, 0.5, 2.0, 1e-6])  # the last channel barely moved in held-out data
    errors = [typical * rng.exponential(1.0, (n, 4)) / np.log(2) for n in (400, 300)]
    errors[0][5, 2] = np.nan  # a window without a score is skipped, not propagated
    w = channel_weights(errors)
    assert w.mean() == pytest.approx(1.0)
    stacked = np.concatenate(errors)
    means = stacked[np.isfinite(stacked).all(axis=1)].mean(axis=0)
    expected = 1.0 / np.maximum(means, WEIGHT_FLOOR * np.median(means))
    np.testing.assert_allclose(w, expected / expected.mean(), rtol=1e-12)
    products = means * w  # each channel's typical error counts the same ...
    assert products[:3] == pytest.approx(np.full(3, products[0]), rel=1e-9)
    assert w[3] < 10 * w[1]  # ... except the quiet one, stopped at the floor (unfloored: 500,000x)
    with pytest.raises(ValueError, match="no finite"):
        channel_weights([np.full((3, 4), np.nan)])


def test_a_channel_that_spikes_as_part_of_normal_work_is_not_weighed_up():
    """Weighted by its median error (near 0: it sits still between spikes), a channel with normal
    rare spikes got the floor's weight, ten times a process channel's, and each spike became the
    day's largest score: the line rose above every process fault (a simulated server: alert F1
    0.01). Weighted by its mean error, it weighs no more than the process channels."""
    from sensorguard.training.calibrate import channel_weights

    rng = np.random.default_rng(0)
    process = rng.exponential(1.0, (4000, 3))
    spiky = np.where(rng.random(4000) < 1 / 400, rng.uniform(100, 1000, 4000), 1e-3 * rng.random(4000))
    w = channel_weights([np.c_[process, spiky]])
    assert w[3] < w[:3].min()
    assert w[:3].max() / w[:3].min() < 1.1  # the process channels still count alike


def test_a_spiky_channels_normal_extremes_count_as_much_as_a_typical_channels():
    """Weighted by its mean error alone, a counter that spikes as part of normal work held 80-94 %
    of the largest normal windows of the simulated servers: the line sat above most process faults.
    A channel the scaler found spiky is capped where the mean of its largest 1 % of errors, weighted,
    is the median other channel's; the others keep their relative weights, and no weight rises."""
    from sensorguard.training.calibrate import TAIL_SHARE, channel_weights

    rng = np.random.default_rng(0)
    process = rng.exponential(1.0, (4000, 3)) * [1.0, 2.0, 0.5]
    counter = np.where(rng.random(4000) < 1 / 400, rng.uniform(100, 1000, 4000), 1e-3 * rng.random(4000))
    errors = np.c_[process, counter, rng.uniform(0.9, 1.1, 4000)]
    plain = channel_weights([errors])
    spiky = np.array([False, False, False, True, True])  # the last one is flagged but its extremes are small
    w = channel_weights([errors], spiky)
    k = int(np.ceil(TAIL_SHARE * 4000))
    extremes = np.sort(errors, axis=0)[-k:].mean(axis=0)
    reach = w * extremes
    assert reach[3] == pytest.approx(np.median(reach[:3]), rel=1e-9)
    assert reach[3] < plain[3] * extremes[3] / plain[:3].mean() * w[:3].mean() / 5  # cut at least 5x
    np.testing.assert_allclose(w[[0, 1, 2, 4]] / w[0], plain[[0, 1, 2, 4]] / plain[0], rtol=1e-12)
    np.testing.assert_array_equal(channel_weights([errors], None), plain)
    np.testing.assert_array_equal(channel_weights([errors], np.ones(5, bool)), plain)  # nothing to compare with
    np.testing.assert_array_equal(channel_weights([errors], np.zeros(5, bool)), plain)
    # found by review: with most other channels near-flat, their median was a flat one's, and the
    # counter's weight fell to 2e-6 of a process channel's; the reference is floored as weights are
    flat = np.c_[errors[:, :4], 1e-6 * rng.exponential(1.0, (4000, 6))]
    w = channel_weights([flat], np.array([False, False, False, True] + [False] * 6))
    assert w[3] / w[:3].min() > 1e-3, w


def test_the_line_reads_the_spiky_channels_from_the_bundle(tiny_bundle):
    """``threshold_bundle`` (train's and calibrate's line) takes the spiky channels from the scaler's
    record in the bundle: the counter's normal spikes no longer lead nearly all the largest errors,
    the line falls to the process channels' level, and the record says how the weights were capped."""
    from dataclasses import replace

    from sensorguard.training.line import threshold_bundle
    from sensorguard.training.scaling import spiky_channels

    rng = np.random.default_rng(1)
    counter = np.where(rng.random(6000) < 1 / 100, rng.uniform(100, 1000, 6000), 1e-3 * rng.random(6000))
    pieces = [np.c_[rng.exponential(1.0, (6000, 2)), counter]]
    plain = threshold_bundle(tiny_bundle, pieces, {})
    flagged = replace(tiny_bundle, training={"scaling": {"set_by": ["spread", "floor", "spikes"]}})
    assert spiky_channels(flagged.training, 3).tolist() == [False, False, True]
    assert spiky_channels(tiny_bundle.training, 3) is None and spiky_channels(flagged.training, 4) is None
    capped = threshold_bundle(flagged, pieces, {})
    led, led_capped = (dict(b.calibration["largest_errors"]["shares"]).get("c", 0.0) for b in (plain, capped))
    assert led > 0.9 and led_capped < led - 0.3, (led, led_capped)  # the spikes share with the process extremes
    assert capped.threshold_ < plain.threshold_ / 2  # (22.6 -> 3.9: the process channels' extremes)
    assert "spiky channel's weight at most" in capped.calibration["channel_weights"]
    assert "spiky" not in plain.calibration["channel_weights"]
    every = threshold_bundle(replace(tiny_bundle, training={"scaling": {"set_by": ["spikes"] * 3}}), pieces, {})
    assert every.threshold_ == plain.threshold_ and "spiky" not in every.calibration["channel_weights"]
    for bad in ({"scaling": "spikes"}, {"scaling": {"set_by": "abc"}}, {"scaling": None}, {}):
        assert spiky_channels(bad, 3) is None, bad  # a malformed bundle.json: weighed as before, no crash


@pytest.mark.parametrize("flat", [4, 6, 9])
def test_the_weight_floor_holds_when_most_channels_are_flat(flat):
    """Found by review: the floor was a share of the channels' median, so with half the channels or
    more near-flat it was near 0 itself: 6 flat channels of 10 weighed 480,000 times the live ones."""
    from sensorguard.training.calibrate import WEIGHT_FLOOR, channel_weights

    rng = np.random.default_rng(0)
    typical = np.r_[np.full(10 - flat, 0.5), np.full(flat, 1e-6)]
    w = channel_weights([typical * rng.exponential(1.0, (5000, 10))])
    assert w.max() / w.min() <= 1 / WEIGHT_FLOOR**2 * 1.01  # a flat channel at most 100x the live ones
    if flat < 5:  # the median is a live channel's: the floor is a tenth of it, as before
        assert w.max() / w.min() == pytest.approx(1 / WEIGHT_FLOOR, rel=0.05)


def test_the_line_names_the_channels_that_lead_the_largest_held_out_errors():
    """Why a fault went unseen is a question of what set the line: a counter that spikes as part of
    normal work leads every held-out window its spikes reach, and the train summary names it."""
    from sensorguard.training.calibrate import LEADER_WINDOWS, line_leaders

    rng = np.random.default_rng(0)
    process = rng.exponential(1.0, (4001, 3))
    spiky = np.where(rng.random(4001) < 1 / 200, rng.uniform(50, 100, 4001), 0.0)
    errors = np.c_[process, spiky]
    errors[np.flatnonzero(spiky)[0], 0] = np.nan  # a window without a score is skipped, spike and all
    leaders = line_leaders([errors[:2500], errors[2500:]], ("a", "b", "c", "counter"))
    k = max(LEADER_WINDOWS[0], int(np.ceil(LEADER_WINDOWS[1] * 4000)))
    assert leaders["windows"] == k == 40  # 1 % of the 4,000 finite windows (41 had the NaN one counted)
    spikes = int((spiky > 0).sum()) - 1
    assert 10 < spikes < k  # every spike window is among the largest, and process windows fill the rest
    assert leaders["shares"][0] == ["counter", pytest.approx(spikes / k)]

    even = line_leaders([rng.exponential(1.0, (4000, 6))], tuple("abcdef"))
    shares = [share for _, share in even["shares"]]
    assert len(shares) == 3 and shares == sorted(shares, reverse=True) and max(shares) < 0.5  # alike: shared
    assert line_leaders([rng.exponential(1.0, (100, 1))], ("only",)) is None
    assert line_leaders([np.full((5, 2), np.nan)], ("a", "b")) is None
    assert line_leaders([], ("a", "b")) is None
    with pytest.raises(ValueError, match="3 channels for 4"):
        line_leaders([process], ("a", "b", "c", "counter"))


def test_calibration_records_and_the_summary_prints_what_set_the_line(trained, tmp_path):
    from dataclasses import replace

    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.bundle_loading import load_bundle
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.line import calibrate_bundle
    from sensorguard.training.train import TrainSummary
    from tests.conftest import plant_frame

    bundle = trained[0]
    frame = plant_frame(rows=3000, channels=3, seed=7)
    spiky = frame.copy()
    spiky.loc[::150, "c2"] += 6 * frame["c2"].std()  # one-row spikes, normal here
    calibrated = calibrate_bundle(bundle, series_from_frame(spiky, "spiky", policy=bundle.cleaning))
    leaders = calibrated.calibration["largest_errors"]
    assert leaders["shares"][0][0] == "c2" and leaders["shares"][0][1] > 0.5
    plain = calibrate_bundle(bundle, series_from_frame(frame, "plain", policy=bundle.cleaning))
    assert dict(plain.calibration["largest_errors"]["shares"]).get("c2", 0) < leaders["shares"][0][1]  # the spikes
    saved = load_bundle(save_bundle(calibrated, tmp_path / "b")).calibration["largest_errors"]
    assert saved == leaders  # largest first after a round trip (bundle.json sorts keys)
    summary = TrainSummary(rows={"train": 1}, window=bundle.window, hop=bundle.hop, latent=1, epochs=1,
                           best_val_loss=0.1, naive_val_loss=1.0, pca_val_loss=0.2, linear=1, threshold=1.0,
                           method="alerts", false_alarms_per_day=1.0, promise=None, seconds=1.0, leaders=leaders)
    line = next(ln for ln in summary.lines() if ln.startswith("largest errors"))
    assert line.startswith(f"largest errors  led by c2 {leaders['shares'][0][1]:.0%}")
    assert f"the {leaders['windows']} largest" in line
    assert not any(ln.startswith("largest errors") for ln in replace(summary, leaders=None).lines())


def test_calibration_leaves_out_windows_with_a_sensor_fault(trained):
    """A dead sensor in the held-out data is no normal behaviour to set the line on: its windows are
    left out, so the threshold is the one the same data give without them."""
    from dataclasses import replace

    from sensorguard.training.data import series_from_frame
    from sensorguard.training.line import calibrate_bundle
    from tests.conftest import plant_frame

    bundle = trained[0]
    frame = plant_frame(rows=3000, channels=3, seed=7)
    dead = frame.copy()
    dead.loc[1000:1599, "c1"] = -9999.0  # out of range: held at its last plausible value, left out
    policy, sensors = bundle.cleaning, bundle.sensors
    faulty = series_from_frame(dead, "dead", policy=policy, sensors=sensors)
    assert faulty.faulted.any()
    calibrated = calibrate_bundle(bundle, faulty)
    left_out = calibrated.calibration["data"]["sensor_fault_windows_left_out"]
    assert left_out >= 600
    blind = calibrate_bundle(bundle, replace(faulty, faulted=None))  # as before: the held windows count
    without = frame.drop(index=range(1000 - bundle.window + 1, 1600))  # those windows' rows gone: a gap
    reference = calibrate_bundle(bundle, series_from_frame(without, "clean", policy=policy, sensors=sensors))
    assert calibrated.threshold_ == pytest.approx(reference.threshold_, rel=0.05)
    assert blind.threshold_ > 10 * calibrated.threshold_  # the held dead sensor would set the line


def test_cross_fitted_errors_leave_out_windows_with_a_sensor_fault(trained):
    """The cross-fitted calibration of small data left faulted windows in, where calibrate_bundle
    leaves them out (found by review); both now cut the errors the same way."""
    from dataclasses import replace

    from sensorguard.training.crossfit import out_of_fold_errors
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.train import TrainOptions
    from tests.conftest import plant_frame

    bundle = trained[0]
    frame = plant_frame(rows=1000, channels=3, seed=8)
    frame.loc[300:399, "c1"] = -9999.0
    data = series_from_frame(frame, "dead", policy=bundle.cleaning, sensors=bundle.sensors)
    assert data.faulted.any()
    options = TrainOptions(progress=False, seed=0)

    def windows(d):
        return sum(int(np.isfinite(p).all(axis=1).sum()) for p in out_of_fold_errors(d, bundle, options, epochs=1))

    kept, blind = windows(data), windows(replace(data, faulted=None))
    assert blind - kept >= 100  # the 100 faulted rows' windows (and those reaching back into them) left out



def test_a_window_rate_line_on_a_tied_value_moves_just_above_it():
    """An idle stretch's one error level at the quantile: every repeat scored exactly 1.0 and
    alerted, 0.67 % of windows against 0.1 % asked (found by review)."""
    errors = np.r_[np.zeros(1490), np.full(10, 0.5)]
    threshold, record = pick_threshold(errors, "pot", 1e-3)
    assert threshold > 0.5 and record["observed_exceedance"] <= 1e-3

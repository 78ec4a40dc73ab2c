"""Learning itself: the trained model separates injected faults from normal data it never saw."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from sensorguard.training.data import SensorData, load_frame
from sensorguard.training.simulate import simulate
from sensorguard.training.train import TrainOptions, default_alert_hop, train_bundle


def as_data(frame, channels):
    times = (frame["timestamp"] - frame["timestamp"].iloc[0]).dt.total_seconds().to_numpy() + 1.7e9
    labels = {"anomaly": frame["anomaly"].to_numpy()} if "anomaly" in frame else {}
    return SensorData(frame[list(channels)].to_numpy(float), times, np.zeros(len(frame), int), tuple(channels),
                      1.0, labels)


@pytest.fixture(scope="module")
def learned():
    normal = simulate(rows=8000, channels=4, seed=0)
    channels = [c for c in normal.columns if c not in ("timestamp", "anomaly")]
    bundle, summary = train_bundle(as_data(normal, channels), TrainOptions(max_epochs=20, progress=False))
    return bundle, summary, channels


def test_separates_injected_faults_on_held_out_data(learned):
    from sensorguard.service.scorer import Scorer

    bundle, _, channels = learned
    test = as_data(simulate(rows=6000, channels=4, seed=7, anomalies=True), channels)
    scores = Scorer(bundle).score_series(test.values, test.segments).score
    ok = np.isfinite(scores)
    # a window is anomalous when any of the rows its score judges (its newest scored_samples) is labeled
    kernel = np.ones(bundle.scored_samples)
    labels = np.convolve(test.labels["anomaly"], kernel, mode="full")[: len(scores)] > 0
    auc = roc_auc_score(labels[ok], scores[ok])
    assert auc > 0.85, auc
    normal_rows = ok & ~labels
    assert np.mean(scores[normal_rows] >= 1) < 0.05
    assert np.mean(scores[labels & ok] >= 1) > 0.2


def test_fresh_normal_data_stays_below_the_line(learned):
    from sensorguard.service.scorer import Scorer

    bundle, _, channels = learned
    fresh = as_data(simulate(rows=4000, channels=4, seed=11), channels)
    scores = Scorer(bundle).score_series(fresh.values, fresh.segments).score
    assert np.nanmean(scores >= 1) < 0.02
    assert np.nanmedian(scores) < 0.5


def test_summary_and_bundle_record_what_was_chosen(learned):
    bundle, summary, channels = learned
    assert summary.window == bundle.window == 32 and summary.hop == 4
    assert summary.alert_hop == bundle.alert_hop == 2 and "2 while an alert is up" in summary.lines()[1]
    assert summary.rows == {"train": 4800, "validation": 1600, "calibration": 1600}
    assert 1 <= summary.epochs <= 20
    assert bundle.calibration["method"] == "alerts"
    promise = bundle.calibration["alerts"]
    assert promise["promised_per_day"] == 1.0 and promise["raise_after"] == 3 and promise["hop"] == 4
    assert promise["promised_ci95"][0] < 1.0 < promise["promised_ci95"][1]
    # 8000 rows calibrate on the newest 20% (cross-fitting is for small data)
    assert bundle.training["calibration_data"] == "the calibration block"
    assert "(the line from the calibration block)" in summary.lines()[0]
    assert "fold_scale_ratio" not in bundle.training["scaling"]  # no folds, no fold scales
    # the window-rate fit did not set this line: its rate and tail parameters are not recorded as if it had
    assert "false_alarm_rate" not in bundle.calibration and "params" not in bundle.calibration
    assert promise["calibration_days"] == pytest.approx(1600 / 86400, rel=0.05)
    assert bundle.training["validation_loss"]["autoencoder"] <= bundle.training["validation_loss"]["pca_same_rank"]
    assert bundle.training["rows"] == 8000 and bundle.training["channels"] == channels
    text = "\n".join(summary.lines())
    for word in ("rows per split", "window", "epochs", "yardsticks", "threshold", "false alerts", "promised"):
        assert word in text


def test_training_is_deterministic_for_a_seed(tmp_path):
    from tests.conftest import plant_frame

    path = tmp_path / "n.csv"
    plant_frame(rows=1200).to_csv(path, index=False)
    data = load_frame([path])
    options = TrainOptions(max_epochs=2, progress=False, seed=3)
    a, _ = train_bundle(data, options)
    b, _ = train_bundle(data, options)
    assert a.threshold_ == b.threshold_
    assert all(np.array_equal(a.state_dict[k].numpy(), b.state_dict[k].numpy()) for k in a.state_dict)


def test_small_data_shrinks_the_window(tmp_path):
    from tests.conftest import plant_frame

    path = tmp_path / "n.csv"
    plant_frame(rows=300).to_csv(path, index=False)
    bundle, summary = train_bundle(load_frame([path]), TrainOptions(max_epochs=3, progress=False))
    assert summary.window == 16 and bundle.window == 16


_THREADS_CHILD = """
import json, sys, torch
from sensorguard.training.data import load_frame
from sensorguard.training.train import TrainOptions, train_bundle
torch.set_num_threads(int(sys.argv[2]))
bundle, summary = train_bundle(load_frame([sys.argv[1]]), TrainOptions(max_epochs=8, progress=False, seed=3))
print(json.dumps([torch.get_num_threads(), summary.epochs, bundle.training["best_epoch"], bundle.threshold_]))
"""


def test_same_epochs_and_threshold_whatever_the_thread_count(tmp_path):
    """float32 sums differ with the thread count and moved early stopping; training runs on one thread.

    Each run is its own process (OpenMP's thread pool is set up once per process); passive waiting
    keeps two threads from spinning against each other on a busy 2-core machine.
    """
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import plant_frame

    path = tmp_path / "n.csv"
    plant_frame(rows=800).to_csv(path, index=False)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(root)}
    results = []
    for threads in (1, 2):
        out = subprocess.run([sys.executable, "-c", _THREADS_CHILD, str(path), str(threads)], env=env, cwd=root,
                             capture_output=True, text=True, timeout=600, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    (n1, e1, b1, t1), (n2, e2, b2, t2) = results
    assert (n1, n2) == (1, 2)
    assert (e1, b1) == (e2, b2)
    assert t2 == pytest.approx(t1, rel=0.02)


def test_summary_compares_with_naive_and_pca_and_starts_from_pca(tmp_path):
    from tests.conftest import plant_frame

    path = tmp_path / "n.csv"
    frame = plant_frame(rows=1200)
    frame["setpoint"] = 42.0  # constant through training: named in the summary
    frame.to_csv(path, index=False)
    auto = load_frame([path])  # detected channels leave a constant column out, and say so
    assert "setpoint" not in auto.channels and any("constant columns left out: setpoint" in n for n in auto.notes)
    named = load_frame([path], channels=[*auto.channels, "setpoint"])
    bundle, summary = train_bundle(named, TrainOptions(max_epochs=3, progress=False))
    assert auto.left_out == ("setpoint",) and bundle.ignored_columns == ()  # (a feed may send it: see test_daemon)
    assert bundle.training["calibration_data"].startswith("out-of-fold")  # small data: every row scored out of fold
    assert bundle.calibration["alerts"]["calibration_days"] == pytest.approx(1200 / 86400, rel=0.2)
    losses = bundle.training["validation_loss"]
    assert summary.best_val_loss == losses["autoencoder"] <= losses["pca_same_rank"]
    assert summary.linear == bundle.config.linear >= 1
    assert bundle.training["scaling"]["constant_in_training"] == ["setpoint"]
    text = "\n".join(summary.lines())
    assert "naive window means" in text and f"PCA of rank {summary.linear}" in text
    assert "constant in training: setpoint" in text
    # said as it is (a walk): a line under the largest value seen is no extrapolation, rank 0 no PCA
    from dataclasses import replace

    promise = {**summary.promise, "tail": "exponential", "margin": -0.4}
    text = "\n".join(replace(summary, promise=promise, linear=0).lines())
    assert "tail fitted: threshold 40% below the largest held-out raise value seen; a raise value: the" in text
    assert "PCA of rank 0" not in text and "no PCA yardstick: the model has no linear path" in text
    assert "tail extrapolated: threshold 25% above" in "\n".join(
        replace(summary, promise={**promise, "margin": 0.25}).lines())


def _one_channel(rows: int, seed: int) -> SensorData:
    rng = np.random.default_rng(seed)
    t = np.arange(rows, dtype=float)
    values = (np.sin(2 * np.pi * t / 50) + 0.1 * rng.standard_normal(rows))[:, None]
    return SensorData(values, 1.7e9 + t, np.zeros(rows, int), ("x",), 1.0)


def test_warm_start_calibrates_the_model_it_serves():
    """Folds start where the main fit did: warm weights that need no more epochs must not be
    calibrated with the errors of an untrained fold (that threshold made the served model blind)."""
    from sensorguard.training.crossfit import out_of_fold_errors

    options = TrainOptions(max_epochs=6, progress=False)
    data = _one_channel(1500, 1)
    trained, _ = train_bundle(_one_channel(1500, 0), options)
    warm = out_of_fold_errors(data, trained, options, epochs=0, init_state=trained.state_dict)
    cold = out_of_fold_errors(data, trained, options, epochs=0)
    warm_median, cold_median = (np.nanmedian(np.concatenate(p)) for p in (warm, cold))
    assert warm_median < 0.5 * cold_median, (warm_median, cold_median)


def test_a_hop_longer_than_the_window_is_refused_and_an_older_such_bundle_still_loads(tmp_path, tiny_bundle):
    """A hop past the window left the samples between windows never scored (--window 16 --hop 64:
    48 of every 64; found by review): train refuses it. A bundle saved so before still loads."""
    from dataclasses import replace

    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.bundle_loading import load_bundle
    from tests.conftest import plant_frame

    path = tmp_path / "n.csv"
    plant_frame(rows=600).to_csv(path, index=False)
    with pytest.raises(ValueError, match="longer than the window"):
        train_bundle(load_frame([path]), TrainOptions(max_epochs=2, hop=40, progress=False))
    with pytest.raises(ValueError, match="does not divide the hop"):
        train_bundle(load_frame([path]), TrainOptions(max_epochs=2, hop=4, alert_hop=3, progress=False))
    with pytest.raises(ValueError, match=r"--latent 100000 is no bottleneck: a window holds \d+ values"):
        train_bundle(load_frame([path]), TrainOptions(max_epochs=2, latent=100_000, progress=False))  # (it ran for
    # minutes; one at or past the window's values copies every fault: a walk)
    tiny = TrainOptions(max_epochs=1, window=4, hop=1, progress=False)  # 1 channel x 4: the default (4) is capped
    assert train_bundle(load_frame([path], channels=["c0"]), tiny)[0].config.latent == 3  # (it was refused,
    # naming itself as the default to give: a review)
    old = replace(tiny_bundle, hop=tiny_bundle.window + 8, focus=tiny_bundle.window)
    assert load_bundle(save_bundle(old, tmp_path / "b")).focus == old.window


def test_a_promise_from_less_than_a_day_of_data_says_so():
    """Under a day of one machine's data (the longest stretch counts), the summary says the alert
    line was calibrated on conditions like those hours and names the remedies; a whole day (each
    row stands for one sample period), or rows without a sample period, say nothing. Rows out of
    time order (a retrain joins files and recorded readings) still measure their span."""
    from sensorguard.training.data import SensorData
    from sensorguard.training.train import short_span_note

    def data(rows: int, period: float | None, assets=None, times=None) -> SensorData:
        times = np.arange(rows, dtype=float) * (period or 1.0) if times is None else times
        return SensorData(np.zeros((rows, 2)), times, np.zeros(rows, dtype=int), ("a", "b"), period,
                          assets=assets)

    short = short_span_note(data(600, 60.0), drift=False)
    assert short is not None and "10 h 0 min, less than a day" in short and "--drift" in short
    assert "--drift" not in short_span_note(data(600, 60.0), drift=True)
    assert "10 min 0 s" in short_span_note(data(600, 1.0), drift=False)
    assert short_span_note(data(1440, 60.0), drift=False) is None  # a day of minutes: a day
    assert "23 h 59 min, less" in short_span_note(data(1439, 60.0), drift=False)
    assert short_span_note(data(600, None), drift=False) is None  # no sample period: no span to judge
    two = np.array(["m1"] * 300 + ["m2"] * 300)  # each machine's stretch counts, not the file's
    assert "5 h 0 min" in short_span_note(data(600, 60.0, assets=two), drift=False)
    unsorted = np.concatenate([np.arange(300, 600), np.arange(300)]) * 60.0  # newer rows first
    assert "10 h 0 min" in short_span_note(data(600, 60.0, times=unsorted), drift=False)


def test_channels_that_trend_through_the_training_rows_are_named():
    """Temperatures still warming through the training rows: the model sees them only on their way
    (a guessed test bench: 47.5 % of normal rows alerted once they warmed on; docs/benchmarks.md)."""
    from sensorguard.training.data import SensorData
    from sensorguard.training.summary import trend_note

    rng = np.random.default_rng(0)
    t = np.arange(400, dtype=float)
    warming = 35 + 15 * (1 - np.exp(-t / 900)) + rng.normal(0, 0.05, 400)
    cycle = np.sin(t / 10) + rng.normal(0, 0.1, 400)  # moves, but no trend
    values = np.c_[cycle, warming, np.full(400, 3.0), rng.normal(0, 1, 400)]
    data = SensorData(values, t, np.zeros(400, dtype=int), ("cycle", "temp", "const", "noise"), 1.0)
    note = trend_note(data)
    assert note is not None and ": temp 100 %;" in note and "cycle" not in note and "noise" not in note
    assert trend_note(SensorData(values[:, [0, 2, 3]], t, np.zeros(400, dtype=int), ("a", "b", "c"), 1.0)) is None
    # each machine on its own: two stretches of one flat level each trend on their own, not end to end
    steps = np.r_[np.zeros(200), np.ones(200)] + rng.normal(0, 0.01, 400)
    two = np.array(["m1"] * 200 + ["m2"] * 200)
    flat = SensorData(steps[:, None], t, np.zeros(400, dtype=int), ("s",), 1.0, assets=two)
    assert trend_note(flat) is None and trend_note(replace(flat, assets=None)) is not None


def test_small_data_serves_the_fold_the_line_was_calibrated_with():
    """The early-stopped model of the 60 % training block ran higher normal errors than the folds
    (fit on 80 %) the line came from: on small data the served model is the fold of the first 80 %."""
    from sensorguard.training.crossfit import FOLDS, fold_masks
    from sensorguard.training.scaling import fit_scaler

    data = _one_channel(1500, 3)
    bundle, summary = train_bundle(data, TrainOptions(max_epochs=2, progress=False))
    first = data.take(~fold_masks(data.times)[-1])
    assert len(first) == pytest.approx(len(data) * (FOLDS - 1) / FOLDS, abs=1)
    np.testing.assert_allclose(bundle.center_, fit_scaler(first.values).center_)
    np.testing.assert_allclose(bundle.scale_, fit_scaler(first.values).scale_)
    assert "served: the fold fit on the first 4 (80 % of the rows)" in summary.lines()[0]
    served = bundle.training["served_model"]
    assert served["epochs"] == bundle.training["best_epoch"]
    assert np.isfinite(served["last_fold_loss"]) and np.isfinite(served["pca_start_last_fold_loss"])


def test_held_out_losses_tell_a_fold_that_training_made_worse_than_its_pca_start():
    """The served fold trains with no validation check: its held-out loss is compared with its
    PCA start's, and a spoiled network shows as the larger."""
    from dataclasses import replace

    import torch

    from sensorguard.service.model import ModelConfig
    from sensorguard.training.crossfit import fold_masks, held_out_losses
    from sensorguard.training.fit import fit_network

    data = _one_channel(1500, 4)
    data = SensorData(np.c_[data.values, 0.5 * data.values + 0.1], data.times, data.segments, ("x", "y"), 1.0)
    trained, _ = train_bundle(data, TrainOptions(max_epochs=1, progress=False))
    last = fold_masks(data.times)[-1]
    start = fit_network(data.take(~last), None, trained.config, TrainOptions(progress=False), epochs=0,
                        rank=trained.config.linear)
    served, pca = held_out_losses(start, data.take(last))
    assert served == pytest.approx(pca, rel=1e-3, abs=1e-6)  # epoch 0 is the PCA start
    spoiled = replace(start, state={k: v + 0.5 * torch.ones_like(v) for k, v in start.state.items()})
    served, pca = held_out_losses(spoiled, data.take(last))
    assert served > 2 * pca
    # one skewed channel: the start predicts the center (0), not the mean; epoch 0 must equal it
    skewed = SensorData(np.random.default_rng(0).exponential(1.0, (1500, 1)), data.times, data.segments, ("x",), 1.0)
    config = ModelConfig(channels=1, window=16, latent=4, hidden=8, depth=2)
    start = fit_network(skewed.take(~last), None, config, TrainOptions(progress=False), epochs=0)
    served, zero = held_out_losses(start, skewed.take(last))
    assert served == pytest.approx(zero, rel=1e-3)


def test_irregular_readings_count_the_windows_the_daemon_scores_a_day():
    """Found by review: the windows a day came from the median step, but on irregular data (no grid,
    no filling) the daemon scores every ``hop`` readings: with 60 % of steps at 10 s and 40 % at
    0.1 s the median is 10 s, the mean 6.04 s, so 1.66x the promised alerts."""
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.train import TrainOptions, train_bundle
    from tests.conftest import plant_frame

    steps = np.tile([10.0] * 6 + [0.1] * 4, 300)
    frame = plant_frame(len(steps), channels=3, seed=2)
    frame["timestamp"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.cumsum(steps), unit="s")
    bundle, _ = train_bundle(series_from_frame(frame, "irregular"), TrainOptions(max_epochs=1, progress=False))
    assert not bundle.regular and bundle.sample_period == pytest.approx(10.0)
    per_day = bundle.calibration["alerts"]["steps_per_day"]
    assert per_day == pytest.approx(86400 / (6.04 * bundle.hop), rel=0.02)


def test_the_yardstick_note_names_only_what_the_autoencoder_does_not_beat():
    """Found by a walk through the README: a loss of 0.0104 between naive means (0.0077) and PCA
    (0.0172) was said not to beat 'naive window means or PCA'."""
    from sensorguard.training.train import yardstick_note

    assert yardstick_note(0.0104, 0.0077, 0.0172, 1) == (
        "the autoencoder (validation loss 0.0104) does not beat naive window means (0.0077)")
    assert yardstick_note(0.02, 0.0077, 0.0172, 1).endswith("naive window means (0.0077) or PCA of rank 1 (0.0172)")
    assert yardstick_note(0.02, 0.03, 0.0172, 0) is None  # no PCA path: only the naive means count
    assert yardstick_note(0.001, 0.0077, 0.0172, 1) is None


def test_a_channel_whose_spread_the_rows_do_not_pin_is_named():
    """Each cross-fitting fold measures errors in its own scaler's units and the line pools them: a
    valve that opens only in the last fifth of the rows is measured in unlike units from fold to
    fold (docs/benchmarks.md session 41). The summary names it and bundle.json keeps each channel's
    largest over smallest fold scale; steady channels are not named."""
    rng = np.random.default_rng(0)
    rows = 1000
    load = np.sin(np.arange(rows) / 40.0) + 0.1 * rng.standard_normal(rows)
    valve = 0.01 * rng.random(rows)
    valve[800:] += 1.0  # open in the last fold's stretch only: a fifth of the rows, not a few spikes
    values = np.c_[load, 2 * load + 0.1 * rng.standard_normal(rows), valve]
    data = SensorData(values, np.arange(rows, dtype=float) + 1.7e9, np.zeros(rows, int), ("flow", "power", "valve"),
                      1.0)
    bundle, summary = train_bundle(data, TrainOptions(max_epochs=1, progress=False))
    ratio = bundle.training["scaling"]["fold_scale_ratio"]
    assert ratio[2] > 10 and max(ratio[:2]) < 1.5, ratio
    notes = [n for n in summary.notes if "between the cross-fitting folds" in n]
    assert len(notes) == 1 and "1 of 3 channels differs more than 1.5x" in notes[0], summary.notes
    assert "(valve " in notes[0], notes
    assert not any(n.startswith("spiky") for n in summary.notes)

    steady = SensorData(values[:, :2], data.times, data.segments, ("flow", "power"), 1.0)
    bundle, summary = train_bundle(steady, TrainOptions(max_epochs=1, progress=False))
    assert not any("between the cross-fitting folds" in n for n in summary.notes)
    assert max(bundle.training["scaling"]["fold_scale_ratio"]) < 1.5


def test_a_spiky_channel_has_one_scale_in_every_fold():
    """An error counter whose spikes all fall in one fold's stretch: its standard deviation (its
    scale) came from how many spikes each fold's rows held, 50x apart, and the pooled line broke
    the simulated servers' promise. Its scale is now all the rows' in every fit (fold ratio 1,
    ``set_by`` spikes, a note); the other channels keep their own rows' scales."""
    from sensorguard.training.scaling import fit_scaler

    rng = np.random.default_rng(0)
    rows = 1000
    load = np.sin(np.arange(rows) / 40.0) + 0.1 * rng.standard_normal(rows)
    counter = 0.01 * rng.random(rows)
    counter[[20, 60, 110, 150, 190]] = 50.0  # every spike in the first fold's stretch
    values = np.c_[load, 2 * load + 0.1 * rng.standard_normal(rows), counter]
    data = SensorData(values, np.arange(rows, dtype=float) + 1.7e9, np.zeros(rows, int), ("flow", "power", "errors"),
                      1.0)
    bundle, summary = train_bundle(data, TrainOptions(max_epochs=1, progress=False))
    scaling = bundle.training["scaling"]
    assert scaling["fold_scale_ratio"][2] == 1.0, scaling["fold_scale_ratio"]
    assert scaling["set_by"] == ["spread", "spread", "spikes"], scaling["set_by"]
    assert bundle.scale_[2] == pytest.approx(fit_scaler(values).scale_[2])  # all the rows'
    assert bundle.scale_[0] != pytest.approx(fit_scaler(values).scale_[0])  # the served fold's own rows'
    assert any(n.startswith("spiky in training: errors (") and n.endswith("no more than other channels' extremes")
               for n in summary.notes), summary.notes
    assert not any("between the cross-fitting folds" in n for n in summary.notes)
    assert "spiky channel's weight at most" in bundle.calibration["channel_weights"]  # the line read the flag


def test_the_spread_note_names_the_widest_three():
    from sensorguard.training.crossfit import scale_spread

    scales = np.array([[1.0] * 6, [2.0, 1.2, 4.0, 3.0, 1.6, 1.5]])
    ratio, note = scale_spread(scales, tuple("abcdef"))
    assert ratio == [2.0, 1.2, 4.0, 3.0, 1.6, 1.5]
    assert "4 of 6 channels differs more than 1.5x" in note  # f at exactly 1.5x is not counted
    assert "(c 4.00x, d 3.00x, a 2.00x and 1 more)" in note
    assert scale_spread(np.ones((5, 2)), ("a", "b")) == ([1.0, 1.0], None)
    assert scale_spread(np.empty((0, 2)), ("a", "b")) == ([1.0, 1.0], None)


@pytest.mark.parametrize(("hop", "expected"), [(1, 0), (2, 1), (4, 2), (5, 0), (8, 4)])
def test_an_alert_up_is_judged_twice_as_often_where_the_hop_splits_evenly(hop, expected):
    assert default_alert_hop(hop) == expected


def _plant(rows: int, warm: float, seed: int = 0) -> pd.DataFrame:
    """A small plant at 1 s: a load cycle on three channels and a temperature that warms up by
    ``warm`` (noise 0.1) over the first minutes, as a machine started cold does."""
    rng = np.random.default_rng(seed)
    k = np.arange(rows)
    load = np.sin(2 * np.pi * k / 120)
    return pd.DataFrame({
        "timestamp": pd.date_range("2026-03-05 10:00", periods=rows, freq="1s", tz="UTC"),
        "temp": 60 - warm * np.exp(-k / 40) + rng.normal(0, 0.1, rows),
        "flow": 12 + 2 * load + rng.normal(0, 0.3, rows),
        "pressure": 6 + 0.3 * load + rng.normal(0, 0.05, rows),
        "current": 30 + 4 * load + rng.normal(0, 0.3, rows),
    })


def test_a_line_set_by_a_warm_up_is_said_with_what_to_do():
    """A walk trained on rows whose temperatures warmed up first: the first time fold, rebuilt by
    a model of the settled rows, held every one of the largest held-out errors, the line came out
    5 times above the served model's largest score on fresh normal rows, and two clear faults went
    unseen, with nothing in the summary to say why. Now a note names that stretch and the remedy;
    a plant that starts settled gets no such note."""
    channels = ["temp", "flow", "pressure", "current"]
    options = TrainOptions(max_epochs=3, progress=False, seed=0)
    _, warm = train_bundle(as_data(_plant(600, warm=20.0), channels), options)
    [note] = [n for n in warm.notes if "largest held-out errors, which set the line" in n]
    # as_data starts the clock at 1.7e9 s (2023-11-14 22:13:20 UTC); the earliest fold is 120 rows
    assert int(note.split(" %")[0]) >= 75 and "of the 20 largest" in note, note
    assert "earliest 20 % of the training rows in time (2023-11-14 22:13:20 to 2023-11-14 22:15:19 UTC)" in note
    assert "`calibrate` the model on normal rows it did not train on" in note
    _, settled = train_bundle(as_data(_plant(600, warm=0.0), channels), options)
    assert not any("which set the line" in n for n in settled.notes), settled.notes


def test_a_sensor_stuck_in_the_training_rows_is_said():
    """A thermocouple stuck for 30 minutes in training got a stuck limit of 122 readings, an hour
    where 10 were the rule, with nothing said (a walk). A quantized channel's runs are its nature."""
    from sensorguard.service.sensors import learn_sensor_rules
    from sensorguard.training.summary import still_note

    rng = np.random.default_rng(0)
    values = rng.normal(size=(500, 3))
    values[:, 2] = np.round(values[:, 2])  # quantized: holds its value on most steps
    assert still_note(learn_sensor_rules(("a", "b", "q"), values, np.zeros(500, int), 5), 30.0) is None
    values[100:161, 1] = values[100, 1]  # b stuck for 61 readings
    note = still_note(learn_sensor_rules(("a", "b", "q"), values, np.zeros(500, int), 5), 30.0)
    assert note is not None and "b 61 readings (30 min)" in note and "a " not in note.split(":")[1]


def test_a_ctrl_c_during_fitting_is_an_interrupt_not_a_silent_exit_1():
    """Found by a walk: Lightning answers a Ctrl-C with ``sys.exit(1)`` and leaves SIGINT ignored,
    so ``train`` and the demo ended with status 1 and no word. Fitting now raises it as the
    KeyboardInterrupt the CLI says "interrupted" for (exit 130), and SIGINT works again after."""
    import signal

    import pytorch_lightning as pl
    import torch

    from sensorguard.training.fit import _interruptible

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class CtrlC(pl.Callback):
        def on_train_epoch_start(self, trainer, module) -> None:
            raise KeyboardInterrupt

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(8, 2)), batch_size=4)
    trainer = pl.Trainer(max_epochs=1, callbacks=[CtrlC()], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        _interruptible(trainer.fit, Tiny(), loader)
    assert signal.getsignal(signal.SIGINT) == before

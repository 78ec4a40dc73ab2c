"""Learning itself: the trained model separates injected faults from normal data it never saw."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.data import SensorData, load_frame
from training.simulate import simulate
from training.train import TrainOptions, fit_scaler, train_bundle


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
    from service.scorer import Scorer

    bundle, _, channels = learned
    test = as_data(simulate(rows=6000, channels=4, seed=7, anomalies=True), channels)
    scores = Scorer(bundle).score_series(test.values, test.segments).score
    ok = np.isfinite(scores)
    # a window is anomalous when any of its rows is labeled
    labels = np.convolve(test.labels["anomaly"], np.ones(bundle.window), mode="full")[: len(scores)] > 0
    auc = roc_auc_score(labels[ok], scores[ok])
    assert auc > 0.85, auc
    normal_rows = ok & ~labels
    assert np.mean(scores[normal_rows] >= 1) < 0.05
    assert np.mean(scores[labels & ok] >= 1) > 0.2


def test_fresh_normal_data_stays_below_the_line(learned):
    from service.scorer import Scorer

    bundle, _, channels = learned
    fresh = as_data(simulate(rows=4000, channels=4, seed=11), channels)
    scores = Scorer(bundle).score_series(fresh.values, fresh.segments).score
    assert np.nanmean(scores >= 1) < 0.02
    assert np.nanmedian(scores) < 0.5


def test_summary_and_bundle_record_what_was_chosen(learned):
    bundle, summary, channels = learned
    assert summary.window == bundle.window == 32 and summary.hop == 4
    assert summary.rows == {"train": 4800, "validation": 1600, "calibration": 1600}
    assert 1 <= summary.epochs <= 20
    assert bundle.calibration["method"] in ("pot", "quantile")
    assert bundle.calibration["expected_false_alarms_per_day"] == pytest.approx(1e-3 * 86400 / 4)
    assert bundle.training["rows"] == 8000 and bundle.training["channels"] == channels
    text = "\n".join(summary.lines())
    for word in ("rows per split", "window", "epochs", "threshold", "false alarms"):
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


def test_scaler_is_robust_to_outliers_and_constants():
    values = np.column_stack([np.r_[np.zeros(99), 1e6], np.full(100, 5.0), np.arange(100.0)])
    center, scale = fit_scaler(values)
    assert center.tolist() == [0.0, 5.0, 49.5]
    assert scale[1] == 1.0 and scale[0] > 0 and np.isfinite(scale).all()
    assert scale[2] == pytest.approx(49.5 / 1.349, rel=0.01)

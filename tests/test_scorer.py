"""Contract checks for the shared scorer (River-style): shapes, parity, no mutation, batching."""

import numpy as np
import pytest
import torch

from sensorguard.service.scorer import Scorer


def test_series_and_windows_agree(tiny_bundle):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(100, 3))
    scorer = Scorer(tiny_bundle)
    series = scorer.score_series(values)
    windows = np.stack([values[t - 15 : t + 1].T for t in range(15, 100)])
    direct = scorer.score_windows(windows)
    np.testing.assert_allclose(series.score[15:], direct.score, rtol=1e-5)
    assert np.isnan(series.score[:15]).all()
    np.testing.assert_allclose(series.error, series.channel_error.mean(axis=1))
    np.testing.assert_allclose(series.score, series.error / tiny_bundle.threshold_)


def test_batch_size_does_not_change_scores(tiny_bundle):
    windows = np.random.default_rng(1).normal(size=(50, 3, 16))
    a = Scorer(tiny_bundle, batch_size=7).score_windows(windows).score
    b = Scorer(tiny_bundle, batch_size=4096).score_windows(windows).score
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_scoring_does_not_mutate_the_model(tiny_bundle):
    scorer = Scorer(tiny_bundle)
    before = {k: v.clone() for k, v in scorer.model.state_dict().items()}
    scorer.score_windows(np.random.default_rng(2).normal(size=(20, 3, 16)))
    assert all(torch.equal(before[k], v) for k, v in scorer.model.state_dict().items())


def test_segments_stop_windows_at_gaps(tiny_bundle):
    values = np.random.default_rng(3).normal(size=(40, 3))
    segments = np.r_[np.zeros(20, int), np.ones(20, int)]
    scores = Scorer(tiny_bundle).score_series(values, segments).score
    assert np.isnan(scores[:15]).all() and np.isfinite(scores[15:20]).all()
    assert np.isnan(scores[20:35]).all() and np.isfinite(scores[35:]).all()


def test_higher_score_for_off_manifold_windows(trained):
    bundle, _, _ = trained
    from tests.conftest import plant_frame

    frame = plant_frame(rows=600, channels=3, seed=5)
    values = frame[["c0", "c1", "c2"]].to_numpy()
    broken = values.copy()
    broken[300:, 1] += 3.0  # level shift on one channel
    scorer = Scorer(bundle)
    normal = scorer.score_series(values).score
    faulty = scorer.score_series(broken).score
    # a single normal window may touch the line, but no alert rises (it needs raise_after in a row);
    # every faulty window is above the line and above nearly all normal ones
    from sensorguard.service.alerts import AlertRules, alert_series, hop_mask

    mask = hop_mask(np.zeros(len(values), int), bundle.window, bundle.hop)
    assert not alert_series(normal, mask, np.arange(len(values), dtype=float), AlertRules()).any()
    assert np.nanmean(normal >= 1.0) < 0.05 and np.nanquantile(normal, 0.99) < np.nanmin(faulty[300 + bundle.window :])
    assert np.nanmin(faulty[300 + bundle.window :]) > 1.0
    top = scorer.score_windows(np.stack([broken[400 - bundle.window : 400].T])).top_channels(0, bundle.channels)
    assert top[0]["name"] == "c1" and top[0]["share"] > 0.5
    assert sum(t["share"] for t in top) == pytest.approx(1.0, abs=1e-3)


def test_huge_values_stay_finite(tiny_bundle):
    windows = np.full((2, 3, 16), 1e30)
    scores = Scorer(tiny_bundle).score_windows(windows)
    assert np.isfinite(scores.score).all() and (scores.score > 0).all()


def test_wrong_shapes_are_refused(tiny_bundle):
    scorer = Scorer(tiny_bundle)
    with pytest.raises(ValueError, match="shape"):
        scorer.score_windows(np.zeros((2, 4, 16)))
    with pytest.raises(ValueError, match="shape"):
        scorer.score_series(np.zeros((30, 2)))


def test_an_alert_clears_within_a_few_hops_of_the_fault_end(trained):
    """The score judges the newest samples of each window, so an alert ends soon after its fault does."""
    from sensorguard.service.alerts import AlertRules, alert_series, hop_mask
    from tests.conftest import plant_frame

    bundle, _, _ = trained
    assert bundle.scored_samples == bundle.hop
    values = plant_frame(rows=900, channels=3, seed=8)[["c0", "c1", "c2"]].to_numpy()
    values[400:500, 1] += 3.0  # a fault of 100 samples
    segments = np.zeros(len(values), int)
    score = Scorer(bundle).score_series(values, segments).score
    rules = AlertRules()
    mask = hop_mask(segments, bundle.window, bundle.hop)
    alert = alert_series(score, mask, np.arange(len(values), dtype=float), rules)
    assert alert[400 : 400 + (rules.raise_after + 1) * bundle.hop].any()  # raised within a few hops
    assert alert[450:500].all()
    cleared_by = 500 + (rules.clear_after + 2) * bundle.hop
    assert not alert[cleared_by:].any(), np.flatnonzero(alert[500:])[-1] + 500
    # a window still holds fault samples for window-1 rows after the end: the old whole-window score kept
    # the alert up at least that long (window + clear_after x hop), far beyond the bound above
    assert cleared_by < 500 + bundle.window - 1 + rules.clear_after * bundle.hop


def test_top_channels_of_a_batch_are_those_of_each_window_alone():
    """The daemon sorts a batch's channel errors in one call; each window's list must be what its own
    sort gives: the same order (ties in channel order), shares rounded alike, 0 for an all-zero window."""
    from sensorguard.service.scorer import Scores

    rng = np.random.default_rng(0)
    errors = rng.random((40, 5)) ** 3
    errors[3] = 0.0
    errors[4] = [1.0, 1.0, 0.5, 1.0, 0.0]  # ties
    scores = Scores(error=errors.mean(axis=1), score=errors.mean(axis=1), channel_error=errors)
    channels = ("a", "b", "c", "d", "e")

    def alone(row: np.ndarray) -> list[dict]:
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:3]
        total = float(row.sum())
        return [{"name": channels[j], "share": round(float(row[j]) / total, 4) if total > 0 else 0.0} for j in order]

    batch = scores.all_top_channels(channels)
    assert batch == [alone(row) for row in errors]
    assert [scores.top_channels(i, channels) for i in range(len(errors))] == batch
    assert [t["name"] for t in batch[4]] == ["a", "b", "d"] and batch[3][0]["share"] == 0.0


def test_scoring_on_cuda_turns_cudnns_tf32_off_and_back():
    """cuDNN's TF32 (torch's default for convolutions) scored on other numbers on a GPU than the
    daemon computes on its CPU (found by review). No GPU is needed: the switch is a flag."""
    import torch

    from sensorguard.service.scorer import full_precision

    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with full_precision(torch.device("cuda")):
            assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cudnn.allow_tf32 is True
        with full_precision(torch.device("cpu")):
            assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cudnn.allow_tf32 = before


def test_the_error_is_over_the_newest_focus_samples_and_a_dead_sensor_never_feeds_the_model(tiny_bundle):
    """Pinned against the reconstruction itself (an audit: the focus slice one sample longer, a dead
    sensor's value reaching the first impute pass, the clip's size all passed every test)."""
    from dataclasses import replace

    bundle = replace(tiny_bundle, focus=4)
    scorer = Scorer(bundle)
    windows = np.random.default_rng(0).normal(size=(5, 3, 16)) * bundle.scale_[:, None] + bundle.center_[:, None]
    expected = (((scorer.reconstruct(windows) - windows) / bundle.scale_[:, None])[:, :, -4:] ** 2).mean(axis=2)
    np.testing.assert_allclose(scorer.score_windows(windows).channel_error, expected, rtol=1e-4)
    excluded = np.zeros((5, 3), dtype=bool)
    excluded[:, 0] = True
    dead = windows.copy()
    dead[:, 0] = 0.0
    wild = windows.copy()
    wild[:, 0] = 1e3
    np.testing.assert_array_equal(scorer.score_windows(dead, excluded).channel_error[:, 1:],
                                  scorer.score_windows(wild, excluded).channel_error[:, 1:])
    raw = np.array([[1e3, 1.0, 2.0], [1e9, 1.0, 2.0]])
    assert scorer.standardize(raw)[:, 0].tolist() == [1e3, 1e6]  # clipped at a million standard units


"""Window-scoring rules a mutation audit found unpinned (service/scorer.py): each test failed under a small
change to the rule it names that every other test let through.

The untrained ``tiny_bundle`` (3 channels, window 16) is enough: these pin bookkeeping, not model quality.
"""

from __future__ import annotations

import numpy as np
import pytest

from sensorguard.service.scorer import Scorer


def test_a_batch_of_one_window_is_a_valid_batch_size(tiny_bundle):
    """``batch_size`` 1 (one window per forward pass, the smallest memory use) is allowed and scores as
    any other; 0 is refused."""
    windows = np.random.default_rng(0).normal(size=(3, 3, 16))
    one = Scorer(tiny_bundle, batch_size=1).score_windows(windows).score
    np.testing.assert_allclose(one, Scorer(tiny_bundle).score_windows(windows).score, rtol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        Scorer(tiny_bundle, batch_size=0)


def test_a_segment_exactly_one_window_long_gets_its_window(tiny_bundle):
    """A run of exactly ``window`` rows between gaps holds one full window: its last row is scored
    (a recording cut into window-sized pieces would otherwise never be judged)."""
    values = np.random.default_rng(1).normal(size=(26, 3))
    segments = np.r_[np.zeros(16, int), np.ones(10, int)]
    score = Scorer(tiny_bundle).score_series(values, segments).score
    assert np.isnan(score[:15]).all() and np.isfinite(score[15]) and np.isnan(score[16:]).all()


def test_exclusions_follow_their_windows_across_batches(tiny_bundle):
    """Each window imputes its own faulted channels, whichever batch it falls in: the scores do not
    depend on ``batch_size`` when exclusions differ from window to window (a batch used the first
    batch's mask rows)."""
    rng = np.random.default_rng(2)
    windows = rng.normal(size=(9, 3, 16))
    excluded = np.zeros((9, 3), dtype=bool)
    excluded[5:, 2] = True  # only windows of later batches have a faulted channel
    excluded[7, 0] = True
    small = Scorer(tiny_bundle, batch_size=2).score_windows(windows, excluded)
    large = Scorer(tiny_bundle, batch_size=4096).score_windows(windows, excluded)
    np.testing.assert_allclose(small.channel_error, large.channel_error, rtol=1e-5)
    np.testing.assert_allclose(small.score, large.score, rtol=1e-5)


def test_windows_scored_with_a_faulted_channel_leave_it_out_of_their_error(tiny_bundle):
    """``score_windows`` (the daemon's path) leaves a faulted channel out of the window's error as
    ``score_series`` does: the mean over the other channels, and a window with every channel
    faulted is not judged (NaN), so a dead sensor raises no process alarm live either."""
    windows = np.random.default_rng(4).normal(size=(3, 3, 16))
    excluded = np.array([[False, False, False], [True, False, False], [True, True, True]])
    scores = Scorer(tiny_bundle).score_windows(windows, excluded)
    assert scores.channel_error[1, 0] == 0.0
    assert scores.error[1] == pytest.approx(scores.channel_error[1, 1:].mean())
    assert scores.score[1] == pytest.approx(scores.error[1] / tiny_bundle.threshold_)
    assert np.isnan(scores.score[2]) and np.isnan(scores.channel_error[2]).all()
    alone = Scorer(tiny_bundle).score_windows(windows[:1])
    np.testing.assert_allclose(scores.score[:1], alone.score, rtol=1e-6)  # no exclusion: the full mean

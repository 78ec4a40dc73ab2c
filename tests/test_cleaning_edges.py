"""Cleaning rules a mutation audit found unpinned (session 65): each test fails under its mutation."""

from __future__ import annotations

import numpy as np
import pytest

from sensorguard.service.cleaning import NAN, Cleaner, CleaningPolicy, clean_rows, infer_policy


def test_a_restart_gap_of_exactly_one_step_is_refused():
    """A restart gap no longer than one step would restart every window."""
    with pytest.raises(ValueError):
        CleaningPolicy.from_dict({"restart_gap_s": 1.5, "jitter": 0.5}, sample_period=1.0)


def test_eighty_percent_on_the_grid_is_regular():
    """The regular-grid rule at exactly its share: irregular, gaps were not filled and the restart gap grew tenfold."""
    assert infer_policy(np.array([0, 1, 2, 3, 4, 7.0])).regular  # 4 of 5 steps on the grid


def test_training_data_with_mostly_repeated_stamps_has_no_period():
    """A median step of 0 (repeated stamps) is no sample period: a bundle with period 0 is refused at load."""
    assert infer_policy(np.array([0.0, 0.0, 0.0, 0.0, 1.0])).sample_period is None


def test_a_publisher_slowing_to_two_periods_is_refused_from_its_eleventh_slow_step():
    """The rate's moving average: one outage must not weigh twice, a slowed sender is refused at its
    eleventh step (SLOW_RATE 1.75: a feed losing readings at the model's rate is not slow)."""
    policy = CleaningPolicy(sample_period=1.0, fill_limit=5)
    c = Cleaner(1)
    t = 0.0
    for _ in range(30):
        assert c.admit(t, policy) is None
        c.last_ts = t
        t += 1.0
    t -= 1.0
    got = []
    for _ in range(16):
        t += 2.0
        got.append(c.admit(t, policy))
    assert got.index("slow_rate") == 10


def test_a_complete_row_resets_every_channels_fill_count():
    """Fill counts end with a complete row, or a later short dropout drops rows and restarts windows."""
    policy = CleaningPolicy(sample_period=1.0, fill_limit=2)
    c = Cleaner(2)
    rows = [[1.0, 1.0], [1.0, NAN], [1.0, NAN], [1.0, 1.0], [1.0, NAN]]
    out = [c.step(float(t), r, policy)[-1] for t, r in enumerate(rows)]
    assert out[-1][1] == [1.0, 1.0]


def test_a_channel_present_in_a_partly_filled_row_resets_its_count():
    """A channel present in a partly filled row has its count reset too."""
    policy = CleaningPolicy(sample_period=1.0, fill_limit=2)
    c = Cleaner(2)
    rows = [[1.0, 1.0], [NAN, 1.0], [NAN, 1.0], [1.0, NAN], [NAN, 1.0]]
    out = [c.step(float(t), r, policy)[-1] for t, r in enumerate(rows)]
    assert out[-1][1] == [1.0, 1.0]


def test_a_dropped_first_row_is_no_restart():
    """A dropped first row is no window restart (the offline note counted one)."""
    policy = CleaningPolicy(sample_period=1.0, fill_limit=2)
    _, _, seg, _, counts = clean_rows([0.0, 1.0, 2.0], [[NAN, 1.0], [1.0, 1.0], [2.0, 2.0]], policy)
    assert seg.tolist() == [0, 0] and counts["restarts"] == 0 and counts["dropped"] == 1


def test_an_inserted_grid_row_comes_from_the_reading_before_it():
    """A grid row filled in a gap takes the labels and faults of the reading before it, not after."""
    policy = CleaningPolicy(sample_period=1.0, fill_limit=2)
    t, _, _, source, counts = clean_rows([0.0, 1.0, 3.0], [[1.0], [2.0], [3.0]], policy)
    assert t.tolist() == [0.0, 1.0, 2.0, 3.0] and source.tolist() == [0, 1, 1, 2] and counts["inserted"] == 1


def test_missing_cells_of_a_dropped_row_are_not_counted_filled():
    """The forward-filled count leaves out the cells of dropped rows."""
    policy = CleaningPolicy(sample_period=1.0, fill_limit=0)
    _, _, _, _, counts = clean_rows([0.0, 1.0, 2.0], [[1.0, 1.0], [NAN, 1.0], [2.0, 2.0]], policy)
    assert counts["missing"] == 1 and counts["filled"] == 0 and counts["dropped"] == 1


def test_the_serve_override_beats_the_bundles_restart_gap():
    """``serve --max-gap-s`` overrides a bundle's recorded restart gap."""
    assert CleaningPolicy(1.0, True, 5, max_gap_s=100.0, gap_s=7.0).restart_gap == 100.0


def test_the_policy_round_trips_through_bundle_json():
    """A bundle's restart gap survives ``bundle.json``."""
    p = CleaningPolicy(1.0, True, 3, jitter=0.25, gap_s=7.0)
    assert CleaningPolicy.from_dict(p.to_dict(), 1.0) == p


def test_a_gap_in_the_stamps_does_not_hide_the_period():
    """A missing stamp does not hide the sample period."""
    assert infer_policy(np.array([0.0, 1.0, np.nan, 3.0, 4.0, 5.0])).sample_period == 1.0

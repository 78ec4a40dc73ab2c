"""Edges of the time splits and the window starts that the data tests leave open (a mutation audit)."""

import numpy as np
import pytest

from sensorguard.training.data import DataError, SensorData
from sensorguard.training.splits import GlobalBatches, choose_window, split_by_time, window_starts


def test_a_stretch_exactly_one_window_long_holds_one_window():
    """``window`` rows in one segment: one window, starting at row 0 (none only below that)."""
    assert window_starts(np.zeros(4, int), 4).tolist() == [0]
    assert window_starts(np.zeros(3, int), 4).tolist() == []


def test_window_starts_stay_inside_a_segment_and_take_every_stride_th_from_the_first():
    """Segments of 5 and 5 rows, window 3: starts 0-2 and 5-7 (none across the cut); stride 2 keeps
    the 1st, 3rd, 5th... of them, from the first."""
    segments = np.r_[np.zeros(5, int), np.ones(5, int)]
    assert window_starts(segments, 3).tolist() == [0, 1, 2, 5, 6, 7]
    assert window_starts(segments, 3, stride=2).tolist() == [0, 2, 6]
    assert window_starts(np.zeros(10, int), 4, stride=2).tolist() == [0, 2, 4, 6]


def test_the_cut_points_are_the_nearest_row_counts_to_the_fractions():
    """1,003 rows: 60 % is 601.8 rows, so the training block takes 602 (the nearest count, not 601
    cut down), validation up to 80 % (802.4: 802), calibration the other 201; every row in one block."""
    rows = 1003
    data = SensorData(np.zeros((rows, 1)), np.arange(float(rows)), np.zeros(rows, int), ("a",), 1.0)
    parts = split_by_time(data)
    assert (len(parts.train), len(parts.validation), len(parts.calibration)) == (602, 200, 201)
    assert parts.train.times[-1] == 601.0 and parts.validation.times[0] == 602.0
    assert parts.calibration.times[0] == 802.0


def _rows(rows: int) -> SensorData:
    return SensorData(np.zeros((rows, 1)), np.arange(float(rows)), np.zeros(rows, int), ("a",), 1.0)


def test_a_requested_window_longer_than_a_split_is_refused_naming_the_shortest():
    """103 rows split 62 / 20 / 21: --window 22 fits the training block only, so it is refused, and
    the message names the shortest split (20 rows); --window 20 fits every split."""
    splits = split_by_time(_rows(103))
    assert (len(splits.train), len(splits.validation), len(splits.calibration)) == (62, 20, 21)
    with pytest.raises(DataError, match=r"--window 22 is longer than a data split \(20 rows\)"):
        choose_window(splits, 22)
    assert choose_window(splits, 20) == 20


def test_an_epoch_takes_at_most_max_windows_windows():
    """103 windows, batches of 10, at most 25 an epoch: 25 distinct windows in batches of 10, 10, 5."""
    batches = list(GlobalBatches(list(range(103)), 10, 25, seed=3))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert len(set(i for b in batches for i in b)) == 25
    assert len(GlobalBatches(list(range(103)), 10, 25, seed=3)) == 3

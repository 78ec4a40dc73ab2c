"""The detection benchmark's data plumbing (``bench/detection_data.py``): its numbers are only as
honest as the rows it hands each detector."""

import numpy as np
import pandas as pd


def test_a_case_tests_the_channels_it_trained_on():
    """Loading leaves out a column constant in the training rows (with a note), so the test rows
    had one column more than the bundle: the sensor watch failed on every such recording, and the
    bench skipped it ("zip() argument 2 is shorter than argument 1")."""
    from bench.detection_data import split_case

    rng = np.random.default_rng(0)
    rows = 600
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2026-01-01", periods=rows, freq="1s", tz="UTC"),
        "temp": rng.normal(20, 1, rows),
        "flow": np.r_[np.full(400, 32.0), 32.0 + rng.integers(-1, 2, rows - 400)],  # still while it trains
        "power": rng.normal(5, 0.1, rows),
        "anomaly": np.r_[np.zeros(450, int), np.ones(150, int)],
    })
    case = split_case(frame, "bench", 400)
    assert case.train.channels == ("temp", "power")
    assert case.test.channels == case.train.channels
    np.testing.assert_array_equal(case.test.values, frame[["temp", "power"]].to_numpy()[400:])
    assert case.labels.sum() == 150

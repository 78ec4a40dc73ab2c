"""The one cleaning policy: its table of cases, an empty series, and its record in the bundle."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sensorguard.service.cleaning import CleaningPolicy, clean_rows, infer_policy
from sensorguard.training.data import series_from_frame

NAN = math.nan


@pytest.mark.parametrize("gap, rows, restart", [(1.0, 0, False), (1.5, 0, False), (2.0, 1, False), (6.0, 5, False),
                                                (6.5, None, True)])
def test_gaps_on_a_regular_grid(gap, rows, restart):
    policy = CleaningPolicy(sample_period=1.0, fill_limit=5)
    assert (gap > policy.restart_gap) == restart
    if not restart:
        assert policy.grid_rows(gap) == rows


def test_irregular_sampling_inserts_nothing_and_restarts_only_after_a_long_silence():
    policy = CleaningPolicy(sample_period=1.0, regular=False, fill_limit=5)
    assert policy.grid_rows(5.0) == 0 and policy.restart_gap == 60.0


def test_an_empty_series_cleans_to_nothing():
    times, values, segments, source, counts = clean_rows(np.zeros(0), np.zeros((0, 3)), CleaningPolicy(1.0))
    assert len(times) == len(values) == len(segments) == len(source) == 0 and counts["dropped"] == 0


def test_the_policy_is_inferred_from_all_machines_at_once():
    rng = np.random.default_rng(0)
    irregular = 1_767_225_600 + np.cumsum(rng.uniform(0.2, 3.0, 60))  # the first machine alone: no grid
    regular = 1_767_225_600 + np.arange(300.0)
    frame = pd.DataFrame({"timestamp": np.r_[irregular, regular], "asset": ["a"] * 60 + ["b"] * 300,
                          "x": rng.standard_normal(360), "y": rng.standard_normal(360)})
    data = series_from_frame(frame, "two machines")
    assert data.cleaning == infer_policy([irregular, regular]) and data.cleaning.regular
    assert data.cleaning.sample_period == pytest.approx(1.0)


def test_the_bundle_records_the_policy_and_old_bundles_get_the_defaults(tiny_bundle, tmp_path):
    import json
    from dataclasses import replace

    from sensorguard.service.bundle import load_bundle, save_bundle

    path = save_bundle(replace(tiny_bundle, regular=False, fill_limit=3), tmp_path / "b")
    assert load_bundle(path).cleaning == CleaningPolicy(1.0, False, 3)
    meta = json.loads((path / "bundle.json").read_text())
    del meta["cleaning"]
    (path / "bundle.json").write_text(json.dumps(meta))
    assert load_bundle(path).cleaning == CleaningPolicy(1.0, True, 5)
    meta["cleaning"] = {"fill_limit": -1}
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="cleaning"):
        load_bundle(path)


def test_a_value_filled_too_long_drops_its_row_and_restarts_the_window():
    times = np.arange(8.0)
    values = np.array([[1, 1], [2, NAN], [3, NAN], [4, NAN], [5, 5], [6, 6], [7, 7], [8, 8]], dtype=float)
    out_t, out_v, segments, source, counts = clean_rows(times, values, CleaningPolicy(1.0, fill_limit=2))
    assert out_t.tolist() == [0, 1, 2, 4, 5, 6, 7] and counts["dropped"] == 1
    assert segments.tolist() == [0, 0, 0, 1, 1, 1, 1] and out_v[2].tolist() == [3, 1]
    assert source.tolist() == [0, 1, 2, 4, 5, 6, 7]

"""The one cleaning policy: its table of cases, an empty series, and its record in the bundle."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sensorguard.service.cleaning import Cleaner, CleaningPolicy, admit_rows, clean_rows, infer_policy
from sensorguard.training.data import series_from_frame

NAN = math.nan


@pytest.mark.parametrize("gap, rows, restart", [(1.0, 0, False), (1.5, 0, False), (2.0, 1, False), (6.0, 5, False),
                                                (6.4, 5, False), (6.6, None, True)])
def test_gaps_on_a_regular_grid(gap, rows, restart):
    policy = CleaningPolicy(sample_period=1.0, fill_limit=5)
    assert (gap > policy.restart_gap) == restart
    if not restart:
        assert policy.grid_rows(gap) == rows


def test_fill_limit_zero_restarts_only_at_a_missing_row_not_at_jitter():
    """At fill limit 0 the restart gap was one period: 1,000 readings at 10 s +- 0.2 s restarted
    the window at 499 of them, so train found too little data and score scored nothing (review)."""
    times = np.cumsum(np.r_[0.0, 10.0 + np.random.default_rng(0).uniform(-0.2, 0.2, 999)])
    policy = CleaningPolicy(sample_period=10.0, fill_limit=0)
    assert clean_rows(times, np.ones((1000, 1)), policy)[4]["restarts"] == 0
    times[500:] += 10.0  # one reading missing: its row cannot be filled, so the window restarts
    assert clean_rows(times, np.ones((1000, 1)), policy)[4]["restarts"] == 1
    for jitter in (0.2, 0.5, 0.7):  # whatever the jitter: a restart exactly where a row goes unfilled
        policy = CleaningPolicy(sample_period=1.0, fill_limit=2, jitter=jitter)
        assert policy.grid_rows(3.4) == 2 and policy.restart_gap == 3.5 and policy.grid_rows(3.6) == 3
    assert CleaningPolicy(sample_period=1.0, fill_limit=0, jitter=0.7).restart_gap == 1.7  # (one step: no gap)


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
    # three machines at 1, 2 and 3 s: all of them give 2 s, each of the first and the last alone its own
    # rate (the regular machine above decided it whichever machine was taken alone: a test audit)
    times = [1_767_225_600 + 1000 * k + (k + 1) * np.arange(101.0) for k in range(3)]
    frame = pd.DataFrame({"timestamp": np.concatenate(times), "asset": np.repeat(["a", "b", "c"], 101),
                          "x": rng.standard_normal(303), "y": rng.standard_normal(303)})
    assert series_from_frame(frame, "three machines").cleaning.sample_period == pytest.approx(2.0)


def test_the_bundle_records_the_policy_and_old_bundles_get_the_defaults(tiny_bundle, tmp_path):
    import json
    from dataclasses import replace

    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.bundle_loading import load_bundle

    path = save_bundle(replace(tiny_bundle, regular=False, fill_limit=3), tmp_path / "b")
    assert load_bundle(path).cleaning == CleaningPolicy(1.0, False, 3)
    meta = json.loads((path / "bundle.json").read_text())
    del meta["cleaning"]
    (path / "bundle.json").write_text(json.dumps(meta))
    assert load_bundle(path).cleaning == CleaningPolicy(1.0, True, 5)
    for bad in ({"fill_limit": -1}, {"jitter": 1.0}, {"restart_gap_s": 0}):
        meta["cleaning"] = bad
        (path / "bundle.json").write_text(json.dumps(meta))
        with pytest.raises(Exception, match="cleaning"):
            load_bundle(path)


def test_jitter_and_the_restart_gap_are_the_bundles_to_set(tiny_bundle, tmp_path):
    import json

    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.bundle_loading import load_bundle

    path = save_bundle(tiny_bundle, tmp_path / "b")
    meta = json.loads((path / "bundle.json").read_text())
    assert meta["cleaning"] == {"regular": True, "fill_limit": 5, "jitter": 0.5, "restart_gap_s": None}
    policy = load_bundle(path).cleaning
    assert policy.grid_rows(1.6) == 1 and policy.restart_gap == 6.5  # derived: fill_limit + 1.5 periods
    meta["cleaning"].update(jitter=0.7, restart_gap_s=3.0)
    (path / "bundle.json").write_text(json.dumps(meta))
    policy = load_bundle(path).cleaning
    assert policy.grid_rows(1.6) == 0 and policy.restart_gap == 3.0
    times = [0.0, 1.0, 2.0, 6.0, 7.0]  # a 4 s gap: filled by default, a restart with the bundle's 3 s
    assert clean_rows(times, np.ones((5, 1)), policy)[4]["restarts"] == 1
    assert clean_rows(times, np.ones((5, 1)), CleaningPolicy(1.0))[4]["restarts"] == 0


def test_a_value_filled_too_long_drops_its_row_and_restarts_the_window():
    times = np.arange(8.0)
    values = np.array([[1, 1], [2, NAN], [3, NAN], [4, NAN], [5, 5], [6, 6], [7, 7], [8, 8]], dtype=float)
    out_t, out_v, segments, source, counts = clean_rows(times, values, CleaningPolicy(1.0, fill_limit=2))
    assert out_t.tolist() == [0, 1, 2, 4, 5, 6, 7] and counts["dropped"] == 1
    assert segments.tolist() == [0, 0, 0, 1, 1, 1, 1] and out_v[2].tolist() == [3, 1]
    assert source.tolist() == [0, 1, 2, 4, 5, 6, 7]


def test_a_long_gap_under_a_long_max_gap_builds_only_the_rows_that_can_be_kept():
    """Past fill_limit + 1 blank rows every channel is beyond its limit, so the rest of a gap is
    only counted: a max_gap_s of an hour at 0.1 s built 36,000 dropped rows per reading under the
    ingest's lock (found by review). The rows kept, and the counts, are what building them gave."""
    policy = CleaningPolicy(sample_period=0.1, fill_limit=5, max_gap_s=3600.0)
    cleaner = Cleaner(2)
    cleaner.step(0.0, [1.0, 2.0], policy)
    made = cleaner.step(3599.0, [3.0, 4.0], policy)
    assert len(made) == 7 and cleaner.skipped == 35_989 - 6  # 6 blank rows built, then the reading
    assert [kept is None for _, kept, _ in made[:6]] == [False] * 5 + [True]  # filled 5, then dropped
    assert made[-1] == (3599.0, [3.0, 4.0], True)  # the window restarts at the reading
    assert cleaner.step(3599.1, [5.0, 6.0], policy) == [(3599.1, [5.0, 6.0], False)]  # and carries on
    _, out_v, segments, _, counts = clean_rows(np.array([0.0, 3599.0, 3599.1]), np.array([[1, 2], [3, 4], [5, 6.0]]),
                                               policy)
    assert counts["inserted"] == 35_989 and counts["dropped"] == 35_989 - 5 and counts["restarts"] == 1
    assert len(out_v) == 1 + 5 + 2 and segments.tolist() == [0] * 6 + [1, 1]


def kept_steps(times, policy=CleaningPolicy(sample_period=1.0)):
    keep, counts = admit_rows(np.asarray(times), policy)
    return np.diff(np.asarray(times)[keep]), counts


@pytest.mark.parametrize("k", [2, 3, 4, 10])
def test_a_publisher_k_times_too_fast_is_resampled_to_the_models_grid(k):
    rng = np.random.default_rng(k)
    times = np.arange(0, 120, 1 / k) + rng.uniform(-0.02, 0.02, 120 * k) / k  # jittered
    steps, counts = kept_steps(times)
    assert counts["resampled"] > 0.8 * (k - 1) * 120 and counts["slow_rate"] == 0
    assert abs(np.median(steps) - 1.0) < 0.05 and steps[5:].min() > 0.8  # every k-th, from the start on


@pytest.mark.parametrize("jitter", [0.3, 0.45])
def test_a_jittered_stream_at_the_models_rate_loses_nothing(jitter):
    """Over many seeds, the first steps included (a short first step once dropped the next reading)."""
    lost = 0
    for seed in range(500):
        rng = np.random.default_rng(seed)
        times = np.arange(60.0) + rng.uniform(-jitter, jitter, 60)  # steps from 1 - 2 jitter to 1 + 2 jitter
        lost += sum(kept_steps(times)[1].values())
    assert lost == 0


def test_a_slower_publisher_is_refused_but_one_outage_is_not_nor_one_losing_readings():
    lossy = np.delete(np.arange(300.0), np.arange(2, 300, 3))  # every third reading lost: 1.5 periods a step
    assert kept_steps(lossy)[1] == {"resampled": 0, "slow_rate": 0}  # (SLOW_RATE 1.5 refused about half: a walk)
    rng = np.random.default_rng(0)
    lossy = np.arange(3000.0)[rng.uniform(size=3000) > 0.25]  # a quarter lost at random (1.5: 64 refused)
    assert kept_steps(lossy)[1]["slow_rate"] == 0
    at_zero = CleaningPolicy(sample_period=1.0, fill_limit=0)  # its restart gap is 1.5 periods: a feed every
    keep, counts = admit_rows(1.6 * np.arange(200.0), at_zero)  # 1.6 was taken and restarted its window at
    assert counts["slow_rate"] > 150  # every reading, never scored, without a word (a review)
    outage = np.r_[np.arange(50.0), np.arange(54.0, 100.0)]  # a 4 s dropout: one long step
    assert kept_steps(outage)[1] == {"resampled": 0, "slow_rate": 0}
    slow = np.r_[np.arange(50.0), 50 + 3 * np.arange(1, 40)]  # from reading 50 on, one every 3 s
    keep, counts = admit_rows(slow, CleaningPolicy(sample_period=1.0))
    assert keep[:60].all() and not keep[60:].any() and counts["slow_rate"] == 29  # (refused from its 11th step)
    irregular = CleaningPolicy(sample_period=1.0, regular=False)  # off a grid there is no rate to hold
    assert admit_rows(slow, irregular)[0].all()


def test_the_live_cleaner_admits_reading_by_reading_what_admit_rows_keeps():
    rng = np.random.default_rng(3)
    times = np.sort(np.r_[np.arange(0, 40, 1 / 3), 40 + 2.5 * np.arange(20), 90 + np.arange(30.0)])
    times += rng.uniform(-0.01, 0.01, len(times))
    policy = CleaningPolicy(sample_period=1.0)
    cleaner = Cleaner(1)
    live = []
    for t in times:
        reason = cleaner.admit(float(t), policy)
        live.append(reason)
        if reason is None:
            cleaner.step(float(t), [0.0], policy)
    keep, counts = admit_rows(times, policy)
    assert [r is None for r in live] == keep.tolist()
    assert counts == {"resampled": live.count("resampled"), "slow_rate": live.count("slow_rate")}
    assert counts["resampled"] and counts["slow_rate"] and keep[-10:].all()  # back at the rate: taken again


def test_a_file_published_too_slowly_for_the_model_says_so():
    frame = pd.DataFrame({"timestamp": 3.0 * np.arange(40), "a": np.arange(40.0)})
    data = series_from_frame(frame, "slow.csv", policy=CleaningPolicy(sample_period=1.0))
    assert data.times.max() <= 18 and any("33 refused (too slow)" in note for note in data.notes)


def test_the_rate_is_held_only_to_a_bundles_policy_not_to_one_inferred_for_training():
    frame = pd.concat([pd.DataFrame({"timestamp": np.arange(60.0), "asset": "a", "x": np.arange(60.0)}),
                       pd.DataFrame({"timestamp": np.arange(0, 30, 0.5), "asset": "b", "x": np.arange(60.0)})])
    training = series_from_frame(frame, "two machines")  # one policy inferred for both: nothing dropped
    assert (training.assets == "b").sum() == 60
    scoring = series_from_frame(frame, "two machines", policy=CleaningPolicy(sample_period=1.0))
    assert 25 <= (scoring.assets == "b").sum() <= 35 and (scoring.assets == "a").sum() == 60


def test_a_restart_gap_shorter_than_one_step_is_refused():
    with pytest.raises(ValueError, match="restart the window at every reading"):
        CleaningPolicy.from_dict({"restart_gap_s": 1.2}, sample_period=1.0)

"""Edges of the training modules that no test pinned (found by mutating ``training/machines.py``,
``markers.py``, ``stamps.py``, ``clocks.py``, ``series.py``, ``offline.py`` and ``summary.py``):
which rows are read, which notes are said, and what a table or a summary writes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sensorguard.service.bundle import Bundle
from sensorguard.service.cleaning import admit_rows
from sensorguard.service.model import ModelConfig
from sensorguard.service.payload import NO_DATA
from sensorguard.service.sensors import ChannelLimits, SensorRules
from sensorguard.training.clocks import not_a_clock, turned_back_hours
from sensorguard.training.data import load_frame
from sensorguard.training.fit import fit_network
from sensorguard.training.machines import machine_hint, rates_apart, shown_name, spaced_names
from sensorguard.training.markers import no_data_markers
from sensorguard.training.offline import _carried, score_data, score_table, sensor_fault_column
from sensorguard.training.series import SensorData, concat_series, time_spans, utc_stamps
from sensorguard.training.stamps import local_clock, parse_times, zoned_stamps
from sensorguard.training.summary import TrainSummary, still_note, trend_note, yardstick_note
from sensorguard.training.tables import DataError
from sensorguard.training.train import TrainOptions
from tests.conftest import plant_frame


def _repeating(rows: int, unique: int, **columns: object) -> tuple[pd.DataFrame, np.ndarray]:
    """A frame of ``rows`` rows whose times take ``unique`` distinct values, with extra ``columns``."""
    times = np.arange(rows, dtype=np.float64) % unique * 60.0
    frame = pd.DataFrame({"timestamp": times, "temp": np.linspace(20.0, 30.0, rows), **columns})
    return frame, times


def test_a_fifth_of_rows_repeating_their_time_is_enough_for_the_machine_hint():
    """20 % of the rows repeating a stamp (a second machine logged a fifth as often) still drops
    them as duplicates: the hint must come from 10 % on, not only where half the rows repeat."""
    frame, times = _repeating(100, 80, unit=["a"] * 80 + ["b"] * 20)
    note = machine_hint(frame, "timestamp", times)
    assert note is not None and note.startswith("20% of the rows repeat a timestamp, and column 'unit'"), note


def test_a_column_of_one_value_is_not_offered_as_the_machines():
    """A text column holding one value (a site name on every row) cannot part the rows into
    machines: naming it would send the user to ``--asset-column`` for nothing."""
    frame, times = _repeating(40, 20, site=["north"] * 40)
    assert machine_hint(frame, "timestamp", times) is None


def test_a_column_with_a_value_for_most_rows_is_not_offered_as_the_machines():
    """A text column with more distinct values than half the rows (a comment, a batch id per row)
    is no machine column: with it, each machine would hold a row or two."""
    frame, times = _repeating(40, 20, comment=[f"c{k % 30}" for k in range(40)])
    assert machine_hint(frame, "timestamp", times) is None


def test_machines_two_and_a_half_times_apart_in_rate_are_named():
    """Rates twice apart or more get the note: 10 s and 25 s pool to a median neither machine has."""
    fast, slow = np.arange(0.0, 600.0, 10.0), np.arange(0.0, 600.0, 25.0)
    note = rates_apart([("fast", fast), ("slow", slow)])
    assert note is not None and note.startswith("the machines sample at different rates (fast every 10 s"), note
    assert rates_apart([("a", fast), ("b", np.arange(0.0, 600.0, 15.0))]) is None  # 1.5x: one rate


def test_a_machine_name_with_a_leading_space_is_quoted():
    """``" P1"`` read as ``P1`` in a note would send the user looking for a machine that is fine."""
    assert shown_name(" P1") == "' P1'"


def test_names_alone_in_their_group_are_not_spaced_names():
    """Only names that another one equals but for end spaces are listed: distinct names are not."""
    assert spaced_names(["P1", "P2", "P3"]) == []
    assert spaced_names(["P1", "P1 ", "P2"]) == ["P1", "P1 "]


def test_a_steady_level_next_to_a_round_number_is_a_reading_not_a_marker():
    """A setpoint held at 1000.0 that reads 999.0 once is a reading 1 away from its level, not a
    no-data marker: the spread's floor (1 % of the level) keeps it, where a spread of zero made
    every round value a marker."""
    values = np.column_stack([np.full(50, 1000.0)])
    values[10, 0] = 999.0
    assert no_data_markers(values, ("setpoint",), normal=True) == []
    assert values[10, 0] == 999.0


def test_a_round_value_a_few_ranges_away_is_a_reading():
    """A flow ranging 0 .. 400 that reaches 999 is an excursion (2 ranges away), not a marker:
    only values 20 ranges away are read as missing."""
    values = np.linspace(0.0, 400.0, 60)[:, None].copy()
    values[30, 0] = 999.0
    assert no_data_markers(values, ("flow",), normal=True) == []
    assert values[30, 0] == 999.0


def test_negative_no_data_and_minus_infinity_are_missing_too():
    """-3.4e38 and -inf are a historian's no-data as +3.4e38 and +inf are: learned, one such row set
    the channel's scale."""
    values = np.array([[1.0], [-NO_DATA], [-np.inf], [2.0]])
    notes = no_data_markers(values, ("temp",), normal=False)
    assert np.isnan(values[1:3, 0]).all()
    assert notes == [f"1 value of magnitude {NO_DATA:g} or more (a historian's no-data marker) and "
                     "1 infinite value read as missing"]


def test_a_16_bit_no_data_marker_is_read_as_missing_in_normal_data():
    """65535 (an unsigned 16-bit register's no-data) beside a temperature near 50 is a marker."""
    values = 50.0 + np.sin(np.arange(40.0))[:, None]
    values[5, 0] = 65535.0
    [note] = no_data_markers(values, ("temp",), normal=True)
    assert np.isnan(values[5, 0]) and "temp 65535 (1)" in note


def test_a_tenth_of_unreadable_stamps_is_refused_not_dropped():
    """Over 1 % of the stamps unreadable is a column read wrong, refused with one line: dropping
    10 % of the rows with a note lost a tenth of the data quietly."""
    stamps = pd.Series([f"2024-03-01 10:{m:02d}:00" for m in range(50)] + ["n/a"] * 5)
    with pytest.raises(DataError, match=r"5 unparseable timestamps in column 'when' \(e\.g\. 'n/a'\)"):
        parse_times(stamps, "when", "f.csv", [])


def test_epoch_stamps_as_text_with_a_few_dashes_name_the_dashes():
    """A text column of epoch seconds with 5 % ``--`` is read as numbers, so the error quotes a
    ``--``, not an epoch stamp it could read (``300 unparseable timestamps (e.g. '1767225600')``)."""
    stamps = pd.Series([str(1767225600 + 60 * k) for k in range(95)] + ["--"] * 5, dtype=object)
    with pytest.raises(DataError, match=r"5 unparseable timestamps in column 't' \(e\.g\. '--'\)"):
        parse_times(stamps, "t", "f.csv", [])


def test_a_negative_utc_offset_is_a_zone_not_a_local_clock():
    """``-05:00`` says its offset as ``+01:00`` and ``Z`` do: an American export's zoned stamps are
    no wall clock (no daylight saving correction) and, beside ``Z`` ones, no stamp lacks an offset."""
    column = pd.Series(["2024-11-03T01:30:00-05:00", "2024-11-03T01:31:00-05:00", "2024-11-03T06:32:00Z"])
    zoned = zoned_stamps(column)
    assert zoned is not None and zoned.tolist() == [True, True, True]
    assert not local_clock(column, zoned)


def test_elapsed_seconds_under_a_day_are_not_excel_dates():
    """0.01, 0.02, ... (elapsed seconds at 100 Hz) are no Excel serial dates, which lie in
    2000-2100 (36525 .. 73051 days): read so, each step became 864 s and the rows 1899's."""
    elapsed = np.arange(1, 2001) * 0.01
    notes: list[str] = []
    secs = parse_times(pd.Series(elapsed), "t", "f.csv", notes)
    np.testing.assert_allclose(secs, elapsed)
    assert notes == []


def test_a_warming_sensor_named_as_the_time_column_is_refused():
    """A temperature warming up falls on about a third of its steps, not half as a random walk's
    do: named with ``--time-column`` it must still be refused, not read as 1970 stamps."""
    rng = np.random.default_rng(5)
    warming = np.cumsum(0.05 + rng.normal(0.0, 0.1, 400))
    falls = float(np.mean(np.diff(warming) < 0))
    assert 0.25 < falls < 0.45  # (the case: fewer falls than a random walk's)
    with pytest.raises(DataError, match="column 'temp' does not read as a clock"):
        not_a_clock(warming, None, "temp", "f.csv")


def test_an_hour_missing_on_an_afternoon_does_not_end_the_autumn_correction():
    """After the clock went back (Chile, Sunday 2024-04-07 00:00 -> Saturday 23:00), an outage of an
    hour on a Tuesday afternoon is no spring change (those happen at night): the rows after it stay
    an hour later, or they are read an hour early from there on."""
    period = 600.0
    start = pd.Timestamp("2024-04-06 20:00").value / 1e9
    wall = start + period * np.arange(24)  # Saturday 20:00 .. 23:50
    wall = np.r_[wall, wall[-1] + period - 3600 + period * np.arange(400)]  # back to 23:00, then on
    outage = int(np.flatnonzero(wall == pd.Timestamp("2024-04-09 14:00").value / 1e9)[0])
    wall = np.r_[wall[:outage], wall[outage + 6:]]  # 14:00-14:50 missing: a step of an hour and a period
    times, changes = turned_back_hours(wall, np.zeros((len(wall), 1)), None)
    assert len(changes) == 1 and changes[0][1] is None  # no spring change ends it
    assert (times[24:] == wall[24:] + 3600).all()


def test_a_row_the_cleaning_dropped_has_no_row_not_its_neighbours():
    """``rows_of`` finds rows by their exact time: a time the series lacks (a row dropped in
    cleaning) is -1, or ``score`` wrote the neighbouring row's score beside it."""
    times = np.array([0.0, 1.0, 2.0, 4.0, 5.0])
    data = SensorData(np.zeros((5, 1)), times, np.zeros(5, dtype=int), ("a",), 1.0)
    assert data.rows_of(np.array([0.0, 3.0, 4.0, 9.0])).tolist() == [0, -1, 3, -1]


def test_a_two_hour_gap_parts_the_time_spans():
    """A gap over an hour parts the spans a fingerprint lists: rows before and after a two-hour
    stop are two stretches (calibrate warns of rows inside a span the model trained on)."""
    times = np.array([0.0, 60.0, 120.0, 7320.0, 7380.0])
    assert time_spans(times) == [(0.0, 120.0), (7320.0, 7380.0)]


def test_the_time_spans_kept_part_the_data_at_its_largest_gaps():
    """Over ``SPANS_KEPT`` spans, the data are parted at the largest gaps: a month-long stop must
    stay a gap between spans, not be merged into one span while two-hour stops part the rest."""
    steps = np.full(30, 7200.0)  # 29 two-hour gaps between rows
    steps[17] = 30 * 86400.0  # and a month
    times = np.r_[0.0, np.cumsum(steps)]
    spans = time_spans(times)
    assert len(spans) == 20
    assert any(b == times[17] and a == times[18] for (_, b), (a, _) in zip(spans[:-1], spans[1:], strict=True))


def test_stamps_are_written_to_the_microsecond():
    """A float64 epoch second holds about 0.2 us: the stamps ``score`` writes stop at the microsecond,
    not at noise under it (``.123456750``)."""
    assert utc_stamps(np.array([1767225600.1234567]))[0] == pd.Timestamp("2026-01-01 00:00:00.123457", tz="UTC")


def test_a_part_without_a_label_column_joins_as_normal_rows():
    """Joining a labeled file with recorded readings that have no labels: their rows count as
    normal (0), as the daemon recorded them, not as anomalous rows left out of training."""
    labeled = SensorData(np.zeros((2, 1)), np.array([0.0, 1.0]), np.zeros(2, dtype=int), ("a",), 1.0,
                         labels={"y": np.array([0, 1], dtype=np.int8)})
    recorded = SensorData(np.zeros((2, 1)), np.array([5.0, 6.0]), np.zeros(2, dtype=int), ("a",), 1.0)
    assert concat_series([labeled, recorded]).labels["y"].tolist() == [0, 1, 0, 0]


def test_a_fingerprint_of_two_stretches_lists_both():
    """Rows of March and of December (retrained with recorded ones) are two stretches: the bundle
    lists them, or ``calibrate`` takes the months between for rows the model trained on."""
    times = np.r_[np.arange(3.0) * 60, 90 * 86400.0 + np.arange(3.0) * 60]
    data = SensorData(np.zeros((6, 1)), times, np.zeros(6, dtype=int), ("a",), 60.0)
    spans = data.fingerprint()["time_spans"]
    assert [s[0] for s in spans] == ["1970-01-01T00:00:00+00:00", "1970-04-01T00:00:00+00:00"]


def test_an_unscored_row_after_a_silence_does_not_carry_the_alert():
    """``score`` gives a row it could not score its machine's alert state before it, but not across
    a silence longer than ``stale_after``: live, that silence ended the alert."""
    source = np.array([0.0, 1.0, 2.0, 100.0, 101.0])
    data = SensorData(np.zeros((3, 1)), source[:3], np.zeros(3, dtype=int), ("a",), 1.0, source_times=source)
    alert = np.array([1.0, 1.0, 1.0, np.nan, np.nan])
    assert _carried(alert, data, 10.0).tolist() == [1, 1, 1, 0, 0]
    assert _carried(alert, data, None).tolist() == [1, 1, 1, 1, 1]  # no silence rule: carried on


def test_exactly_one_window_of_rows_is_scored(tiny_bundle: Bundle) -> None:
    """A file holding exactly one window of rows (16 for this bundle) has one full window to score,
    so it is scored, not refused as having fewer rows than a window."""
    rng = np.random.default_rng(0)
    rows = tiny_bundle.window
    data = SensorData(rng.normal(size=(rows, 3)), np.arange(rows, dtype=np.float64), np.zeros(rows, dtype=int),
                      tiny_bundle.channels, 1.0)
    scored = score_data(tiny_bundle, data)
    assert np.isfinite(scored.scores.score[-1])


def test_each_machines_alert_ids_name_the_machine_as_live(tiny_bundle: Bundle) -> None:
    """Live, an alert's id is ``asset@...``; offline ids must read the same, or an alert in
    ``score``'s table names no alert the daemon raised (two machines' ids would even coincide)."""
    rng = np.random.default_rng(1)
    rows = 60
    data = SensorData(rng.normal(0.0, 3.0, (2 * rows, 3)), np.tile(np.arange(rows, dtype=np.float64), 2),
                      np.repeat([0, 1], rows), tiny_bundle.channels, 1.0,
                      assets=np.repeat(np.array(["p1", "p2"], dtype=object), rows))
    scored = score_data(tiny_bundle, data)
    assert scored.alert_ids is not None
    for asset, rows_ in data.blocks():
        ids = [i for i in scored.alert_ids[rows_] if i is not None]
        assert ids and all(i.startswith(f"{asset}@") for i in ids), (asset, ids[:3])


def _sine(rows: int, channels: int = 2, seed: int = 0) -> SensorData:
    """Correlated sine channels with a little noise, one a second."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows, dtype=np.float64)
    wave = np.sin(2 * np.pi * t / 40)
    values = np.column_stack([(k + 1) * wave + 0.1 * rng.standard_normal(rows) for k in range(channels)])
    return SensorData(values, 1.7e9 + t, np.zeros(rows, dtype=int), tuple(f"c{k}" for k in range(channels)), 1.0)


def test_the_best_epoch_counts_from_the_start_as_epoch_0() -> None:
    """An epoch that improves on the PCA start is epoch 1: the cross-fitted folds train for
    ``best_epoch`` epochs, so counting it 0 left them untrained (the PCA start) while the
    served model had learned."""
    options = TrainOptions(max_epochs=1, patience=1, progress=False, lr=2e-3)
    config = ModelConfig(channels=2, window=8, latent=2, hidden=4, depth=1)
    fit = fit_network(_sine(300), _sine(120, seed=1), config, options)
    start = fit_network(_sine(300), None, config, options, epochs=0)
    assert fit.best_epoch == 1 and fit.epochs == 1
    assert any(not torch.equal(fit.state[k], start.state[k]) for k in fit.state)


def test_an_epoch_worse_than_the_pca_start_is_not_kept() -> None:
    """Epoch 0 is the PCA start: a first epoch that made the validation loss worse (a learning rate
    far too high) must leave the start's weights, so training can only keep or improve on PCA."""
    options = TrainOptions(max_epochs=1, patience=1, progress=False, lr=5.0)
    config = ModelConfig(channels=2, window=8, latent=2, hidden=4, depth=1)
    fit = fit_network(_sine(300), _sine(120, seed=1), config, options)
    start = fit_network(_sine(300), None, config, options, epochs=0)
    assert fit.best_epoch == 0
    assert all(torch.equal(fit.state[k], start.state[k]) for k in fit.state)


def test_fitting_leaves_the_callers_thread_count_as_it_was() -> None:
    """Fitting runs on one thread and gives the caller's count back: a library user's later torch
    work stayed on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        config = ModelConfig(channels=2, window=8, latent=2, hidden=4, depth=1)
        fit_network(_sine(100), None, config, TrainOptions(progress=False), epochs=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_loss_equal_to_the_naive_yardstick_does_not_beat_it():
    """A tie is not a win: an autoencoder no better than window means is said to be so."""
    assert yardstick_note(0.0077, 0.0077, 0.02, 1) == (
        "the autoencoder (validation loss 0.0077) does not beat naive window means (0.0077)")


def _summary(promise: dict) -> TrainSummary:
    return TrainSummary(rows={"train": 1}, window=8, hop=1, latent=1, epochs=1, best_val_loss=0.1,
                        naive_val_loss=1.0, pca_val_loss=0.2, linear=1, threshold=1.0, method="alerts",
                        false_alarms_per_day=1.0, promise=promise, seconds=1.0)


def test_the_promise_line_says_a_fitted_line_below_the_largest_value_and_the_hours_it_saw():
    """A line under the largest held-out raise value is a fitted tail, "below" it (a walk read
    "extrapolated: threshold -40% against ..."), and half a day of calibration reads 12 h."""
    promise = {"promised_ci95": [0.5, 2.0], "margin": -0.4, "tail": "exponential", "promised_per_day": 1.0,
               "observed_alerts": 1, "calibration_days": 0.5, "effective_samples": 100}
    line = next(ln for ln in _summary(promise).lines() if ln.startswith("false alerts"))
    assert "tail fitted: threshold 40% below the largest held-out raise value seen" in line
    assert "observed 1 in 12 h of calibration data" in line


def test_a_short_still_run_or_a_channel_of_few_values_is_not_called_stuck():
    """The note names runs of ``STILL_NOTE`` readings or more (a stuck limit of twice the run): a
    limit of 40 is a run of 20, normal. A channel whose stuck fault needs a value seen in training
    (``seen``: a status or setpoint that holds values by design) is not named either."""
    rules = SensorRules(("a", "b"), (ChannelLimits(0.0, 1.0, 40), ChannelLimits(0.0, 1.0, 200, seen=(0.0, 1.0))))
    assert still_note(rules, 30.0) is None
    named = still_note(SensorRules(("a",), (ChannelLimits(0.0, 1.0, 80),)), 30.0)
    assert named is not None and "a 40 readings (20 min)" in named


def test_a_channel_a_line_in_time_explains_six_tenths_of_is_trending():
    """From ``TREND_SHARE`` (half the variance) a channel trends: one warming at 60 % is named."""
    t = np.linspace(-0.5, 0.5, 401)
    ramp = t + 0.333 * np.cos(2 * np.pi * 4 * t)  # the cosine is even: no part of the line
    data = SensorData(np.column_stack([ramp, np.cos(2 * np.pi * 3 * t)]), 1.7e9 + np.arange(401.0),
                      np.zeros(401, dtype=int), ("warm", "still"), 1.0)
    note = trend_note(data)
    assert note is not None and ": warm 60 %;" in note


def test_a_model_without_a_linear_path_shows_no_pca_yardstick():
    """With no linear path (one channel) there is no PCA of its rank to compare with: the summary
    says so, not "PCA of rank 0"."""
    summary = replace(_summary({}), linear=0)
    line = next(ln for ln in summary.lines() if ln.startswith("yardsticks"))
    assert line.endswith("(no PCA yardstick: the model has no linear path)") and "rank 0" not in line


def test_a_fit_for_a_given_number_of_epochs_says_it_ran_them() -> None:
    """Without a validation block (the served fold) the fit runs ``epochs`` and its best epoch is
    the last: the bundle and summary say the served model trained that many epochs, not 0."""
    config = ModelConfig(channels=2, window=8, latent=2, hidden=4, depth=1)
    fit = fit_network(_sine(200), None, config, TrainOptions(progress=False), epochs=1)
    assert (fit.best_epoch, fit.epochs) == (1, 1)


def test_a_refused_reading_inside_a_filled_gap_gets_no_score(tiny_bundle: Bundle, tmp_path: Path) -> None:
    """With a fill limit long enough to bridge a stretch of too-slow readings (``--fill-limit 60``),
    the grid rows at the refused readings' times are filled from their neighbours: ``score`` wrote
    those rows' scores as the refused readings', which the daemon never scored."""
    frame = plant_frame(rows=120, seed=1)
    frame.columns = ["timestamp", "a", "b", "c"]
    seconds = np.r_[np.arange(60), np.arange(61, 89, 2), np.arange(89, 89 + len(frame) - 74)]
    frame["timestamp"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(seconds, unit="s")
    frame.to_csv(tmp_path / "slow.csv", index=False)
    policy = replace(tiny_bundle.cleaning, fill_limit=60)
    refused = ~admit_rows(seconds.astype(float), policy)[0]
    data = load_frame([tmp_path / "slow.csv"], policy=policy, fill_limit=60)
    assert refused.any() and (data.rows_of(data.source_times)[refused] >= 0).all()  # (grid rows there)
    table = score_table(tiny_bundle, score_data(tiny_bundle, data))
    assert table.score[refused].isna().all()
    assert table.score[~refused].iloc[20:].notna().all()


def test_a_repeated_stamp_does_not_count_towards_a_stuck_sensor() -> None:
    """The daemon refuses a repeated stamp (duplicate_ts), so it never steps the sensor watch: three
    copies of one reading are one reading unchanged, and ``stuck`` (3 in a row) waits for the third
    distinct stamp, as live, not the second copy."""
    rules = SensorRules(("a",), (ChannelLimits(-10.0, 10.0, 3),), fill_limit=5)
    data = SensorData(np.ones((3, 1)), np.array([0.0, 1.0, 2.0]), np.zeros(3, dtype=int), ("a",), 1.0,
                      source_times=np.array([0.0, 1.0, 1.0, 1.0, 2.0]), source_values=np.ones((5, 1)))
    assert sensor_fault_column(data, rules).tolist() == ["", "", "", "", "stuck:a"]


def test_rows_out_of_order_by_many_steps_are_no_clock_change() -> None:
    """Beside an hour that seems to repeat, rows out of order by ten steps mean a shuffled export,
    not a clock going back: the times are left as they are (an hour added there would misplace the
    rows after it), where a swap of neighbours still allows the change (``SWAPPED_STEPS``)."""
    minutes = pd.Timestamp("2024-10-27 00:00").value / 1e9 + 60.0 * np.arange(360)
    wall = np.r_[minutes[:180], minutes[120:300]]  # 00:00-02:59, then 02:00 again ... 04:59
    shuffled = wall.copy()
    shuffled[[330, 340]] = shuffled[[340, 330]]
    times, changes = turned_back_hours(shuffled, np.zeros((360, 1)), None)
    assert changes == [] and (times == shuffled).all()
    neighbours = wall.copy()
    neighbours[[330, 331]] = neighbours[[331, 330]]
    assert len(turned_back_hours(neighbours, np.zeros((360, 1)), None)[1]) == 1

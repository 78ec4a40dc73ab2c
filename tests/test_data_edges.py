"""Edges of reading and cleaning history that no test pinned (found by mutating training/data.py):
which files and columns are refused with one line, which are read, and what the notes say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sensorguard.service.sensors import ChannelLimits, SensorRules
from sensorguard.training.data import DataError, load_frame, series_from_frame
from tests.conftest import plant_frame


def rules(channels: tuple[str, ...]) -> SensorRules:
    """A bundle's sensor limits for ``channels`` (scoring with them reads a missing channel as a fault)."""
    return SensorRules(channels, tuple(ChannelLimits(-50.0, 50.0, 10) for _ in channels), fill_limit=5)


def plant(rows: int, names: tuple[str, ...]) -> pd.DataFrame:
    frame = plant_frame(rows=rows, channels=len(names), seed=3)
    frame.columns = ["timestamp", *names]
    return frame


def test_no_files_at_all_is_one_line_not_an_index_error():
    """``load_frame([])`` read ``frames[0]`` of nothing: an IndexError traceback, not a DataError."""
    with pytest.raises(DataError, match="no data files given"):
        load_frame([])


def test_an_error_in_several_files_names_the_first_and_how_many_more(tmp_path: Path):
    """Errors over several files name the first and count the others: ``a.csv (+2 more)`` for three."""
    frame = pd.DataFrame({"when": ["x"] * 30, "temp": np.arange(30) * 0.5})
    paths = [tmp_path / f"{n}.csv" for n in "abc"]
    for path in paths:
        frame.to_csv(path, index=False)
    with pytest.raises(DataError) as raised:
        load_frame(paths)
    assert str(raised.value).startswith(f"{paths[0]} (+2 more): ")


def test_a_decimal_comma_in_any_of_several_files_makes_one_days_dates_day_first(tmp_path: Path):
    """One export of a day writes decimal commas (a day-first locale), its sibling only whole numbers:
    read together, ``01/03/2026`` is still March 1st. Taking the locale only where *every* file
    showed a decimal comma read the pair as January 3rd."""
    stamps = pd.date_range("2026-03-01", periods=240, freq="1min")
    first = "".join(f"{t:%d/%m/%Y %H:%M:%S};{20 + i % 7 / 10:.1f}\n".replace(".", ",")
                    for i, t in enumerate(stamps[:120]))
    second = "".join(f"{t:%d/%m/%Y %H:%M:%S};{20 + i % 7}\n" for i, t in enumerate(stamps[120:]))
    (tmp_path / "a.csv").write_text("horodatage;temp\n" + first)
    (tmp_path / "b.csv").write_text("horodatage;temp\n" + second)
    both = load_frame([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert pd.Timestamp(both.times[0], unit="s") == pd.Timestamp("2026-03-01")
    assert len(both) == 240


def test_a_model_channel_a_file_lacks_is_read_as_missing_only_when_fewer_than_half_are_gone():
    """Scoring with sensor limits, a file without one of the model's three channels is a feed without
    that sensor (missing in every row, said); one without half of them (one of two) is no such feed:
    refused as channels not found, not scored as mostly filled-in readings."""
    one_gone = plant(200, ("a", "b", "c")).drop(columns=["c"])
    data = series_from_frame(one_gone, "old", channels=("a", "b", "c"), sensors=rules(("a", "b", "c")))
    assert data.channels == ("a", "b", "c")
    assert any(n.startswith("'c' not in old: read as missing in every row") for n in data.notes), data.notes
    half_gone = plant(200, ("a", "b")).drop(columns=["b"])
    with pytest.raises(DataError, match="channels not found: b"):
        series_from_frame(half_gone, "old", channels=("a", "b"), sensors=rules(("a", "b")))


def test_a_column_of_its_own_beside_a_missing_channel_is_no_feed_without_it():
    """A file with a column the model does not know (``C`` beside the model's ``c``) may hold the
    missing channel renamed: refused, not read with ``c`` missing in every row."""
    renamed = plant(200, ("a", "b", "C"))
    with pytest.raises(DataError, match="channels not found: c"):
        series_from_frame(renamed, "old", channels=("a", "b", "c"), sensors=rules(("a", "b", "c")))


def _asset_named(values: list) -> pd.DataFrame:
    rows = len(values)
    return pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=rows, freq="s"),
                         "temp": np.linspace(20.0, 21.0, rows), "unit": values})


def test_a_sensor_column_of_twenty_readings_named_as_the_machines_is_refused():
    """``--asset-column`` naming a sensor (distinct fractions) made every reading a machine of one row.
    Twenty filled cells are enough to tell a sensor column so."""
    readings = [round(0.37 * i + 0.11, 2) for i in range(20)]
    with pytest.raises(DataError, match="'unit' has 20 different values in 20 rows.*is it a sensor column"):
        series_from_frame(_asset_named(readings), "snap", asset_column="unit")


def test_machine_names_mostly_numbered_with_a_fraction_are_no_sensor_column():
    """A fleet snapshot, one row per machine, most numbered line.station (``3.1``) and a few by name:
    the names are not nearly all numbers, so the column names machines and is read as such."""
    names = [f"{3 + i // 9}.{i % 9 + 1}" for i in range(24)] + [f"spare-{i}" for i in range(6)]
    data = series_from_frame(_asset_named(names), "snap", asset_column="unit")
    assert sorted(set(data.assets)) == sorted(names)


def test_the_column_that_named_the_machines_at_training_is_the_bundles(tiny_bundle):
    """``trained_asset_column`` hands ``load_frame`` the bundle's ``training.asset_column``: without
    it a retrain on a fleet file merged the machines (two thirds of the rows dropped as repeats)."""
    from dataclasses import replace

    from sensorguard.training.data import trained_asset_column

    assert trained_asset_column(replace(tiny_bundle, training={"asset_column": "unit"})) == "unit"
    assert trained_asset_column(tiny_bundle) is None and trained_asset_column(None) is None


@pytest.mark.parametrize("time_column", ["Uhrzeit", None])
def test_a_date_and_a_time_of_day_column_are_one_clock_and_no_channel(time_column):
    """``Datum`` (``01.03.2026``) beside ``Uhrzeit``, either found or named as the time column: the
    stamps are the date then the time, so dotted dates are read day first (March 1st and 2nd, never
    January 3rd), and the other half of the clock is no column "left out" for having no numbers."""
    stamps = pd.date_range("2026-03-01", periods=48, freq="h")
    frame = pd.DataFrame({"Datum": stamps.strftime("%d.%m.%Y"), "Uhrzeit": stamps.strftime("%H:%M:%S"),
                          "Temp": np.linspace(20.0, 21.0, 48)})
    data = series_from_frame(frame, "de", time_column=time_column)
    assert pd.Timestamp(data.times[0], unit="s") == pd.Timestamp("2026-03-01")
    assert pd.Timestamp(data.times[-1], unit="s") == pd.Timestamp("2026-03-02 23:00")
    assert data.channels == ("Temp",) and len(data) == 48
    assert data.notes == ("timestamps from columns 'Datum' and 'Uhrzeit' together",), data.notes

def test_a_channel_given_as_the_time_column_is_refused_before_its_values_are_read_as_times():
    """``--time-column flow`` with ``flow`` among the channels read the flows as epoch seconds (120 s
    after 1970); said as the one mistake it is, naming both roles."""
    frame = plant(200, ("flow", "temp"))
    with pytest.raises(DataError, match="plant: flow is the time column and also a channel"):
        series_from_frame(frame, "plant", time_column="flow", channels=["flow", "temp"])


def test_a_column_named_date_beside_the_times_of_day_gives_their_dates_in_any_shape():
    """``Date`` written ``01-Mar-2026`` is no digits-only date, but its name says what it holds: the
    times of day take their dates from it, not today's."""
    stamps = pd.date_range("2026-03-01", periods=48, freq="h")
    frame = pd.DataFrame({"Time": stamps.strftime("%H:%M:%S"), "Date": stamps.strftime("%d-%b-%Y"),
                          "Temp": np.linspace(20.0, 21.0, 48)})
    data = series_from_frame(frame, "export", time_column="Time")
    assert pd.Timestamp(data.times[0], unit="s") == pd.Timestamp("2026-03-01")
    assert "timestamps from columns 'Date' and 'Time' together" in data.notes


def test_the_column_that_named_the_machines_at_training_keeps_them_apart_unasked():
    """Without ``--asset-column``, a table with the column the model's machines were named by when it
    was trained is read per machine (it merged them: the repeated stamps dropped), and said."""
    one = plant(120, ("temp",))
    frame = pd.concat([one.assign(unit="p1"), one.assign(unit="p2")], ignore_index=True)
    data = series_from_frame(frame, "fleet", trained_asset_column="unit")
    assert len(data) == 240 and sorted(set(data.assets)) == ["p1", "p2"]
    assert any(n.startswith("machines named by column 'unit', as when the model was trained") for n in data.notes)


def test_a_missing_asset_column_with_epoch_second_stamps_is_one_line():
    """``--asset-column machine`` on a table without it, its time column epoch seconds (as recordings
    are): one line naming the column, not a KeyError from the clock check that reads the machines."""
    frame = plant(100, ("temp",))
    frame.insert(0, "ts", frame.pop("timestamp").astype("int64") / 1e9)
    with pytest.raises(DataError, match="rec: asset column 'machine' not found"):
        series_from_frame(frame, "rec", time_column="ts", asset_column="machine")


def test_normal_data_lacking_a_model_channel_is_refused_even_with_sensor_limits():
    """Only scoring reads a channel a file lacks as missing in every row: data taken as normal (train,
    calibrate, retrain) without it would teach a line on readings the model filled in: refused."""
    one_gone = plant(200, ("a", "b", "c")).drop(columns=["c"])
    with pytest.raises(DataError, match="channels not found: c"):
        series_from_frame(one_gone, "new", channels=("a", "b", "c"), sensors=rules(("a", "b", "c")), normal=True)


def test_a_label_column_the_table_lacks_is_one_line():
    """``--label-column anomaly`` on a table without it: one line naming it, not a KeyError."""
    with pytest.raises(DataError, match="plant: label column 'anomaly' not found"):
        series_from_frame(plant(100, ("temp",)), "plant", label_column="anomaly")


@pytest.mark.parametrize(("blank", "said"), [(1, "1 row has an empty anomaly cell: it counts as normal (0)"),
                                             (2, "2 rows have an empty anomaly cell: they count as normal (0)")])
def test_empty_label_cells_are_counted_in_a_note(blank: int, said: str):
    """Blank label cells are read as normal; how many is said, in the singular for one."""
    frame = plant(100, ("temp",))
    frame["anomaly"] = pd.array([None] * blank + [0] * (100 - blank), dtype="Int64")
    assert said in series_from_frame(frame, "plant", label_column="anomaly").notes


def test_the_machines_of_a_table_come_out_in_the_order_of_their_names_whatever_the_rows_order():
    """Each machine is cleaned as its own series, and the series are joined in the order of their
    names: a fleet table comes out the same whichever machine's rows it holds first."""
    one = plant(120, ("temp",))
    first, second = one.assign(unit="p2"), one.assign(unit="p1", temp=one["temp"] + 5.0)
    data = series_from_frame(pd.concat([first, second], ignore_index=True), "fleet", asset_column="unit")
    again = series_from_frame(pd.concat([second, first], ignore_index=True), "fleet", asset_column="unit")
    assert list(dict.fromkeys(data.assets)) == ["p1", "p2"]
    np.testing.assert_array_equal(data.values, again.values)


def test_one_row_without_a_machine_is_said_in_the_singular():
    """A row whose machine cell is empty is left out and counted: "1 row", not "1 rows"."""
    frame = plant(120, ("temp",)).assign(unit="p1")
    frame.loc[5, "unit"] = ""
    data = series_from_frame(frame, "fleet", asset_column="unit")
    assert "1 row with an empty unit cell left out: no machine to score them as" in data.notes, data.notes


def test_of_rows_repeating_a_stamp_the_first_is_kept_and_no_disorder_is_said():
    """A repeated stamp keeps its first row, as the daemon keeps the first reading and rejects a
    repeat; rows in time order apart from the repeat are not said to be out of order."""
    frame = plant(60, ("temp",))
    repeat = frame.iloc[[10]].assign(temp=999.0)
    frame = pd.concat([frame.iloc[:11], repeat, frame.iloc[11:]], ignore_index=True)
    data = series_from_frame(frame, "plant")
    assert len(data) == 60 and 999.0 not in data.values
    assert data.values[10, 0] == frame["temp"].iloc[10]
    assert "1 duplicate timestamps: kept the first row of each" in data.notes
    assert not any("not in time order" in n for n in data.notes), data.notes


def test_notes_that_begin_with_a_count_are_told_apart_by_what_the_cleaning_did():
    """``cleaning_note`` tells replay which notes say what the cleaning did: "3 duplicate timestamps:
    ..." is one (its count first), as is a machine's ("pump-1: 3 ..."); how the file was read is not."""
    from sensorguard.training.series_cleaning import cleaning_note

    assert cleaning_note("3 duplicate timestamps: kept the first row of each")
    assert cleaning_note("pump-1: 2 rows still incomplete after filling: dropped, series split there")
    assert not cleaning_note("timestamps from columns 'Datum' and 'Uhrzeit' together")


def _repeated(period: str, times: int) -> pd.DataFrame:
    stamps = pd.date_range("2026-01-01", periods=40, freq=period).repeat(times)
    return pd.DataFrame({"timestamp": stamps, "temp": np.arange(len(stamps)) * 0.25})


def test_the_cut_seconds_hint_is_for_whole_minute_stamps_mostly_repeated():
    """Most rows repeating a stamp, every stamp a whole minute: the seconds were cut (Excel's h:mm),
    said with the repeats. Rows repeated 3 times on a 10 s grid are repeats, not cut seconds."""
    cut = series_from_frame(_repeated("min", 3), "excel")
    assert any(n.startswith("80 duplicate timestamps: kept the first row of each (every stamp is a whole minute")
               for n in cut.notes), cut.notes
    tens = series_from_frame(_repeated("10s", 3), "log")
    assert "80 duplicate timestamps: kept the first row of each" in tens.notes


def _with_fast_readings(rows: int = 200) -> pd.DataFrame:
    """One machine at 1 s with ten extra readings half a second after others (a burst too fast)."""
    frame = plant(rows, ("temp",))
    burst = frame.iloc[50:60].assign(timestamp=frame["timestamp"].iloc[50:60] + pd.Timedelta("500ms"))
    return pd.concat([frame, burst], ignore_index=True).sort_values("timestamp", ignore_index=True)


def test_readings_off_a_bundles_rate_are_resampled_away_and_said(tiny_bundle):
    """Scored with a bundle's cleaning, readings faster than its 1 s grid are not taken, as live (the
    daemon resamples them away), and how many is said."""
    data = series_from_frame(_with_fast_readings().rename(columns={"temp": "a"}).assign(b=1.5, c=2.5), "plant",
                             channels=("a", "b", "c"), policy=tiny_bundle.cleaning)
    said = [n for n in data.notes if n.startswith("published off the model's 1 s grid: ")]
    assert said and said[0].endswith("readings resampled away (too fast), 0 refused (too slow)"), data.notes
    assert len(data) < 210


def test_training_on_several_machines_holds_no_rate_against_their_readings():
    """Training has no model's rate to hold readings to: each machine's rows are all taken, a burst
    of fast ones too, though the machines share one inferred cleaning policy."""
    fast = _with_fast_readings().assign(unit="p1")
    data = series_from_frame(pd.concat([fast, plant(200, ("temp",)).assign(unit="p2")], ignore_index=True),
                             "fleet", asset_column="unit")
    assert not any("published off" in n for n in data.notes), data.notes
    assert int((data.assets == "p1").sum()) >= 210


def test_a_repeated_stamp_labelled_anomalous_only_in_its_second_row_is_said_lost():
    """Of a repeated stamp the first row is kept: where only the second was labelled anomalous, that
    label is lost to ``evaluate`` and a note says so; labels kept whole say nothing."""
    frame = plant(100, ("temp",))
    frame["anomaly"] = 0
    frame.loc[40:44, "anomaly"] = 1
    kept = series_from_frame(frame, "plant", label_column="anomaly")
    assert not any("removed by the cleaning" in n for n in kept.notes), kept.notes
    repeat = frame.iloc[[20]].assign(anomaly=1)
    lost = series_from_frame(pd.concat([frame.iloc[:21], repeat, frame.iloc[21:]], ignore_index=True), "plant",
                             label_column="anomaly")
    assert any(n.startswith("1 rows labelled anomalous in 'anomaly' removed by the cleaning") for n in lost.notes)


def test_a_long_gap_is_said_as_restarts_and_the_segments_they_make():
    """One long outage: "1 window restarts ...: 2 segments" (the count of pieces, one more)."""
    frame = plant(200, ("temp",))
    frame = frame.drop(index=range(100, 160))
    data = series_from_frame(frame, "plant")
    assert "1 window restarts (long gaps, dropped rows): 2 segments" in data.notes, data.notes


def test_how_a_later_file_was_read_is_said_too(tmp_path: Path):
    """Notes on how each file was read (the second one Windows-1252, as Excel writes it) are kept for
    the files after the first as well."""
    frame = plant(100, ("Temp °C",))
    frame.iloc[:50].to_csv(tmp_path / "a.csv", index=False, encoding="utf-8")
    frame.iloc[50:].to_csv(tmp_path / "b.csv", index=False, encoding="cp1252")
    data = load_frame([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert any(n.startswith("not UTF-8 text: read as Windows-1252") for n in data.notes), data.notes


def test_readings_out_of_a_sensors_range_open_a_fault_when_scored_with_limits():
    """Scored with a bundle's sensor limits, readings beyond a channel's range open a sensor fault, as
    the daemon's watch does: said, and marked per row."""
    frame = plant(200, ("a", "b", "c"))
    frame.loc[100:130, "b"] = 500.0  # far beyond its limit of 50
    data = series_from_frame(frame, "plant", channels=("a", "b", "c"), sensors=rules(("a", "b", "c")))
    assert any(n.startswith("1 sensor faults opened (b)") for n in data.notes), data.notes
    assert data.faulted is not None and data.faulted[:, 1].any() and not data.faulted[:, 0].any()


def test_data_sampled_a_fifth_slower_than_the_model_are_said_to_be():
    """Scored with a model's 1 s policy, data every 1.2 s are said to be sampled at another rate (gaps
    are judged on the model's grid); 5 % off is jitter, said nothing."""
    from sensorguard.service.cleaning import CleaningPolicy

    def every(step: str) -> tuple[str, ...]:
        frame = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=100, freq=step),
                              "a": np.linspace(0, 1, 100)})
        return series_from_frame(frame, "plant", policy=CleaningPolicy(1.0, True, 5)).notes

    assert any(n.startswith("sampled every 1.2 s, the model every 1 s") for n in every("1200ms"))
    assert every("1050ms") == ()


def test_a_label_column_beside_a_missing_channel_is_no_renamed_sensor():
    """A labelled history export (an ``is_fault`` 0/1 column) lacking one of the model's channels was
    refused as "channels not found" by ``score``, as if the label column could be the sensor
    renamed (a walk): a label-like column is never a channel, so the file is a feed without it."""
    frame = plant(200, ("a", "b", "c")).drop(columns=["c"]).assign(is_fault=0)
    data = series_from_frame(frame, "old", channels=("a", "b", "c"), sensors=rules(("a", "b", "c")))
    assert any(n.startswith("'c' not in old: read as missing in every row") for n in data.notes), data.notes


def test_the_training_files_other_columns_beside_a_missing_channel_are_no_renamed_sensor(tiny_bundle, tmp_path):
    """A column the training file had beside the channels (constant there, so left out: the bundle's
    ``ignored_columns``) cannot be one of the model's channels renamed; an export from the same
    historian lacking one sensor was refused by ``score`` ("channels not found", a walk) where the
    daemon takes such readings: read it as missing in every row instead."""
    from dataclasses import replace

    from sensorguard.cli import main
    from sensorguard.service.bundle import save_bundle

    bundle = replace(tiny_bundle, sensors=rules(tiny_bundle.channels), ignored_columns=("spare",))
    save_bundle(bundle, tmp_path / "model")
    plant(200, ("a", "b", "c")).drop(columns=["c"]).assign(spare=0.0).to_csv(tmp_path / "old.csv", index=False)
    assert main(["score", str(tmp_path / "model"), str(tmp_path / "old.csv"), "--out", str(tmp_path / "s.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "s.csv")) == 200


def test_an_epoch_column_beside_the_timestamps_is_a_second_clock_not_a_sensor():
    """Historian exports often write each row's time twice: text stamps (here local, across the
    autumn's repeated hour) and epoch ms. The epoch column was trained on as a sensor that only
    climbs, so every window of a later file scored over 10x the line (a walk). It is left out and
    said; a sensor beside stamps near 1970 (elapsed seconds) is still a sensor."""
    frame = plant(400, ("a", "b"))
    utc = pd.date_range("2026-10-25 00:00", periods=400, freq="1min", tz="UTC")
    frame["timestamp"] = utc.tz_convert("Europe/Berlin").tz_localize(None).strftime("%Y-%m-%d %H:%M:%S")
    frame["epoch_ms"] = (utc - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    data = series_from_frame(frame, "export")
    assert data.channels == ("a", "b") and "epoch_ms" in data.left_out
    assert any(n.startswith("column 'epoch_ms' holds the timestamps again (epoch ms)") for n in data.notes)
    elapsed = pd.DataFrame({"timestamp": np.arange(400), "a": 60 + np.sin(np.arange(400) / 9.0),
                            "ramp": np.linspace(0.0, 400.0, 400)})
    assert series_from_frame(elapsed, "elapsed").channels == ("a", "ramp")

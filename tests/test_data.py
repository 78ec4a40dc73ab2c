import os
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from sensorguard.training.data import DataError, SensorData, concat_series, drop_labeled, load_frame, series_from_frame
from sensorguard.training.splits import WindowDataset, choose_window, split_by_time, window_starts
from tests.conftest import plant_frame


def text(content):
    def make(path):
        path.write_text(content)
        return path

    return make


def write(frame, path, **kwargs):
    frame.to_csv(path, index=False, **kwargs)
    return path


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_delimiters_detected(tmp_path, sep):
    path = write(plant_frame(200), tmp_path / "d.csv", sep=sep)
    data = load_frame([path])
    assert data.channels == ("c0", "c1", "c2")
    assert len(data) == 200


def test_parquet_and_multiple_files(tmp_path):
    frame = plant_frame(400)
    frame.iloc[:200].to_parquet(tmp_path / "a.parquet")
    frame.iloc[200:].to_parquet(tmp_path / "b.parquet")
    data = load_frame([tmp_path / "b.parquet", tmp_path / "a.parquet"])
    assert len(data) == 400 and (np.diff(data.times) > 0).all()
    # the same columns in another order (two exports of one historian) line up by name; other columns
    # are named (it said "columns differ" alone for both: a walk)
    frame.iloc[200:, ::-1].to_csv(tmp_path / "reversed.csv", index=False)
    both = load_frame([tmp_path / "a.parquet", tmp_path / "reversed.csv"])
    assert both.channels == data.channels and np.array_equal(both.values, data.values)
    frame.iloc[200:].drop(columns="c1").assign(note="x").to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(DataError, match=r"other.csv: columns differ from .*a.parquet: without 'c1'; with 'note' too"):
        load_frame([tmp_path / "a.parquet", tmp_path / "other.csv"])


def test_machines_whose_names_differ_only_in_spaces_are_said(tmp_path):
    """"P1 " (a trailing space on ten rows) was a machine apart, its rows cut out of P1's series, and
    the notes wrote it as "P1 : ...", read as a typo of P1 (a walk): the names are said, quoted."""
    frame = plant_frame(400).assign(asset="P1")
    frame.loc[200:209, "asset"] = "P1 "
    data = load_frame([write(frame, tmp_path / "spaced.csv")], asset_column="asset")
    notes = data.notes
    assert data.fingerprint()["asset_column"] == "asset"  # (bundle.json keeps it: score takes it by itself)
    from sensorguard.training.splits import split_by_time

    parts = split_by_time(data)  # (a split, and so every retrained bundle, lost it: a review)
    assert parts.train.asset_column == "asset" and concat_series([parts.train]).asset_column == "asset"
    assert "machines whose names differ only in spaces are machines apart: 'P1', 'P1 '" in notes, notes
    from sensorguard.training.machines import shown_name

    assert (shown_name("P1 "), shown_name("P1"), shown_name("a\tb")) == ("'P1 '", "P1", "'a\\tb'")


def test_unsorted_and_duplicates(tmp_path):
    frame = plant_frame(300)
    shuffled = pd.concat([frame.sample(frac=1, random_state=0), frame.iloc[[5, 6]]])
    data = load_frame([write(shuffled, tmp_path / "d.csv")])
    assert len(data) == 300
    assert (np.diff(data.times) > 0).all()
    assert any("sorted" in n for n in data.notes) and any("duplicate" in n for n in data.notes)


def test_short_gaps_filled_long_gaps_split(tmp_path):
    frame = plant_frame(1000)
    frame = frame.drop(index=list(range(100, 103)) + list(range(500, 600)))
    data = load_frame([write(frame, tmp_path / "d.csv")], fill_limit=5)
    assert len(data) == 1000 - 100  # 3 short-gap rows re-inserted, 100-row outage not
    assert data.segments[0] == 0 and data.segments[-1] == 1
    assert data.values[100:103].tolist() == [data.values[99].tolist()] * 3  # forward-filled
    starts = window_starts(data.segments, 32)
    assert not any(data.segments[s] != data.segments[s + 31] for s in starts)


def test_label_columns_never_channels(tmp_path):
    frame = plant_frame(200)
    frame["anomaly"] = 0
    frame["status"] = "ok"
    data = load_frame([write(frame, tmp_path / "d.csv")], label_column="anomaly")
    assert data.channels == ("c0", "c1", "c2")
    assert data.labels["anomaly"].sum() == 0


def test_channel_selection_and_exclude(tmp_path):
    path = write(plant_frame(200), tmp_path / "d.csv")
    assert load_frame([path], channels=["c2", "c0"]).channels == ("c2", "c0")
    assert load_frame([path], exclude=["c1"]).channels == ("c0", "c2")


def test_epoch_time_column(tmp_path):
    frame = plant_frame(200)
    stamps = frame.pop("timestamp")
    frame["epoch"] = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().astype("int64")
    data = load_frame([write(frame, tmp_path / "d.csv")], time_column="epoch")
    assert data.sample_period == 1.0 and data.channels == ("c0", "c1", "c2")


@pytest.mark.parametrize(
    "make, kwargs, message",
    [
        (lambda p: p, {}, "file not found"),
        (lambda p: os.mkfifo(p) or p, {}, "not a regular file"),  # (it said "file not found": a walk)
        (text(""), {}, "empty"),
        (text("timestamp,name\n2026-01-01,a\n2026-01-02,b\n"), {}, "no numeric"),
        (text("a,b\n1,2\n3,4\n"), {}, "no timestamp column"),
        (text("timestamp,a\nyesterday,1\nsoon,2\n"), {}, "unparseable timestamps"),
        (lambda p: write(plant_frame(50), p), {"channels": ["nope"]}, "channels not found"),
        (lambda p: write(plant_frame(50), p), {"time_column": "when"}, "time column 'when' not found"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, make, kwargs, message):
    path = tmp_path / "d.csv"
    result = make(path)
    with pytest.raises(DataError, match=message):
        load_frame([result], **kwargs)


def test_split_is_contiguous_in_time():
    data_frame = plant_frame(1000)
    from sensorguard.training.data import SensorData

    data = SensorData(data_frame[["c0"]].to_numpy(), np.arange(1000.0), np.zeros(1000, int), ("c0",), 1.0)
    splits = split_by_time(data)
    assert [len(splits.train), len(splits.validation), len(splits.calibration)] == [600, 200, 200]
    assert splits.train.times[-1] < splits.validation.times[0] < splits.calibration.times[0]


def test_window_adapts_to_small_data():
    from sensorguard.training.data import SensorData

    for rows, expected in [(5000, 32), (250, 16), (120, 8)]:
        data = SensorData(np.zeros((rows, 2)), np.arange(float(rows)), np.zeros(rows, int), ("a", "b"), 1.0)
        assert choose_window(split_by_time(data), None) == expected
    tiny = SensorData(np.zeros((40, 2)), np.arange(40.0), np.zeros(40, int), ("a", "b"), 1.0)
    with pytest.raises(DataError, match="too little data: 40 usable rows, need about 115") as caught:
        choose_window(split_by_time(tiny), None)
    need = int(str(caught.value).split("need about ")[1].split()[0])  # it said 200 while 115 trained (README walk)
    for rows, ok in [(need - 5, False), (need, True)]:
        data = SensorData(np.zeros((rows, 2)), np.arange(float(rows)), np.zeros(rows, int), ("a", "b"), 1.0)
        if ok:
            assert choose_window(split_by_time(data), None) == 8
        else:
            with pytest.raises(DataError, match="too little data"):
                choose_window(split_by_time(data), None)


def test_window_dataset_batches_equal_items():
    values = np.arange(40, dtype=float).reshape(20, 2)
    ds = WindowDataset(values, np.zeros(20, int), window=4)
    batch = ds.__getitems__([0, 5])
    assert batch.shape == (2, 2, 4)
    assert np.array_equal(batch[1].numpy(), ds[5].numpy())
    assert ds[0].numpy().tolist() == [[0, 2, 4, 6], [1, 3, 5, 7]]


def test_drop_labeled_splits_segments():
    from sensorguard.training.data import SensorData

    labels = np.zeros(10, np.int8)
    labels[4:6] = 1
    data = SensorData(np.zeros((10, 1)), np.arange(10.0), np.zeros(10, int), ("a",), 1.0, {"y": labels})
    out = drop_labeled(data, "y")
    assert len(out) == 8 and out.segments.tolist() == [0] * 4 + [1] * 4


def test_asset_column_keeps_machines_apart(tmp_path):
    a, b = plant_frame(300, seed=1), plant_frame(300, seed=2)
    a["asset"], b["asset"] = "pump-1", "pump-2"
    mixed = pd.concat([a, b]).sample(frac=1, random_state=0)  # same times, interleaved rows
    data = load_frame([write(mixed, tmp_path / "d.csv")])
    assert data.channels == ("c0", "c1", "c2") and len(data) == 600
    assert len(set(data.segments[:300])) == 1 and data.segments[0] != data.segments[-1]
    splits = split_by_time(data)
    assert len(splits.train) == 360 and len(splits.calibration) == 120  # the same period of each machine
    assert splits.calibration.times.min() >= splits.validation.times.max()


def test_series_with_different_channels_are_not_concatenated():
    from sensorguard.training.data import SensorData, concat_series

    def part(channels):
        return SensorData(values=np.zeros((3, len(channels))), times=np.arange(3.0), segments=np.zeros(3, np.int64),
                          channels=tuple(channels), sample_period=1.0)

    with pytest.raises(DataError, match="different channels"):
        concat_series([part(["a", "b"]), part(["a", "c"])])


def test_concatenated_series_keep_the_sensor_fault_marks_of_the_parts_that_have_them():
    """Found by review: one part without marks (a recording) dropped every part's, so calibrate
    --data X --recorded DIR calibrated on X's windows with a sensor fault open."""
    from sensorguard.training.data import SensorData, concat_series

    def part(faulted):
        return SensorData(values=np.zeros((3, 2)), times=np.arange(3.0), segments=np.zeros(3, np.int64),
                          channels=("a", "b"), sample_period=1.0, faulted=faulted)

    marked = np.array([[False, True], [False, False], [True, False]])
    both = concat_series([part(marked), part(None)])
    assert both.faulted is not None and both.faulted.shape == (6, 2)
    assert both.faulted[:3].tolist() == marked.tolist() and not both.faulted[3:].any()
    assert concat_series([part(None), part(None)]).faulted is None


# --- found by a review of the data path: each of these read wrong data without a word ----------------


def _frame(**columns):
    return pd.DataFrame(columns)


def test_separate_date_and_time_columns_are_read_together():
    stamps = pd.date_range("2024-03-01", periods=3 * 24 * 4, freq="15min")
    values = np.sin(np.arange(len(stamps)) / 5.0)
    frame = _frame(Date=stamps.strftime("%Y-%m-%d"), Time=stamps.strftime("%H:%M:%S"), p=values, q=values * 2)
    data = series_from_frame(frame, "split")
    assert len(data) == len(stamps) and data.channels == ("p", "q")  # it kept one day of three
    assert data.times[0] == stamps[0].timestamp() and data.times[-1] == stamps[-1].timestamp()
    alone = series_from_frame(frame.iloc[:96].drop(columns="Date"), "no-date")  # a day's clock: read as today
    assert len(alone) == 96 and any("times of day without dates" in n for n in alone.notes)


def test_day_first_dates_are_decided_once_for_the_whole_column():
    frame = _frame(timestamp=["11/01/2024 10:00", "12/01/2024 10:00", "13/01/2024 10:00", "14/01/2024 10:00"],
                   p=[1.0, 2.0, 3.0, 4.0], q=[2.0, 1.0, 4.0, 3.0])
    data = series_from_frame(frame, "dayfirst")
    days = pd.to_datetime(data.times, unit="s", utc=True).day.tolist()
    assert days == [11, 12, 13, 14]  # pandas alone read 11/01 and 12/01 as November and December
    # no day above 12: the reading whose rows span less time, a day here, not November to December
    ambiguous = series_from_frame(frame.iloc[:2], "ambiguous")
    stamps = pd.to_datetime(ambiguous.times, unit="s", utc=True)
    assert stamps.month.tolist() == [1, 1] and stamps.day.tolist() == [11, 12]
    # that was a guess, and it is said; a column a field above 12 decides has no such note
    [note] = [n for n in ambiguous.notes if "day or the month first" in n]
    assert "'11/01/2024 10:00'" in note and "read day first" in note and "24.0 h, not 30 days" in note
    # ten days of December written day first were read a month apart each (found in a walk)
    december = [f"{d:02d}/12/2024 10:00" for d in range(1, 11)]
    tenth = series_from_frame(_frame(timestamp=december, p=np.arange(10.0), q=np.arange(10.0)[::-1]), "december")
    assert np.ptp(tenth.times) == 9 * 86400.0
    # two-digit years across 1999 -> 2000 (month first: Dec 1 1999 .. Jan 7 2000); 99 read as 2099 spanned
    # a century the other way, and the reading flipped (a review)
    y2k = [f"12/0{d}/99 10:00" for d in range(1, 8)] + [f"01/0{d}/00 10:00" for d in range(1, 8)]
    turn = series_from_frame(_frame(timestamp=y2k, p=np.arange(14.0), q=np.arange(14.0)[::-1]), "y2k")
    assert pd.to_datetime(turn.times, unit="s", utc=True).year.tolist() == [1999] * 7 + [2000] * 7
    assert np.ptp(turn.times) == 37 * 86400.0
    one_date = series_from_frame(_frame(timestamp=["05/03/2024 10:00", "05/03/2024 11:00"], p=[1.0, 2.0],
                                        q=[2.0, 1.0]), "one-date")  # either reading spans one hour
    assert pd.to_datetime(one_date.times, unit="s", utc=True).month.tolist() == [5, 5]
    [note] = [n for n in one_date.notes if "day or the month first" in n]
    assert "read month first" in note and "span the same" in note
    assert not any("day or the month first" in n for n in data.notes)
    decided = series_from_frame(_frame(timestamp=["01/11/2024 10:00", "01/13/2024 10:00"], p=[1.0, 2.0],
                                       q=[2.0, 1.0]), "monthfirst")
    assert not any("day or the month first" in n for n in decided.notes)
    # the note quotes a date both readings take apart, not the column's first value (found by review)
    beside = series_from_frame(_frame(timestamp=["2024-01-05 10:00", "01/01/2024 11:00", "01/03/2024 12:00",
                                                 "02/03/2024 13:00"], p=[1.0, 2.0, 3.0, 4.0],
                                      q=[2.0, 1.0, 4.0, 3.0]), "beside")
    [note] = [n for n in beside.notes if "day or the month first" in n]
    assert "'01/03/2024 12:00'" in note
    same = series_from_frame(_frame(timestamp=["01/01/2024 10:00", "02/02/2024 10:00"], p=[1.0, 2.0],
                                    q=[2.0, 1.0]), "same")  # day equals month: both readings agree
    assert not any("day or the month first" in n for n in same.notes)
    mixed = _frame(timestamp=["13/01/2024 10:00", "01/14/2024 10:00"], p=[1.0, 2.0], q=[2.0, 1.0])
    with pytest.raises(DataError, match="day first in some rows"):
        series_from_frame(mixed, "mixed")


def test_an_asset_column_in_any_case_keeps_the_machines_apart():
    stamps = pd.date_range("2024-03-01", periods=50, freq="1min").astype(str).tolist()
    rng = np.random.default_rng(0)
    frame = _frame(timestamp=stamps * 2, Asset=["m1"] * 50 + ["m2"] * 50,
                   p=np.r_[rng.normal(0, 1, 50), rng.normal(5, 1, 50)], q=rng.normal(0, 1, 100))
    data = series_from_frame(frame, "machines")
    assert len(data) == 100 and sorted(set(data.assets)) == ["m1", "m2"] and data.channels == ("p", "q")


@pytest.mark.parametrize("per_second", [1, 1e3, 1e6, 1e9])
def test_numeric_epochs_in_any_unit_are_seconds(per_second):
    secs = 1_700_000_000 + np.arange(20.0)
    frame = _frame(ts=(secs * per_second).astype(np.int64), p=np.arange(20.0), q=np.arange(20.0) ** 2)
    assert series_from_frame(frame, "epochs").times.tolist() == secs.tolist()


def test_text_labels_are_refused_and_true_false_read():
    frame = _frame(timestamp=pd.date_range("2024-03-01", periods=4, freq="1min").astype(str),
                   p=[1.0, 2.0, 3.0, 4.0], q=[2.0, 1.0, 4.0, 3.0], anomaly=["normal", "fault", "normal", "normal"])
    with pytest.raises(DataError, match="labels must be numbers"):
        series_from_frame(frame, "text-labels", label_column="anomaly")
    frame["anomaly"] = ["false", "True", "", "false"]
    assert series_from_frame(frame, "bool-labels", label_column="anomaly").labels["anomaly"].tolist() == [0, 1, 0, 0]
    frame["anomaly"] = [np.nan, 1.0, 0.0, np.nan]  # blank cells are normal rows (pandas 3 kept them NA: refused)
    assert series_from_frame(frame, "blanks", label_column="anomaly").labels["anomaly"].tolist() == [0, 1, 0, 0]
    frame["anomaly"] = [0.0, 3.0, 0.0, 21.0]  # fault numbers (Tennessee Eastman's 0-21): any > 0 is anomalous
    assert series_from_frame(frame, "classes", label_column="anomaly").labels["anomaly"].tolist() == [0, 1, 0, 1]
    # a channel named as the label read every row as anomalous (found by a README walk)
    frame["temp"] = [35.06, 35.1, 35.2, 35.3]
    with pytest.raises(DataError, match="holds 35.06; labels must be whole numbers .* is it a sensor channel"):
        series_from_frame(frame, "a channel", label_column="temp")
    # scikit-learn's outlier labels (-1 an outlier, 1 an inlier) read backwards, unsaid (a walk)
    frame["anomaly"] = [1, -1, 1, 1]
    with pytest.raises(DataError, match="holds -1; labels must be 0 .normal. or > 0 .* map a -1/1 column"):
        series_from_frame(frame, "sklearn", label_column="anomaly")


def test_a_second_clock_is_not_a_channel():
    frame = _frame(timestamp=pd.date_range("2024-03-01", periods=6, freq="1min").astype(str),
                   time=np.arange(6.0) * 60, p=[1.0, 3.0, 2.0, 4.0, 3.0, 5.0], q=[2.0, 1.0, 4.0, 3.0, 5.0, 4.0])
    data = series_from_frame(frame, "two-clocks")
    assert data.channels == ("p", "q") and any("time columns left out: time" in n for n in data.notes)


def _export(rows: int = 40) -> pd.DataFrame:
    frame = plant_frame(rows=rows, channels=2, seed=3, period="1min")
    frame.columns = ["timestamp", "temp", "pressure"]
    return frame


def test_hostile_plant_exports_are_read_as_written(tmp_path):
    """Found by review: each of these read wrong numbers or lost rows, silently."""
    frame = _export()
    # a European Excel export: semicolons, decimal commas (every cell was missing and filled)
    text = "Zeit;Temp;Druck\n" + "".join(f"{t:%Y-%m-%d %H:%M:%S};{a:.2f};{b:.3f}\n".replace(".", ",")
                                           for t, a, b in frame.itertuples(index=False))
    (tmp_path / "eu.csv").write_text(text)
    eu = load_frame([tmp_path / "eu.csv"])
    assert np.allclose(eu.values, frame[["temp", "pressure"]].round({"temp": 2, "pressure": 3}).to_numpy())
    # a number written with thousands separators, quoted in a comma CSV
    grouped = frame.astype({"temp": object})
    grouped.loc[10, "temp"] = "1,034.5"
    grouped.to_csv(tmp_path / "grouped.csv", index=False)
    assert load_frame([tmp_path / "grouped.csv"]).values[10, 0] == 1034.5
    # split German date and time columns (one row per day was kept)
    de = pd.DataFrame({"Datum": frame.timestamp.dt.strftime("%d.%m.%Y"),
                       "Uhrzeit": frame.timestamp.dt.strftime("%H:%M:%S"), "Temp": frame.temp})
    de.to_csv(tmp_path / "de.csv", sep=";", index=False)
    split = load_frame([tmp_path / "de.csv"])
    assert len(split) == len(frame) and split.times[0] == frame.timestamp[0].timestamp()
    assert any("'Datum' and 'Uhrzeit'" in note for note in split.notes)
    with pytest.raises(DataError, match="'Temp' is the label column and cannot also name the machines"):
        load_frame([tmp_path / "de.csv"], asset_column="Temp", label_column="Temp")  # (0/1 as machines: a walk)
    with pytest.raises(DataError, match="'Datum' is the time column"):  # (its other half too: each day a machine)
        load_frame([tmp_path / "de.csv"], asset_column="Datum")
    with pytest.raises(DataError, match="'Temp' has .* different values in .*is it a sensor column"):
        load_frame([tmp_path / "de.csv"], asset_column="Temp")  # (each reading a machine: "too little data")
    rows = np.arange(600)  # two thirds empty: still a sensor (a review)
    gappy = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=600, freq="s"), "pressure": rows * 0.01,
                          "temp": np.where(rows % 3 == 0, rows * 0.37 + 0.5, np.nan)})
    gappy.to_csv(tmp_path / "gappy.csv", index=False)
    with pytest.raises(DataError, match="is it a sensor column"):
        load_frame([tmp_path / "gappy.csv"], asset_column="temp")
    for ids in ([f"pump-{k}" for k in range(40)], list(range(40))):  # a fleet snapshot, a row per machine: taken
        snapshot = pd.DataFrame({"timestamp": "2026-01-01 00:00:00", "machine": ids, "temp": np.arange(40) + 0.5})
        snapshot.to_csv(tmp_path / "snapshot.csv", index=False)
        assert len(load_frame([tmp_path / "snapshot.csv"], asset_column="machine")) == 40  # (refused: a review)
    named = load_frame([tmp_path / "de.csv"], time_column="Datum")  # named: the same (refused before: a walk)
    assert np.array_equal(named.times, split.times) and named.channels == split.channels
    # an English pair whose day and month no field tells apart: the note names the dates' column (a walk
    # read "dates in column 'Time'")
    jan5 = frame.timestamp + pd.Timedelta(days=4)  # (05/01: 5 January or 1 May)
    en = pd.DataFrame({"Date": jan5.dt.strftime("%d/%m/%Y"), "Time": jan5.dt.strftime("%H:%M:%S"), "Temp": frame.temp})
    en.to_csv(tmp_path / "en.csv", index=False)
    assert any(n.startswith("dates in column 'Date' (e.g.") for n in load_frame([tmp_path / "en.csv"]).notes)
    # dates written with dots put the day first, even when no day is above 12 (5 March, not May 3rd)
    dotted = pd.DataFrame({"Zeitstempel": frame.timestamp.dt.strftime("05.03.2024 %H:%M:%S"), "Temp": frame.temp})
    dotted.to_csv(tmp_path / "dotted.csv", index=False)
    assert pd.Timestamp(load_frame([tmp_path / "dotted.csv"]).times[0], unit="s").month == 3
    # Excel serial dates (read as seconds of 1970-01-01 before)
    excel = frame.assign(timestamp=frame.timestamp.map(lambda t: t.timestamp() / 86400 + 25569))
    excel.to_csv(tmp_path / "excel.csv", index=False)
    days = load_frame([tmp_path / "excel.csv"])
    assert days.times[0] == frame.timestamp[0].timestamp() and days.sample_period == 60.0
    # a table written with its index: the row numbers are not a sensor
    frame.to_csv(tmp_path / "indexed.csv")
    assert load_frame([tmp_path / "indexed.csv"]).channels == ("temp", "pressure")


def test_decimal_commas_are_read_as_decimals_where_the_sample_or_a_cell_alone_cannot_tell(tmp_path):
    """Found by a walk: a semicolon file whose first 64 KiB held whole numbers only (a machine at
    rest) read ``50,025`` further down as 50025; a comma CSV quoting decimal commas read ``"6,313"``
    as 6313 and ``"6,26"`` as missing, each with no note saying so."""
    frame = _export(rows=3200)
    stamps = frame.timestamp.dt.strftime("%Y-%m-%d %H:%M:%S")
    late = "".join(f"{t};50;6\n" if i < 3000 else f"{t};{a:.3f};{b:.3f}\n".replace(".", ",")
                   for i, (t, a, b) in enumerate(zip(stamps, frame.temp, frame.pressure, strict=True)))
    (tmp_path / "late.csv").write_text("timestamp;temp;pressure\n" + late)
    read = load_frame([tmp_path / "late.csv"])
    assert np.allclose(read.values[3000:], frame[["temp", "pressure"]].round(3).to_numpy()[3000:])
    assert any("decimal comma (20,5) from line 3002 on" in n for n in read.notes), read.notes
    quoted = "".join(f'{t},"{f"{a:.3f}".rstrip("0").rstrip(".").replace(".", ",")}",1\n'
                     for t, a in zip(stamps, frame.temp, strict=True))
    (tmp_path / "quoted.csv").write_text("timestamp,temp,flag\n" + quoted)
    read = load_frame([tmp_path / "quoted.csv"])
    assert read.channels[0] == "temp"
    assert np.allclose(read.values[:, 0], frame.temp.round(3).to_numpy())
    assert not any("not numbers" in n for n in read.notes), read.notes
    # thousands grouped with commas stay thousands where no cell needs a decimal comma
    grouped = "".join(f'{t},"{1000 + i:,}",{i}\n' for i, t in enumerate(stamps[:300]))
    (tmp_path / "grouped.csv").write_text("timestamp,flow,level\n" + grouped)
    assert load_frame([tmp_path / "grouped.csv"]).values[:3, 0].tolist() == [1000.0, 1001.0, 1002.0]


def test_excel_exports_in_the_plants_locale_are_read(tmp_path):
    """Found by a walk with real-looking exports; each was refused or read wrong before."""
    frame = _export()
    expected = frame[["temp", "pressure"]].round({"temp": 2, "pressure": 3}).to_numpy()
    def comma(x: float, digits: int) -> str:
        return str(round(x, digits)).replace(".", ",")

    rows = "".join(f"{t:%d.%m.%Y %H:%M:%S};{comma(a, 2)};{comma(b, 3)}\r\n" for t, a, b in frame.values)
    header = "Zeitstempel;Temp °C;Druck bar\r\n"
    # a units row under the header: every cell of each column was text, "no numeric sensor columns found"
    (tmp_path / "units.csv").write_text(header + ";°C;bar\r\n" + rows, encoding="utf-8-sig")
    units = load_frame([tmp_path / "units.csv"])
    assert np.allclose(units.values, expected) and len(units) == len(frame)
    assert any("row under the header with no numbers left out (units? '°C', 'bar')" in n for n in units.notes)
    assert not any("time order" in n or "not numbers" in n for n in units.notes), units.notes
    # small values as Excel writes them there (4,181E-03): the channel was left out as text (a walk)
    tiny = "".join(f"{t:%d.%m.%Y %H:%M:%S};{f'{a / 1e4:.3E}'.replace('.', ',')};{comma(b, 3)}\r\n"
                   for t, a, b in frame.values)
    (tmp_path / "small.csv").write_text(header + ";°C;bar\r\n" + tiny, encoding="utf-8-sig")
    small = load_frame([tmp_path / "small.csv"])
    assert small.channels == ("Temp °C", "Druck bar")
    assert np.allclose(small.values[:, 0], frame["temp"].to_numpy() / 1e4, rtol=1e-3)
    # Windows-1252, Excel's CSV in a Western locale: "'utf-8' codec can't decode byte 0xb0"
    (tmp_path / "cp1252.csv").write_bytes((header + rows).encode("cp1252"))
    western = load_frame([tmp_path / "cp1252.csv"])
    assert western.channels == ("Temp °C", "Druck bar") and np.allclose(western.values, expected)
    assert any("Windows-1252" in n for n in western.notes)
    # UTF-16, Excel's "Unicode text": tabs
    (tmp_path / "utf16.csv").write_text((header + rows).replace(";", "\t"), encoding="utf-16")
    assert np.allclose(load_frame([tmp_path / "utf16.csv"]).values, expected)
    # thousands grouped with points beside a decimal comma: 1.198,2 was missing and forward-filled
    flow = 900.0 + 10 * np.arange(len(frame))
    grouped = "".join(f"{t:%d.%m.%Y %H:%M:%S};{f'{v:,.1f}'.replace(',', '_').replace('.', ',').replace('_', '.')}\n"
                      for t, v in zip(frame.timestamp, flow, strict=True))
    (tmp_path / "thousands.csv").write_text("Zeitstempel;Durchfluss\n" + grouped)
    assert load_frame([tmp_path / "thousands.csv"]).values[:, 0].tolist() == flow.tolist()
    # a date column beside a 12-hour clock: the clock was read as today's times, the date left out
    clock = pd.DataFrame({"Date": frame.timestamp.dt.strftime("%m/%d/%Y"),
                          "Time": frame.timestamp.dt.strftime("%I:%M:%S %p"), "temp": frame.temp})
    clock.to_csv(tmp_path / "ampm.csv", index=False)
    twelve = load_frame([tmp_path / "ampm.csv"])
    assert twelve.times.tolist() == [t.timestamp() for t in frame.timestamp]
    # one blank time is left out, and the rows are not "out of time order"
    blank = _export(rows=200).astype({"timestamp": object})  # (more than 1 % unparseable is refused)
    blank.loc[7, "timestamp"] = ""
    blank.to_csv(tmp_path / "blank.csv", index=False)
    notes = load_frame([tmp_path / "blank.csv"]).notes
    assert any(n.startswith("1 row with unparseable timestamps") for n in notes)
    assert not any("time order" in n for n in notes), notes


def test_the_reader_of_plant_exports_leaves_ids_times_and_encodings_as_written(tmp_path):
    """Found by a review of the reader above: each case read wrong in silence or was refused."""
    import zipfile

    stamps = pd.date_range("2026-02-01", periods=240, freq="1s", tz="UTC")
    epochs = [int(t.timestamp()) for t in stamps]
    temp = [f"{20 + (i % 9) / 10:.1f}".replace(".", ",") for i in range(240)]
    # epoch seconds with one "--" in a decimal-comma file: read as nanoseconds of 1970, or refused
    rows = [f"{'--' if i == 50 else e};{v}" for i, (e, v) in enumerate(zip(epochs, temp, strict=True))]
    (tmp_path / "dash.csv").write_text("time;temp\n" + "\n".join(rows) + "\n")
    dash = load_frame([tmp_path / "dash.csv"])
    assert dash.times[0] == epochs[0] and any("(e.g. '--')" in n for n in dash.notes)
    # epoch milliseconds under a units row: "unparseable timestamps" or read as seconds of 1970
    rows = [f"{e * 1000};{v}" for e, v in zip(epochs, temp, strict=True)]
    (tmp_path / "ms.csv").write_text("time;temp\nms;°C\n" + "\n".join(rows) + "\n")
    assert load_frame([tmp_path / "ms.csv"]).times[0] == epochs[0]
    # an asset id 101 beside K-7 stays 101 (it became 101.0: no longer the live asset id)
    rows = [f"{t:%d.%m.%Y %H:%M:%S};{['101', 'K-7'][i % 2]};{v}" for i, (t, v) in enumerate(zip(stamps, temp,
                                                                                               strict=True))]
    (tmp_path / "ids.csv").write_text("Zeit;asset;Temp\n" + "\n".join(rows) + "\n")
    assert sorted(set(load_frame([tmp_path / "ids.csv"]).assets)) == ["101", "K-7"]
    # UTF-8 with a line of Windows-1252 past the sample: the UTF-8 header stays right
    body = "".join(f"{t:%Y-%m-%d %H:%M:%S};{v}\n" for t, v in zip(stamps, temp, strict=True))
    hours = pd.date_range("2026-01-01", periods=4000, freq="1s")  # (past the 64 KiB sample)
    filler = "".join(f"{t:%Y-%m-%d %H:%M:%S};{v}\n" for t, v in zip(hours, temp * 17, strict=False))
    late = "2026-01-02 00:00:00;20,0 °\n".encode("cp1252")
    (tmp_path / "appended.csv").write_bytes(("Zeit;Temp °C\n" + filler).encode() + late)
    assert load_frame([tmp_path / "appended.csv"]).channels == ("Temp °C",)
    # a workbook saved as .csv: one line, not the workbook's bytes as column names
    with zipfile.ZipFile(tmp_path / "book.csv", "w") as book:
        book.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(DataError, match="a zip archive .* save it as CSV"):
        load_frame([tmp_path / "book.csv"])
    # a zipped CSV, which pandas reads: its header was read from the compressed bytes
    with zipfile.ZipFile(tmp_path / "plant.csv.zip", "w") as archive:
        archive.writestr("plant.csv", "Zeit;Temp °C\n" + body)
    assert load_frame([tmp_path / "plant.csv.zip"]).channels == ("Temp °C",)


def test_a_channel_without_any_value_is_named_when_nothing_is_left(tmp_path):
    """``--channels temp,empty`` with ``empty`` blank in every row: "no complete rows" named
    ``temp``'s one bad cell and never the channel that emptied every row (a walk)."""
    frame = _export().assign(empty=np.nan)
    frame.to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(DataError, match="no value at all in empty"):
        load_frame([tmp_path / "empty.csv"], channels=["temp", "empty"])


def test_a_historians_no_data_marker_is_missing_not_a_reading(tmp_path):
    """One 3.4e38 (float32's largest, a historian's no-data) in training set the channel's scale to
    2e37: the model was blind to it (found by review). Live, the daemon reads it as missing too."""
    from sensorguard.service.payload import parse_message

    frame = _export()
    frame.loc[7, "pressure"] = 3.4028235e38
    frame.to_csv(tmp_path / "marker.csv", index=False)
    data = load_frame([tmp_path / "marker.csv"])
    assert np.abs(data.values).max() < 1e3
    assert "1 value of magnitude 1e+30 or more (a historian's no-data marker) read as missing" in data.notes
    frame.loc[9, "temp"] = np.inf  # an export's division by zero: missing too, but not called a marker (a walk)
    frame.to_csv(tmp_path / "marker.csv", index=False)
    said = "1 value of magnitude 1e+30 or more (a historian's no-data marker) and 1 infinite value read as missing"
    assert said in load_frame([tmp_path / "marker.csv"]).notes
    parsed = parse_message("sensors/pump/readings", b'{"ts": 1700000000, "values": {"p": 3.4028235e38, "t": 1.5}}',
                           "sensors")
    (sample,) = parsed.samples
    assert parsed.rejects == [] and np.isnan(sample.values["p"]) and sample.values["t"] == 1.5


def test_grouped_integers_and_elapsed_seconds_are_not_mistaken(tmp_path):
    """12,345 in a tab file is a grouped integer, not 12.345; seconds counted from 12 h at 2 Hz are
    not Excel dates (found by review of the readers above)."""
    frame = _export()
    text = "timestamp\tflow\n" + "".join(f"{t:%Y-%m-%d %H:%M:%S}\t{12000 + 7 * i:,}\n"
                                          for i, t in enumerate(frame.timestamp))
    (tmp_path / "grouped.csv").write_text(text)
    assert load_frame([tmp_path / "grouped.csv"]).values[1, 0] == 12007
    rig = pd.DataFrame({"t": 43200 + 0.5 * np.arange(40), "a": frame.temp, "b": frame.pressure})
    rig.to_csv(tmp_path / "rig.csv", index=False)
    data = load_frame([tmp_path / "rig.csv"], time_column="t")
    assert data.sample_period == 0.5 and not any("Excel" in note for note in data.notes)
    # a European file's fixed three decimals are decimals (1,013 bar), and Excel's quarter hours are dates
    eu = "timestamp;p\n" + "".join(f"{t:%Y-%m-%d %H:%M:%S};{1 + i / 1000:.3f}\n".replace(".", ",")
                                   for i, t in enumerate(frame.timestamp))
    (tmp_path / "eu3.csv").write_text(eu)
    assert load_frame([tmp_path / "eu3.csv"]).values[13, 0] == 1.013
    quarter = frame.assign(timestamp=45658 + np.arange(len(frame)) / 96)
    quarter.to_csv(tmp_path / "quarter.csv", index=False)
    assert load_frame([tmp_path / "quarter.csv"]).sample_period == 900.0


def test_the_hour_a_local_clock_repeats_in_autumn_is_kept(tmp_path):
    """A plant export in local time repeats 02:00-02:59 when daylight saving time ends: sorted, the
    two passes interleaved and the second was dropped as duplicate stamps (an hour of data lost,
    the first hour's windows mixing both). The rows after the fall are read an hour later. Not
    with a UTC offset in the stamps, nor for the same readings exported twice."""
    stamps = pd.date_range("2024-10-27 00:00", periods=6 * 60, freq="min")  # naive local minutes, 00:00-05:59
    local = list(stamps[:180]) + list(stamps[120:300])  # 00:00-02:59, then 02:00 again ... 04:59
    frame = plant_frame(len(local), seed=3).drop(columns="timestamp")
    frame.insert(0, "timestamp", [t.strftime("%d.%m.%Y %H:%M") for t in local])
    data = load_frame([write(frame, tmp_path / "dst.csv", sep=";")])
    assert len(data) == 360 and (np.diff(data.times) == 60).all()  # every row kept, one minute apart
    assert np.allclose(data.values, frame[["c0", "c1", "c2"]].to_numpy())  # in file order
    assert any("clock went back an hour at 2024-10-27 03:00" in n for n in data.notes), data.notes
    swapped = frame.copy()  # two rows out of order two hours after the change: it was not seen (a walk)
    swapped.iloc[[330, 331]] = swapped.iloc[[331, 330]].to_numpy()
    data = load_frame([write(swapped, tmp_path / "swapped.csv", sep=";")])
    assert len(data) == 360 and any("clock went back an hour" in n for n in data.notes), data.notes

    # an hour back on a June Tuesday is a clock set by hand, not daylight saving time (a walk read it
    # as one): its repeated stamps are duplicates, as any; and two machines' change is said once
    june = frame.assign(timestamp=[t.replace(month=6, day=11).strftime("%d.%m.%Y %H:%M") for t in local])
    june = load_frame([write(june, tmp_path / "june.csv", sep=";")])
    assert len(june) == 300 and not any("clock went back" in n for n in june.notes), june.notes
    # Chile's clocks go back at Saturday 24:00 (to 23:00): the row before the fall is a Saturday's (a review)
    night = pd.date_range("2024-04-06 21:00", periods=6 * 60, freq="min")
    chile = frame.assign(timestamp=[t.strftime("%d.%m.%Y %H:%M") for t in list(night[:180]) + list(night[120:300])])
    notes = load_frame([write(chile, tmp_path / "chile.csv", sep=";")]).notes
    assert any("clock went back an hour at 2024-04-07 00:00" in n for n in notes), notes
    machines = pd.concat([frame.assign(asset="p1"), frame.assign(asset="p2")])
    notes = load_frame([write(machines, tmp_path / "two.csv", sep=";")], asset_column="asset").notes
    assert [n for n in notes if "went back" in n] == [
        "the clock went back an hour at 2024-10-27 03:00 (daylight saving time ending, local times; 2 machines): "
        "the rows after it are read an hour later (give times with a UTC offset to avoid this)"], notes

    plain = frame.assign(timestamp=[t.strftime("%d.%m.%Y %H:%M") for t in stamps])  # no clock change
    twice = write(pd.concat([plain.iloc[:180], plain.iloc[120:]]), tmp_path / "twice.csv", sep=";")
    again = load_frame([twice])  # an hour exported twice: the same readings, duplicates as before
    assert len(again) == 360 and not any("clock" in n for n in again.notes)
    idle = frame.copy()
    idle.loc[120:239, ["c0", "c1", "c2"]] = 1.0  # a machine standing still through both passes of the hour
    idle = load_frame([write(idle, tmp_path / "idle.csv", sep=";")])
    assert len(idle) == 360 and any("clock went back" in n for n in idle.notes)
    utc = frame.assign(timestamp=[t.strftime("%Y-%m-%dT%H:%M:00+01:00") for t in local])
    assert len(load_frame([write(utc, tmp_path / "utc.csv")])) == 300  # an offset given: real duplicates
    # stamps without an offset, then with one (an hour back in UTC): no clock change, and said (a walk)
    mixed = frame.assign(timestamp=[t.strftime("%Y-%m-%dT%H:%M:00") + ("+01:00" if i >= 250 else "")
                                    for i, t in enumerate(stamps)])
    notes = load_frame([write(mixed, tmp_path / "mixed.csv")]).notes
    assert not any("clock went back" in n for n in notes), notes
    assert any(n.startswith("250 timestamps without a UTC offset among ones with one: read as UTC") for n in notes)
    # an unreadable stamp (left out, said) among ones with offsets is no stamp without one (a walk)
    unreadable = utc.assign(timestamp=[*utc["timestamp"].iloc[:10], "#VALUE!", *utc["timestamp"].iloc[11:]])
    notes = load_frame([write(unreadable, tmp_path / "unreadable.csv")]).notes
    assert any("unparseable timestamps" in n for n in notes) and not any("UTC offset" in n for n in notes), notes
    # in spring 02:00-02:59 never happens: an hour without readings, now said (a walk found it unsaid)
    spring = pd.date_range("2024-03-31 00:00", periods=6 * 60, freq="min")
    spring = [t for t in spring if t.hour != 2]
    march = plant_frame(len(spring), seed=3).drop(columns="timestamp")
    march.insert(0, "timestamp", [t.strftime("%d.%m.%Y %H:%M") for t in spring])
    notes = load_frame([write(march, tmp_path / "spring.csv", sep=";")]).notes
    assert [n for n in notes if "went forward" in n][0].startswith("the clock went forward an hour at 2024-03-31 "
                                                                   "03:00"), notes
    assert not any("went forward" in n for n in data.notes)
    # and forward at Saturday 24:00 (to Sunday 01:00): the row before is a Saturday's again
    chile = pd.date_range("2024-09-07 21:00", periods=6 * 60, freq="min")
    chile = march.assign(timestamp=[t.strftime("%d.%m.%Y %H:%M") for t in chile if t.strftime("%Y-%m-%d %H") !=
                                    "2024-09-08 00"])
    notes = load_frame([write(chile, tmp_path / "chile_spring.csv", sep=";")]).notes
    assert any(n.startswith("the clock went forward an hour at 2024-09-08 01:00") for n in notes), notes
    # the same hour missing on a January night is an outage, not a clock change (a review)
    january = march.assign(timestamp=[t.replace(month=1, day=14).strftime("%d.%m.%Y %H:%M") for t in spring])
    assert not any("went forward" in n for n in load_frame([write(january, tmp_path / "jan.csv", sep=";")]).notes)


def _local(utc: pd.DatetimeIndex, zone: str = "Europe/Berlin") -> list[str]:
    """UTC instants as a local wall clock without an offset writes them (an hour twice each autumn)."""
    return [f"{t:%d.%m.%Y %H:%M:%S}" for t in utc.tz_convert(zone).tz_localize(None)]


def test_a_local_clock_over_several_seasons_and_machines_is_read_once_right(tmp_path):
    """Walks of messy exports: (1) a year of local times drifted an hour further at each autumn,
    as the spring's change never ended the correction (June 2024 written 13:00 for 12:00 local,
    November 14:00); (2) machines logging at other phases had a note each; (3) a row missing at
    the fall turned the correction off (an hour of readings dropped as duplicates); (4) a clock
    set back by hand at 15:37 on an October Sunday was read as daylight saving time."""
    utc = pd.date_range("2023-10-01", "2024-11-24", freq="10min", tz="UTC")
    year = plant_frame(len(utc), seed=4).drop(columns="timestamp")
    year.insert(0, "timestamp", _local(utc))
    data = load_frame([write(year, tmp_path / "year.csv", sep=";")])
    assert len(data) == len(utc) and (np.diff(data.times) == 600).all()  # one clock, every row, no drift
    seconds = np.asarray((utc - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1))
    assert np.allclose(data.times - seconds, 7200.0)  # summer time all through: UTC + 2 h
    # a row missing at the spring's change and one at the second fall: the same (one at the spring
    # carried the correction on to the file's end, one at a 10-minute fall turned it off: a review)
    gaps = year.drop(index=year.index[year.timestamp.isin(["31.03.2024 01:50:00", "27.10.2024 02:50:00"])][:2])
    gappy = load_frame([write(gaps, tmp_path / "gaps.csv", sep=";")])
    assert len(gappy) == len(utc) and np.allclose(gappy.times - seconds, 7200.0)  # (the two filled in)
    assert [n[:100] for n in data.notes if "clock went" in n] == [
        "the clock went back an hour at 2023-10-29 03:00 (daylight saving time ending, local times): the rows",
        "the clock went back an hour at 2024-10-27 03:00 (daylight saving time ending, local times): the rows"]
    assert "until it went forward again at 2024-03-31 03:00 are read" in " ".join(data.notes)

    night = pd.date_range("2024-10-26 22:00", "2024-10-27 04:00", freq="1min", tz="UTC")
    phases = [pd.Timedelta(minutes=m) for m in (0, 3, 7)]  # 10-minute loggers in other minutes
    frames = [plant_frame(len(night[::10]), seed=k).drop(columns="timestamp").assign(
        timestamp=_local(night[::10] + phase), asset=f"p{k}") for k, phase in enumerate(phases)]
    notes = load_frame([write(pd.concat(frames), tmp_path / "three.csv", sep=";")], asset_column="asset").notes
    assert [n for n in notes if "clock went" in n] == [
        "the clock went back an hour at 2024-10-27 03:00 (daylight saving time ending, local times; 3 machines): "
        "the rows after it are read an hour later (give times with a UTC offset to avoid this)"]
    spring = pd.date_range("2024-03-30 22:00", "2024-03-31 04:00", freq="10min", tz="UTC")
    frames = [f.iloc[: len(spring)].assign(timestamp=_local(spring + phase))
              for f, phase in zip(frames, phases, strict=True)]
    notes = load_frame([write(pd.concat(frames), tmp_path / "spring3.csv", sep=";")], asset_column="asset").notes
    assert [n for n in notes if "clock went" in n] == [
        "the clock went forward an hour at 2024-03-31 03:00 (daylight saving time starting, local times; 3 "
        "machines): that hour holds no readings, a gap to the cleaning (give times with a UTC offset to avoid this)"]

    one = plant_frame(len(night), seed=1).drop(columns="timestamp").assign(timestamp=_local(night))
    gone = one.drop(index=one.index[one.timestamp == "27.10.2024 02:59:00"][0])  # the row before the fall
    data = load_frame([write(gone, tmp_path / "gone.csv", sep=";")])
    assert any("clock went back an hour at 2024-10-27 03:00" in n for n in data.notes), data.notes
    assert not any("duplicate" in n for n in data.notes) and len(data) == len(night)  # (the row filled in)
    by_hand = pd.date_range("2024-10-06 13:00", "2024-10-06 17:00", freq="1min")  # a Sunday afternoon
    stamps = [f"{t:%d.%m.%Y %H:%M:%S}" for t in [*by_hand[:157], *by_hand[97:]]]  # 15:37 -> 14:37
    hand = plant_frame(len(stamps), seed=1).drop(columns="timestamp").assign(timestamp=stamps)
    assert not any("clock went" in n for n in load_frame([write(hand, tmp_path / "hand.csv", sep=";")]).notes)


def test_the_fingerprint_time_range_spans_every_machine(tmp_path):
    """Found by review: the recorded range was the first and last row's times, and machines are
    blocks sorted by name, so a later machine ending sooner hid the true end (a warm start then
    took rows the model had trained on as new)."""
    early = plant_frame(200, seed=1).assign(asset="a")  # ends later
    late = plant_frame(100, seed=2).assign(asset="b")  # the last block, ends sooner
    data = load_frame([write(pd.concat([early, late]), tmp_path / "two.csv")], asset_column="asset")
    start, end = data.fingerprint()["time_range"]
    assert end == pd.Timestamp(early["timestamp"].max()).isoformat() and start < end


def test_every_column_left_out_is_named_in_a_note(tmp_path, capsys):
    """Label-like names, true/false columns and columns under 90 % numbers were left out of the
    channels without a word (a sensor with 15 % dropouts trained without it; found by review)."""
    frame = plant_frame(rows=200)
    frame["y"] = np.arange(200.0)  # a sensor called y: a label by its name
    frame["running"] = True
    frame["vib"] = ["Bad Input"] * 30 + list(np.arange(170.0))
    frame["timestamp"] = frame["timestamp"].astype(str)
    frame.loc[3, "timestamp"] = "not a time"
    frame.to_csv(tmp_path / "d.csv", index=False)
    data = load_frame([tmp_path / "d.csv"], normal=True)  # (as train reads it)
    assert "y" not in data.channels and "vib" not in data.channels and "running" not in data.channels
    notes = " | ".join(data.notes)
    assert "label-like columns left out: y" in notes and "true/false columns left out: running" in notes
    # its rows were trained on as normal: the note counts them and names the flag that leaves them out
    assert "y marks 199 rows: they were trained on as normal (--label-column y leaves them out)" in notes
    assert "vib (85 % numbers)" in notes and "1 row with unparseable timestamps" in notes
    # in a model's channels (calibrate, retrain) the marks are said only where the rows are taken as normal
    mine = [c for c in data.channels]
    said = "y marks 199 rows: they were taken as normal data (--label-column y leaves them out)"
    assert said in load_frame([tmp_path / "d.csv"], channels=mine, normal=True).notes
    # score and report without --label-column: only where the labels are taken (a report walk drew none, unsaid)
    hint = "y marks 199 rows as anomalous: evaluate and report take them as labels with --label-column y"
    assert [n for n in load_frame([tmp_path / "d.csv"], channels=mine).notes if "marks" in n] == [hint]
    assert not any("marks" in n for n in load_frame([tmp_path / "d.csv"], channels=mine, label_column="y").notes)
    assert not any("marks" in n for n in load_frame([tmp_path / "d.csv"]).notes)  # replay: it trains nothing
    from sensorguard.cli import main

    assert main(["train", str(tmp_path / "d.csv"), "--channels", ",".join(mine[:2]), "--out", str(tmp_path / "m"),
                 "--max-epochs", "1", "--quiet"]) == 0  # train --channels: said too (a review)
    assert said in capsys.readouterr().out


@pytest.mark.parametrize("name", ["is_fault", "Is_Outlier", "attack"])
def test_common_label_names_are_not_trained_on_as_channels(tmp_path, name):
    """A 0/1 column named ``is_fault`` became a channel: its fault rows were trained on as normal and
    every later file without it was refused (found by a walk)."""
    frame = plant_frame(rows=200)
    frame[name] = (np.arange(200) >= 190).astype(int)
    frame.to_csv(tmp_path / "d.csv", index=False)
    data = load_frame([tmp_path / "d.csv"], normal=True)
    assert name not in data.channels
    assert f"{name} marks 10 rows: they were trained on as normal" in " | ".join(data.notes)


def test_cells_that_are_not_numbers_in_a_channel_read_are_named(tmp_path):
    """A channel the bundle reads, written with its unit in every cell ("35.06 C"), was read as
    missing on every row and left out of the score; ``score`` said only "missing values
    forward-filled" (found by a README walk). Words that mean missing are not named."""
    frame = plant_frame(rows=60)
    channels = list(frame.columns[1:])
    first, second = channels[0], channels[1]
    frame[second] = frame[second].astype(object)
    frame.loc[5, second], frame.loc[6, second] = "ERR", "n/a"
    frame.to_csv(tmp_path / "d.csv", index=False)
    data = load_frame([tmp_path / "d.csv"], channels=channels)
    assert [n for n in data.notes if n.startswith("cells")] == [
        f"cells that are not numbers, read as missing: {second} 1 of 60 (e.g. 'ERR')"]
    frame[first] = [f"{v:.2f} C" for v in plant_frame(rows=60)[first]]
    frame.to_csv(tmp_path / "u.csv", index=False)
    with pytest.raises(DataError, match=f"{first} 60 of 60 \\(e.g. '{frame[first][0]}'\\)"):
        load_frame([tmp_path / "u.csv"], channels=channels)  # (no sensor watch to hold it: no row is whole)
    plant_frame(rows=60).to_csv(tmp_path / "c.csv", index=False)
    assert not any(n.startswith("cells") for n in load_frame([tmp_path / "c.csv"], channels=channels).notes)


def test_the_rows_a_label_like_column_marks_are_counted_as_label_column_reads_them():
    """The note counted rows != 0, while --label-column reads > 0 or "true" (found by review)."""
    frame = plant_frame(rows=40)
    for marks, counted in [(np.where(np.arange(40) < 7, "true", "false"), 7), (np.where(np.arange(40) < 7, -1, 0), 0)]:
        frame["anomaly"] = marks
        notes = [n for n in series_from_frame(frame, "d", normal=True).notes if "marks" in n]
        assert notes == ([f"anomaly marks {counted} rows: they were trained on as normal (--label-column anomaly "
                          "leaves them out)"] if counted else [])
        if counted:
            assert int(series_from_frame(frame, "d", label_column="anomaly").labels["anomaly"].sum()) == counted
        else:  # a negative label is refused (scikit-learn's -1 for an outlier read backwards: a walk)
            with pytest.raises(DataError, match="holds -1"):
                series_from_frame(frame, "d", label_column="anomaly")


def test_a_parquet_time_index_is_the_time_column_and_row_numbers_are_no_channel(tmp_path):
    frame = plant_frame(rows=40).set_index("timestamp")
    frame.to_parquet(tmp_path / "d.parquet")
    data = load_frame([tmp_path / "d.parquet"])
    assert len(data) == 40 and len(data.channels) == frame.shape[1]
    filtered = plant_frame(rows=40)
    filtered = filtered[filtered.index % 3 > 0]  # a filtered table keeps its row numbers as its index
    filtered.to_parquet(tmp_path / "f.parquet")
    assert load_frame([tmp_path / "f.parquet"]).channels == tuple(filtered.columns[1:])
    unnamed = plant_frame(rows=40).set_index("timestamp").rename_axis(None)  # its column is "index"
    unnamed.to_parquet(tmp_path / "u.parquet")
    assert len(load_frame([tmp_path / "u.parquet"])) == 40  # (a date column of any name: found by its type)
    renamed = plant_frame(rows=40).rename(columns={"timestamp": "recorded_at"})
    renamed.to_parquet(tmp_path / "r.parquet")
    assert load_frame([tmp_path / "r.parquet"]).channels == tuple(renamed.columns[1:])


def test_a_file_too_large_for_memory_is_one_line(tmp_path, monkeypatch):
    """MemoryError has no message: the error line indexed its empty first line (an internal error)."""
    plant_frame(rows=20).to_csv(tmp_path / "d.csv", index=False)

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(pd, "read_csv", no_memory)
    with pytest.raises(DataError, match="too large to read into memory"):
        load_frame([tmp_path / "d.csv"])


def test_take_keeps_telling_a_gap_from_a_cut_and_clean_pieces_count_only_gaps_as_fresh_starts():
    """A fold or a split taken out of continuous readings starts a segment where the daemon would
    not start its windows afresh; a gap in the readings does, and a machine's first reading is where
    its history begins. Calibration counts a fresh start's first windows (the one-window raise can
    fire there) and leaves the others' out."""
    from sensorguard.training.crossfit import clean_pieces

    segments = np.array([0] * 5 + [1] * 5)  # a gap before row 5
    data = SensorData(np.zeros((10, 1)), np.arange(10.0), segments, ("a",), 1.0)
    assert data.fresh_starts().tolist() == [False] * 5 + [True] + [False] * 4
    kept = data.take(np.array([1, 1, 0, 1, 1, 1, 0, 0, 1, 1], bool))  # rows 2, 6 and 7 left out
    assert kept.segments.tolist() == [0, 0, 1, 1, 2, 3, 3]
    assert kept.fresh_starts().tolist() == [False, False, False, False, True, False, False]
    assert kept.take(np.array([0, 0, 0, 0, 1, 1, 1], bool)).fresh_starts().tolist() == [True, False, False]
    errors = np.ones((len(kept), 1))
    pieces, starts, left_out = clean_pieces(errors, kept, window=1)
    assert [len(p) for p in pieces] == [2, 2, 1, 2] and left_out == 0
    assert starts == [False, False, True, False]  # the gap's row (original 5) alone
    assert clean_pieces(np.ones((10, 1)), data, window=1)[1] == [False, True]
    faulted = np.zeros((10, 1), bool)
    faulted[5] = True  # the run after a sensor fault goes on in the same window buffer: no fresh start
    pieces, starts, _ = clean_pieces(np.ones((10, 1)), replace(data, faulted=faulted), window=1)
    assert [len(p) for p in pieces] == [5, 4] and starts == [False, False]
    machines = SensorData(np.zeros((6, 1)), np.r_[np.arange(3.0), np.arange(3.0)], np.array([0, 0, 0, 1, 1, 1]),
                          ("a",), 1.0, assets=np.array(["p1"] * 3 + ["p2"] * 3))
    assert not machines.fresh_starts().any()  # each machine's first reading starts its history, no gap


def test_concatenated_series_keep_their_gaps_and_their_cuts():
    """``calibrate --recorded`` and ``retrain`` join series (labelled rows dropped, recorded
    machines): a part's first row and a dropped label's cut are no gaps (found by review: joined,
    they turned into fresh starts and their first windows into promised raises)."""
    from sensorguard.training.data import concat_series

    first = SensorData(np.zeros((10, 1)), np.arange(10.0), np.r_[np.zeros(6, int), np.ones(4, int)], ("a",), 1.0)
    cut = first.take(np.arange(10) != 3)  # a labelled row left out: a cut at the old row 4
    other = SensorData(np.zeros((3, 1)), 20 + np.arange(3.0), np.zeros(3, int), ("a",), 1.0)
    joined = concat_series([cut, other])
    assert joined.fresh_starts().tolist() == [False] * 5 + [True] + [False] * 6  # the gap at the old row 6 alone


def test_the_fill_note_counts_only_the_values_filled(tmp_path):
    """A README walk: 10 blank cells in a row with a fill limit of 5 read "10 missing values
    forward-filled", beside "5 rows still incomplete after filling: dropped"."""
    from sensorguard.training.data import load_frame
    from tests.conftest import plant_frame

    frame = plant_frame(rows=400)
    frame.loc[100:109, "c0"] = np.nan
    frame.to_csv(tmp_path / "gap.csv", index=False)
    notes = load_frame([tmp_path / "gap.csv"], fill_limit=5).notes
    assert any(n.startswith("5 missing values forward-filled") for n in notes), notes
    assert any(n.startswith("5 rows still incomplete after filling") for n in notes), notes


def test_the_files_other_columns_are_kept_for_the_bundle_to_ignore_live():
    """A live feed that mirrors the training file sends its other columns too: every reading was
    refused as unknown_channel when train had left a constant column out (a walk). The file's
    columns that are not channels, its clock or its machine column travel with the data."""
    stamps = pd.date_range("2024-03-01", periods=60, freq="1min").astype(str).tolist()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"timestamp": stamps, "asset": ["p1"] * 30 + ["p2"] * 30, "p": rng.normal(size=60),
                          "q": rng.normal(size=60), "flush_on": 1.0, "anomaly": 0})
    data = series_from_frame(frame, "left-out")
    assert data.channels == ("p", "q") and data.left_out == ("flush_on", "anomaly")
    assert data.take(np.arange(len(data)) % 2 == 0).left_out == data.left_out
    named = series_from_frame(frame, "named", channels=["p"])
    assert named.left_out == ("q", "flush_on", "anomaly")


def test_a_sensor_named_as_the_time_column_is_refused(tmp_path):
    """``--time-column TI101`` trained a model on a temperature read as 1970 epoch seconds, rows
    sorted by temperature, 1,073 dropped as duplicate stamps, a sample period of 1 ms, exit 0 (a
    walk). Numbers that fall from row to row as often as a sensor's are no clock; elapsed seconds
    with a few rows out of order still are."""
    frame = plant_frame(rows=300, seed=2)
    with pytest.raises(DataError, match="column 'c0' does not read as a clock: .* of its values fall"):
        series_from_frame(frame, "sensor-clock", time_column="c0")
    elapsed = frame.assign(seconds=np.arange(300.0)).drop(columns="timestamp")
    elapsed.loc[[10, 11], "seconds"] = [11.0, 10.0]  # two rows swapped: still a clock
    assert len(series_from_frame(elapsed, "elapsed", time_column="seconds")) == 300
    # written newest first, or two machines interleaved a little apart: clocks too (a review)
    newest_first = elapsed.assign(seconds=elapsed.seconds.to_numpy()[::-1])
    assert len(series_from_frame(newest_first, "reversed", time_column="seconds")) == 300
    two = elapsed.assign(seconds=np.arange(300) // 2 + np.where(np.arange(300) % 2, 0.1, 0.5),
                         asset=np.where(np.arange(300) % 2, "b", "a"))
    assert len(series_from_frame(two, "two", time_column="seconds")) == 300


def test_rows_with_an_empty_asset_cell_are_left_out_and_counted(tmp_path):
    """Empty machine cells became a machine called "nan", scored and judged as one (a walk)."""
    frame = pd.concat([plant_frame(rows=120).assign(machine="m1"), plant_frame(rows=120).assign(machine="m2")])
    frame = frame.reset_index(drop=True)
    frame.loc[[5, 130, 131], "machine"] = [np.nan, "", " "]
    frame.to_csv(tmp_path / "d.csv", index=False)
    data = load_frame([tmp_path / "d.csv"], asset_column="machine")
    assert sorted(set(data.assets)) == ["m1", "m2"]
    assert "3 rows with an empty machine cell left out: no machine to score them as" in data.notes
    assert not any(n.startswith("nan:") for n in data.notes)
    assert np.isnan(data.source_times[[5, 130, 131]]).all()  # replay and the sensor column skip them too
    from sensorguard.training.offline import _taken  # (score writes a row for each, unscored)

    assert not _taken(data)[[5, 130, 131]].any() and _taken(data)[[4, 6, 129, 132]].all()
    frame["machine"] = np.nan
    frame.to_csv(tmp_path / "e.csv", index=False)
    with pytest.raises(DataError, match="every machine cell is empty"):
        load_frame([tmp_path / "e.csv"], asset_column="machine")


def test_columns_outside_a_models_channels_are_named_where_rows_are_taken_as_normal(tmp_path):
    """retrain dropped a new sensor's column without a word (a walk)."""
    frame = plant_frame(rows=200)
    frame["extra_sensor"] = np.arange(200.0)
    frame.to_csv(tmp_path / "d.csv", index=False)
    mine = [c for c in frame.columns if c.startswith("c")]
    notes = load_frame([tmp_path / "d.csv"], channels=mine, normal=True).notes
    assert any(n.startswith("numeric columns not among the channels, left out: 'extra_sensor'") for n in notes)
    assert not any("not among the channels" in n for n in load_frame([tmp_path / "d.csv"], channels=mine).notes)


def test_a_fault_flag_of_a_name_not_known_is_said_where_its_rows_are_taken_as_normal(tmp_path):
    """A 0/1 column of a name no label has ("failure") marking a few rows was trained on as a channel,
    or left out of calibrate's channels, its marked rows taken as normal without a word (only a line
    raised over 2x by them was said). A note now names it and --label-column. A status channel that
    is 1 most of the time, a count of 0, 1 and 2, and a label-named column are not such flags."""
    frame = plant_frame(rows=200)
    frame["failure"] = (np.arange(200) % 50 < 3).astype(int)  # 12 rows marked
    frame["running"] = (np.arange(200) > 10).astype(int)  # on most of the time: a status, not a flag
    frame["starts"] = np.arange(200) % 3
    frame.to_csv(tmp_path / "d.csv", index=False)
    flagged = [n for n in load_frame([tmp_path / "d.csv"], normal=True).notes if "holds only 0 and 1" in n]
    assert flagged == ["failure holds only 0 and 1 (12 of 200 rows 1): if it marks faults, --label-column failure "
                       "leaves those rows out; they were trained on as normal, as a channel"]
    mine = [c for c in frame.columns if c.startswith("c")]
    notes = load_frame([tmp_path / "d.csv"], channels=mine, normal=True).notes
    assert [n for n in notes if "holds only 0 and 1" in n] == [
        "failure holds only 0 and 1 (12 of 200 rows 1): if it marks faults, --label-column failure leaves those "
        "rows out; they were read as normal data"]
    assert not any("holds only 0 and 1" in n for n in load_frame([tmp_path / "d.csv"]).notes)  # (scored: no note)
    assert not any("holds only 0 and 1" in n
                   for n in load_frame([tmp_path / "d.csv"], normal=True, label_column="failure").notes)


def test_a_no_data_marker_in_normal_data_is_read_as_missing_not_learned(tmp_path):
    """Found by a walk: five -9999 cells in training rows set the temperature's limits to
    -40153 .. 30206, so a sensor stuck at -9999 live was never out of range, and recall fell from
    0.96 to 0.31. Normal data read for a model now takes a round marker far from its channel's
    other values as missing; a file being scored keeps it, as the daemon reads such a reading."""
    frame = _export(rows=200)
    frame.loc[[20, 21, 120], "temp"] = -9999.0
    frame["flow"] = 9999.0 - np.arange(200) % 3  # a level that happens to be a round number: a reading
    frame.to_csv(tmp_path / "marked.csv", index=False)
    normal = load_frame([tmp_path / "marked.csv"], normal=True)
    assert np.nanmin(normal.source_values[:, 0]) > -10 and np.isnan(normal.source_values[[20, 21, 120], 0]).all()
    assert 9999.0 in normal.source_values[:, 2]
    assert any(n.startswith("3 values far from the rest of their channel read as missing") and "temp -9999 (3)" in n
               for n in normal.notes), normal.notes
    scored = load_frame([tmp_path / "marked.csv"])
    assert scored.source_values[20, 0] == -9999.0 and not any("no-data marker" in n for n in scored.notes)


def test_a_numbered_machine_column_is_named_when_rows_repeat_their_times():
    """Found by a walk: two machines numbered 101 and 102 in a column ``unit`` were read as one
    series, half the rows dropped as duplicate stamps, ``unit`` made a channel, and no hint, where
    a text column gets one. A quantized sensor whose values repeat within a time is not a number
    of machines."""
    frames = [_export(rows=60).assign(unit=k) for k in (101, 102)]
    both = pd.concat(frames).sort_values("timestamp", kind="stable").reset_index(drop=True)
    data = series_from_frame(both, "numbered")
    assert any("column 'unit' holds 2 distinct values: if it names machines, give --asset-column unit" in n
               for n in data.notes), data.notes
    flow = both.drop(columns="unit").assign(flow=np.tile([31, 31, 32, 32], 30))  # same value twice at a time
    assert not any("--asset-column" in n for n in series_from_frame(flow, "quantized").notes)


def test_machines_of_one_file_sampling_at_rates_apart_are_named():
    """Found by a walk: machines at 10 s and 60 s in one file trained one model at 35 s, a rate
    neither has, and only each machine's 'off the model's rate' notes hinted at it."""
    fast = _export(rows=120).assign(asset="fast")
    slow = _export(rows=20).assign(asset="slow")
    slow["timestamp"] = pd.date_range("2024-03-01", periods=20, freq="6min", tz="UTC")
    data = series_from_frame(pd.concat([fast, slow]), "mixed")
    assert any(n.startswith("the machines sample at different rates (fast every 60 s, slow every 360 s)")
               for n in data.notes), data.notes
    same = series_from_frame(pd.concat([fast, fast.assign(asset="twin")]), "same")
    assert not any("different rates" in n for n in same.notes)


def test_dates_of_one_day_in_a_decimal_comma_file_put_the_day_first(tmp_path):
    """Found by a walk: a French export of one day (semicolons, decimal commas, ``01/03/2026``)
    was read as January 3rd with the note 'month first ... pandas' default'. A file that writes
    decimal commas is a day-first locale's; a decimal-point file keeps pandas' default."""
    stamps = pd.date_range("2026-03-01", periods=240, freq="1min")
    rows = "".join(f"{t:%d/%m/%Y %H:%M:%S};{20 + i % 7 / 10:.1f}\n".replace(".", ",") for i, t in enumerate(stamps))
    (tmp_path / "fr.csv").write_text("horodatage;temp\n" + rows)
    fr = load_frame([tmp_path / "fr.csv"])
    assert pd.Timestamp(fr.times[0], unit="s") == pd.Timestamp("2026-03-01")
    assert any("read day first, as the file writes decimal commas" in n for n in fr.notes), fr.notes
    rows = "".join(f"{t:%m/%d/%Y %H:%M:%S},{20 + i % 7 / 10:.1f}\n" for i, t in enumerate(stamps))
    (tmp_path / "us.csv").write_text("timestamp,temp\n" + rows)
    assert pd.Timestamp(load_frame([tmp_path / "us.csv"]).times[0], unit="s") == pd.Timestamp("2026-03-01")


def test_columns_whose_names_hold_a_comma_can_be_named_in_channels_and_exclude(tmp_path):
    """Found by a walk: ``--channels "Temp, inlet (°C),Current"`` split at every comma and was
    refused as 'channels not found: Temp, inlet (°C)', a name that looked just like the file's."""
    frame = _export().rename(columns={"temp": "Temp, inlet (°C)", "pressure": "Pressure, outlet [bar]"})
    frame["Current"] = np.arange(len(frame)) % 5 + 0.5
    frame.to_csv(tmp_path / "named.csv", sep=";", index=False)
    chosen = load_frame([tmp_path / "named.csv"], channels=["Temp", "inlet (°C)", "Current"])
    assert chosen.channels == ("Temp, inlet (°C)", "Current")
    left = load_frame([tmp_path / "named.csv"], exclude=["Pressure", "outlet [bar]"])
    assert left.channels == ("Temp, inlet (°C)", "Current")
    with pytest.raises(DataError, match="channels not found: Temp"):
        load_frame([tmp_path / "named.csv"], channels=["Temp", "Current"])


def test_a_vibration_axis_named_y_is_a_channel_and_a_whole_number_y_a_label():
    """Found by a walk: a float column ``y`` (the x/y/z axes of a vibration sensor) was left out
    as label-like without a look at it. Labels are whole numbers; readings have fractions."""
    frame = _export(rows=60)
    axes = frame.assign(x=np.sin(np.arange(60) / 5), y=np.cos(np.arange(60) / 5))
    assert series_from_frame(axes, "axes").channels == ("temp", "pressure", "x", "y")
    marked = frame.assign(y=(np.arange(60) > 50).astype(int))
    data = series_from_frame(marked, "marked")
    assert data.channels == ("temp", "pressure") and any("label-like columns left out: y" in n for n in data.notes)


def test_an_export_that_loses_rows_or_names_says_why(tmp_path):
    """Found by a walk: Excel's m/d/yyyy h:mm display cut the seconds of 10 s rows and 83 % of them
    went as 'duplicate timestamps' with no hint; two columns named alike became temp and temp.1
    unsaid; lines above the header gave a tokenizer's error and no hint."""
    frame = _export(rows=120)
    frame["timestamp"] = pd.date_range("2024-03-01", periods=120, freq="10s").strftime("%m/%d/%Y %H:%M")
    frame.to_csv(tmp_path / "minutes.csv", index=False)
    notes = load_frame([tmp_path / "minutes.csv"]).notes
    assert any("duplicate timestamps" in n and "every stamp is a whole minute" in n for n in notes), notes
    (tmp_path / "twice.csv").write_text("timestamp,temp,temp\n" + "".join(
        f"2024-03-01 00:{i // 60:02d}:{i % 60:02d},{i % 7},{i % 5}\n" for i in range(100)))
    assert any(n.startswith("header names repeated: temp") for n in load_frame([tmp_path / "twice.csv"]).notes)
    (tmp_path / "preamble.csv").write_text("Export of tag group 7\nServer: pi-01\n\ntimestamp,temp,flow\n" + "".join(
        f"2024-03-01 00:00:{i:02d},{i},{i * 2}\n" for i in range(50)))
    with pytest.raises(DataError, match="lines above the header"):
        load_frame([tmp_path / "preamble.csv"])


def test_a_parquet_file_is_read_whatever_its_name(tmp_path):
    """Found by a walk: ``data.parq`` was refused as binary data (an Excel workbook?)."""
    frame = _export(rows=30)
    frame.to_parquet(tmp_path / "data.parq", index=False)
    assert load_frame([tmp_path / "data.parq"]).channels == ("temp", "pressure")
    tagged = frame.rename(columns={"timestamp": "PAR1001"})  # a CSV whose header starts so (a review)
    tagged.to_csv(tmp_path / "tags.csv", index=False)
    assert load_frame([tmp_path / "tags.csv"], time_column="PAR1001").channels == ("temp", "pressure")


def test_a_label_column_not_named_as_such_is_refused_as_the_machines_column(tmp_path):
    """``--asset-column anomaly`` without ``--label-column``: the labels' 0 and 1 were read as two
    machines, each scored apart with its own gaps ("0: 1 window restarts"), while a note beside it
    said the same column marks the anomalous rows (a walk). A machine column named ``class`` that
    holds names, and a vibration axis ``y`` of fractions, are no labels."""
    from sensorguard.training.tables import reads_as_labels

    stamps = pd.date_range("2026-01-01", periods=40, freq="s")
    frame = pd.DataFrame({"timestamp": stamps, "temp": np.linspace(20, 30, 40), "anomaly": [0] * 30 + [1] * 10,
                          "class": ["p1", "p2"] * 20})
    frame.to_csv(tmp_path / "f.csv", index=False)
    with pytest.raises(DataError, match="'anomaly' reads as labels .*--label-column anomaly.* cannot also name"):
        load_frame([tmp_path / "f.csv"], asset_column="anomaly")
    assert set(load_frame([tmp_path / "f.csv"], asset_column="class", label_column="anomaly").assets) == {"p1", "p2"}
    assert not reads_as_labels(pd.Series([0.231, 0.5, 0.0], name="y"), "f.csv")
    assert reads_as_labels(pd.Series([0, 1, 0], name="Label "), "f.csv")
    assert not reads_as_labels(pd.Series([0, 1, 0], name="pump"), "f.csv")


@pytest.mark.parametrize("machines", ["class", "target", "y"])
def test_a_machine_column_named_like_labels_holding_machine_numbers_is_not_refused(tmp_path, machines):
    """``--asset-column class`` over machine numbers 1, 2, 3 (no normal 0, more
    than two values: no labels) was refused as "reads as labels", with no way around it but renaming
    the column (a model trained so before could no longer score its files; a review). Labels have a normal
    0 and at most two values."""
    stamps = pd.date_range("2026-01-01", periods=60, freq="s")
    frame = pd.DataFrame({"timestamp": np.repeat(stamps[:20], 3), "temp": np.linspace(20, 30, 60),
                          machines: [1, 2, 3] * 20})
    frame.to_csv(tmp_path / "f.csv", index=False)
    assert set(load_frame([tmp_path / "f.csv"], asset_column=machines).assets) == {"1", "2", "3"}

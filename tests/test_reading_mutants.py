"""Reading a user's file, pinned where a mutation audit of ``training/data.py``, ``tables.py``,
``csvfiles.py`` and ``markers.py`` found no test noticing the change: the no-data markers' thresholds,
the file kinds and encodings the reader takes, units rows, and which columns are channels or labels."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sensorguard.service.payload import NO_DATA, parse_message
from sensorguard.training.csvfiles import read_table
from sensorguard.training.data import DataError, load_frame
from sensorguard.training.markers import no_data_markers
from tests.conftest import plant_frame


def _export(rows: int = 40) -> pd.DataFrame:
    frame = plant_frame(rows=rows, channels=2, seed=3, period="1min")
    frame.columns = ["timestamp", "temp", "pressure"]
    return frame


def _comma_rows(rows: int) -> str:
    """``rows`` lines of a European export (semicolons, decimal commas): time;temp;pressure."""
    stamps = pd.date_range("2026-01-01", periods=rows, freq="1min")
    return "".join(f"{t:%Y-%m-%d %H:%M:%S};{20 + i % 9 / 10:.1f};{1 + i % 7 / 100:.2f}\n".replace(".", ",")
                   for i, t in enumerate(stamps))


# --- no-data markers (markers.py) ---

def test_values_of_the_daemons_no_data_magnitude_are_missing_offline_as_live(tmp_path: Path):
    """The daemon reads any value of magnitude ``NO_DATA`` (1e30) or more as missing, not only
    float32's largest: offline must read the same file as live does, or a score differs from the
    daemon's by a channel's whole scale."""
    frame = _export()
    frame.loc[5, "temp"] = NO_DATA
    frame.loc[6, "pressure"] = -5e30
    frame.to_csv(tmp_path / "huge.csv", index=False)
    data = load_frame([tmp_path / "huge.csv"])
    assert np.isnan(data.source_values[5, 0]) and np.isnan(data.source_values[6, 1])
    assert "2 values of magnitude 1e+30 or more (a historian's no-data marker) read as missing" in data.notes
    live = parse_message("sensors/p/readings", b'{"ts": 1700000000, "values": {"t": 1e30, "p": -5e30}}', "sensors")
    assert all(np.isnan(v) for v in live.samples[0].values.values())


def test_round_markers_far_from_their_channel_go_and_readings_near_it_stay():
    """Normal data: ``-999`` in a temperature ranging over 10 degrees is a no-data marker (105 ranges
    away); a flow of 700..800 that surges to ``999`` (2.4 ranges) is a reading a model must learn
    or flag, not a marker, even beside a ``-9999`` in the same channel; and ``999`` under a level
    flat at 1000 is a reading 0.1 % off it (a channel with no range is judged on 1 % of its level).
    The count in the note is the values read as missing, not every round value of the channel."""
    values = np.array([[50.0, 750.0, 1000.0], [-999.0, 999.0, 999.0], [45.0, 700.0, 1000.0],
                       [55.0, 800.0, 1000.0], [52.0, -9999.0, 1000.0], [48.0, 760.0, 1000.0]])
    notes = no_data_markers(values, ("temp", "flow", "level"), normal=True)
    assert notes == ["2 values far from the rest of their channel read as missing (a no-data marker?): "
                     "temp -999 (1), flow -9999 (1)"]
    assert np.isnan(values[1, 0]) and np.isnan(values[4, 1])
    assert values[1, 1] == 999.0 and values[1, 2] == 999.0


# --- file kinds, encodings and units rows (csvfiles.py) ---

def test_a_directory_is_named_as_one(tmp_path: Path):
    """``--data exports/`` (a folder, not its files) is refused as a directory; it was called "a
    pipe or a device", which sends a user looking for the wrong mistake."""
    with pytest.raises(DataError, match="is a directory, not a CSV or Parquet file"):
        load_frame([tmp_path])


def test_a_parquet_file_indexed_by_a_named_column_keeps_it(tmp_path: Path):
    """A table saved with ``set_index("time")`` (epoch seconds) writes its time column as the
    index: read back, it is the time column again. Dropped with the row numbers, the file had no
    time column."""
    frame = pd.DataFrame({"time": 1_700_000_000 + 10 * np.arange(60), "temp": 20 + np.arange(60) % 7 / 10})
    frame.set_index("time").to_parquet(tmp_path / "indexed.parquet")
    data = load_frame([tmp_path / "indexed.parquet"])
    assert data.channels == ("temp",) and data.times[0] == 1_700_000_000 and data.sample_period == 10


def test_a_gzipped_csv_is_read_as_pandas_reads_it(tmp_path: Path):
    """pandas reads ``.csv.gz`` itself; the sample the delimiter and encoding are guessed from must be
    the text too, not the compressed bytes (refused as "binary data")."""
    with gzip.open(tmp_path / "plant.csv.gz", "wt", encoding="utf-8") as fh:
        fh.write("Zeit;Temp;Druck\n" + _comma_rows(60))
    data = load_frame([tmp_path / "plant.csv.gz"])
    assert data.channels == ("Temp", "Druck") and data.values[1].tolist() == [20.1, 1.01]


def test_a_zip_of_several_files_is_refused_with_how_many(tmp_path: Path):
    """A zip must hold the one CSV: with two it says so and how many, not pandas' own error."""
    with zipfile.ZipFile(tmp_path / "exports.zip", "w") as archive:
        archive.writestr("a.csv", "Zeit;Temp\n" + _comma_rows(30))
        archive.writestr("b.csv", "Zeit;Temp\n" + _comma_rows(30))
    with pytest.raises(DataError, match="a zip archive must hold one CSV file, found 2"):
        load_frame([tmp_path / "exports.zip"])


def test_two_rows_of_names_and_units_under_the_header_are_left_out(tmp_path: Path):
    """A historian's export writes a description row and a units row under the tag names: both are
    left out (the second was read as a row of text in every channel) and counted in the note."""
    head = "Zeit;TI101;PI102\nTemperatur Zulauf;Druck Pumpe;\n;°C;bar\n"
    (tmp_path / "two.csv").write_text(head + _comma_rows(60))
    data = load_frame([tmp_path / "two.csv"])
    assert data.channels == ("TI101", "PI102") and len(data) == 60 and data.values[0].tolist() == [20.0, 1.0]
    assert any(n.startswith("2 rows under the header with no numbers left out (units? 'Temperatur Zulauf'")
               for n in data.notes), data.notes
    assert not any("not numbers" in n for n in data.notes), data.notes


def test_a_first_row_with_its_time_and_no_value_is_a_row_not_units(tmp_path: Path):
    """A sensor that starts with ``Bad Input`` writes a first row with its time and no number: a row
    (cleaned like any other and its cells named), not a units row left out with its stamp."""
    rows = "".join(f"2026-01-01 00:{i:02d}:00,{20 + i / 10:.1f},{1 + i / 100:.2f}\n" for i in range(1, 40))
    (tmp_path / "bad.csv").write_text("timestamp,temp,pressure\n2026-01-01 00:00:00,Bad Input,Bad Input\n" + rows)
    data = load_frame([tmp_path / "bad.csv"])
    assert len(data.source_values) == 40 and np.isnan(data.source_values[0]).all()
    assert not any("units?" in n for n in data.notes), data.notes
    assert any("temp 1 of 40 (e.g. 'Bad Input')" in n for n in data.notes), data.notes


def test_a_decimal_comma_column_of_grouped_thousands_is_a_number_column(tmp_path: Path):
    """``1.198,2`` is text to pandas; read as a number cell by cell, the column is a number column
    again, as pandas makes one: retrain's note names it among the numeric columns a model leaves out
    (left a column of objects it was not named at all)."""
    rows = "".join(f"2026-01-01 00:{i:02d}:00;{20 + i / 10:.1f};{1000 + 3 * i:,.1f}\n"
                   .replace(",", "_").replace(".", ",").replace("_", ".") for i in range(40))
    (tmp_path / "flow.csv").write_text("Zeit;Temp;Durchfluss\n" + rows)
    table = read_table(tmp_path / "flow.csv")
    assert pd.api.types.is_float_dtype(table["Durchfluss"]) and table["Durchfluss"][1] == 1003.0
    notes = load_frame([tmp_path / "flow.csv"], channels=["Temp"], normal=True).notes
    assert any(n.startswith("numeric columns not among the channels, left out: 'Durchfluss'") for n in notes), notes


def test_utf16_big_endian_is_read_by_its_byte_order_mark(tmp_path: Path):
    """Excel's "Unicode text" on a big-endian machine, or a tool that writes UTF-16BE: its byte-order
    mark says UTF-16 as the little-endian one does (without it, its zero bytes read as binary data)."""
    text = "Zeit\tTemp °C\tDruck bar\n" + _comma_rows(40).replace(";", "\t")
    (tmp_path / "be.csv").write_bytes(b"\xfe\xff" + text.encode("utf-16-be"))
    data = load_frame([tmp_path / "be.csv"])
    assert data.channels == ("Temp °C", "Druck bar") and data.values[1].tolist() == [20.1, 1.01]


def test_a_character_cut_at_the_samples_end_is_still_utf8(tmp_path: Path):
    """The encoding is guessed from the first 64 KiB: a ``°`` whose two bytes straddle that end is a
    character cut, not a byte of another encoding (read as Windows-1252 the header said ``Â°C``)."""
    lines = ["Zeit;Temp °C;Text\n"]
    stamps = pd.date_range("2026-01-01", periods=3000, freq="1min")
    size, i = len(lines[0].encode()), 0
    while True:
        line = f"{stamps[i]:%Y-%m-%d %H:%M:%S};{20 + i % 9 / 10:.1f};ok\n".replace(".", ",")
        if size + len(line.encode()) > 65_400:
            break
        lines.append(line)
        size, i = size + len(line.encode()), i + 1
    head = f"{stamps[i]:%Y-%m-%d %H:%M:%S};20,5;"
    pad = 65_535 - size - len(head)  # the ° starts on the sample's last byte
    lines.append(head + "x" * pad + "°\n")
    lines += [f"{t:%Y-%m-%d %H:%M:%S};21,0;ok\n" for t in stamps[i + 1:i + 20]]
    raw = "".join(lines).encode()
    assert raw[65_535:65_537] == "°".encode()
    (tmp_path / "cut.csv").write_bytes(raw)
    data = load_frame([tmp_path / "cut.csv"])
    assert data.channels == ("Temp °C",)
    assert not any("Windows-1252" in n for n in data.notes), data.notes


def _ragged(decimal: str) -> str:
    """A semicolon export whose last column (a status set only on events) every other row leaves out."""
    return "Zeit;Temp;Druck;Status\n" + "".join(
        f"2026-01-01 00:{i:02d}:00;{20 + i % 9 / 10:.1f};{1 + i % 7 / 100:.2f}".replace(".", decimal)
        + (";Alarm aus" if i % 2 else "") + "\n" for i in range(40))


@pytest.mark.parametrize("decimal", [".", ","])
def test_a_semicolon_file_with_rows_short_of_a_cell_is_split_at_its_semicolons(tmp_path: Path, decimal: str):
    """Rows that leave out their last empty cell give the semicolons no count the delimiter sniffer
    trusts. With decimal points it gives up and the header's delimiter is taken; with decimal commas
    it took the two commas of every row for the delimiter and the file was refused as "no timestamp
    column found (columns: Zeit;Temp;Druck;Status)": a comma the header does not hold is a decimal mark."""
    (tmp_path / "ragged.csv").write_text(_ragged(decimal))
    data = load_frame([tmp_path / "ragged.csv"])
    assert data.channels == ("Temp", "Druck") and data.values[1].tolist() == [20.1, 1.01] and len(data) == 40


def test_a_comma_file_of_whole_numbers_is_not_read_with_decimal_commas(tmp_path: Path):
    """In a comma CSV the comma is the delimiter: ``00:00:00,20`` (a stamp's seconds, then a count)
    is no decimal comma. Guessed as one, the file was taken for a decimal-comma locale's and its
    ``01/03/2026`` read day first: March 1st, two months off."""
    stamps = pd.date_range("2026-01-03", periods=40, freq="1min")
    rows = "".join(f"{t:%m/%d/%Y %H:%M:%S},{20 + i % 5}\n" for i, t in enumerate(stamps))
    (tmp_path / "counts.csv").write_text("timestamp,count\n" + rows)
    data = load_frame([tmp_path / "counts.csv"])
    assert data.channels == ("count",) and data.values[:3, 0].tolist() == [20.0, 21.0, 22.0]
    assert pd.Timestamp(data.times[0], unit="s") == pd.Timestamp("2026-01-03")


@pytest.mark.parametrize("bad_cells", [False, True])
def test_a_semicolon_file_of_decimal_points_keeps_them_beside_a_text_column_of_comma_lists(tmp_path: Path,
                                                                                         bad_cells: bool):
    """A channel of decimal points (``20.5``) shows the file's mark, read as numbers or, with a
    ``Bad`` cell among them, as text; a column listing alarm ids (``101,102``) is text, not numbers
    written with a decimal comma that make the file's ``01/03`` dates day first."""
    stamps = pd.date_range("2026-01-03", periods=60, freq="1min")
    temp = [f"{20 + i % 9 / 10:.1f}" for i in range(60)]
    if bad_cells:
        temp[30] = "Bad"
    rows = "".join(f"{t:%m/%d/%Y %H:%M:%S};{v};{'101,102' if i % 10 == 0 else ''}\n"
                   for i, (t, v) in enumerate(zip(stamps, temp, strict=True)))
    (tmp_path / "ids.csv").write_text("timestamp;temp;alarms\n" + rows)
    data = load_frame([tmp_path / "ids.csv"])
    assert not any("decimal comma" in n for n in data.notes), data.notes
    assert pd.Timestamp(data.times[0], unit="s") == pd.Timestamp("2026-01-03")
    assert data.values[1, 0] == 20.1


def test_a_decimal_comma_file_with_fractional_seconds_says_nothing_of_a_late_decimal_comma(tmp_path: Path):
    """``00:00:00.500`` is a stamp's fraction of a second, not a number with a decimal point: counted
    as one it outvoted the sample's decimal commas, which were then found "from line 2 on" as if the
    first 64 KiB had held no decimals."""
    stamps = pd.date_range("2026-01-01", periods=60, freq="500ms")
    temps = [f"{20 + i % 9 / 10:.1f}".replace(".", ",") for i in range(60)]
    rows = "".join(f"{t:%Y-%m-%d %H:%M:%S}.{t.microsecond // 1000:03d};{v}\n"
                   for t, v in zip(stamps, temps, strict=True))
    (tmp_path / "ms.csv").write_text("Zeit;Temp\n" + rows)
    data = load_frame([tmp_path / "ms.csv"])
    assert data.values[1, 0] == 20.1 and data.sample_period == 0.5
    assert not any("decimal comma (20,5) from line" in n for n in data.notes), data.notes


# --- channels, labels and their notes (tables.py) ---

def test_a_column_in_both_channels_and_exclude_is_refused(tmp_path: Path):
    """``--channels temp,pressure --exclude pressure`` contradicts itself: refused, naming the column,
    where the exclusion was ignored and the column trained on."""
    _export().to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match="pressure in both --channels and --exclude"):
        load_frame([tmp_path / "d.csv"], channels=["temp", "pressure"], exclude=["pressure"])


def test_excluding_a_column_the_file_lacks_is_refused(tmp_path: Path):
    """``--exclude presure`` (misspelt) excluded nothing and said nothing: the column meant was
    trained on. Refused, naming it."""
    _export().to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match="--exclude names unknown columns: presure"):
        load_frame([tmp_path / "d.csv"], exclude=["presure"])


def test_an_empty_column_is_not_named_as_a_numeric_column_a_model_could_use(tmp_path: Path):
    """An empty comments column reads as floats (all NaN): retrain's note of numeric columns left
    out of a model's channels names a new sensor, never that column."""
    frame = _export().assign(comment=np.nan, extra=np.arange(40) * 0.5)
    frame.to_csv(tmp_path / "d.csv", index=False)
    notes = load_frame([tmp_path / "d.csv"], channels=["temp", "pressure"], normal=True).notes
    said = [n for n in notes if n.startswith("numeric columns not among the channels")]
    assert len(said) == 1 and "'extra'" in said[0] and "comment" not in said[0], notes


@pytest.mark.parametrize("numbers", [[1, 2], [0, 1, 2]])
def test_machines_numbered_in_a_label_named_column_are_machines(tmp_path: Path, numbers: list[int]):
    """``--asset-column class`` over two machines 1 and 2 (no normal 0) or three numbered from 0
    (more than two values): machine numbers, not labels; each condition alone tells them apart."""
    stamps = pd.date_range("2026-01-01", periods=20, freq="s")
    frame = pd.DataFrame({"timestamp": np.repeat(stamps, len(numbers)),
                          "temp": np.linspace(20, 30, 20 * len(numbers)), "class": numbers * 20})
    frame.to_csv(tmp_path / "f.csv", index=False)
    assert set(load_frame([tmp_path / "f.csv"], asset_column="class").assets) == {str(n) for n in numbers}


def test_dashes_and_blanks_for_missing_cells_are_not_named_as_unreadable(tmp_path: Path):
    """A ``-`` says "no value" in words, as ``n/a`` does, and a cell of spaces holds nothing: read as
    missing without the note that names cells holding something else (``35.06 C``, ``ERR``), which
    would send a user looking for a fault."""
    frame = _export().astype({"temp": object})
    frame.loc[[3, 4], "temp"] = "-"
    frame.loc[6, "temp"] = "  "  # (a blank cell as some exports write it)
    frame.loc[9, "temp"] = "ERR"
    frame.to_csv(tmp_path / "d.csv", index=False)
    notes = load_frame([tmp_path / "d.csv"]).notes
    assert "cells that are not numbers, read as missing: temp 1 of 40 (e.g. 'ERR')" in notes, notes


def test_bytes_of_another_encoding_past_the_sample_are_said(tmp_path: Path):
    """A UTF-8 file with lines of Windows-1252 appended past the first 64 KiB is read (those bytes as
    ``\\ufffd``), and the note says so: the header stays UTF-8 and the odd cells have a reason."""
    stamps = pd.date_range("2026-01-01", periods=4000, freq="1s")
    body = "".join(f"{t:%Y-%m-%d %H:%M:%S};{20 + i % 9 / 10:.1f}\n".replace(".", ",") for i, t in enumerate(stamps))
    late = "2026-01-02 00:00:00;20,0 °\n".encode("cp1252")
    (tmp_path / "appended.csv").write_bytes(("Zeit;Temp °C\n" + body).encode() + late)
    data = load_frame([tmp_path / "appended.csv"])
    assert data.channels == ("Temp °C",)
    assert any(n.startswith("bytes that are not UTF-8 after the first 64 KiB") for n in data.notes), data.notes


def test_a_label_name_written_decomposed_is_a_label(tmp_path: Path):
    """A macOS export writes ``Störung`` as ``o`` and a combining mark: the same name, a fault flag,
    never trained on as a channel (its 0/1 were a sensor beside the others)."""
    decomposed = "Sto\u0308rung"
    frame = _export().assign(**{decomposed: [0] * 30 + [1] * 10})
    frame.to_csv(tmp_path / "d.csv", index=False)
    data = load_frame([tmp_path / "d.csv"])
    assert data.channels == ("temp", "pressure")
    assert any(n.startswith(f"label-like columns left out: {decomposed}") for n in data.notes), data.notes


def test_a_label_column_that_marks_no_row_gets_no_note(tmp_path: Path):
    """Training on a file whose ``anomaly`` column is all 0: its rows are normal, and no note says
    "anomaly marks 0 rows: they were trained on as normal", a warning of nothing."""
    frame = _export().assign(anomaly=0, fault=[0] * 35 + [1] * 5)
    frame.to_csv(tmp_path / "d.csv", index=False)
    notes = load_frame([tmp_path / "d.csv"], normal=True).notes
    assert any(n.startswith("fault marks 5 rows: they were trained on as normal") for n in notes), notes
    assert not any(n.startswith("anomaly marks") for n in notes), notes


def test_no_channel_left_says_why_each_column_was_left_out(tmp_path: Path):
    """A file whose only columns besides the time are a setpoint and a text status is refused with
    the reasons each was left out, not only its column names (they were built and lost: a walk)."""
    frame = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=40, freq="1min"),
                          "setpoint": 50.0, "status": ["ok", "run"] * 20})
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"no numeric sensor columns found \(constant columns left out: setpoint .*"
                                        r"columns under 90 % numbers left out: status \(0 % numbers\)"):
        load_frame([tmp_path / "d.csv"])


def test_machines_numbered_with_a_fraction_are_machines(tmp_path: Path):
    """Machines numbered line by unit (``1.1``, ``1.2``) read as numbers with fractions, as a
    sensor's do: a column repeating two of them over 40 rows names machines, and so does a snapshot
    of ten machines a row each (too few cells to call a sensor); neither is refused as a sensor
    column given as --asset-column."""
    stamps = pd.date_range("2026-01-01", periods=20, freq="s")
    pairs = pd.DataFrame({"timestamp": np.repeat(stamps, 2), "unit": [1.1, 1.2] * 20,
                          "temp": np.linspace(20, 30, 40)})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    assert set(load_frame([tmp_path / "pairs.csv"], asset_column="unit").assets) == {"1.1", "1.2"}
    units = [1.1, 1.2, 1.3, 1.4, 1.5, 2.1, 2.2, 2.3, 2.4, 2.5]
    snapshot = pd.DataFrame({"timestamp": "2026-01-01 00:00:00", "unit": units, "temp": np.arange(10) + 0.5})
    snapshot.to_csv(tmp_path / "snapshot.csv", index=False)
    assert len(load_frame([tmp_path / "snapshot.csv"], asset_column="unit")) == 10


def test_label_cells_of_spaces_or_none_are_counted_as_empty(tmp_path: Path):
    """Label cells an export writes as a space or ``none`` are read as normal (0), as empty ones are:
    the note counting them says so, where only cells pandas reads as missing were counted."""
    frame = _export().assign(anomaly=["1"] * 3 + [" ", "none"] + ["0"] * 35)
    frame.to_csv(tmp_path / "d.csv", index=False)
    data = load_frame([tmp_path / "d.csv"], label_column="anomaly")
    assert data.labels["anomaly"].tolist() == [1] * 3 + [0] * 37
    assert "2 rows have an empty anomaly cell: they count as normal (0)" in data.notes, data.notes


def test_rows_out_of_order_across_a_row_without_a_time_are_said_to_be_sorted(tmp_path: Path):
    """Two exports pasted one after the other with a summary row between them (no time): the second
    starts earlier than the first ended. The rows are sorted and the note says so, though the one
    step back in time is across the row without a time."""
    frame = _export(rows=200).astype({"timestamp": str})
    order = [*range(100, 200), 0, *range(100)]  # (row 0 becomes the summary row)
    pasted = frame.iloc[order].reset_index(drop=True)
    pasted.loc[100, "timestamp"] = "Summe"
    pasted.to_csv(tmp_path / "pasted.csv", index=False)
    data = load_frame([tmp_path / "pasted.csv"])
    assert "rows were not in time order: sorted" in data.notes, data.notes
    assert (np.diff(data.times) > 0).all()


def test_late_decimal_commas_beside_a_gap_are_found_from_their_first_line(tmp_path: Path):
    """A semicolon file whose first 64 KiB held whole numbers only, with one empty cell in a whole
    number channel (a float column of NaN and whole numbers: no decimal point in it) and decimal
    commas from row 3000 in one channel and row 3100 in another: ``50,125`` is 50.125, not 50125,
    and the note names the first line any channel writes one on."""
    stamps = pd.date_range("2026-01-01", periods=3200, freq="1min")
    lines = []
    for i, t in enumerate(stamps):
        temp = f"{50 + i % 8 / 8:.3f}".replace(".", ",") if i >= 3000 else "50"
        pressure = f"{6 + i % 4 / 8:.3f}".replace(".", ",") if i >= 3100 else "6"
        lines.append(f"{t:%Y-%m-%d %H:%M:%S};{temp};{pressure};{'' if i == 10 else 7}\n")
    (tmp_path / "late.csv").write_text("timestamp;temp;pressure;level\n" + "".join(lines))
    data = load_frame([tmp_path / "late.csv"])
    assert data.source_values[3001, 0] == 50.125 and data.source_values[3101, 1] == 6.125
    assert any("decimal comma (20,5) from line 3002 on" in n for n in data.notes), data.notes


def test_quoted_small_values_with_a_decimal_comma_in_a_comma_file_are_numbers(tmp_path: Path):
    """A comma CSV from a decimal-comma locale quotes its numbers, Excel's small ones as ``4,181E-03``:
    read as 0.004181, where such cells were missing (and forward-filled) as text."""
    rows = "".join(f'2026-01-01 00:{i:02d}:00,"{4 + i % 9 / 10:.3f}E-03",{20 + i % 5}\n'.replace(".", ",", 1)
                   for i in range(40))
    (tmp_path / "small.csv").write_text("timestamp,current,temp\n" + rows)
    data = load_frame([tmp_path / "small.csv"])
    assert data.channels == ("current", "temp")
    assert np.allclose(data.values[:3, 0], [0.004, 0.0041, 0.0042])
    assert not any("not numbers" in n for n in data.notes), data.notes


def test_small_values_under_a_units_row_make_a_number_column(tmp_path: Path):
    """Under a units row every cell of a column is text to pandas; Excel's ``4,181E-03`` cells are
    read as numbers there, so the column is a number column again, as one a model could use."""
    rows = "".join(f"2026-01-01 00:{i:02d}:00;{20 + i / 10:.1f};{4 + i % 9 / 10:.3f}E-03\n".replace(".", ",")
                   for i in range(40))
    (tmp_path / "small.csv").write_text("Zeit;Temp;Strom\n;°C;A\n" + rows)
    table = read_table(tmp_path / "small.csv")
    assert pd.api.types.is_float_dtype(table["Strom"]) and table["Strom"][1] == pytest.approx(0.0041)
    notes = load_frame([tmp_path / "small.csv"], channels=["Temp"], normal=True).notes
    assert any(n.startswith("numeric columns not among the channels, left out: 'Strom'") for n in notes), notes

"""Session 74's walk: a plant engineer's historian export (semicolon CSV, German column names) and
a gateway's live readings, as a first-time user meets them."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sensorguard.service.reject_detail import explain
from sensorguard.training.data import load_frame
from tests.conftest import plant_frame


def _with_flag(name: str, rows: int = 200) -> pd.DataFrame:
    frame = plant_frame(rows=rows)
    flag = np.zeros(rows, dtype=int)
    flag[120:140] = 1  # a trip the shift flagged, inside the stretch given as normal
    frame[name] = flag
    return frame


@pytest.mark.parametrize("name", ["Störung", "Stoerung", "Störmeldung", "STÖRUNG ",
                                  unicodedata.normalize("NFD", "Störung")])
def test_a_german_fault_flag_is_a_label_not_a_channel(tmp_path: Path, name: str) -> None:
    """A historian's 0/1 fault flag named ``Störung`` (German: fault) was trained on as a sensor
    channel ("spiky in training: Störung") and its marked rows as normal, where a column named
    ``fault`` is left out as a label and its rows counted; ``calibrate`` refused a file whose
    ``fault`` column marked rows, and took the same file with ``Störung`` and raised the line 21x."""
    path = tmp_path / "historian.csv"
    _with_flag(name).to_csv(path, index=False)
    data = load_frame([path], normal=True)  # (as train reads it)
    assert name not in data.channels
    notes = " | ".join(data.notes)
    assert f"label-like columns left out: {name}" in notes
    assert f"{name} marks 20 rows: they were trained on as normal (--label-column {name} leaves them out)" in notes


def test_a_german_fault_flag_beside_a_models_channels_is_counted_where_rows_are_taken_as_normal(
        tmp_path: Path) -> None:
    """In a model's channels (``calibrate``, ``retrain``) a ``Störung`` column's marked rows were
    not counted (calibrate then learned the fault as normal, unsaid); ``fault`` was."""
    frame = _with_flag("Störung")
    path = tmp_path / "more.csv"
    frame.to_csv(path, index=False)
    channels = [c for c in frame.columns if c not in ("timestamp", "Störung")]
    data = load_frame([path], channels=channels, normal=True)
    notes = " | ".join(data.notes)
    assert "Störung marks 20 rows" in notes
    assert "numeric columns not among the channels" not in notes  # a label, not a sensor the model lacks


def test_a_stamp_in_epoch_milliseconds_is_said_to_be_one() -> None:
    """A gateway sending ``Date.now()`` (epoch ms) got "ts 1796656457000 is not epoch seconds
    (2000..2200) or an ISO 8601 time": the years in brackets read as a range of the number. The
    files ``score`` reads take ms by size; the daemon takes seconds only, and the line says so."""
    why = explain("bad_ts", b'{"ts": 1796656457000, "values": {"t": 1}}', ["t"])
    assert "milliseconds" in why and "1796656457" in why
    why = explain("bad_ts", b'{"ts": 1796656457000000, "values": {"t": 1}}', ["t"])
    assert "microseconds" in why
    assert "milliseconds" not in explain("bad_ts", b'{"ts": "yesterday", "values": {"t": 1}}', ["t"])


@pytest.mark.parametrize(("payload", "said"), [(b'{"samples": 5}', "samples is 5, not a list"),
                                                (b'{"samples": []}', "samples is empty")])
def test_a_bad_samples_line_says_what_samples_held(payload: bytes, said: str) -> None:
    """"rejected reading: bad_samples" was the whole line: every other reason names what was at fault."""
    assert said in explain("bad_samples", payload, ["t"])


def test_an_empty_comments_column_is_not_called_a_numeric_column_the_model_lacks(tmp_path: Path) -> None:
    """``calibrate`` on a stretch with no operator comments said "numeric columns not among the
    channels, left out: 'Bemerkung' (... train a new one to use them)": an empty column reads as
    floats, and no model could use it."""
    frame = plant_frame(rows=200)
    channels = [c for c in frame.columns if c != "timestamp"]
    frame["Bemerkung"] = ""
    frame["setpoint"] = 1500.0
    path = tmp_path / "more.csv"
    frame.to_csv(path, index=False, sep=";")
    notes = " | ".join(load_frame([path], channels=channels, normal=True).notes)
    assert "numeric columns not among the channels, left out: 'setpoint'" in notes and "Bemerkung" not in notes


def test_an_asset_silent_before_its_first_window_says_no_score(tiny_bundle) -> None:
    """A gateway sent 20 readings (under a window) and stopped: its ``stale`` state said
    ``"score": 0.0`` and ``sensorguard alerts`` listed SCORE 0.00, a window judged perfectly normal,
    where the README says the score is null before the asset's first window is judged."""
    import json
    import time

    from tests.test_daemon import T0, make, message

    daemon, client = make(tiny_bundle, stale_after_s=60)
    daemon.ingest.handle(client, message("pump-1", T0))  # one reading: no window of it judged
    daemon.housekeeping(time.monotonic() + 61)  # silent
    states = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/state/pump-1"]
    assert states and states[-1]["state"] == "stale"
    assert states[-1]["score"] is None and states[-1]["peak_score"] is None


@pytest.mark.parametrize(("rate", "said"), [(1000.0, "1,000 rows/s"), (400.0, "400 rows/s"), (2.5, "2.5 rows/s"),
                                             (12345.6, "12,346 rows/s"), (0.1, "0.1 rows/s")])
def test_a_replays_pace_reads_as_written(rate: float, said: str) -> None:
    """``replay --rate 1000`` printed "replaying ... at 1e+03 rows/s"."""
    from sensorguard.clients import rate_words

    assert rate_words(rate) == said

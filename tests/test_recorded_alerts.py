"""The recorded alerts the retrain gate reads back: acknowledged faults bind a candidate, the
unanswered ones are said when a candidate stops raising them (training/recorded_alerts.py)."""

from __future__ import annotations

import numpy as np

from sensorguard.service.recorder import Recorder
from sensorguard.training.recorded_alerts import dropped_alerts_note, unanswered_alerts

CHANNELS = ("a", "b", "c")


def record_alert(directory, asset: str, raised_s: int, offset: float) -> None:
    """Readings of one alert, unanswered, as the daemon's recorder files them (``alerts/``)."""
    rng = np.random.default_rng(raised_s)
    rec = Recorder(directory, CHANNELS, guard_s=10, flush_interval_s=0)
    start = raised_s - 100
    for ts in range(start, raised_s + 60):
        values = np.array([0.0, 1.0, 2.0]) + rng.normal(0, 0.05, 3) + (offset if ts >= raised_s - 10 else 0.0)
        rec.add(asset, float(1_767_225_600 + ts), values)
        if ts == raised_s:
            rec.alert_raised(asset, float(1_767_225_600 + ts))
    rec.alert_cleared(asset, float(1_767_225_600 + raised_s + 59), f"{asset}@{(1_767_225_600 + raised_s) * 1000}",
                      9.0)
    rec.flush(now_ts=2e9)


def test_a_line_that_stops_raising_unanswered_alerts_is_said(tmp_path, tiny_bundle):
    """A walk: two real faults acknowledged as false alarms lifted the line threefold; the model then
    raised nothing on the other faults recorded, unanswered, and nothing said so."""
    record_alert(tmp_path, "pump-4", 200, 40.0)
    record_alert(tmp_path / "w1", "pump-5", 900, 40.0)  # serve --workers: under w<k>/
    alerts = unanswered_alerts(tmp_path, CHANNELS)
    assert sorted(name for name, _ in alerts) == ["pump-4@1767225800000", "pump-5@1767226500000"]
    assert dropped_alerts_note(tiny_bundle, tiny_bundle, alerts) is None  # the same line: nothing dropped
    blind = tiny_bundle.with_threshold(tiny_bundle.threshold_ * 1e6, {})
    note = dropped_alerts_note(blind, tiny_bundle, alerts)
    assert note is not None and note.startswith("it raises no alert on 2 of the 2 unanswered recorded alerts")
    assert "pump-4@1767225800000" in note and "blinded" in note
    assert [name for name, _ in unanswered_alerts(tmp_path, CHANNELS, newest=1)] == ["pump-5@1767226500000"]


def test_an_alerts_parts_on_other_workers_follow_its_answer(tmp_path):
    """A cluster walk: an alert whose asset moved while it was up is filed in parts by each owner,
    and an acknowledgement moves only the answering worker's parts. Read over the workers' record
    dirs together, the parts left in another's ``alerts/`` stayed "unanswered" and a false alarm's
    onset was never learned. They now follow the answer given anywhere in the store."""
    import pandas as pd

    from sensorguard.service.record_files import alert_file
    from sensorguard.training.recorded_alerts import answers, known_faults
    from sensorguard.training.retrain import load_recorded

    record_alert(tmp_path / "sg-1", "pump-4", 200, 40.0)  # filed by sg-1, its first owner (unanswered there)
    record_alert(tmp_path / "sg-1", "pump-6", 1600, 40.0)
    alarm, fault = "pump-4@1767225800000", "pump-6@1767227200000"
    for alert, folder in ((alarm, "false_alarms"), (fault, "faults")):  # their later parts: sg-2's, answered there
        first = pd.read_parquet(tmp_path / "sg-1" / "alerts" / alert_file(alert))
        later = first.assign(ts=first.ts + len(first))  # the readings after the move
        (tmp_path / "sg-2" / folder).mkdir(parents=True, exist_ok=True)
        later.to_parquet(tmp_path / "sg-2" / folder / alert_file(alert).replace(".parquet", "+1.parquet"))
    record_alert(tmp_path / "sg-2", "pump-5", 900, 40.0)  # unanswered
    rows = len(first)
    assert answers(tmp_path) == {alarm: "false_alarms", fault: "faults"}
    assert [name for name, _ in unanswered_alerts(tmp_path, CHANNELS)] == ["pump-5@1767226500000"]
    faults = dict(known_faults(tmp_path, CHANNELS))
    assert list(faults) == [fault] and len(faults[fault]) == 2 * rows  # sg-1's part and sg-2's
    assert load_recorded(tmp_path).learned().sum() == 2 * rows  # the false alarm's: sg-1's part too
    assert load_recorded(tmp_path / "sg-2").learned().sum() == rows  # one worker's store: its own parts


def test_an_alert_answered_both_ways_is_a_fault_and_said(tmp_path, capsys):
    """A review: an alert answered as a fault on one worker and as a false alarm on another (a
    correction after its asset moved) was made a fault without a word."""
    import pandas as pd

    from sensorguard.service.record_files import alert_file
    from sensorguard.training.recorded_alerts import both_ways_note, known_faults
    from sensorguard.training.retrain import load_recorded

    record_alert(tmp_path / "sg-1", "pump-4", 200, 40.0)
    alert = "pump-4@1767225800000"
    first = pd.read_parquet(tmp_path / "sg-1" / "alerts" / alert_file(alert))
    (tmp_path / "sg-1" / "faults").mkdir()
    (tmp_path / "sg-1" / "alerts" / alert_file(alert)).rename(tmp_path / "sg-1" / "faults" / alert_file(alert))
    (tmp_path / "sg-2" / "false_alarms").mkdir(parents=True)
    first.assign(ts=first.ts + len(first)).to_parquet(
        tmp_path / "sg-2" / "false_alarms" / alert_file(alert).replace(".parquet", "+1.parquet"))
    assert both_ways_note(tmp_path / "sg-1") is None
    assert [name for name, _ in known_faults(tmp_path, CHANNELS)] == [alert]
    assert load_recorded(tmp_path).learned().sum() == 0
    out = capsys.readouterr().out
    assert "note: 1 alert(s) answered both as a false alarm and as a fault ('pump-4@1767225800000')" in out


def test_a_known_fault_shorter_than_a_window_is_not_counted_as_missed(tiny_bundle):
    """A README walk: an alert raised within the guard band after an earlier clear is filed from its
    raise on only (that band is recorded nowhere), 18 readings against a window of 32. Acknowledged
    as real, retrain counted it in ``faults caught`` though no model can judge it: "11/12" for the
    current model too, which had raised that very alert live. A fault with no whole window is left
    out of the count; one with a window still counts."""
    import pandas as pd

    from sensorguard.training.data import series_from_frame
    from sensorguard.training.retrain_gate import compare

    def series(rows: int, name: str):
        noise = np.random.default_rng(rows).normal(0, 0.05, (rows, 3))
        frame = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=rows, freq="1s", tz="UTC"),
                              "a": noise[:, 0], "b": 1 + noise[:, 1], "c": 2 + noise[:, 2]})
        return series_from_frame(frame, name, time_column="timestamp")

    short, whole = ("pump-3@1", series(tiny_bundle.window - 1, "short")), ("pump-3@2", series(40, "whole"))
    holdout = series(200, "holdout")
    result = compare(tiny_bundle, holdout, np.ones(3), known=[short, whole])
    assert result.known == 1 and "pump-3@1" not in result.caught

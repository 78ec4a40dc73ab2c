"""Edges of ``retrain`` and the recordings it reads back that no test pinned (found by mutating
training/retrain.py and training/recorded_alerts.py): which recorded files count as what, what the
notes say, and which inputs are refused with one line. No network is trained here."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sensorguard.service.record_files import alert_file
from sensorguard.service.registry import current_version, publish
from sensorguard.training.recorded_alerts import both_ways_note, known_faults
from sensorguard.training.retrain import load_recorded
from sensorguard.training.retrain_gate import Comparison
from sensorguard.training.train import TrainOptions

CHANNELS = ("a", "b", "c")
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def recording(path: Path, asset: str, start: float, rows: int, offset: float = 0.0) -> Path:
    """Readings of one machine as the daemon's recorder writes them (``ts``, ``asset``, channels), 1 s apart."""
    rng = np.random.default_rng(int(start) % 1000)
    ts = T0 + start + np.arange(rows, dtype=float)
    frame = pd.DataFrame({"ts": ts, "asset": asset})
    for k, c in enumerate(CHANNELS):
        frame[c] = k + np.sin(ts / 30.0) + rng.normal(0, 0.05, rows) + offset
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def alert_id(asset: str, start: float) -> str:
    return f"{asset}@{int((T0 + start) * 1000)}"


def test_every_alert_answered_both_ways_is_named_sorted_and_counted(tmp_path: Path):
    """The note on alerts answered as a false alarm on one worker and as a fault on another counts
    those alone (not every false alarm) and names the first of them in order, the same each run."""
    names = [alert_id(f"pump-{k}", 100.0 * k) for k in range(6)]
    for k, name in enumerate(names):
        recording(tmp_path / "w1" / "faults" / alert_file(name), f"pump-{k}", 100.0 * k, 20)
        recording(tmp_path / "w2" / "false_alarms" / alert_file(name).replace(".parquet", "+1.parquet"),
                  f"pump-{k}", 100.0 * k + 20, 20)
    recording(tmp_path / "w2" / "false_alarms" / alert_file(alert_id("pump-9", 5000.0)), "pump-9", 5000.0, 20)
    note = both_ways_note(tmp_path)
    shown = ", ".join(repr(n) for n in sorted(names)[:3])
    assert note is not None and note.startswith(f"note: 6 alert(s) answered both as a false alarm and as a fault "
                                                f"({shown} and 3 more): taken as faults"), note


def test_a_store_inside_a_folder_named_like_a_verdict_is_read_as_normal_readings(tmp_path: Path):
    """Only the folders below the record dir file an alert: a store kept at ``/srv/faults/rec`` holds
    normal readings, learned by a retrain, and no known fault."""
    store = tmp_path / "faults" / "rec"
    recording(store / "2026-01-01.parquet", "pump-1", 0.0, 300)
    assert len(load_recorded(store)) == 300
    assert known_faults(store, CHANNELS) == []


def test_the_newest_unanswered_alerts_are_the_latest_raised_whatever_their_machines_names(tmp_path: Path):
    """``newest`` keeps the alerts raised last, by the time in their ids, not by the ids' text
    (``pump-9``'s early alert sorts after ``pump-1``'s late one)."""
    from sensorguard.training.recorded_alerts import unanswered_alerts

    early, late = alert_id("pump-9", 100.0), alert_id("pump-1", 900.0)
    recording(tmp_path / "alerts" / alert_file(early), "pump-9", 100.0, 40)
    recording(tmp_path / "alerts" / alert_file(late), "pump-1", 900.0, 40)
    assert [name for name, _ in unanswered_alerts(tmp_path, CHANNELS, newest=1)] == [late]


def test_a_damaged_or_unreadable_known_fault_is_skipped_and_said(tmp_path: Path, capsys):
    """A known fault's file a crash left unreadable, or one whose readings no longer fit the model's
    channels, must not stop the retrain: skipped, named, and the other faults still bind the candidate."""
    good = alert_id("pump-1", 100.0)
    recording(tmp_path / "faults" / alert_file(good), "pump-1", 100.0, 40)
    damaged, other = alert_id("pump-2", 500.0), alert_id("pump-3", 900.0)
    (tmp_path / "faults" / alert_file(damaged)).write_bytes(b"PAR1 not really")
    recording(tmp_path / "faults" / alert_file(other), "pump-3", 900.0, 40)  # recorded before a sensor was renamed
    pd.read_parquet(tmp_path / "faults" / alert_file(other)).rename(columns={"c": "c_new"}).to_parquet(
        tmp_path / "faults" / alert_file(other), index=False)
    faults = known_faults(tmp_path, CHANNELS)
    assert [name for name, _ in faults] == [good] and len(faults[0][1]) == 40
    out = capsys.readouterr().out
    assert f"skipping known fault {tmp_path / 'faults' / alert_file(damaged)}: " in out
    assert f"skipping known fault {other}: " in out and "channels not found: c" in out


def test_a_known_fault_is_read_in_the_models_channels_and_their_order(tmp_path: Path):
    """A fault recorded with its columns in another order, beside a column the model does not use,
    is read in the model's channels, in the model's order (scored column by column as the model's)."""
    name = alert_id("pump-1", 100.0)
    path = recording(tmp_path / "faults" / alert_file(name), "pump-1", 100.0, 40)
    frame = pd.read_parquet(path)
    frame.assign(spare=frame["a"] * 0.5 + 3.25)[["ts", "asset", "c", "spare", "a", "b"]].to_parquet(path, index=False)
    [(_, data)] = known_faults(tmp_path, CHANNELS)
    assert data.channels == CHANNELS
    np.testing.assert_allclose(data.values, frame[list(CHANNELS)].to_numpy())


def test_the_unanswered_alerts_a_candidate_stops_raising_are_counted_and_named(monkeypatch):
    """Only alerts the current model raises and the candidate does not count as dropped: the note says
    how many of all those checked, and names up to three; nothing dropped, nothing said."""
    from sensorguard.training import recorded_alerts

    raises = {"old": {"p@1", "p@2", "p@3"}, "new": {"p@3"}}  # p@4: neither raises it
    monkeypatch.setattr(recorded_alerts, "alerts_on", lambda model, data: data in raises[model])
    checked = [(n, n) for n in ("p@1", "p@2", "p@3", "p@4")]
    note = recorded_alerts.dropped_alerts_note("new", "old", checked)
    assert note is not None and note.startswith("it raises no alert on 2 of the 4 unanswered recorded alerts "
                                                "('p@1', 'p@2') that the current one raises"), note
    assert recorded_alerts.dropped_alerts_note("new", "old", [("p@3", "p@3"), ("p@4", "p@4")]) is None


def test_since_reads_ages_in_minutes_and_fractions_back_from_now():
    """``--since 30m`` is half an hour ago (not 30 hours), ``1.5h`` an hour and a half ago: ages count
    back from now, never forward."""
    import time

    from sensorguard.training.retrain import parse_since

    now = time.time()
    assert abs(parse_since("30m") - (now - 1800)) < 60
    assert abs(parse_since("1.5h") - (now - 5400)) < 60
    assert parse_since("1767225600") == T0 and parse_since("") is None


def test_a_since_time_without_an_offset_is_utc_whatever_the_machines_zone(monkeypatch):
    """``--since 2026-01-01T00:00:00`` is UTC, as everywhere in sensorguard, on a host set to New York."""
    import time

    from sensorguard.training.retrain import parse_since

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_since("2026-01-01T00:00:00") == T0 == parse_since("2026-01-01T00:00:00Z")
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_models_own_settings_kept_by_a_retrain(tiny_bundle):
    """The settings a retrain keeps come from ``training.options``: its level and its split (a JSON
    list, as the tuple train takes); options that are no mapping are none kept, not a crash."""
    from sensorguard.training.retrain import own_options

    stored = {"level": "series", "split": [0.7, 0.15, 0.15], "hidden": 8, "window": 64}
    own = own_options(replace(tiny_bundle, training={"options": stored}))
    assert own == {"level": "series", "split": (0.7, 0.15, 0.15), "hidden": 8}
    assert own_options(replace(tiny_bundle, training={"options": ["hidden", 8]})) == {}


def test_another_sample_period_is_one_off_by_more_than_a_tenth_and_a_finite_one():
    """Retrain refuses data sampled more than 10 % off the model's period (67 s for 60 s), takes
    jitter within it (66.5 s: within a tenth of the longer), and takes data without a finite period
    as having none (no "inf s")."""
    from sensorguard.training.retrain import _other_period

    assert "every 67 s, the current model every 60 s" in _other_period(60.0, 67.0)
    assert _other_period(60.0, 66.5) is None
    assert _other_period(60.0, float("inf")) is None and _other_period(float("inf"), 60.0) is None


def _trained_on(tiny_bundle, start: str, end: str):
    return replace(tiny_bundle, training={"time_range": [start, end]})


def _rows_frame(rows: int, start: str = "2026-01-01") -> pd.DataFrame:
    """``rows`` readings of the channels a, b, c, 1 s apart from ``start`` (UTC)."""
    return pd.DataFrame({"timestamp": pd.date_range(start, periods=rows, freq="s", tz="UTC"),
                         "a": np.linspace(0, 1, rows), "b": np.linspace(1, 2, rows), "c": np.linspace(2, 3, rows)})


def _rows_from(start: str, rows: int):
    from sensorguard.training.data import series_from_frame

    return series_from_frame(_rows_frame(rows, start), "new")


def test_the_rows_a_model_trained_on_are_counted_up_to_its_last_stamp(tiny_bundle):
    """Rows stamped exactly at the first or last time a model trained on are its rows too: counted in
    the warning (one stretch: no "in 1 stretches"), and data that begin at its last stamp do not
    warm-start it."""
    from sensorguard.training.retrain import _seen_rows, seen_rows_note

    bundle = _trained_on(tiny_bundle, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:09+00:00")
    note = seen_rows_note(bundle, _rows_from("2026-01-01T00:00:09", 5))
    assert note is not None and note.startswith("1 of 5 rows lie inside the span the model trained on "
                                                "(2026-01-01T00:00:00+00:00 to 2026-01-01T00:00:09+00:00): "), note
    assert seen_rows_note(bundle, _rows_from("2025-12-31T23:59:55", 6)).startswith("1 of 6 rows")
    assert _seen_rows(bundle, _rows_from("2026-01-01T00:00:09", 5)) is not None
    assert _seen_rows(bundle, _rows_from("2026-01-01T00:00:10", 5)) is None


def test_a_model_without_a_readable_training_span_warns_of_nothing(tiny_bundle):
    """A ``time_range`` that holds no times (hand-edited, or an older bundle) is no span: no warning
    and no refusal of the warm start, not a ValueError."""
    from sensorguard.training.retrain import _seen_rows, seen_rows_note, training_span

    bundle = _trained_on(tiny_bundle, "not a time", "2026-01-01")
    assert training_span(bundle) is None
    assert seen_rows_note(bundle, _rows_from("2026-01-01", 5)) is None
    assert _seen_rows(bundle, _rows_from("2026-01-01", 5)) is None


def quiet() -> TrainOptions:
    return TrainOptions(progress=False)


class Seam:
    """A registry whose CURRENT is ``tiny_bundle``, and ``retrain`` with its fit and its gate stood in
    for (what they were given is kept): the rules around them run, no network is trained."""

    def __init__(self, root: Path, tiny_bundle, monkeypatch, passed: bool = True, dropped: str | None = None):
        import sensorguard.training.retrain as retrain_module

        self.module, self.root, self.current = retrain_module, root, tiny_bundle
        self.candidate = replace(tiny_bundle, scale_=np.array([3.0, 3.0, 3.0]))
        self.fits: list = []
        self.judged: list = []
        publish(tiny_bundle, root, "pump")

        def fit(rest, options, init_state=None):
            self.fits.append(options)
            return self.candidate, None

        def judge(candidate, current, holdout, variance, faults, scale, target):
            self.judged.append({"holdout": holdout, "variance": variance, "scale": scale, "target": target})
            ours = Comparison(0.001, 1.0, 20)
            return ours, (Comparison(0.001, 1.0, 20) if current is not None else None), passed, "as good"

        monkeypatch.setattr(retrain_module, "train_bundle", fit)
        monkeypatch.setattr(retrain_module, "judge", judge)
        monkeypatch.setattr(retrain_module, "dropped_alerts_note", lambda new, old, unanswered: dropped)

    def retrain(self, data=None, **kwargs):
        options = kwargs.pop("options", quiet())
        return self.module.retrain(self.root, "pump", _rows_from("2026-02-01", 400) if data is None else data,
                                   options, **kwargs)


def test_a_forced_candidate_that_passes_is_promoted_as_passed_not_forced(tmp_path, tiny_bundle, monkeypatch):
    """``--force`` promotes a candidate the gate refuses, said "forced despite ..."; one that passes
    is promoted for passing, its reason the gate's own."""
    result = Seam(tmp_path / "reg", tiny_bundle, monkeypatch).retrain(force=True)
    assert result.promoted and result.reason == "as good"
    refused = Seam(tmp_path / "reg2", tiny_bundle, monkeypatch, passed=False).retrain(force=True)
    assert refused.promoted and refused.reason == "forced despite as good"


def test_the_dropped_alerts_note_offers_a_rollback_only_after_a_promotion(tmp_path, tiny_bundle, monkeypatch):
    """A promoted candidate that stops raising unanswered alerts says how to undo it
    (``models rollback``); one left unpromoted has nothing to undo."""
    promoted = Seam(tmp_path / "reg", tiny_bundle, monkeypatch, dropped="it raises no alert").retrain()
    assert promoted.promoted
    assert promoted.reason.endswith("; note: it raises no alert; `models rollback` undoes the promotion")
    kept = Seam(tmp_path / "reg2", tiny_bundle, monkeypatch, passed=False, dropped="it raises no alert").retrain()
    assert not kept.promoted and kept.reason.endswith("; note: it raises no alert")


def test_a_shadowed_retrain_runs_a_passing_candidate_beside_current_and_records_it_passed(
        tmp_path, tiny_bundle, monkeypatch):
    """``--shadow``: a passing candidate is not promoted but set as SHADOW, its ``metrics.passed``
    true (``models list`` shows it passed); a refused one is no shadow."""
    import json

    from sensorguard.service.registry import shadow_version

    root = tmp_path / "reg"
    result = Seam(root, tiny_bundle, monkeypatch).retrain(shadow=True)
    assert not result.promoted and result.reason.startswith("as good; shadowing CURRENT v0001")
    assert current_version(root, "pump") == "v0001" and shadow_version(root, "pump") == result.version
    metrics = json.loads((root / "pump" / result.version / "bundle.json").read_text())["metrics"]
    assert metrics["passed"] is True and metrics["promoted"] is False
    refused = Seam(tmp_path / "reg2", tiny_bundle, monkeypatch, passed=False).retrain(shadow=True)
    assert not refused.promoted and shadow_version(tmp_path / "reg2", "pump") is None


def test_a_first_model_asked_to_shadow_is_promoted(tmp_path, tiny_bundle, monkeypatch):
    """With no CURRENT there is nothing to run beside: ``--shadow`` promotes the first model."""
    seam = Seam(tmp_path / "reg", tiny_bundle, monkeypatch)
    result = seam.module.retrain(tmp_path / "new", "pump", _rows_from("2026-02-01", 400),
                                 quiet(), shadow=True)
    assert result.promoted and current_version(tmp_path / "new", "pump") == result.version


def test_the_gate_compares_in_the_current_models_units_at_the_asked_rate(tmp_path, tiny_bundle, monkeypatch):
    """The candidate is judged on the newest tenth of the data, its errors in the current model's
    scale (each model standardizes its own way), at the false-alarm rate asked for."""
    from sensorguard.training.retrain_gate import error_variance

    seam = Seam(tmp_path / "reg", tiny_bundle, monkeypatch)
    result = seam.retrain(options=replace(quiet(), false_alarm_rate=0.02))
    [judged] = seam.judged
    assert result.target_rate == judged["target"] == 0.02
    np.testing.assert_array_equal(judged["scale"], tiny_bundle.scale_)
    np.testing.assert_allclose(judged["variance"], error_variance(judged["holdout"], tiny_bundle.scale_))
    assert len(judged["holdout"]) == 40


def test_a_warm_start_keeps_the_current_models_shape(tmp_path, tiny_bundle, monkeypatch):
    """A retrain keeps the current model's window and hop; ``--warm-start`` its latent and hidden
    sizes too (the weights it starts from fit no other)."""
    seam = Seam(tmp_path / "reg", tiny_bundle, monkeypatch)
    seam.retrain(options=replace(quiet(), latent=2, hidden=32), warm_start=True)
    [options] = seam.fits
    assert (options.window, options.hop, options.latent, options.hidden) == (16, 2, 4, 8)


def test_data_of_other_channels_than_the_current_models_are_refused(tmp_path, tiny_bundle, monkeypatch):
    """A retrain on data whose channels differ from the current model's is refused with one line,
    nothing trained or stored."""
    from sensorguard.training.data import DataError

    seam = Seam(tmp_path / "reg", tiny_bundle, monkeypatch)
    other = replace(_rows_from("2026-02-01", 400), channels=("a", "b", "d"))
    with pytest.raises(DataError, match=r"data channels \['a', 'b', 'd'\] do not match model 'pump'"):
        seam.retrain(other)
    assert seam.fits == []


def test_a_forced_retrain_on_too_short_a_held_out_block_trains_without_the_fault_check(
        tmp_path, tiny_bundle, monkeypatch):
    """``--force`` trains and promotes where the newest tenth is too short to inject faults into (the
    refusal says so); without it that is refused before training."""
    from sensorguard.training.data import DataError

    seam = Seam(tmp_path / "reg", tiny_bundle, monkeypatch)
    with pytest.raises(DataError, match="hold no 32 readings in a row"):
        seam.retrain(_rows_from("2026-02-01", 200))
    assert seam.fits == [] and seam.retrain(_rows_from("2026-02-01", 200), force=True).promoted


def test_the_comparison_table_shows_four_digits_and_says_an_unchecked_fault_row():
    """``retrain`` prints its comparison with four significant digits, and a fault row saying "not
    checked" where the current model had no known faults to catch."""
    from sensorguard.training.retrain import RetrainResult

    result = RetrainResult("v0002", True, "as good", Comparison(0.0123456, 1.23456, 20), Comparison(0.5, 2.0, 20), 1e-3)
    lines = result.table().splitlines()
    assert lines[1].split()[-2:] == ["0.5", "0.01235"] and lines[2].split()[-2:] == ["2", "1.235"]
    assert lines[4] == f"{'faults caught':22}{'not checked':>24}"
    assert lines[-1] == "candidate v0002: promoted (as good)"


def test_empty_data_are_no_rows_a_model_has_seen(tiny_bundle):
    """No rows: nothing seen, nothing to refuse the warm start for (not a ValueError of an empty min)."""
    from sensorguard.training.retrain import _seen_rows

    bundle = _trained_on(tiny_bundle, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:09+00:00")
    rows = _rows_from("2026-01-01", 5)
    assert _seen_rows(bundle, rows.take(np.zeros(len(rows), dtype=bool))) is None


def test_a_retrain_without_files_or_recordings_is_one_line(tmp_path: Path):
    """``retrain`` given neither ``--data`` nor ``--recorded``: one line saying what to give."""
    from sensorguard.training.data import DataError
    from sensorguard.training.retrain import new_normal_data

    with pytest.raises(DataError, match="give new normal data: files and/or a recorded directory"):
        new_normal_data(tmp_path / "reg", "pump", [], None, None)


def test_since_keeps_the_row_stamped_at_that_time_and_counts_the_older(tmp_path: Path):
    """``--since`` keeps rows from that time on: the row stamped exactly then is kept, the older ones
    are counted in a note."""
    from sensorguard.training.retrain import new_normal_data

    frame = _rows_frame(300)
    frame.to_csv(tmp_path / "new.csv", index=False)
    since = str(int(T0) + 100)
    data = new_normal_data(tmp_path / "reg", "pump", [str(tmp_path / "new.csv")], None, since)
    assert len(data) == 200 and data.times[0] == T0 + 100
    assert f"--since {since}: 100 of the 300 rows of the files are older: left out" in data.notes


def test_a_retrain_reads_the_machines_by_the_column_the_current_model_was_trained_with(tmp_path, tiny_bundle):
    """A fleet file retrained without ``--asset-column`` is read per machine by the column named at
    training (``training.asset_column``), not merged into one series."""
    from sensorguard.training.retrain import new_normal_data

    publish(replace(tiny_bundle, training={"asset_column": "unit"}), tmp_path / "reg", "pump")
    one = _rows_frame(150)
    pd.concat([one.assign(unit="p1"), one.assign(unit="p2")]).to_csv(tmp_path / "fleet.csv", index=False)
    data = new_normal_data(tmp_path / "reg", "pump", [str(tmp_path / "fleet.csv")], None, None)
    assert len(data) == 300 and sorted(set(data.assets)) == ["p1", "p2"]


def test_a_recorded_store_without_readings_is_one_line_for_each_way_it_is_empty(tmp_path: Path, capsys):
    """A record dir with no Parquet files, with only unreadable ones, or with none since ``--since``:
    each is one line saying which, not a pandas error."""
    from sensorguard.training.data import DataError

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no recorded Parquet files"):
        load_recorded(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="broken: no readable recordings"):
        load_recorded(tmp_path / "broken")
    assert "skipping unreadable recording" in capsys.readouterr().out
    recording(tmp_path / "old" / "a.parquet", "pump-1", 0.0, 50)
    with pytest.raises(DataError, match="old: no recorded readings since the given time"):
        load_recorded(tmp_path / "old", since=T0 + 1000)


def test_a_damaged_recording_is_skipped_and_the_others_read(tmp_path: Path, capsys):
    """A file a crash left unreadable is named and skipped; the store's other readings are learned."""
    recording(tmp_path / "a.parquet", "pump-1", 0.0, 120)
    (tmp_path / "b.parquet").write_bytes(b"PAR1 not really")
    assert len(load_recorded(tmp_path)) == 120
    assert f"skipping unreadable recording {tmp_path / 'b.parquet'}: " in capsys.readouterr().out


def test_since_keeps_the_recorded_reading_stamped_at_that_time(tmp_path: Path):
    """``--since`` with recordings keeps readings from that time on, the one stamped exactly then too."""
    recording(tmp_path / "a.parquet", "pump-1", 0.0, 300)
    data = load_recorded(tmp_path, since=T0 + 100)
    assert len(data) == 200 and data.times[0] == T0 + 100


def test_a_false_alarm_is_learned_on_its_own_machine_only(tmp_path: Path):
    """The rows a false alarm covers are marked learned on its machine alone: another machine's
    readings of the same minutes are plain normal data."""
    recording(tmp_path / "p1-a.parquet", "pump-1", 0.0, 100)
    recording(tmp_path / "false_alarms" / alert_file(alert_id("pump-1", 100.0)), "pump-1", 100.0, 50)
    recording(tmp_path / "p1-b.parquet", "pump-1", 150.0, 150)
    recording(tmp_path / "p2.parquet", "pump-2", 0.0, 300)
    data = load_recorded(tmp_path)
    learned = data.learned().astype(bool)
    assert len(data) == 600 and learned.sum() == 50 and set(data.assets[learned]) == {"pump-1"}


def test_recordings_in_dated_subfolders_are_read(tmp_path: Path):
    """A store that keeps its files in subfolders (by day, or per worker) is read whole."""
    recording(tmp_path / "2026-01-01" / "a.parquet", "pump-1", 0.0, 100)
    recording(tmp_path / "w1" / "2026-01-01" / "b.parquet", "pump-2", 0.0, 100)
    assert len(load_recorded(tmp_path)) == 200

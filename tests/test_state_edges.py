"""Edges of ``assets.json`` that no test pinned (found by mutating service/state.py): what is
written, what a rewrite after a bad entry keeps, and which files are refused rather than crash."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytest

from sensorguard.service.alerts import AlertState
from sensorguard.service.state import (
    STATE_FILE,
    StateError,
    load_states,
    restore_states,
    save_states,
    saved_extras,
)

UP = AlertState("alerting", above=3, peak=2.5, last_score=2.0, alert_id="up@1")


def strict(path: Path) -> dict:
    """The file read as strict JSON (NaN and Infinity are no JSON: other readers refuse them)."""

    def refuse(name: str) -> float:
        raise ValueError(f"not JSON: {name}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def write(directory: Path, assets: object) -> Path:
    path = directory / STATE_FILE
    path.write_text(json.dumps({"format_version": 1, "assets": assets}), encoding="utf-8")
    return path


def test_times_and_fault_values_that_are_no_finite_numbers_are_not_written_as_nan(tmp_path: Path):
    """A NaN judged time, return time or fault value made the file no JSON for any other reader
    (``NaN`` is Python's extension); a non-finite time is left out, a fault's value is null."""
    fault = {"kind": "stuck", "channel": "a", "since": 5.0, "value": math.nan}
    path = save_states(tmp_path, {"p": AlertState()}, {}, judged={"p": math.nan}, faults={"p": [fault]},
                       returned={"p": math.inf, "q": math.nan})
    assets = strict(path)["assets"]
    assert set(assets) == {"p"} and "judged_ts" not in assets["p"] and "returned_ts" not in assets["p"]
    assert assets["p"]["sensor_faults"][0]["value"] is None


def test_a_silent_assets_mark_wins_over_its_return(tmp_path: Path):
    """Silent and back at once (a race at the save): the silence is saved, not a return too, so a
    restart tells its return when it sends again."""
    save_states(tmp_path, {}, {}, silent={"p": (60.0, 1.0)}, returned={"p": 50.0})
    extras = saved_extras(tmp_path)
    assert extras.silences == {"p": (60.0, 1.0)} and extras.returned == {}


def test_no_empty_fault_or_channel_lists_are_written(tmp_path: Path):
    """An asset with no open fault and no channels has neither key (the file stays small)."""
    path = save_states(tmp_path, {"p": AlertState()}, {}, faults={"p": []}, channels={"p": []})
    assert strict(path)["assets"]["p"].keys() == {"alert"}


def test_a_file_whose_assets_are_no_mapping_is_refused_not_a_crash(tmp_path: Path):
    """``"assets": []`` (a hand edit) is no state file: refused with StateError, so the daemon sets
    it aside and starts (it crashed at each start otherwise); the extras read as none."""
    write(tmp_path, [])
    with pytest.raises(StateError, match="not a sensorguard state file"):
        load_states(tmp_path)
    assert saved_extras(tmp_path).judged == {} and restore_states(str(tmp_path), 10) == {}


def test_only_a_true_unannounced_mark_counts(tmp_path: Path):
    """``"unannounced": 1`` or ``"yes"`` (a hand edit) is no mark: the alert counts as announced,
    not told a second time."""
    up = {"status": "alerting", "above": 3, "peak": 2.5, "last_score": 2.0, "alert_id": "x"}
    write(tmp_path, {"a": {"alert": up, "unannounced": 1}, "b": {"alert": up, "unannounced": "yes"},
                     "c": {"alert": up, "unannounced": True}})
    assert load_states(tmp_path)[2] == {"c"}


def test_an_entry_whose_alert_is_no_mapping_costs_its_asset_alone(tmp_path: Path):
    """``"alert": "up"`` (a hand edit) skips that asset; the others keep their state."""
    write(tmp_path, {"a": {"alert": "up"}, "b": {"alert": {"status": "normal"}}})
    alerts, _, _ = load_states(tmp_path)
    assert set(alerts) == {"b"}


def test_unknown_fields_alone_keep_a_copy_and_rewrite_the_file_keeping_its_age(tmp_path: Path,
                                                                                  caplog: pytest.LogCaptureFixture):
    """A newer version's field (after a rollback), no bad entry: the file as it was is copied to
    ``assets.json.bad`` and rewritten without the field, said once, and no newer than it was
    (``relayout`` weighs copies by age)."""
    path = write(tmp_path, {"a": {"alert": {"status": "normal"}, "owner": "ops"}})
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.state"):
        alerts, _, _ = load_states(tmp_path)
    assert set(alerts) == {"a"} and "ignored fields" in caplog.text
    assert (tmp_path / (STATE_FILE + ".bad")).exists() and "owner" not in strict(path)["assets"]["a"]
    assert path.stat().st_mtime_ns == 1_000_000_000


def test_a_rewrite_keeps_open_faults_and_channels_and_no_skipped_assets_return(tmp_path: Path):
    """The rewrite after a bad entry keeps the good assets' open faults and top channels (a restart
    forgot them otherwise), and leaves out the skipped asset whole: its return time must not bring
    it back as a bare entry."""
    fault = {"kind": "stuck", "channel": "a", "since": 5.0, "value": 1.0}
    channels = [{"name": "a", "share": 1.0}]
    write(tmp_path, {"good": {"alert": {"status": "normal"}, "sensor_faults": [fault], "channels": channels},
                     "bad": {"alert": {"status": 7}, "returned_ts": 50.0}})
    alerts, _, _ = load_states(tmp_path)
    extras = saved_extras(tmp_path)
    assert set(alerts) == {"good"} and extras.faults == {"good": [fault]} and extras.channels == {"good": channels}
    assert set(strict(tmp_path / STATE_FILE)["assets"]) == {"good"} and extras.returned == {}


def test_no_rewrite_without_a_copy_of_the_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture):
    """The copy aside failing (a full disk), the file is not rewritten: what the bad entry held
    would be lost for good."""

    def full(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sensorguard.service.state.keep_copy", full)
    path = write(tmp_path, {"a": {"alert": {"status": "normal"}}, "bad": {"alert": {"status": 7}}})
    before = path.read_text(encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.state"):
        load_states(tmp_path)
    assert path.read_text(encoding="utf-8") == before and "could not keep a copy" in caplog.text


def test_over_max_assets_an_alert_up_goes_before_live_normal_assets(tmp_path: Path):
    """A cap lowered since the save: the alert up is kept before live (judged) normal assets whose
    names sort first, since its raise went out and subscribers wait for its clear."""
    alerts = {"a-live": AlertState(last_score=0.4), "b-live": AlertState(last_score=0.3), "z-up": UP}
    save_states(tmp_path, alerts, {})
    assert list(restore_states(str(tmp_path), max_assets=2)) == ["z-up", "a-live"]


def test_extras_of_a_file_whose_assets_are_a_list_read_as_none(tmp_path: Path):
    """``saved_extras`` never raises for a bad file (restore_states sets it aside)."""
    write(tmp_path, ["a"])
    extras = saved_extras(tmp_path)
    assert (extras.judged, extras.faults, extras.channels, extras.silences, extras.returned) == ({}, {}, {}, {}, {})


def test_a_restart_with_nothing_to_restore_says_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """An empty file: no "restored the state of 0 assets" line."""
    save_states(tmp_path, {}, {})
    with caplog.at_level(logging.INFO, logger="sensorguard.service.state"):
        assert restore_states(str(tmp_path), 10) == {}
    assert "restored" not in caplog.text


def test_an_entrys_open_channel_faults_go_to_the_next_owner_as_saved():
    """Cluster mode passes an asset's open channel faults on with its state (``sensor_faults``, as
    ``assets.json`` keeps them): a value that is NaN goes as null and comes back NaN; an entry
    without them, or unreadable, has none."""
    from sensorguard.service.state_entry import encode_asset, faults_in

    faults = [{"kind": "out_of_range", "channel": "b", "since": 10.0, "value": 110.0},
              {"kind": "missing", "channel": "a", "since": 12.0, "value": float("nan")}]
    back = faults_in(encode_asset(AlertState(), None, 8.0, faults=faults))
    assert back[0] == faults[0] and back[1]["kind"] == "missing" and math.isnan(back[1]["value"])
    assert faults_in(encode_asset(AlertState(), None, 8.0)) == [] and faults_in(b"{half") == []
    assert faults_in(b'{"alert": {}, "sensor_faults": [{"kind": "melted", "channel": "b", "since": 1}]}') == []

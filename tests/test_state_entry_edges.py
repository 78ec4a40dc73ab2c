"""Edges of one asset's saved entry that no test pinned (found by mutating service/state_entry.py):
each reader keeps what reads as its field and leaves out, asset by asset, what does not."""

from __future__ import annotations

import json
import math

import pytest

from sensorguard.service.alerts import AlertState
from sensorguard.service.drift import DriftState
from sensorguard.service.state_entry import (
    StateError,
    alert_state,
    channels_of,
    decode_asset,
    drift_state,
    encode_asset,
    entry_of,
    faults_of,
    judged_of,
    silence_entry,
    silences_of,
    unknown_fields,
)


def test_unknown_fields_inside_the_drift_baseline_are_named_too():
    """A newer version's drift field (as its alert fields) is named, so the file as it was is kept
    aside before the next save drops it."""
    entry = {"alert": {"status": "normal", "escalation": 2},
             "drift": {"offset": 0.1, "updates": 3, "trend": 0.5}, "owner": "ops"}
    assert unknown_fields(entry) == ["owner", "alert.escalation", "drift.trend"]
    known = {"alert": {}, "drift": {}, "unannounced": True, "judged_ts": 1.0, "sensor_faults": [], "channels": [],
             "silent": {}, "returned_ts": 2.0}
    assert unknown_fields(known) == []


def test_a_judged_time_that_is_no_finite_number_is_left_out():
    """``judged_ts`` sets the floor the buffer judges from: a hand edit's text, an overflowing integer
    or a bool is not a time (left out), an integer one is read as a float."""
    assets = {"a": {"judged_ts": 60}, "b": {"judged_ts": "soon"}, "c": {"judged_ts": 10**400},
              "d": {"judged_ts": None}, "e": {}}
    judged = judged_of(assets)
    assert judged == {"a": 60.0} and type(judged["a"]) is float


def test_an_asset_without_open_faults_or_channels_has_no_entry():
    """An empty list is no faults and no channels: the asset is left out, not listed with nothing."""
    assets = {"a": {"sensor_faults": [], "channels": []}, "b": {"sensor_faults": "none", "channels": {}}}
    assert faults_of(assets) == {} and channels_of(assets) == {}


def test_top_channels_need_every_name_a_string():
    """One channel named by a number (a hand edit) costs the asset's channels, not a crash later when
    they are published as names."""
    assets = {"a": {"channels": [{"name": "temp", "share": 0.5}, {"name": 3, "share": 0.5}]},
              "b": {"channels": [{"name": "temp", "share": 1}]}}
    out = channels_of(assets)
    assert out == {"b": [{"name": "temp", "share": 1.0}]} and type(out["b"][0]["share"]) is float
    assert json.dumps(out)  # (plain JSON values)
    assert not math.isnan(out["b"][0]["share"])


def test_a_silence_is_saved_only_with_a_finite_time_and_read_back_only_as_one():
    """``silent`` is written as JSON (no NaN there: a NaN ``since`` is no silence, a NaN last score
    is null) and read back only with a finite ``since``; a missing or bad last score reads as NaN."""
    assert silence_entry(None) == {} and silence_entry((math.nan, 1.0)) == {}
    assert silence_entry((60.0, math.nan)) == {"silent": {"since": 60.0, "last_score": None}}
    assert json.loads(json.dumps(silence_entry((60.0, 2.5)), allow_nan=False)) == {
        "silent": {"since": 60.0, "last_score": 2.5}}
    assets = {"a": {"silent": {"since": 60, "last_score": 2.5}}, "b": {"silent": {"since": "noon"}},
              "c": {"silent": {"since": 10**400, "last_score": 1.0}}, "d": {"silent": {"since": 5.0}}}
    out = silences_of(assets)
    assert set(out) == {"a", "d"} and out["a"] == (60.0, 2.5) and math.isnan(out["d"][1])


def test_a_saved_value_or_score_that_is_no_float_reads_as_nan_not_a_crash():
    """JSON's integers have no bound (10**400 raised OverflowError at every start) and a bool is no
    score: a fault's value and a silence's last score read as NaN, the rest of the entry stands."""
    fault = {"kind": "stuck", "channel": "temp", "since": 60}
    assets = {"a": {"sensor_faults": [{**fault, "value": 10**400}], "silent": {"since": 60, "last_score": 10**400}},
              "b": {"sensor_faults": [{**fault, "value": True}], "silent": {"since": 60, "last_score": True}},
              "c": {"sensor_faults": [{**fault, "value": 3}], "silent": {"since": 60, "last_score": -2}}}
    faults, silences = faults_of(assets), silences_of(assets)
    for asset in ("a", "b"):
        assert math.isnan(faults[asset][0]["value"]) and math.isnan(silences[asset][1])
        assert faults[asset][0]["since"] == 60.0
    assert faults["c"][0]["value"] == 3.0 and silences["c"] == (60.0, -2.0)


def test_only_an_alert_up_is_marked_unannounced_and_only_a_true_mark_counts():
    """The mark says a raise never went out: a pending or normal state has no raise to announce (a
    mark there would announce one later), and read back only ``true`` is the mark (as assets.json)."""
    for status in ("normal", "pending", "stale"):
        assert "unannounced" not in entry_of(AlertState(status, above=1), None, announced=False)
    assert entry_of(AlertState("alerting", above=3, alert_id="a@1"), None, announced=False)["unannounced"] is True
    entry = json.loads(encode_asset(AlertState("alerting", above=3, alert_id="a@1"), None, announced=False))
    assert decode_asset(json.dumps(entry).encode())[3] is False
    for mark in (1, "yes"):
        assert decode_asset(json.dumps({**entry, "unannounced": mark}).encode())[3] is True


def test_an_alert_id_that_is_no_string_costs_its_entry():
    """The alert id names the alert in every event and acknowledgement: a number there (a hand edit)
    is refused with the entry, not carried on as an id that matches no ``ack``."""
    with pytest.raises(ValueError, match="alert_id a string"):
        alert_state({"status": "alerting", "above": 3, "alert_id": 17})
    assert alert_state({"status": "alerting", "above": 3, "alert_id": "a@1"}).alert_id == "a@1"


def test_a_drift_level_must_be_finite_and_its_key_a_whole_number():
    """A saved level steps the level monitor: a NaN there (JSON's ``NaN``, a hand edit) or a negative
    key is refused with the entry; without a key the level is the one learned under key 0."""
    for bad in ({"level": [1.0, math.nan]}, {"level": [1.0], "level_key": -1}, {"level": [1.0], "level_key": 1.5}):
        with pytest.raises(ValueError):
            drift_state({"offset": 0.1, "updates": 3, **bad})
    assert drift_state({"offset": 0.1, "updates": 3}) == DriftState(0.1, 3)
    assert drift_state({"offset": 0.1, "updates": 3, "level": [2], "level_key": 7}) == DriftState(0.1, 3, (2.0,), 7)


def test_open_faults_read_back_only_as_a_known_kind_on_a_named_channel_since_a_time():
    """Each kind kept across a restart comes back; a fault of another kind (``silent`` has its own
    rule), on a channel that is no name or with no finite ``since`` is left out, the others stay."""
    good = [{"kind": kind, "channel": "temp", "since": 60.0, "value": 1.5} for kind in ("stuck", "out_of_range",
                                                                                         "missing")]
    bad = [{"kind": "silent", "channel": "temp", "since": 60.0}, {"kind": "stuck", "channel": 3, "since": 60.0},
           {"kind": "stuck", "channel": "temp", "since": "noon"}, {"kind": "stuck", "channel": "temp"}, "stuck"]
    assert faults_of({"a": {"sensor_faults": good + bad}, "b": {"sensor_faults": bad}}) == {"a": good}


def test_counts_are_whole_numbers_not_bools_and_a_negative_infinite_score_stays_negative():
    """``true`` is no count (a hand edit); a score of -inf (a sensor's) is saved as the most negative
    float and read back as -inf, not +inf; the four statuses read back."""
    with pytest.raises(ValueError, match="counts"):
        alert_state({"status": "pending", "above": True})
    for status in ("normal", "pending", "alerting", "stale"):
        assert alert_state({"status": status}).status == status
    state = AlertState("alerting", above=3, peak=math.inf, alert_id="a@1", last_score=-math.inf)
    assert json.loads(encode_asset(state, None))["alert"]["last_score"] < 0
    restored = decode_asset(encode_asset(state, None))[0]
    assert restored.peak == math.inf and restored.last_score == -math.inf


def test_a_bucket_entry_that_is_no_object_is_a_state_error():
    """A state bucket's value that is JSON but no object (a list, a number: another writer's key)
    is refused as :class:`StateError`, which the reader skips, not an AttributeError that stops it."""
    for data in (b"[]", b"7", b'"alert"', b'{"alert": []}', b'{"alert": {}, "drift": []}'):
        with pytest.raises(StateError):
            decode_asset(data)

"""Per-asset state across restarts (``state_dir``): an alert stays up, the drift baseline stays learned."""

from __future__ import annotations

import json
import logging
import math
import time
from types import SimpleNamespace

import pandas as pd
import pytest

from sensorguard.service.alerts import AlertState
from sensorguard.service.command_messages import Command
from sensorguard.service.config import load_settings
from sensorguard.service.drift import DriftRule
from sensorguard.service.publisher import iso
from sensorguard.service.relayout import relayout_states
from sensorguard.service.state import (
    STATE_FILE,
    StateError,
    judged_times,
    load_states,
    restore_states,
    save_states,
)
from sensorguard.service.state_entry import decode_asset
from tests.test_daemon import T0, FakeClient, make, message, value

RULE = DriftRule(baseline=math.log(0.3), halflife=2, warmup=0, cap=1.5)


class StoppableClient(FakeClient):
    def disconnect(self) -> None:
        pass

    def loop_stop(self) -> None:
        pass


def daemon_with(bundle, state_dir, **overrides):
    daemon, _ = make(bundle, **({"state_dir": str(state_dir)} if state_dir else {}), **overrides)
    client = StoppableClient(daemon)
    daemon.publisher.client = client
    return daemon, client


def unconfirmed(client) -> dict[str, bool]:
    """Make ``client``'s publishes wait for the broker's confirmation until the returned dict's
    ``"yes"`` is set (a PUBACK that has not come yet)."""
    confirmed = {"yes": False}
    publish = client.publish

    def held(topic, payload, qos=0, retain=False, properties=None):
        info = publish(topic, payload, qos, retain)
        return SimpleNamespace(rc=0, wait_for_publish=info.wait_for_publish, is_published=lambda: confirmed["yes"])

    client.publish = held
    return confirmed


def raised(client) -> list[dict]:
    events = [json.loads(p) for t, p, _ in client.published if t.startswith("sensorguard/alerts/")]
    return [e for e in events if e["state"] == "raised"]


@pytest.fixture
def drifting(tiny_bundle):
    return tiny_bundle.with_threshold(1.0, {"method": "alerts", "drift": RULE.to_dict()})


def test_a_restart_keeps_the_alert_and_the_drift_baseline(drifting, tmp_path):
    first, client = daemon_with(drifting, tmp_path)
    for i in range(3):
        first.alerts.apply("pump-1", T0 + i, 5.0, [])
    for i in range(20):
        first.alerts.apply("pump-2", T0 + i, 0.9, [])  # normal but louder than calibrated: the line widens
    alert_id = first.snapshot()["pump-1"].alert_id
    assert first.snapshot()["pump-1"].status == "alerting" and len(raised(client)) == 1
    first.stop()
    assert (tmp_path / STATE_FILE).exists()

    second, client = daemon_with(drifting, tmp_path)
    second.alerts.apply("pump-1", T0 + 10, 5.0, [])
    _, score = second.alerts.apply("pump-2", T0 + 20, 0.9, [])
    assert second.snapshot()["pump-1"].status == "alerting"
    assert second.snapshot()["pump-1"].alert_id == alert_id and raised(client) == []  # not raised again
    assert score == pytest.approx(0.9 / RULE.cap)  # the drift baseline came back too

    fresh, client = daemon_with(drifting, None)  # without state_dir both start over
    fresh.alerts.apply("pump-1", T0 + 10, 5.0, [])
    _, score = fresh.alerts.apply("pump-2", T0 + 20, 0.9, [])
    assert fresh.snapshot()["pump-1"].status == "pending" and score == pytest.approx(0.9)


def test_restored_assets_that_never_come_back_are_dropped_after_stale_after(drifting, tmp_path):
    first, _ = daemon_with(drifting, tmp_path)
    first.alerts.apply("gone", T0, 0.5, [])
    first.alerts.apply("back", T0, 0.5, [])
    first.stop()
    second, _ = daemon_with(drifting, tmp_path, stale_after_s=60)
    second.alerts.restore_until = time.monotonic() + 60  # as start() sets it
    second.alerts.save()
    assert set(load_states(tmp_path)[0]) == {"gone", "back"}  # kept while they may still come back
    second.alerts.apply("back", T0 + 1, 0.5, [])
    second.housekeeping(time.monotonic() + 61)
    second.alerts.save()
    assert set(second.alerts.restored) == set()  # no longer waited for as restored
    alerts, drift, _ = load_states(tmp_path)
    assert alerts["gone"] == AlertState() and set(drift) == {"gone", "back"}  # its baseline is kept


def test_a_silent_assets_drift_baseline_survives_a_restart_it_sleeps_through(drifting, tmp_path):
    """Issue 9: a restart must not reset the drift baseline. An asset silent at the restart and
    still silent when ``restore_until`` passed lost it, and came back raised against the bare line
    at the level it had drifted to (the rule, frozen while an alert is up, never widened it again)."""
    first, _ = daemon_with(drifting, tmp_path)
    for i, level in enumerate([0.9] * 20 + [1.2] * 10):  # a slow drift to 4x the calibrated level
        first.alerts.apply("pump-2", T0 + i, level, [])
    first.alerts.end("pump-2", T0 + 30)
    first.stop()
    second, client = daemon_with(drifting, tmp_path, stale_after_s=60)
    second.alerts.restore_until = time.monotonic() + 60  # as start() sets it
    second.housekeeping(time.monotonic() + 61)  # still silent: no longer waited for as restored
    second.alerts.save()
    third, client = daemon_with(drifting, tmp_path)  # and through a second restart
    for i in range(5):  # back at the level it had drifted to
        _, score = third.alerts.apply("pump-2", T0 + 4000 + i, 1.2, [])
    assert third.snapshot()["pump-2"].status == "normal" and raised(client) == []
    assert score == pytest.approx(1.2 / RULE.cap)


def test_a_restored_alert_that_never_comes_back_leaves_nothing_behind(drifting, tmp_path):
    """Ended as silent when ``restore_until`` passed, its stale state was published, and the time
    said was kept for good (a per-asset entry that never went: a review)."""
    first, _ = daemon_with(drifting, tmp_path)
    for i in range(3):
        first.alerts.apply("pump-9", T0 + i, 5.0, [])
    first.stop()
    second, client = daemon_with(drifting, tmp_path, stale_after_s=60)
    second.alerts.restore_until = time.monotonic() + 60  # as start() sets it
    second.housekeeping(time.monotonic() + 61)
    states = [json.loads(p) for t, p, r in client.published if t == "sensorguard/state/pump-9" and r]
    assert states and states[-1]["state"] == "stale"
    assert "pump-9" not in second.alerts._stated


def test_a_restored_alert_keeps_its_slot_from_assets_that_send_first(drifting, tmp_path):
    """A walk: a restart with a smaller ``max_assets`` (or fewer workers) kept the alert up first,
    yet assets that sent before it took the slots; every reading of the alerting asset was refused
    (``too_many_assets``) and its alert stayed up until its silence ended it. A restored asset not
    back yet keeps its slot until it comes back or its restored state ends."""
    first, _ = daemon_with(drifting, tmp_path)
    for i in range(3):
        first.alerts.apply("pump-9", T0 + i, 5.0, [])
    first.stop()
    second, client = daemon_with(drifting, tmp_path, stale_after_s=60, max_assets=1)
    second.alerts.restore_until = time.monotonic() + 60  # as start() sets it
    second.ingest.handle(client, message("pump-1", T0 + 100))  # sends first: the one slot is pump-9's
    second.ingest.handle(client, message("pump-9", T0 + 100))
    assert second.buffers.assets() == ["pump-9"] and second.buffers.taken("pump-9")
    assert value(second, "sensorguard_messages_rejected_total", reason="too_many_assets") == 1
    second.housekeeping(time.monotonic() + 61)  # pump-9 sent nothing since: silent, its slot free
    second.ingest.handle(client, message("pump-1", T0 + 200))
    assert second.buffers.assets() == ["pump-1"]


def test_a_normal_asset_that_went_silent_while_the_daemon_was_down_is_told_silent(drifting, tmp_path, caplog):
    """Only a restored alert was ended as silent: a normal asset (or one in maintenance, with no
    baseline learned) that stopped sending while the daemon was down kept its retained ``normal``
    state for good and no ``silent`` fault was told (a walk: a power cut that takes a gateway and the
    daemon's host). One silent already before the stop is not told again."""
    first, _ = daemon_with(drifting, tmp_path)
    first.controls.apply(Command("maintenance", "pump-4", action="start"), now=time.time())
    for asset in ("pump-3", "pump-4", "pump-5"):
        first.alerts.apply(asset, T0, 0.5, [])
    first.alerts.save_soon = False
    first.alerts.end("pump-5", T0)  # silent before the stop: told then, and saved soon (killed before the
    assert first.alerts.save_soon  # next save, a restart told it again: a review)
    first.stop()
    second, client = daemon_with(drifting, tmp_path, stale_after_s=60)
    second.alerts.restore_until = time.monotonic() + 60  # as start() sets it
    with caplog.at_level(logging.INFO, logger="sensorguard.service.assets"):
        second.housekeeping(time.monotonic() + 61)
    assert "sent nothing for 60 s: silent ('pump-3', 'pump-4')" in caplog.text  # named (a walk)
    for asset in ("pump-3", "pump-4"):
        states = [json.loads(p) for t, p, r in client.published if t == f"sensorguard/state/{asset}" and r]
        assert states and states[-1]["state"] == "stale", (asset, states)
        events = [json.loads(p) for t, p, _ in client.published if t == f"sensorguard/alerts/{asset}"]
        assert [(e["state"], e["kind"]) for e in events] == [("sensor_fault", "silent")]
        assert pd.Timestamp(events[0]["ts"]) == pd.Timestamp(T0, unit="s", tz="UTC")  # its last window's time
    assert not [t for t, _, _ in client.published if t == "sensorguard/alerts/pump-5"]  # not told again; its
    restated = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/state/pump-5"]  # state is
    assert restated and {s["state"] for s in restated} == {"stale"}  # restated, naming the model served now
    assert value(second, "sensorguard_assets_silent") == 3  # (pump-5 awaited again, for its baseline)
    # told, but pump-4's not counted: a machine switched off for its maintenance pages nobody (a review)
    assert value(second, "sensorguard_sensor_faults_total", kind="silent") == 1


def test_a_restored_asset_of_another_instances_partition_is_not_told_silent(drifting, tmp_path):
    """After a restart with fewer partitions (site-b moved to an instance of its own), its assets in
    the state file were told silent here, their retained state set to stale over the one their new
    owner publishes (a review)."""
    first, _ = daemon_with(drifting, tmp_path)
    for asset in ("site-a/p1", "site-b/p2"):
        first.alerts.apply(asset, T0, 0.5, [])
    for i in range(3):  # an alert up, and a learned baseline (the drifting bundle's): each was told too
        first.alerts.apply("site-b/p3", T0 + i, 5.0, [])
    first.stop()
    second, client = daemon_with(drifting, tmp_path, stale_after_s=60, partition=["site-a/#"])
    second.alerts.restore_until = time.monotonic() + 60  # as start() sets it
    second.housekeeping(time.monotonic() + 61)
    told = {t for t, _, _ in client.published if t.startswith("sensorguard/alerts/")}
    assert told == {"sensorguard/alerts/site-a/p1"}
    assert value(second, "sensorguard_assets_silent") == 1  # (not another's: the dashboard counts them)
    assert not [a for a in second.alerts._stated if a.startswith("site-b")]  # forgotten whole (a leak otherwise)
    second.alerts.states_lost()  # a swap or a lost session publishes every silent asset's stale state again
    second.alerts.resend_states()
    assert not [t for t, _, _ in client.published if t.startswith("sensorguard/state/site-b")]


def test_the_states_restated_at_a_restart_are_of_this_instances_partitions_alone(drifting, tmp_path):
    """Restored states are sent again at start, naming the model served; after a restart with fewer
    partitions another instance's were too, over the state their owner publishes (a review)."""
    first, _ = daemon_with(drifting, tmp_path)
    for asset in ("site-a/p1", "site-b/p2"):
        first.alerts.apply(asset, T0, 0.5, [])
    for i in range(3):
        first.alerts.apply("site-b/p3", T0 + i, 5.0, [])  # an alert up
    first.stop()
    second, client = daemon_with(drifting, tmp_path, partition=["site-a/#"])
    second.alerts.resend_states()  # the first tick, long before the restored ones end
    assert {t for t, _, r in client.published if t.startswith("sensorguard/state/")} == {"sensorguard/state/site-a/p1"}


def test_a_restored_asset_publishes_its_state_at_its_first_window(drifting, tmp_path):
    """Its status unchanged (normal before, normal now), nothing was published: the retained state
    stayed what the previous run left, ``stale`` for an asset silent then (found by review)."""
    first, _ = daemon_with(drifting, tmp_path)
    first.alerts.apply("pump-1", T0, 0.5, [])
    first.stop()
    second, client = daemon_with(drifting, tmp_path)
    second.alerts.apply("pump-1", T0 + 100, 0.5, [])
    states = [json.loads(p) for t, p, r in client.published if t == "sensorguard/state/pump-1" and r]
    assert [s["state"] for s in states] == ["normal"]


def alert_events(client, asset: str) -> list[tuple[str, str | None]]:
    events = [json.loads(p) for t, p, _ in client.published if t == f"sensorguard/alerts/{asset}"]
    return [(e["state"], e.get("kind")) for e in events]


def test_a_restored_alert_whose_window_fills_slower_than_stale_after_carries_on(drifting, tmp_path):
    """A restored asset that sends readings is back, however long its first window takes to fill:
    it must not be ended as silent when ``restore_until`` passes (window 16 at 1 s here, the
    restore period shortened below it)."""
    first, _ = daemon_with(drifting, tmp_path)
    for i in range(3):
        first.alerts.apply("slow", T0 + i, 5.0, [])
    alert_id = first.snapshot()["slow"].alert_id
    first.stop()
    second, client = daemon_with(drifting, tmp_path, stale_after_s=60)
    for i in range(10):  # fewer than a window: nothing scored yet
        second.ingest.handle(client, message("slow", T0 + 100 + i, mid=i + 1))
    second.alerts.restore_until = time.monotonic() - 1  # the restore period is over, the asset is sending
    second.housekeeping(time.monotonic() + 1)
    assert alert_events(client, "slow") == [] and "slow" in second.alerts.restored
    assert second.registry.get_sample_value("sensorguard_assets_silent") == 0
    second.alerts.apply("slow", T0 + 115, 5.0, [])  # its first window: the alert carries on
    assert second.snapshot()["slow"].alert_id == alert_id and alert_events(client, "slow") == []


def test_a_restored_alert_silent_before_its_first_window_ends_once(drifting, tmp_path):
    first, _ = daemon_with(drifting, tmp_path)
    for i in range(3):
        first.alerts.apply("quiet", T0 + i, 5.0, [])
    first.stop()
    second, client = daemon_with(drifting, tmp_path, stale_after_s=60)
    second.alerts.restore_until = time.monotonic() + 60
    second.ingest.handle(client, message("quiet", T0 + 100))
    second.housekeeping(time.monotonic() + 3600)  # silent for stale_after, and past restore_until
    second.housekeeping(time.monotonic() + 3601)
    events = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/quiet"]
    assert [(e["state"], e["kind"]) for e in events] == [("sensor_fault", "silent")]  # one, not two
    assert events[0]["alert_id"]  # it names the alert it ends
    assert "quiet" not in second.alerts.restored


def test_an_unreadable_state_file_is_set_aside_and_the_daemon_starts_fresh(drifting, tmp_path, caplog):
    (tmp_path / STATE_FILE).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.state"):
        daemon, _ = daemon_with(drifting, tmp_path)
    assert daemon.alerts.restored == {}
    assert (tmp_path / (STATE_FILE + ".bad")).read_text() == "{not json"
    assert any("unreadable" in r.getMessage() and "starting without" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("doc, message", [
    ({"format_version": 9, "assets": {}}, "format 1"),
    ({"format_version": 1, "assets": {"a": {"alert": {"status": "burning"}}}}, "status"),
    ({"format_version": 1, "assets": {"a": {"alert": {"peak": "high"}}}}, "numbers"),
    ({"format_version": 1, "assets": {"a": {"alert": {}, "drift": {"offset": 1.0}}}}, "updates"),
    ({"format_version": 1, "assets": {"a": {"alert": {}, "drift": {"offset": float("nan"), "updates": 1}}}},
     "finite"),
    # an overflowing or negative count once escaped as OverflowError (the daemon died at start) or
    # was taken, and a negative one divided by zero at that asset's every window (drift_step)
    ({"format_version": 1, "assets": {"a": {"alert": {}, "drift": {"offset": 0.1, "updates": float("inf")}}}},
     "updates"),
    ({"format_version": 1, "assets": {"a": {"alert": {}, "drift": {"offset": 0.1, "updates": 10**400}}}},
     "updates"),
    ({"format_version": 1, "assets": {"a": {"alert": {}, "drift": {"offset": 0.1, "updates": -9}}}}, "updates"),
    ({"format_version": 1, "assets": {"a": {"alert": {}, "drift": {"offset": 0.1, "updates": 2.5}}}}, "updates"),
    ({"format_version": 1, "assets": {"a": {"alert": {}, "drift": {"offset": 10**400, "updates": 1}}}}, "float"),
    ({"format_version": 1, "assets": {"a": {"alert": {"peak": 10**400}}}}, "float"),
    ({"format_version": 1, "assets": {"a": {"alert": {"above": -2}}}}, "counts"),
    ({"format_version": 1, "assets": {"a": {"alert": {"below": 1.5}}}}, "counts"),
])
def test_a_lying_state_file_is_refused_with_one_line(tmp_path, doc, message, caplog):
    (tmp_path / STATE_FILE).write_text(json.dumps(doc))
    if not doc["assets"]:
        with pytest.raises(StateError, match=message):
            load_states(tmp_path)
        return
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.state"):  # the lying entry alone is skipped
        assert load_states(tmp_path) == ({}, {}, set())
    assert [r.getMessage() for r in caplog.records if message in r.getMessage() and "'a'" in r.getMessage()]
    with pytest.raises(StateError, match=message):  # cluster mode's bucket entries are read by the same rules
        decode_asset(json.dumps(doc["assets"]["a"]).encode())


def test_one_bad_entry_costs_its_asset_alone_and_unknown_fields_are_ignored(drifting, tmp_path, caplog):
    """One entry the daemon could not read set the whole file aside, so every asset started fresh:
    after a rollback from a version that added a field to the alert state, every alert up was raised
    again under a new id. The bad entries (an id no asset can have too) are skipped, the fields
    ignored, said in one line, and the file as it was is kept in assets.json.bad; the relayout at
    start reads it first, the daemon after."""
    save_states(tmp_path, {"pump-1": AlertState("alerting", above=3, peak=2.5, alert_id="pump-1@1")}, {},
                judged={"pump-1": T0 + 10})
    doc = json.loads((tmp_path / STATE_FILE).read_text())
    doc["assets"] |= {"x": {"alert": "nope"}, "y": {"alert": {"peak": "high"}}, "w": 5, "site-a/+/#": {"alert": {}},
                      "z": {"alert": {"status": "alerting", "alert_id": "z@1", "escalation": 2}, "owner": "ops"}}
    original = json.dumps(doc)
    (tmp_path / STATE_FILE).write_text(original)
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.state"):
        relayout_states(str(tmp_path), [load_settings({"model": None, "state_dir": str(tmp_path)}, {},
                                                      require_model=False)])
        daemon, _ = daemon_with(drifting, tmp_path)
    assert {a: s[0].alert_id for a, s in daemon.alerts.restored.items()} == {"pump-1": "pump-1@1", "z": "z@1"}
    assert daemon.buffers.floors == {"pump-1": T0 + 10}
    [line] = [r.getMessage() for r in caplog.records]
    # (a wildcard id, a hand edit's: every publish of its state failed, in each housekeeping round; a walk)
    assert "skipped 4 invalid asset entries ('x', 'y', 'w' and 1 more; the first: an alert state must be" in line
    assert "ignored fields this version does not know (alert.escalation, owner) in 1 entry" in line
    assert line.endswith(f"the file as it was is kept in {tmp_path / STATE_FILE}.bad")
    assert (tmp_path / (STATE_FILE + ".bad")).read_text() == original
    assert set(json.loads((tmp_path / STATE_FILE).read_text())["assets"]) == {"pump-1", "z"}
    assert decode_asset(json.dumps(doc["assets"]["z"]).encode())[0].alert_id == "z@1"  # the bucket's too


def test_an_overflowing_state_file_is_set_aside_and_the_daemon_starts(drifting, tmp_path):
    doc = {"format_version": 1, "assets": {"a": {"alert": {}, "drift": {"offset": 0.1, "updates": 10**400}}}}
    (tmp_path / STATE_FILE).write_text(json.dumps(doc))
    daemon, _ = daemon_with(drifting, tmp_path)
    assert daemon.alerts.restored == {} and (tmp_path / (STATE_FILE + ".bad")).exists()


def test_a_state_file_nested_too_deep_is_set_aside_not_a_crash_at_each_start(tmp_path, caplog):
    """Found by review: JSON nested past the interpreter's recursion limit raised RecursionError,
    which neither the load nor the judged times caught: the daemon crashed at each start, a restart
    loop (and a cluster bucket's entry like it crashed its reader)."""
    deep = "[" * 100_000
    (tmp_path / STATE_FILE).write_text(deep)
    assert judged_times(tmp_path) == {}
    with pytest.raises(StateError, match="unreadable"):
        load_states(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.state"):
        assert restore_states(str(tmp_path), max_assets=10) == {}
    assert f"moved to {tmp_path / (STATE_FILE + '.bad')}" in caplog.records[0].getMessage()
    with pytest.raises(StateError):
        decode_asset(deep.encode())
    worker = tmp_path / "w0"  # a relayout at start reads the files first: it sets it aside as well
    worker.mkdir()
    (worker / STATE_FILE).write_text(deep)
    settings = load_settings({"model": None, "broker": "mqtt://h", "partition": ["a/#"], "state_dir": str(tmp_path)},
                             {}, require_model=False)
    assert relayout_states(str(tmp_path), [settings]) == 0 and (worker / (STATE_FILE + ".bad")).exists()


def test_a_restored_asset_publishes_its_widened_line_before_its_first_window(drifting, tmp_path):
    """Found by review: the line came from the live baselines only, so a restored asset's retained
    state (a sensor fault before its first window, or its going stale) showed the bare threshold."""
    first, _ = daemon_with(drifting, tmp_path)
    for i in range(20):
        first.alerts.apply("pump-2", T0 + i, 0.9, [])  # normal but louder than calibrated: the line widens
    assert first.alerts.line("pump-2", drifting) == pytest.approx(drifting.threshold_ * RULE.cap)
    first.stop()
    second, _ = daemon_with(drifting, tmp_path)
    assert second.alerts.line("pump-2", drifting) == pytest.approx(drifting.threshold_ * RULE.cap)


def test_a_silent_asset_keeps_its_drift_baseline_and_returns_quiet(drifting):
    """Found by review: silence dropped the baseline, so an asset back at the level it had drifted
    to was raised against the bare line, and the rule (frozen while an alert is up) never widened it
    again: an alert that could not clear. Offline the series carries on across the gap."""
    daemon, client = daemon_with(drifting, None)
    for i, level in enumerate([0.9] * 20 + [1.2] * 10):  # a slow drift to 4x the calibrated level
        daemon.alerts.apply("pump-2", T0 + i, level, [])
    assert daemon.snapshot()["pump-2"].status == "normal"
    daemon.alerts.end("pump-2", T0 + 30)
    for i in range(5):  # back at the same level
        _, score = daemon.alerts.apply("pump-2", T0 + 400 + i, 1.2, [])
    assert daemon.snapshot()["pump-2"].status == "normal" and raised(client) == []
    assert score == pytest.approx(1.2 / RULE.cap)


def test_an_infinite_peak_comes_back_infinite_after_a_restart(drifting, tmp_path):
    first, _ = daemon_with(drifting, tmp_path)
    for i in range(3):
        first.alerts.apply("pump-1", T0 + i, math.inf, [])
    first.stop()
    alerts, _, _ = load_states(tmp_path)
    assert alerts["pump-1"].peak == math.inf and alerts["pump-1"].last_score == math.inf


def test_over_max_assets_a_restart_keeps_the_alerts_up_first_and_says_so(tmp_path, caplog):
    """A cap lowered since the save forgets some assets; never one whose raise went out unanswered."""
    alerts = {f"a{i:02d}": AlertState() for i in range(10)}
    alerts["z-up"] = AlertState(status="alerting", above=3, peak=2.0, alert_id="z-up@1", last_score=2.0)
    save_states(tmp_path, alerts, {})
    with caplog.at_level(logging.WARNING):
        restored = restore_states(str(tmp_path), max_assets=4)
    assert list(restored) == ["z-up", "a00", "a01", "a02"]
    assert restored["z-up"][0].alert_id == "z-up@1"
    assert "holds 11 assets, more than max_assets 4" in caplog.text and "forgot 7" in caplog.text
    assert len(restore_states(str(tmp_path), max_assets=11)) == 11


def test_over_max_assets_silent_assets_kept_for_their_baseline_go_before_live_ones(tmp_path):
    """A silent asset's entry (a bare state beside its drift baseline) pushed out a live asset whose
    name sorted later (found by review)."""
    from sensorguard.service.drift import DriftState

    alerts = {"a-live": AlertState(last_score=0.4), "z-live": AlertState(last_score=0.3)}
    drift = {"a-silent": DriftState(0.2, 5), "b-silent": DriftState(0.1, 5), "z-live": DriftState(0.05, 9)}
    save_states(tmp_path, alerts, drift)
    assert list(restore_states(str(tmp_path), max_assets=3)) == ["a-live", "z-live", "a-silent"]


def test_doctests() -> None:
    import doctest

    import sensorguard.service.drift
    import sensorguard.service.flags
    import sensorguard.service.localhost
    import sensorguard.service.publisher
    import sensorguard.service.state

    service = sensorguard.service
    for module in (service.state, service.drift, service.flags, service.localhost, service.publisher):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_cluster_hand_over_adopt_and_the_states_to_pass_on(drifting, tmp_path):
    """Cluster mode's per-asset state moves: the old owner hands it over (and forgets the asset
    without a word), the new one adopts it (no second raise), a state that ended is passed on as
    None (the bucket forgets it), and what is passed on survives encoding."""
    from sensorguard.service.state_entry import decode_asset, encode_asset

    old, old_client = daemon_with(drifting, None)
    for i in range(3):
        old.alerts.apply("pump-1", T0 + i, 5.0, [])
    old.alerts.apply("pump-2", T0, 0.5, [])
    assert set(old.alerts.changed_states()) == {"pump-1", "pump-2"}
    assert old.alerts.changed_states() == {}  # nothing changed since
    moved = old.alerts.hand_over({"pump-1"})
    assert moved["pump-1"][0].status == "alerting" and moved["pump-1"][2] == T0 + 2  # its last window
    assert "pump-1" not in old.snapshot() and old.alerts.changed_states() == {}  # forgotten, not ended
    published = len(old_client.published)
    learned = old.alerts.drift_of("pump-2")
    assert learned is not None and learned.updates == 1
    old.alerts.end("pump-2", T0)  # went silent: its alert state ends, and so must the bucket's copy,
    silent = (AlertState(), learned, None, True, None, [], (T0, 0.5))  # (its silence too: a walk)
    assert old.alerts.changed_states() == {"pump-2": silent}  # but not the baseline
    assert len(old_client.published) > published
    assert old.alerts.hand_over({"pump-2"}) == {"pump-2": silent}  # moved, silent
    assert old.alerts.drift_of("pump-2") is None

    alert, drift, window_ts, announced, judged_ts, _, _ = decode_asset(encode_asset(*moved["pump-1"]))
    assert (alert, window_ts, announced, judged_ts) == (moved["pump-1"][0], T0 + 2, True, None)
    new, new_client = daemon_with(drifting, None)
    new.alerts.adopt("pump-1", alert, drift, announced)
    new.alerts.apply("pump-1", T0 + 3, 5.0, [])
    assert new.snapshot()["pump-1"].alert_id == alert.alert_id and raised(new_client) == []
    for i in range(10):
        new.alerts.apply("pump-1", T0 + 4 + i, 0.1, [])
    cleared = [json.loads(p) for t, p, _ in new_client.published if t == "sensorguard/alerts/pump-1"]
    assert [(e["state"], e["alert_id"]) for e in cleared] == [("cleared", alert.alert_id)]


def test_a_silent_asset_moved_to_another_worker_tells_sensor_ok_there(drifting):
    """A walk of cluster mode: a silent asset whose partition moved (its owner killed) came back on
    its new owner, which scored it and said nothing: the ``silent`` fault opened on the old owner was
    never closed, and ``assets_silent`` summed over the workers missed it. Its silence now goes with
    it through the state bucket, and the new owner awaits its return as the old one did."""
    from sensorguard.service.sensors import SensorEvent
    from sensorguard.service.state_entry import decode_asset, encode_asset

    old, _ = daemon_with(drifting, None)
    old.alerts.changed_states()  # cluster mode: synced from the start
    old.alerts.apply("pump-2", T0, 0.5, [])
    old.alerts.changed_states()
    old.alerts.end("pump-2", T0 + 4)  # silent after its reading at T0 + 4
    synced = old.alerts.changed_states()["pump-2"]  # what the bucket holds now (a kill -9 leaves it)
    assert synced[6] == (T0 + 4, 0.5)
    *entry, silence = decode_asset(encode_asset(*synced))
    assert silence == (T0 + 4, 0.5)
    new, client = daemon_with(drifting, None)
    new.alerts.adopt("pump-2", *entry, silence)
    new.alerts.hand_over(set())  # (takes the adoption in)
    assert value(new, "sensorguard_assets_silent") == 1 and "pump-2" not in new.alerts.restored
    new.alerts.sensor("pump-2", SensorEvent("silent", None, False, T0 + 600, float("nan")))  # its first reading
    events = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-2"]
    assert [(e["state"], e["kind"]) for e in events] == [("sensor_ok", "silent")]
    assert value(new, "sensorguard_assets_silent") == 0
    assert old.alerts.hand_over({"pump-2"})["pump-2"][6] == (T0 + 4, 0.5)  # a hand-over passes it on too


def test_readings_just_before_a_maintenance_are_not_recorded_as_normal(drifting, tmp_path):
    """Maintenance often starts because the machine misbehaves: the readings held in the guard band
    before it were committed as normal later (found by review)."""
    from sensorguard.service.command_messages import Command

    daemon, _ = daemon_with(drifting, None, record_dir=str(tmp_path / "rec"), record_guard_s=10)
    for i in range(30):
        daemon.recorder.add("pump", T0 + i, [1.0, 2.0, 3.0])
    daemon.alerts.apply("pump", T0 + 29, 0.1, [])
    daemon.controls.apply(Command("maintenance", "pump", action="start"), time.time())
    daemon.alerts.request_control_change("pump", True)
    daemon.alerts.apply_control_changes()
    daemon.controls.apply(Command("maintenance", "pump", action="end"), time.time())
    daemon.alerts.request_control_change("pump", False)
    daemon.alerts.apply_control_changes()
    daemon.recorder.flush(now_ts=T0 + 1000, force=True)
    kept = sorted(pd.concat(pd.read_parquet(p) for p in (tmp_path / "rec").glob("*/*.parquet")).ts - T0)
    assert kept and max(kept) < 29 - 10  # the guard band before the start went, not into the normal data


def test_an_alert_raised_while_shelved_moves_unannounced_and_is_told_by_its_new_owner(drifting):
    """Cluster mode: an alert that rose while its asset was shelved was handed over as announced,
    so the new owner never told it when the shelve ended; the mark now moves with the state."""
    from sensorguard.service.command_messages import Command
    from sensorguard.service.state_entry import decode_asset, encode_asset

    old, old_client = daemon_with(drifting, None)
    old.controls.apply(Command("shelve", "pump-1", until=time.time() + 3600), now=time.time())
    for i in range(3):
        old.alerts.apply("pump-1", T0 + i, 5.0, [])
    assert old.alerts.changed_states()["pump-1"][3] is False and raised(old_client) == []
    moved = old.alerts.hand_over({"pump-1"})
    alert, drift, _, announced, _, _, _ = decode_asset(encode_asset(*moved["pump-1"]))
    assert alert.status == "alerting" and announced is False
    new, new_client = daemon_with(drifting, None)  # its controls hold nothing: the shelve ended meanwhile
    new.alerts.adopt("pump-1", alert, drift, announced)
    new.alerts.apply("pump-1", T0 + 3, 5.0, [])
    assert [e["alert_id"] for e in raised(new_client)] == [alert.alert_id]
    assert new.alerts.changed_states()["pump-1"][3] is True  # the bucket learns it was told


def test_an_adopted_asset_silent_before_its_first_window_is_forgotten_by_the_bucket(drifting):
    """Its state never became live here, so nothing told the bucket it ended: a later owner would
    have adopted the alert that silence had already ended."""
    old, _ = daemon_with(drifting, None)
    for i in range(3):
        old.alerts.apply("pump-1", T0 + i, 5.0, [])
    moved = old.alerts.hand_over({"pump-1"})["pump-1"]
    new, _ = daemon_with(drifting, None)
    assert new.alerts.changed_states() == {}  # cluster mode: the owner syncs from its start
    new.alerts.adopt("pump-1", moved[0], moved[1], moved[3])
    new.alerts.end("pump-1", T0 + 9)
    assert new.alerts.changed_states() == {"pump-1": (AlertState(), None, None, True, None, [], (T0 + 9, 5.0))}
    assert new.alerts.changed_states() == {}  # (its alert gone from the bucket; its silence awaited there)


def test_a_maintenance_on_a_silent_or_not_yet_heard_asset_shows_in_its_retained_state(drifting, tmp_path):
    """Machines go silent because they are switched off for their maintenance: its start was not
    published on a silent asset's retained state (nor on one restored and not heard from yet), so
    a dashboard kept showing the asset unheld. Its stale state is published again with the hold."""
    from sensorguard.service.command_messages import Command

    def states(client, asset: str) -> list[dict]:
        return [json.loads(p) for t, p, _ in client.published if t == f"sensorguard/state/{asset}"]

    daemon, client = daemon_with(drifting, tmp_path)
    daemon.alerts.apply("pump", T0, 0.1, [])
    daemon.alerts.apply("fan", T0, 0.1, [])
    daemon.alerts.end("pump", T0 + 5)  # silent
    assert states(client, "pump")[-1]["state"] == "stale"
    for asset in ("pump", "never-heard"):
        daemon.controls.apply(Command("maintenance", asset, action="start"), time.time())
        daemon.alerts.request_control_change(asset, True)
    daemon.alerts.apply_control_changes()
    last, before = states(client, "pump")[-1], states(client, "pump")[-2]
    assert last["state"] == "stale" and last["suppressed"] == "maintenance"
    assert (last["ts"], last["score"]) == (before["ts"], before["score"])  # its last reading's time and score
    assert states(client, "never-heard") == []  # no retained topic for an asset never seen
    daemon.stop()

    again, client = daemon_with(drifting, tmp_path)  # fan restored, not heard from yet
    again.controls.apply(Command("shelve", "fan", until=time.time() + 600), time.time())
    again.alerts.request_control_change("fan", None)
    again.alerts.apply_control_changes()
    assert states(client, "fan")[-1]["suppressed"] == "shelved"


def test_a_backlog_from_inside_an_ended_maintenance_raises_nothing_and_records_nothing(drifting, tmp_path):
    """The broker's backlog after an outage is processed once the maintenance it fell in has ended:
    its readings raised alerts and went into the recorded normal data (holds were judged by the
    processing clock). An alert still up after the hold is told at its first window outside it."""
    from sensorguard.service.command_messages import Command

    daemon, client = daemon_with(drifting, None, record_dir=str(tmp_path / "rec"), record_guard_s=10)
    daemon.controls.apply(Command("maintenance", "pump", action="start"), T0)  # both long before now
    daemon.controls.apply(Command("maintenance", "pump", action="end"), T0 + 100)
    for i in range(20):
        daemon.recorder.add("pump", T0 + 5 + i, [1.0, 2.0, 3.0])
    for i in range(3):
        daemon.alerts.apply("pump", T0 + 50 + i, 5.0, [])
    assert daemon.snapshot()["pump"].status == "alerting" and raised(client) == []
    daemon.alerts.request_control_change("pump", False)  # the end's change, applied late: still held
    daemon.alerts.apply_control_changes()
    assert raised(client) == []
    daemon.alerts.apply("pump", T0 + 200, 5.0, [])  # after the maintenance: told now
    assert [e["alert_id"] for e in raised(client)] == [daemon.snapshot()["pump"].alert_id]
    daemon.recorder.flush(now_ts=T0 + 1000, force=True)
    assert not list((tmp_path / "rec").glob("*/*.parquet"))


def test_a_machine_silent_through_its_maintenance_records_nothing_in_the_guard_band_after_it(drifting, tmp_path):
    """Found by review: the guard band after a maintenance (the start-up transient) was applied only
    to assets scored through its end; a machine switched off for it, silent then, had its first
    readings back recorded as normal data."""
    from sensorguard.service.command_messages import Command

    daemon, _ = daemon_with(drifting, None, record_dir=str(tmp_path / "rec"), record_guard_s=10)
    daemon.controls.apply(Command("maintenance", "pump", action="start"), T0)  # silent all along
    daemon.controls.apply(Command("maintenance", "pump", action="end"), T0 + 100)
    for i in range(100, 140):
        daemon.recorder.add("pump", T0 + i, [1.0, 2.0, 3.0])
    daemon.recorder.flush(now_ts=T0 + 1000, force=True)
    kept = sorted(pd.concat(pd.read_parquet(p) for p in (tmp_path / "rec").glob("*/*.parquet")).ts - T0)
    assert kept and min(kept) >= 100 + daemon.recorder.guard_s


def test_a_raise_the_broker_never_confirmed_is_told_again_after_a_restart(drifting, tmp_path):
    """A raise queued while the broker was down is lost with the process: the state saved at the
    next tick (not 30 s later) marks it unannounced until the broker confirms it, so a restart
    announces it again under the same id; a confirmed one is not told twice."""
    first, client = daemon_with(drifting, tmp_path)
    confirmed = unconfirmed(client)
    for i in range(3):
        first.alerts.apply("pump-1", T0 + i, 5.0, [])
    alert_id = first.snapshot()["pump-1"].alert_id
    assert len(raised(client)) == 1 and first.alerts.save_soon  # saved at the next tick
    first.alerts.save()
    assert load_states(tmp_path)[2] == {"pump-1"}  # (unannounced) not confirmed yet: a crash now would lose it

    second, client2 = daemon_with(drifting, tmp_path)
    second.alerts.apply("pump-1", T0 + 10, 5.0, [])
    assert [e["alert_id"] for e in raised(client2)] == [alert_id]  # told again, same id

    confirmed["yes"] = True  # the broker confirmed the first process's raise: saved as told
    first.alerts.save()
    assert load_states(tmp_path)[2] == set()

    import paho.mqtt.client as paho

    queued = paho.MQTTMessageInfo(9)  # published while disconnected: rc stays NO_CONN, is_published raises
    queued.rc = paho.MQTT_ERR_NO_CONN
    first.alerts._raise_info["pump-1"] = queued
    first.alerts.save()  # (raised RuntimeError: every save failed until the alert cleared, and the stop too)
    assert load_states(tmp_path)[2] == {"pump-1"}
    queued._published = True  # resent after the reconnect and confirmed
    first.alerts.save()
    assert load_states(tmp_path)[2] == set()


def test_the_drift_baseline_learns_nothing_in_a_maintenance_and_its_guard_band(drifting, tmp_path):
    """A maintenance's readings are no normal data (the recorder leaves them and the start-up
    guard band after them out): scores under the line then widened the line up to its cap, hiding
    a fault right after the work (found by review); a shadow model's baseline follows the same rule."""
    from sensorguard.service.command_messages import Command
    from sensorguard.service.shadow import Shadow

    daemon, _ = daemon_with(drifting, None, record_dir=str(tmp_path / "rec"), record_guard_s=60)
    shadow = Shadow(drifting, None, "v1")  # (its scorer is not used by step)
    now = time.time()
    assert daemon.controls.apply(Command("maintenance", "pump-1", action="start"), now=now - 200)[0]
    for i in range(40):
        state, _ = daemon.alerts.apply("pump-1", now - 100 + i, 0.9, [])  # louder than calibrated, under the line
        shadow.step("pump-1", now - 100 + i, 0.9, state, daemon.rules, None,
                    daemon.alerts.learns("pump-1", now - 100 + i))
    assert daemon.controls.apply(Command("maintenance", "pump-1", action="end"), now=now)[0]
    for i in range(40):
        daemon.alerts.apply("pump-1", now + i, 0.9, [])  # the guard band after it: still the start-up
    assert daemon.alerts.drift_of("pump-1").updates == 0 and shadow._drift["pump-1"].updates == 0
    for i in range(40):
        daemon.alerts.apply("pump-1", now + 100 + i, 0.9, [])  # normal operation again: it learns
    assert daemon.alerts.drift_of("pump-1").updates == 40


def test_baselines_kept_through_restarts_for_silent_assets_are_capped(drifting, tmp_path, monkeypatch):
    """Found by review: a restored asset that never came back kept its baseline outside the silent
    assets' cap, so the state file (and the cluster's bucket) grew with every asset ever seen."""
    import sensorguard.service.asset_faults as asset_faults

    monkeypatch.setattr(asset_faults, "SILENT_KEPT", 2)
    first, _ = daemon_with(drifting, tmp_path)
    for k in range(5):
        for i in range(20):
            first.alerts.apply(f"gone-{k}", T0 + i, 0.9, [])
    first.stop()
    second, _ = daemon_with(drifting, tmp_path, stale_after_s=60)
    second.alerts.restore_until = time.monotonic() + 60
    second.alerts.changed_states()  # cluster mode's sync runs from the start
    second.housekeeping(time.monotonic() + 61)
    assert len(second.alerts.drift_snapshot()) == 2 and len(second.alerts._open.silent_assets()) == 2
    changed = second.alerts.changed_states()
    assert sum(v is None for v in changed.values()) == 3  # the bucket forgets the three forgotten
    assert sum(v is not None and v[1] is not None for v in changed.values()) == 2  # and keeps two baselines
    second.alerts.save()
    assert len(load_states(tmp_path)[1]) == 2


def test_a_hand_over_after_silence_ended_the_alert_passes_a_normal_state(tiny_bundle):
    """Found by review: an alert ended by silence and handed over before the next sync left the
    bucket's ``alerting`` copy, and the new owner adopted the ended alert (no drift rule here)."""
    old, _ = daemon_with(tiny_bundle, None)
    assert old.alerts.changed_states() == {}  # cluster mode
    for i in range(3):
        old.alerts.apply("pump-1", T0 + i, 5.0, [])
    assert old.alerts.changed_states()["pump-1"][0].status == "alerting"
    old.alerts.end("pump-1", T0 + 3)
    assert old.alerts.hand_over({"pump-1"}) == {"pump-1": (AlertState(), None, None, True, None, [], (T0 + 3, 5.0))}


@pytest.mark.parametrize("times, expected", [
    ({}, (None, None)),  # no window yet
    ({"window_ts": 7.0}, (7.0, None)),  # an owner of an older version: no judged_ts
    ({"window_ts": 7, "judged_ts": 8.0}, (7.0, 8.0)),
    ({"judged_ts": 8.0}, (None, None)),  # no cadence to continue: nothing to skip either
])
def test_a_bucket_entrys_window_times_decode(times, expected):
    from sensorguard.service.state_entry import decode_asset

    decoded = decode_asset(json.dumps({"alert": {}, **times}).encode())
    assert (decoded[2], decoded[4]) == expected


@pytest.mark.parametrize("times", [{"window_ts": "7"}, {"window_ts": True}, {"window_ts": 1.0, "judged_ts": "x"},
                                   {"window_ts": 1.0, "judged_ts": 10**400}, {"judged_ts": float("nan")}])
def test_a_bucket_entrys_window_times_must_be_finite_numbers(times):
    """An infinite judged_ts made the new owner queue none of the asset's windows, silently (from
    a review): the entry is refused, and the takeover starts the asset afresh with a line in the log."""
    from sensorguard.service.state_entry import decode_asset

    with pytest.raises(StateError, match="window times"):
        decode_asset(json.dumps({"alert": {}, **times}).encode())


def test_an_adopted_cadence_goes_with_an_asset_that_never_came_and_is_not_passed_on_later(drifting):
    """An adopted asset that never sent a reading kept its cadence after its state expired, and
    adopted again from an entry without one it passed that stale anchor on (from a review)."""
    owner, _ = daemon_with(drifting, None)
    owner.alerts.adopt("pump-1", AlertState(), None, True, T0 + 7, T0 + 8)
    owner.alerts.hand_over(set())  # (takes the adoption in)
    assert owner.alerts.hand_over({"pump-1"})["pump-1"][2:] == (T0 + 7, True, T0 + 8, [], None)  # passed on as
    # adopted
    owner.alerts.adopt("pump-1", AlertState(), None, True, T0 + 7, T0 + 8)
    owner.alerts.hand_over(set())
    owner.alerts.expire_restored(time.monotonic() + 1e6)
    assert "pump-1" not in owner.alerts.restored
    assert "pump-1" not in owner.alerts._grid_ts and "pump-1" not in owner.alerts._judged_ts  # nothing kept
    owner.alerts.adopt("pump-1", AlertState(), None, True, T0 + 7, T0 + 8)
    owner.alerts.hand_over(set())
    owner.alerts.adopt("pump-1", AlertState(), None, True)  # again, from an owner with no window yet
    assert owner.alerts.hand_over({"pump-1"})["pump-1"][2:] == (None, True, None, [], None)


def test_readings_the_previous_run_judged_are_refused_after_a_restart(tiny_bundle, tmp_path):
    """A session that queued readings while another layout served them (back to `--workers 1`, a
    revived client id) delivers readings the previous run already judged. Judged again, they
    re-announced alerts minutes old and cleared an alert that was still up (a walk found it).
    Refused as older than the asset's newest, as they would have been without the restart."""
    window = tiny_bundle.window
    first, client = daemon_with(tiny_bundle, tmp_path, raise_after=1, clear_after=1)
    for i in range(window):
        first.ingest.handle(client, message("pump-1", T0 + i, a=1e3 * (i % 2), b=-1e3, c=1e3))
    first.score_batch(first.ingest.next_batch(0.0)[0])
    alert_id = first.snapshot()["pump-1"].alert_id
    assert first.snapshot()["pump-1"].status == "alerting"
    first.stop()

    second, client = daemon_with(tiny_bundle, tmp_path, raise_after=1, clear_after=1)
    for i in range(window):  # the same stamps again, normal values: they would clear the alert
        second.ingest.handle(client, message("pump-1", T0 + i, mid=i + 1))
    assert second.ingest.next_batch(0.0)[0] == []
    assert value(second, "sensorguard_messages_rejected_total", reason="out_of_order") == window - 1
    assert value(second, "sensorguard_messages_rejected_total", reason="duplicate_ts") == 1  # the last judged
    assert [a[0] for a in client.acks] == list(range(1, window + 1))  # acknowledged: not delivered again
    for i in range(window):  # newer readings are taken and judged
        second.ingest.handle(client, message("pump-1", T0 + window + i, a=1e3 * (i % 2), b=-1e3, c=1e3))
    second.score_batch(second.ingest.next_batch(0.0)[0])
    assert second.snapshot()["pump-1"].alert_id == alert_id and raised(client) == []
    second.stop()

    third, _ = daemon_with(tiny_bundle, tmp_path)  # the floor moved on with the windows judged
    third.ingest.handle(client, message("pump-1", T0 + window + 1))
    assert value(third, "sensorguard_messages_rejected_total", reason="out_of_order") == 1


def test_a_replay_ahead_of_the_clock_goes_on_after_a_restart(tiny_bundle, tmp_path):
    """A replay runs ahead of the clock reading by reading, and is kept. Restarted, its next
    readings were compared with the clock alone: refused as future_ts, every older one as
    out_of_order (the restored floor), so the asset was locked out until the clock caught up (a
    walk). Before its first reading since the restart, the floor is what the far-future check
    compares with."""
    window, now, future = tiny_bundle.window, time.time(), 4.0  # readings more than 4 s ahead: far ahead
    first, client = daemon_with(tiny_bundle, tmp_path, max_future_s=future)
    for i in range(window):  # a replay ahead of the clock, reading by reading: kept
        first.ingest.handle(client, message("pump-1", now + i))
    assert not value(first, "sensorguard_messages_rejected_total", reason="future_ts")
    first.score_batch(first.ingest.next_batch(0.0)[0])
    first.stop()

    second, client = daemon_with(tiny_bundle, tmp_path, max_future_s=future)
    second.ingest.handle(client, message("pump-1", now + window))  # the next reading of the replay
    assert not value(second, "sensorguard_messages_rejected_total", reason="future_ts")
    assert second.buffers.last_ts("pump-1") == now + window
    second.ingest.handle(client, message("pump-9", now + window))  # a new asset: the clock judges it
    assert value(second, "sensorguard_messages_rejected_total", reason="future_ts") == 1
    second.stop()


def test_a_command_on_a_restored_asset_not_heard_since_the_restart_is_no_typo(drifting, tmp_path):
    """A reply said "no reading of pump-1 has reached ... yet (a typo?)" for an asset whose alert
    the state file restored, in the minute after a restart (a walk found it)."""
    first, _ = daemon_with(drifting, tmp_path)
    for i in range(3):
        first.alerts.apply("pump-1", T0 + i, 5.0, [])
    first.stop()
    second, _ = daemon_with(drifting, tmp_path)
    shelve = Command("shelve", "pump-1", until=time.time() + 600)
    assert second._commanded("pump-1", shelve) == ""
    said = second._commanded("pump-9", Command("shelve", "pump-9", until=time.time() + 600))
    assert "(a typo? it serves 0 assets now)" in said  # (1 asset, 2 assets: a walk read "1 assets")
    second.buffers.add("pump-1", T0 + 100, {c: 0.0 for c in second.buffers.channels}, 0.0)
    said = second._commanded("pump-9", Command("shelve", "pump-9", until=time.time() + 600))
    assert "(a typo? it serves 1 asset now)" in said
    assert said.endswith("it holds from its first reading, and `sensorguard alerts` lists it from then")


def test_a_floor_goes_with_its_restored_asset_and_only_a_taken_reading_lifts_it(tiny_bundle, tmp_path):
    """From a review: a floor outlived its restored asset, so a device whose clock went back in
    the outage that restarted the daemon was refused for the rest of the run (a silence forgets
    an asset's newest stamp without a restart); and a newer reading refused for another reason
    lifted the floor, so older redeliveries after it were judged again."""
    first, client = daemon_with(tiny_bundle, tmp_path, stale_after_s=60)
    for i in range(tiny_bundle.window):
        first.ingest.handle(client, message("pump-1", T0 + 100 + i))
    first.score_batch(first.ingest.next_batch(0.0)[0])
    first.stop()

    second, client = daemon_with(tiny_bundle, tmp_path, stale_after_s=60)
    second.ingest.handle(client, message("pump-1", T0 + 500, tmp=1.0))  # newer, but refused: unknown channel
    second.ingest.handle(client, message("pump-1", T0 + 101))
    assert value(second, "sensorguard_messages_rejected_total", reason="out_of_order") == 1  # still refused
    second.alerts.restore_until = time.monotonic() + 60  # as start() sets it
    second.housekeeping(time.monotonic() + 61)  # it never came back: no longer awaited
    second.ingest.handle(client, message("pump-1", T0))  # its clock went back: taken, as without a restart
    assert value(second, "sensorguard_messages_rejected_total", reason="out_of_order") == 1
    assert "pump-1" in second.buffers


def test_cluster_mode_sets_no_floors_a_takeover_primes_the_older_readings(tiny_bundle, tmp_path):
    """From a review: the floors refused the readings a takeover primes the window with (cluster
    mode keeps judged_ts in its state bucket), so the windows the previous owner left unscored
    were dropped."""
    first, _ = daemon_with(tiny_bundle, tmp_path)
    first.alerts.apply("pump-1", T0 + 10, 0.5, [])
    first.stop()
    assert daemon_with(tiny_bundle, tmp_path)[0].buffers.floors == {"pump-1": T0 + 10}
    clustered, _ = daemon_with(tiny_bundle, tmp_path, cluster=("nats://127.0.0.1:4222",))  # (connects at start)
    assert clustered.buffers.floors == {}


def test_cluster_mode_takes_no_state_from_the_file_its_alerts_are_not_exported_as_active(drifting, tmp_path):
    """A walk: a cluster worker restarted on a state folder whose partition another worker had taken
    (and cleared the alert on) restored the file's alert and exported it active, over the owner's
    clear, until it expired: the shipped SensorguardAssetAnomaly would have fired. The state bucket
    is what an asset's owner adopts; the file is not read in cluster mode."""
    first, _ = daemon_with(drifting, tmp_path)
    for i in range(4):
        first.alerts.apply("pump-1", T0 + i, 5.0, [])
    assert first.alerts.state_of("pump-1").status == "alerting"
    first.stop()
    clustered, _ = daemon_with(drifting, tmp_path, cluster=("nats://127.0.0.1:4222",))
    assert value(clustered, "sensorguard_anomaly_active", asset="pump-1") in (None, 0.0)
    assert clustered.alerts.restored == {}


def test_a_second_incident_keeps_the_first_ones_copy(tmp_path, caplog):
    """Each incident copied the file to assets.json.bad over the last one, so a second bad start
    (or a bad entry after a bad file) lost what the first had kept, often the copy that said what
    went wrong first. Earlier copies now move one place older, and only the newest KEPT_ASIDE stay."""
    from sensorguard.service.set_aside import KEPT_ASIDE
    from sensorguard.service.state import load_states

    bad = tmp_path / (STATE_FILE + ".bad")
    for k in range(KEPT_ASIDE + 2):  # more incidents than copies kept
        (tmp_path / STATE_FILE).write_text(f"{{not json {k}")
        with caplog.at_level(logging.WARNING, logger="sensorguard.service.state"):
            relayout_states(str(tmp_path), [load_settings({"model": None, "state_dir": str(tmp_path)}, {},
                                                          require_model=False)])
    newest = KEPT_ASIDE + 1
    assert bad.read_text() == f"{{not json {newest}"
    assert [bad.with_name(f"{bad.name}.{j}").read_text() for j in range(1, KEPT_ASIDE)] == [
        f"{{not json {newest - j}" for j in range(1, KEPT_ASIDE)]
    assert not bad.with_name(f"{bad.name}.{KEPT_ASIDE}").exists()  # bounded: the oldest are gone
    # a bad entry (copied aside, the file kept) shifts the copies the same way
    save_states(tmp_path, {"pump-1": AlertState("alerting", alert_id="pump-1@1")}, {})
    doc = json.loads((tmp_path / STATE_FILE).read_text())
    doc["assets"]["x"] = {"alert": "nope"}
    (tmp_path / STATE_FILE).write_text(json.dumps(doc))
    alerts, _, _ = load_states(tmp_path)
    assert set(alerts) == {"pump-1"}
    assert json.loads(bad.read_text())["assets"]["x"] == {"alert": "nope"}
    assert bad.with_name(bad.name + ".1").read_text() == f"{{not json {newest}"


def test_an_incident_met_again_or_a_failed_move_shifts_no_copy(tmp_path):
    """The copies shift only for a new copy that has landed: the same text again (a start after a
    rewrite that failed meets the same bad entry) takes no second place, and a move that fails
    (the file gone, a directory the daemon may not write) leaves the earlier copies where they are
    (found by review: each retry spent a place, and the oldest copies went)."""
    from sensorguard.service.set_aside import keep_copy, set_aside

    bad = tmp_path / (STATE_FILE + ".bad")
    (tmp_path / STATE_FILE).write_text("{first")
    set_aside(tmp_path)
    keep_copy(bad, "{second")
    keep_copy(bad, "{second")  # met again
    (tmp_path / STATE_FILE).write_text("{second")
    set_aside(tmp_path)  # the same bytes once more, moved: still one place
    assert bad.read_text() == "{second" and bad.with_name(bad.name + ".1").read_text() == "{first"
    assert not bad.with_name(bad.name + ".2").exists() and not (tmp_path / STATE_FILE).exists()
    with pytest.raises(OSError):
        set_aside(tmp_path)  # nothing to move
    assert bad.read_text() == "{second" and bad.with_name(bad.name + ".1").read_text() == "{first"
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name, bad.name + ".1"]  # no temporary left


def test_a_restored_alert_is_up_in_the_metrics_restated_with_the_model_and_ended_at_its_last_window(
        drifting, tmp_path):
    """After a restart, a restored alert was missing from sensorguard_anomaly_active until its first
    window (its alerting rules resolved), its retained state named the model served before (one
    promoted while the daemon was down), and its silent event said the clock's time at expiry as
    its last reading's (found by a walk)."""
    first, _ = daemon_with(drifting, tmp_path)
    for i in range(3):
        first.alerts.apply("pump-21", T0 + i, 5.0, [])
    first.stop()
    second, client = daemon_with(drifting, tmp_path, stale_after_s=60)
    assert second.registry.get_sample_value("sensorguard_anomaly_active", {"asset": "pump-21"}) == 1
    second.alerts.resend_states()
    states = [json.loads(p) for t, p, r in client.published if t == "sensorguard/state/pump-21" and r]
    assert [s["state"] for s in states] == ["alerting"]
    assert pd.Timestamp(states[0]["ts"]) == pd.Timestamp(T0 + 2, unit="s", tz="UTC")  # its last window's time
    second.alerts.restore_until = time.monotonic() + 60
    second.housekeeping(time.monotonic() + 61)
    events = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-21"]
    assert [e["state"] for e in events] == ["sensor_fault"]
    assert pd.Timestamp(events[0]["ts"]) == pd.Timestamp(T0 + 2, unit="s", tz="UTC")
    assert not second.registry.get_sample_value("sensorguard_anomaly_active", {"asset": "pump-21"})  # ended
    third, _ = daemon_with(drifting, tmp_path / "pending")  # a pending alert is not up, restored or live
    third.alerts.apply("pump-22", T0, 5.0, [])
    assert third.snapshot()["pump-22"].status == "pending"
    third.stop()
    fourth, _ = daemon_with(drifting, tmp_path / "pending")
    assert not fourth.registry.get_sample_value("sensorguard_anomaly_active", {"asset": "pump-22"})


def test_a_restored_alerts_state_names_its_channels_as_before_the_restart(tiny_bundle, tmp_path):
    """Found by a walk: after a restart (and a --workers change) the retained state of an alert
    still up said ``"channels": []``, where it named its top three channels before. They are saved
    with the asset and stated until its next window, and carried by a relayout."""
    import json

    from tests.test_daemon import T0, make

    top = [{"name": "b", "share": 0.6}, {"name": "a", "share": 0.3}, {"name": "c", "share": 0.1}]
    daemon, _ = make(tiny_bundle, state_dir=str(tmp_path / "s"))
    for i in range(3):
        daemon.alerts.apply("pump-1", T0 + i, 5.0, top)
    assert daemon.alerts.save()
    again, client = make(tiny_bundle, state_dir=str(tmp_path / "s"))
    again.alerts.publish_state("pump-1")
    state = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/state/pump-1"][-1]
    assert (state["state"], state["channels"]) == ("alerting", top)
    assert again.alerts.save()  # saved again before its next window: still there
    saved = json.loads((tmp_path / "s" / "assets.json").read_text())
    assert saved["assets"]["pump-1"]["channels"] == top
    # a file rewritten at load (a field of a newer version) keeps them (a review)
    saved["assets"]["pump-1"]["owner"] = "a newer version's field"
    (tmp_path / "s" / "assets.json").write_text(json.dumps(saved))
    third, client = make(tiny_bundle, state_dir=str(tmp_path / "s"))
    third.alerts.publish_state("pump-1")
    state = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/state/pump-1"][-1]
    assert state["channels"] == top
    # its first window names its own, and the ones from before the restart are gone (a review)
    third.alerts.apply("pump-1", T0 + 10, 5.0, top[:1])
    assert "pump-1" not in third.alerts.restored_channels



def test_a_restored_normal_assets_state_names_its_channels_beside_its_score(tiny_bundle, tmp_path):
    """A walk: after a restart a normal asset's retained state said its last score (0.41) with
    ``"channels": []``; only an alert's channels were saved. A normal one's are saved too."""
    import json

    from tests.test_daemon import T0, make

    top = [{"name": "a", "share": 0.5}, {"name": "c", "share": 0.3}, {"name": "b", "share": 0.2}]
    daemon, _ = make(tiny_bundle, state_dir=str(tmp_path / "s"))
    daemon.alerts.apply("pump-1", T0, 0.41, top)
    assert daemon.alerts.save()
    again, client = make(tiny_bundle, state_dir=str(tmp_path / "s"))
    again.alerts.publish_state("pump-1")
    state = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/state/pump-1"][-1]
    assert (state["state"], state["score"], state["channels"]) == ("normal", 0.41, top)

# --- from a mutation audit of alarm management: rules no test pinned ---------------------------------


def test_an_alert_up_across_a_restart_keeps_holding_its_readings_back(drifting, tmp_path):
    """Restored up, its readings are the alert's, not normal data: the recorder holds them from the
    first window after the restart (none of them is committed as normal)."""
    first, _ = daemon_with(drifting, tmp_path / "state")
    for i in range(3):
        first.alerts.apply("pump", T0 + i, 5.0, [])
    assert first.snapshot()["pump"].status == "alerting"
    first.stop()
    again, _ = daemon_with(drifting, tmp_path / "state", record_dir=str(tmp_path / "rec"), record_guard_s=10)
    again.alerts.apply("pump", T0 + 3, 5.0, [])
    assert again.recorder.holding("pump")


def test_a_maintenance_ending_while_the_alert_is_up_keeps_its_readings_held(drifting, tmp_path):
    """The hold's end releases the readings only when no alert is up: they belong to the alert,
    filed under it when it clears (released, they were dropped, and the alert's later readings
    recorded as normal)."""
    from sensorguard.service.command_messages import Command

    daemon, _ = daemon_with(drifting, None, record_dir=str(tmp_path / "rec"), record_guard_s=10)
    for i in range(3):
        daemon.alerts.apply("pump", T0 + i, 5.0, [])
    for action in ("start", "end"):
        daemon.controls.apply(Command("maintenance", "pump", action=action), time.time())
        daemon.alerts.request_control_change("pump", action == "start")
        daemon.alerts.apply_control_changes()
    assert daemon.snapshot()["pump"].status == "alerting" and daemon.recorder.holding("pump")


def test_a_restored_alert_stops_paging_when_its_asset_is_shelved_before_any_window(drifting, tmp_path):
    """Its alert is up in the metrics from the start (the rule pages on it); a shelving before the
    asset's first window stops that at once, not at a window that may not come."""
    from sensorguard.service.command_messages import Command
    from tests.test_daemon import value

    first, _ = daemon_with(drifting, tmp_path)
    for i in range(3):
        first.alerts.apply("pump", T0 + i, 5.0, [])
    first.stop()
    again, _ = daemon_with(drifting, tmp_path)
    assert value(again, "sensorguard_anomaly_active", asset="pump") == 1
    again.controls.apply(Command("shelve", "pump", until=time.time() + 600), time.time())
    again.alerts.request_control_change("pump", None)
    again.alerts.apply_control_changes()
    assert value(again, "sensorguard_anomaly_active", asset="pump") == 0


def test_a_silent_asset_whose_alert_was_held_names_no_alert_and_files_an_announced_ones_readings(drifting,
                                                                                                 tmp_path):
    """Silence ends an alert: its event names the alert only when its raise went out (a held one's
    would close a raise nobody saw), and the alert's held readings are filed under it, so a false
    alarm acknowledged later teaches them as normal."""
    from sensorguard.service.command_messages import Command

    daemon, client = daemon_with(drifting, None, record_dir=str(tmp_path / "rec"), record_guard_s=0)
    daemon.controls.apply(Command("shelve", "held", until=time.time() + 600), time.time())
    for asset in ("held", "told"):
        for i in range(3):
            daemon.recorder.add(asset, T0 + i, [1.0, 2.0, 3.0])
            daemon.alerts.apply(asset, T0 + i, 5.0, [])
        daemon.recorder.add(asset, T0 + 3, [1.0, 2.0, 3.0])
    told = daemon.snapshot()["told"].alert_id
    for asset in ("held", "told"):
        daemon.alerts.end(asset, T0 + 3)
    silent = {json.loads(p)["asset"]: json.loads(p) for t, p, _ in client.published
              if t.startswith("sensorguard/alerts/") and json.loads(p).get("kind") == "silent"}
    assert "alert_id" not in silent["held"] and silent["told"]["alert_id"] == told
    daemon.recorder.flush(now_ts=T0 + 1000, force=True)
    filed = {p.name for p in (tmp_path / "rec" / "alerts").glob("*.parquet")}
    assert f"{told}.parquet" in filed, filed
    assert len(pd.read_parquet(tmp_path / "rec" / "alerts" / f"{told}.parquet")) == 4  # its readings, none normal


def test_a_sensor_faults_state_keeps_the_latest_windows_time(tiny_bundle):
    """A fault opened by a reading newer than the latest scored window: the state it publishes says
    that window's time (a later one made the next windows' states go backwards, as they may not)."""
    from sensorguard.service.publisher import iso
    from sensorguard.service.sensors import SensorEvent
    from tests.test_daemon import make

    daemon, client = make(tiny_bundle)
    daemon.alerts.apply("pump", T0 + 43, 0.1, [])
    daemon.alerts.sensor("pump", SensorEvent("missing", "a", True, T0 + 60, float("nan")))
    states = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/state/pump"]
    assert states[-1]["sensor_faults"] and states[-1]["ts"] == iso(T0 + 43)


def test_a_raise_owed_after_a_hold_waits_for_room_in_the_outgoing_queue(drifting):
    """An alert that rose while shelved is told at its first window after the shelving: with the
    outgoing queue full that raise would be dropped (counted, logged "alert raised", and then taken
    as told); it waits for a window with room."""
    from sensorguard.service import mqtt
    from sensorguard.service.command_messages import Command

    daemon, client = daemon_with(drifting, None)
    daemon.controls.apply(Command("shelve", "pump", until=time.time() + 600), time.time())
    for i in range(3):
        daemon.alerts.apply("pump", T0 + i, 5.0, [])
    daemon.controls.apply(Command("shelve", "pump", until=time.time()), time.time())  # unshelved
    client.queued_out = lambda: mqtt.MAX_QUEUED_OUT
    daemon.alerts.apply("pump", T0 + 3, 5.0, [])
    assert raised(client) == []
    assert not daemon.registry.get_sample_value("sensorguard_publishes_dropped_total", {"kind": "alert"})
    client.queued_out = lambda: 0
    daemon.alerts.apply("pump", T0 + 4, 5.0, [])
    assert [e["alert_id"] for e in raised(client)] == [daemon.snapshot()["pump"].alert_id]


def test_a_raise_told_when_its_hold_ends_is_saved_within_a_second(drifting):
    """The state file marks an alert held back as unannounced: killed before the next save (30 s),
    a restart would tell its raise again (a mutation audit found the prompt save unpinned)."""
    from sensorguard.service.command_messages import Command

    daemon, client = daemon_with(drifting, None)
    daemon.controls.apply(Command("shelve", "pump", until=time.time() + 600), time.time())
    for i in range(3):
        daemon.alerts.apply("pump", T0 + i, 5.0, [])
    daemon.alerts.save_soon = False
    daemon.controls.apply(Command("shelve", "pump", until=time.time()), time.time())
    daemon.alerts.request_control_change("pump", None)
    daemon.alerts.apply_control_changes()
    assert raised(client) and daemon.alerts.save_soon


def test_an_asset_silent_at_a_restart_is_still_silent_after_it(drifting, tmp_path):
    """A walk: the state file kept no mark of a silence, so after a restart a silent asset came back
    ``normal`` with no ``sensor_ok`` (a ticket opened on its ``silent`` was never closed), a shelve
    published it ``normal`` at the clock's time with no sensor fault, and ``assets_silent`` left
    it out. Its silence is saved now, and the restart awaits its return as the run before did."""
    def published(client, topic: str) -> list[dict]:
        return [json.loads(p) for t, p, _ in client.published if t == topic]

    first, _ = daemon_with(drifting, tmp_path)
    first.alerts.apply("pump", T0, 0.1, [])
    first.alerts.end("pump", T0 + 5)  # silent after its reading at T0 + 5
    first.stop()
    assert json.loads((tmp_path / STATE_FILE).read_text())["assets"]["pump"]["silent"]["since"] == T0 + 5

    second, client = daemon_with(drifting, tmp_path, stale_after_s=60)
    assert "pump" not in second.alerts.restored and value(second, "sensorguard_assets_silent") == 1
    second.controls.apply(Command("shelve", "pump", until=time.time() + 600), time.time())
    second.alerts.request_control_change("pump", None)
    second.alerts.apply_control_changes()
    state = published(client, "sensorguard/state/pump")[-1]
    assert (state["state"], state["suppressed"], state["ts"]) == ("stale", "shelved", iso(T0 + 5))
    assert [f["kind"] for f in state["sensor_faults"]] == ["silent"]
    second.alerts.save()  # a second restart keeps it as well
    assert json.loads((tmp_path / STATE_FILE).read_text())["assets"]["pump"]["silent"]["since"] == T0 + 5

    second.ingest.handle(client, message("pump", T0 + 500))  # back
    second.publish_sensor_faults()
    events = published(client, "sensorguard/alerts/pump")
    assert [(e["state"], e["kind"], e["ts"]) for e in events] == [("sensor_ok", "silent", iso(T0 + 500))]
    assert value(second, "sensorguard_assets_silent") == 0
    first, _ = daemon_with(drifting, tmp_path)  # one of another instance's partitions now: not awaited here,
    first.alerts.apply("site-b/p2", T0, 0.1, [])  # nor its stale state published over its new owner's
    first.alerts.end("site-b/p2", T0 + 5)
    first.stop()
    third, client = daemon_with(drifting, tmp_path, stale_after_s=60, partition=["site-a/#"])
    assert value(third, "sensorguard_assets_silent") == 0
    third.alerts.states_lost()
    third.alerts.resend_states()
    assert not [t for t, _, _ in client.published if t.startswith("sensorguard/state/site-b")]


def test_a_restored_asset_no_window_of_which_was_judged_says_no_score(drifting, tmp_path):
    """A walk: an asset saved with no window judged (back from a silence, a few readings in, when
    the daemon stopped) was published ``"score": 0.0`` after the restart, which ``alerts`` showed as
    a perfectly normal 0.00; a score nobody computed is null, as before the restart."""
    save_states(tmp_path, {"pump": AlertState(), "fan": AlertState(last_score=0.4, peak=0.4)}, {})
    daemon, client = daemon_with(drifting, tmp_path)
    for asset in ("pump", "fan"):
        daemon.controls.apply(Command("shelve", asset, until=time.time() + 600), time.time())
        daemon.alerts.request_control_change(asset, None)
    daemon.alerts.apply_control_changes()
    scores = {t.rsplit("/", 1)[1]: json.loads(p)["score"] for t, p, r in client.published
              if t.startswith("sensorguard/state/") and r}
    assert scores == {"pump": None, "fan": 0.4}


def test_a_restored_asset_judged_before_the_restart_has_its_state_sent_again_naming_the_model(drifting, tmp_path):
    """A walk: an asset restored and not heard from yet kept a retained state naming the model and
    line of before the restart (and of before each swap since) until it sent again: only alerts up
    were restated. One with a window judged before the restart is restated too; a bare one (a file
    from before silences were kept may hold a silent asset so) is left to its first window."""
    first, _ = daemon_with(drifting, tmp_path)
    first.alerts.apply("pump", T0, 0.1, [])
    first.stop()
    save_states(tmp_path, load_states(tmp_path)[0] | {"fan": AlertState()}, {}, judged=judged_times(tmp_path))
    second, client = daemon_with(drifting, tmp_path)
    client.published.clear()
    second.alerts.states_lost()  # as a swap does
    second.alerts.resend_states()
    states = {t.rsplit("/", 1)[1]: json.loads(p) for t, p, r in client.published if t.startswith("sensorguard/state/")}
    assert set(states) == {"pump"}
    assert (states["pump"]["state"], states["pump"]["ts"]) == ("normal", iso(T0))


def test_a_saved_silence_wins_over_the_rest_of_its_entry_holds_no_slot_and_keeps_its_order(drifting, tmp_path,
                                                                                           caplog):
    """From a review of the saved silences: an entry that says alerting beside its silence (a layout
    change merging two copies, a hand edit) kept the alert up in the metrics and a buffer slot; silent
    entries counted against max_assets at the restore (each restart at capacity forgot one and
    warned); a skipped entry's silence was written back; and the silences came back in name order,
    so the cap forgot the newest first."""
    up = AlertState("alerting", above=3, peak=5.0, last_score=5.0, alert_id="pump@1")
    save_states(tmp_path, {"pump": up, "a": AlertState(last_score=0.2), "b": AlertState(last_score=0.3)}, {},
                judged={"pump": T0 + 2, "a": T0, "b": T0}, silent={"pump": (T0 + 5, 5.0), "z": (T0 + 1, 0.1)})
    doc = json.loads((tmp_path / STATE_FILE).read_text())
    doc["assets"]["bad"] = {"alert": {"status": "bogus"}, "silent": {"since": T0, "last_score": 0.0}}
    (tmp_path / STATE_FILE).write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        daemon, client = daemon_with(drifting, tmp_path, max_assets=2)
    assert not [r for r in caplog.records if "more than max_assets" in r.getMessage()]
    assert "bad" not in json.loads((tmp_path / STATE_FILE).read_text())["assets"]  # skipped, not written back
    assert set(daemon.alerts.restored) == {"a", "b"} and "pump" not in daemon.buffers.floors
    assert value(daemon, "sensorguard_anomaly_active", asset="pump") in (None, 0.0)
    assert daemon.alerts._open.silent_assets() == ["z", "pump"]  # oldest silence first: the cap's order
    daemon.alerts.resend_states()
    states = {t.rsplit("/", 1)[1]: json.loads(p) for t, p, r in client.published if t.startswith("sensorguard/state/")}
    assert states["pump"]["state"] == "stale" and states["pump"]["ts"] == iso(T0 + 5)


def test_a_silence_of_another_instances_partition_is_capped_with_the_rest(drifting, tmp_path):
    """Only the silences this instance takes as such hold no place under max_assets: another's stays
    a restored entry here until it ends, and uncapped it could hold more slots than max_assets (a review)."""
    save_states(tmp_path, {"site-a/p1": AlertState(last_score=0.2), "site-a/p2": AlertState(last_score=0.3)}, {},
                judged={"site-a/p1": T0, "site-a/p2": T0},
                silent={"site-a/s": (T0 + 1, 0.1), "site-b/s": (T0 + 2, 0.1)})
    daemon, _ = daemon_with(drifting, tmp_path, max_assets=2, partition=["site-a/#"])
    assert set(daemon.alerts.restored) == {"site-a/p1", "site-a/p2"}
    assert daemon.alerts._open.silent_assets() == ["site-a/s"]


def _silent_bucket_entry(drifting):
    """What the state bucket holds for pump-2 gone silent on its owner, decoded."""
    from sensorguard.service.state_entry import decode_asset, encode_asset

    old, _ = daemon_with(drifting, None)
    old.alerts.changed_states()
    old.alerts.apply("pump-2", T0, 0.5, [])
    old.alerts.changed_states()
    old.alerts.end("pump-2", T0 + 4)
    return decode_asset(encode_asset(*old.alerts.changed_states()["pump-2"]))


def _told(client, asset="pump-2") -> list[tuple[str, str]]:
    return [(e["state"], e["kind"]) for t, p, _ in client.published if t == f"sensorguard/alerts/{asset}"
            for e in [json.loads(p)]]


def test_a_silent_asset_heard_before_its_adoption_is_taken_in_tells_its_return(drifting):
    """From a review of the silences in the bucket: the first reading's return event came before the
    scoring thread took the adoption in, so nothing was told, and the silence taken in after it held
    for good while the asset sent."""
    from sensorguard.service.sensors import SensorEvent

    *entry, silence = _silent_bucket_entry(drifting)
    new, client = daemon_with(drifting, None)
    new.alerts.adopt("pump-2", *entry, silence)  # queued (the takeover's thread)
    new.alerts.sensor("pump-2", SensorEvent("silent", None, False, T0 + 600, float("nan")))
    new.alerts.hand_over(set())
    assert _told(client) == [("sensor_ok", "silent")] and value(new, "sensorguard_assets_silent") == 0


def test_an_asset_back_before_its_first_window_has_its_buckets_silence_replaced(drifting, tiny_bundle):
    """From a review: back from a silence, an asset is in no state until its first window, so neither
    the sync nor a hand-over replaced the bucket's silent entry; a new owner adopted the silence and
    told sensor_ok a second time (with no drift rule the entry was never replaced at all)."""
    from sensorguard.service.sensors import SensorEvent
    from sensorguard.service.state_entry import decode_asset, encode_asset

    for bundle in (drifting, tiny_bundle):
        old, old_client = daemon_with(bundle, None)
        old.alerts.changed_states()
        old.alerts.apply("pump-2", T0, 0.5, [])
        old.alerts.changed_states()
        old.alerts.end("pump-2", T0 + 4)
        assert old.alerts.changed_states()["pump-2"][6] == (T0 + 4, 0.5)
        old.alerts.sensor("pump-2", SensorEvent("silent", None, False, T0 + 600, float("nan")))  # back
        synced = old.alerts.changed_states()["pump-2"]
        assert synced is None or synced[6] is None  # the bucket's silence goes
        old.alerts.end("pump-2", T0 + 700)
        old.alerts.sensor("pump-2", SensorEvent("silent", None, False, T0 + 900, float("nan")))  # back again
        moved = old.alerts.hand_over({"pump-2"}).get("pump-2")  # and handed over before a sync
        assert moved is not None and moved[6] is None
        new, new_client = daemon_with(bundle, None)
        new.alerts.adopt("pump-2", *decode_asset(encode_asset(*moved)))
        new.alerts.sensor("pump-2", SensorEvent("silent", None, False, T0 + 901, float("nan")))
        assert (_told(old_client) + _told(new_client)).count(("sensor_ok", "silent")) == 2  # once a return


def test_promoting_the_current_version_again_still_ends_a_shadow_of_it(tiny_bundle, tmp_path, capsys):
    """From a review: promote of CURRENT now writes nothing, and so no longer ended a SHADOW equal to
    CURRENT (a rollback onto the shadowed version), which re-promoting it had done."""
    from sensorguard.cli import main
    from sensorguard.service.registry import current_version, publish, rollback, set_shadow, shadow_version

    v1 = publish(tiny_bundle, tmp_path, "m")
    publish(tiny_bundle, tmp_path, "m")
    set_shadow(tmp_path, "m", v1)
    rollback(tmp_path, "m")
    assert current_version(tmp_path, "m") == v1 == shadow_version(tmp_path, "m")
    assert main(["models", "promote", v1, "--registry", str(tmp_path), "--name", "m"]) == 0
    assert shadow_version(tmp_path, "m") is None
    assert capsys.readouterr().out == f"m: {v1} is CURRENT already; its shadow ended\n"  # (not "nothing changed")


def test_a_guard_band_set_without_a_status_change_is_passed_on_at_once(drifting, tmp_path):
    """A review: the end of a maintenance sets the recorder's guard band and changes no alert status,
    so the band reached the state bucket only at the next full sync (30 s): a worker dying meanwhile
    let its asset's new owner record the band as normal data. It is passed on with the next batch."""
    daemon, _ = daemon_with(drifting, None, record_dir=str(tmp_path / "rec"))
    daemon.alerts.apply("pump-1", T0, 0.5, [])
    assert set(daemon.alerts.changed_states()) == {"pump-1"} and daemon.alerts.changed_states() == {}
    daemon.alerts.recorder.alert_cleared("pump-1", T0 + 1)  # a maintenance ended: its band begins
    assert set(daemon.alerts.changed_states()) == {"pump-1"}
    assert daemon.alerts.changed_states() == {}


def test_one_restored_asset_gone_silent_is_counted_in_the_singular(drifting, tmp_path, caplog):
    """A walk read "1 assets restored from the state file or adopted sent nothing for 300 s"."""
    first, _ = daemon_with(drifting, tmp_path)
    first.alerts.apply("pump-3", T0, 0.5, [])
    first.stop()
    second, _ = daemon_with(drifting, tmp_path, stale_after_s=60)
    second.alerts.restore_until = time.monotonic() + 60  # as start() sets it
    with caplog.at_level(logging.INFO):
        second.housekeeping(time.monotonic() + 61)
    assert "1 asset restored from the state file or adopted sent nothing for 60 s: silent ('pump-3')" in caplog.text

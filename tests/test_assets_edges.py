"""Edges of the alert application that no test pinned (found by mutating service/assets.py): which
windows are judged, and what an asset's state and metrics say."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import paho.mqtt.client as paho
import pytest

from sensorguard.service import mqtt
from sensorguard.service.alerts import AlertState
from sensorguard.service.bundle import Bundle
from sensorguard.service.command_messages import Command
from sensorguard.service.sensors import SensorEvent
from sensorguard.service.state import STATE_FILE, load_states, save_states
from tests.test_daemon import T0, make, value
from tests.test_level import monitor_of
from tests.test_state import RULE, daemon_with, raised

UP = AlertState("alerting", above=3, peak=2.5, last_score=2.0, alert_id="pump@1")


@pytest.fixture
def drifting(tiny_bundle: Bundle) -> Bundle:
    return tiny_bundle.with_threshold(1.0, {"method": "alerts", "drift": RULE.to_dict()})


def raise_alert(daemon: object, asset: str = "pump") -> None:
    for i in range(3):
        daemon.alerts.apply(asset, T0 + i, 5.0, [])
    assert daemon.alerts.state_of(asset).status == "alerting"


def test_an_alert_hop_window_is_judged_only_while_the_alert_is_up(drifting: Bundle):
    """A bundle with an alert hop (hop 2, alert hop 1): the windows between hops are judged while
    the asset's alert is up, and passed over (None, nothing changes) while it is not."""
    daemon, _ = make(dataclasses.replace(drifting, alert_hop=1))
    assert daemon.alerts.apply("pump", T0, 0.1, [], coarse=False) is None
    assert daemon.alerts.state_of("pump") == AlertState()
    raise_alert(daemon)
    assert daemon.alerts.apply("pump", T0 + 3.5, 5.0, [], coarse=False) is not None


def test_a_bundle_without_an_alert_hop_judges_no_window_off_its_hop(drifting: Bundle):
    """Served without an alert hop (a swap while an off-hop window was queued): that window is not
    judged even with the alert up, as offline judges none there."""
    daemon, _ = make(drifting)
    raise_alert(daemon)
    before = daemon.alerts.state_of("pump")
    assert daemon.alerts.apply("pump", T0 + 3.5, 0.1, [], coarse=False) is None
    assert daemon.alerts.state_of("pump") == before


def test_an_alert_restored_or_adopted_counts_as_up_before_its_first_window(drifting: Bundle, tmp_path: Path):
    """The scorer keeps an asset's alert-hop windows only while its alert may be up: one restored
    from the state file, or handed over by another worker and not taken in yet, is up (its
    alert-hop windows were dropped before its first window took it in)."""
    save_states(tmp_path, {"pump": UP}, {})
    restored, _ = make(drifting, state_dir=str(tmp_path))
    assert restored.alerts.alerting("pump") and not restored.alerts.alerting("other")
    adopted, _ = make(drifting)
    assert not adopted.alerts.alerting("pump")
    adopted.alerts.adopt("pump", UP, None, True, T0, None, [], None)
    assert adopted.alerts.alerting("pump")


def test_a_restored_unannounced_raise_waits_for_room_in_the_outgoing_queue(drifting: Bundle, tmp_path: Path):
    """An alert saved as unannounced is told at its asset's first window after the restart; with
    the outgoing queue full that raise would be dropped (counted as a lost publish): it waits for a
    window with room, under the same alert id."""
    from sensorguard.service import mqtt
    from tests.test_state import raised

    save_states(tmp_path, {"pump": UP}, {}, unannounced={"pump"})
    daemon, client = make(drifting, state_dir=str(tmp_path))
    client.queued_out = lambda: mqtt.MAX_QUEUED_OUT
    daemon.alerts.apply("pump", T0, 5.0, [])
    assert raised(client) == []
    assert not daemon.registry.get_sample_value("sensorguard_publishes_dropped_total", {"kind": "alert"})
    client.queued_out = lambda: 0
    daemon.alerts.apply("pump", T0 + 2, 5.0, [])
    assert [e["alert_id"] for e in raised(client)] == ["pump@1"]


def test_an_announced_raise_is_counted_once_per_alert(drifting: Bundle):
    """``sensorguard_alerts_total`` counts each raise announced (the shipped dashboards rate it):
    one alert, one count, however many windows it stays up."""
    daemon, _ = make(drifting)
    raise_alert(daemon)
    daemon.alerts.apply("pump", T0 + 4, 5.0, [])
    assert daemon.registry.get_sample_value("sensorguard_alerts_total", {"asset": "pump"}) == 1


def test_an_announced_raise_can_be_acknowledged(drifting: Bundle):
    """Once its raise goes out, the alert is known to the controls: an ``ack`` command for it is
    taken (an unknown id is answered "no alert to acknowledge"), timed from its announcement."""
    daemon, _ = make(drifting)
    raise_alert(daemon)
    known = daemon.controls.acked(daemon.alerts.state_of("pump").alert_id)
    assert known is not None and known["asset"] == "pump" and known["acked"] is False and "raised_at" in known


def test_the_top_channels_of_the_last_window_are_kept_per_asset(drifting: Bundle):
    """What the asset's last judged window named (its state and a hand-over pass them on)."""
    daemon, _ = make(drifting)
    daemon.alerts.apply("pump", T0, 0.1, [{"name": "a", "share": 1.0}])
    daemon.alerts.apply("pump", T0 + 2, 0.1, [{"name": "b", "share": 1.0}])
    assert daemon.alerts.channels_of("pump") == [{"name": "b", "share": 1.0}] and daemon.alerts.channels_of("x") == []


def test_a_level_term_without_a_drift_rule_follows_the_assets_level(tiny_bundle: Bundle) -> None:
    """A bundle with a level term and no drift rule: each window judged normal moves the asset's
    level towards its rows, and the next window's term is taken about the moved level. Kept only
    with a drift rule, the level stayed at the training mean: a plant whose normal level drifted
    alarmed on that drift (what the level's following is there to stop), and nothing of it was saved."""
    bundle = dataclasses.replace(tiny_bundle, level=monitor_of(limit=100.0, follow=4.0))
    assert bundle.drift_rule is None
    daemon, _ = make(bundle)
    rows = np.full((4, 3), 3.0)
    _, first = daemon.alerts.apply("pump", T0, 0.0, [], rows=rows)
    learned = daemon.alerts.drift_of("pump")
    assert learned is not None and learned.level and learned.level[0] > 0
    _, second = daemon.alerts.apply("pump", T0 + 2, 0.0, [], rows=rows)
    assert 0 < second < first  # closer to the level it follows now


def test_an_alert_hop_window_does_not_move_the_cadence_a_new_owner_anchors_on(drifting: Bundle) -> None:
    """Handed over with its alert up after an alert-hop window (off the hop grid): the new owner is
    given the last window on the hop grid to anchor its cadence on, and the off-hop window's time
    apart (the windows it must not judge again). Anchored on the off-hop window, the new owner
    judged every later window off the hop grid, where offline ``score`` judges none."""
    daemon, _ = make(dataclasses.replace(drifting, alert_hop=1))
    for i in range(3):
        daemon.alerts.apply("pump", T0 + 2 * i, 5.0, [])
    assert daemon.alerts.state_of("pump").status == "alerting"
    assert daemon.alerts.apply("pump", T0 + 5, 5.0, [], coarse=False) is not None
    moved = daemon.alerts.hand_over({"pump"})["pump"]
    assert (moved[2], moved[4]) == (T0 + 4, T0 + 5)  # (grid window, judged window after it)


def test_a_held_raise_goes_out_as_the_window_that_raised_it(drifting: Bundle, tmp_path: Path) -> None:
    """In a batch (raises held until the state file holds them), the asset's later windows in the
    same batch leave its held raise as it was: the raise says the reading time, score and channels
    of the window that raised it. Taken again as a raise still owed, each later window replaced it,
    and a backlog drained after an outage said the alert rose at the batch's last window."""
    daemon, client = daemon_with(drifting, tmp_path)
    daemon.alerts.hold_raises = True
    for i in range(3):
        daemon.alerts.apply("pump", T0 + 2 * i, 5.0, [{"name": "a", "share": 1.0}])
    daemon.alerts.apply("pump", T0 + 6, 9.0, [{"name": "b", "share": 1.0}])
    assert raised(client) == []  # held until the save
    daemon.alerts.hold_raises = False
    daemon.alerts.release_raises()
    [event] = raised(client)
    assert (event["ts"], event["score"]) == ("2026-01-01T00:00:04.000Z", 5.0), event  # T0 + 4
    assert event["channels"] == [{"name": "a", "share": 1.0}]


def named_unsaved(client: object, state_dir: Path) -> list[str]:
    """Watch ``client``'s publishes: the topics of those (a raise, a retained state) that named an
    alert id the state file in ``state_dir`` did not hold yet (a ``kill -9`` then restarted without
    it, and the fault was raised again under a new id, the first never cleared)."""
    unsaved: list[str] = []
    publish = client.publish

    def watched(topic: str, payload: bytes, qos: int = 0, retain: bool = False, properties: object = None) -> object:
        message = json.loads(payload)
        if message.get("alert_id") and message.get("state") in ("raised", "alerting"):
            saved = load_states(state_dir)[0].get(message["asset"]) if (state_dir / STATE_FILE).exists() else None
            if saved is None or saved.alert_id != message["alert_id"]:
                unsaved.append(topic)
        return publish(topic, payload, qos, retain)

    client.publish = watched
    return unsaved


def test_a_held_raises_retained_state_waits_for_the_save(drifting: Bundle, tmp_path: Path) -> None:
    """A raise held while its batch is scored: the asset's retained state, which names the alert id,
    goes out with the raise after the save, not at the window that raised it (a crash between left
    a retained state naming an alert no raise or clear ever told), and neither does its paging."""
    daemon, client = daemon_with(drifting, tmp_path)
    unsaved = named_unsaved(client, tmp_path)
    daemon.alerts.hold_raises = True  # (as a batch is scored)
    for i in range(3):
        daemon.alerts.apply("pump", T0 + 2 * i, 5.0, [])
    assert daemon.alerts.state_of("pump").status == "alerting"
    assert not value(daemon, "sensorguard_anomaly_active", asset="pump")
    daemon.alerts.hold_raises = False
    daemon.alerts.release_raises()
    assert any(t == "sensorguard/state/pump" and b'"alerting"' in p for t, p, _ in client.published)
    assert unsaved == [] and value(daemon, "sensorguard_anomaly_active", asset="pump") == 1


def test_a_raise_owed_at_an_unshelve_is_saved_before_it_or_its_state_goes_out(drifting: Bundle, tmp_path: Path) -> None:
    """An alert that rose while shelved is announced once unshelved (``apply_control_changes``):
    the state file holds it before its raise or its retained state goes out, as a
    batch's raises do (one that rose in a short hold may not be in the file yet: a crash then
    raised it again under a new id at the restart)."""
    daemon, client = daemon_with(drifting, tmp_path)
    daemon.controls.apply(Command("shelve", "pump", until=time.time() + 3600), now=time.time())
    for i in range(3):
        daemon.alerts.apply("pump", T0 + 2 * i, 5.0, [])
    assert raised(client) == [] and daemon.alerts.state_of("pump").status == "alerting"
    assert daemon.controls.apply(Command("shelve", "pump", until=time.time()), now=time.time())[0]  # unshelved
    unsaved = named_unsaved(client, tmp_path)
    daemon.alerts.request_control_change("pump", None)
    daemon.alerts.apply_control_changes()
    assert len(raised(client)) == 1 and unsaved == []
    assert value(daemon, "sensorguard_anomaly_active", asset="pump") == 1


def test_a_retained_state_never_goes_back_in_reading_time(drifting: Bundle) -> None:
    """A sensor fault's state goes out at its reading's time, before the batch that holds the windows
    before that reading is scored: the states those windows publish say that time still, not their
    own earlier ones (a retained state's time went backwards, and a consumer that keeps an asset's
    latest state by its time threw the newer ones away)."""
    daemon, client = make(drifting)
    daemon.alerts.sensor("pump", SensorEvent("out_of_range", "a", True, T0 + 20, 9.0))
    daemon.alerts.apply("pump", T0 + 10, 0.1, [])  # the first window: its state is published
    daemon.alerts.apply("pump", T0 + 30, 0.1, [])  # (a later window says its own time)
    daemon.alerts.publish_state("pump")
    times = [json.loads(p)["ts"] for t, p, _ in client.published if t == "sensorguard/state/pump"]
    assert times == ["2026-01-01T00:00:20.000Z", "2026-01-01T00:00:20.000Z", "2026-01-01T00:00:30.000Z"]


def test_a_silent_assets_state_sent_again_leaves_no_time_behind(drifting: Bundle) -> None:
    """A silent asset's stale state sent again (the broker lost its retained states) is forgotten
    as the rest of the asset was when it went silent: no per-asset entry stays for an asset that
    may never come back (fleets churn: kept for each, they grew for good)."""
    daemon, client = make(drifting)
    daemon.alerts.apply("pump", T0, 0.1, [])
    daemon.alerts.end("pump", T0 + 5)
    assert "pump" not in daemon.alerts._stated
    client.published.clear()
    daemon.alerts.states_lost()
    daemon.alerts.resend_states()
    states = [json.loads(p)["state"] for t, p, _ in client.published if t == "sensorguard/state/pump"]
    assert states == ["stale"] and "pump" not in daemon.alerts._stated


def alert_events(client: object, asset: str = "pump") -> list[tuple[str, str]]:
    return [(e["state"], e["alert_id"]) for e in (json.loads(p) for t, p, _ in client.published
                                                  if t == f"sensorguard/alerts/{asset}")]


def test_a_dropped_clear_goes_out_before_the_assets_next_raise(drifting: Bundle) -> None:
    """The full outgoing queue dropped an alert's clear (kept to send again at a tick); room again,
    and the asset's next alert rises before that tick: the kept clear goes out first. After the
    next raise, a consumer that follows an asset's alerts in order read the old clear as the end of
    the new alert, and the asset as normal while its second alert was up."""
    daemon, client = make(drifting)
    raise_alert(daemon)
    first = daemon.alerts.state_of("pump").alert_id
    client.queued_out = lambda: mqtt.MAX_QUEUED_OUT  # the broker is away
    for i in range(3, 9):
        daemon.alerts.apply("pump", T0 + i, 0.1, [])  # cleared: dropped, kept
    assert daemon.alerts.state_of("pump").status == "normal" and alert_events(client) == [("raised", first)]
    client.queued_out = lambda: 0  # back, before the tick that sends the kept clear
    for i in range(9, 12):
        daemon.alerts.apply("pump", T0 + i, 5.0, [])
    second = daemon.alerts.state_of("pump").alert_id
    assert alert_events(client) == [("raised", first), ("cleared", first), ("raised", second)]


def test_a_clear_waits_behind_the_assets_earlier_clear_still_refused(drifting: Bundle) -> None:
    """A clear kept to send again, and refused again when tried (the client's own queue said full):
    the asset's next clear waits behind it, not sent before it (an alert's clear told before the
    earlier alert's, so a consumer following the asset in order ended up with the first one open)."""
    daemon, client = make(drifting)
    raise_alert(daemon)
    first = daemon.alerts.state_of("pump").alert_id
    client.queued_out = lambda: mqtt.MAX_QUEUED_OUT
    for i in range(3, 9):
        daemon.alerts.apply("pump", T0 + i, 0.1, [])  # cleared: dropped, kept
    client.queued_out = lambda: 0
    publish, jammed = client.publish, {"on": True}

    def refusing(topic: str, payload: bytes, qos: int = 0, retain: bool = False, properties: object = None) -> object:
        if jammed["on"] and first.encode() in payload and b'"cleared"' in payload:  # the old clear refused
            return SimpleNamespace(rc=paho.MQTT_ERR_QUEUE_SIZE, is_published=lambda: False)
        return publish(topic, payload, qos, retain)

    client.publish = refusing
    for i in range(9, 12):
        daemon.alerts.apply("pump", T0 + i, 5.0, [])  # a second alert, its raise told
    second = daemon.alerts.state_of("pump").alert_id
    for i in range(12, 18):
        daemon.alerts.apply("pump", T0 + i, 0.1, [])  # its clear: behind the first's, still refused
    assert [a for s, a in alert_events(client) if s == "cleared"] == []
    jammed["on"] = False
    daemon.alerts.resend_clears()
    assert [a for s, a in alert_events(client) if s == "cleared"] == [first, second]


def test_a_restored_alerts_readings_before_its_first_window_are_not_recorded_as_normal(
        drifting: Bundle, tmp_path: Path) -> None:
    """An alert up at the restart is still up: the readings that came in before its first window
    after the restart are held with it (filed as the alert's once it clears), none committed to the
    recording as normal data, where a retrain would learn the fault as normal operation. (Readings
    more than a guard band before the first judged window: ones whose windows were not judged,
    every channel with a sensor fault open, say; the guard band here is 22 s.)"""
    save_states(tmp_path / "s", {"pump": UP}, {})
    daemon, _ = make(drifting, record_dir=str(tmp_path / "rec"), record_guard_s=0, state_dir=str(tmp_path / "s"))
    for i in range(6):
        daemon.recorder.add("pump", T0 + i, np.zeros(3))
    daemon.alerts.apply("pump", T0 + 60, 5.0, [])
    assert daemon.alerts.state_of("pump").status == "alerting" and daemon.recorder.guard_s < 50
    assert daemon.recorder.held("pump") == [T0 + i for i in range(6)]

"""Edges of the alert application that no test pinned (found by mutating service/assets.py): which
windows are judged, and what an asset's state and metrics say."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sensorguard.service.alerts import AlertState
from sensorguard.service.bundle import Bundle
from sensorguard.service.state import save_states
from tests.test_daemon import T0, make
from tests.test_state import RULE

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

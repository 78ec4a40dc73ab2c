"""An asset back from a silence, no window of it judged yet, through a restart it stays quiet in."""

from __future__ import annotations

import json
import time

import pytest

from sensorguard.service.alerts import AlertState
from sensorguard.service.publisher import iso
from sensorguard.service.relayout import relayout_states
from sensorguard.service.state import STATE_FILE, save_states, saved_extras
from tests.test_daemon import T0, message, value
from tests.test_relayout import _plans
from tests.test_state import RULE, daemon_with


@pytest.fixture
def drifting(tiny_bundle):
    return tiny_bundle.with_threshold(1.0, {"method": "alerts", "drift": RULE.to_dict()})


def _published(client, topic: str) -> list[dict]:
    return [json.loads(p) for t, p, _ in client.published if t == topic]


def test_an_asset_back_from_a_silence_quiet_through_a_restart_is_told_silent_again(drifting, tmp_path):
    """Session 67 left it out: back from a silence (``sensor_ok`` told, its retained state ``normal``),
    a few readings in when the daemon stopped, and quiet after the restart, the asset was awaited
    unsaid: its entry (no window judged, no silence) read as an older file's silent one, so its state
    said ``normal`` for good while ``assets_silent`` counted it. The return is saved now
    (``returned_ts``) and such an asset is told silent again, as one a window of which was judged."""
    first, client = daemon_with(drifting, tmp_path)
    first.alerts.apply("pump", T0, 0.1, [])
    first.alerts.end("pump", T0 + 5)  # silent after its reading at T0 + 5
    first.ingest.handle(client, message("pump", T0 + 500))  # back: one reading, no window yet
    first.publish_sensor_faults()
    assert [e["state"] for e in _published(client, "sensorguard/alerts/pump")][-1] == "sensor_ok"
    first.stop()
    entry = json.loads((tmp_path / STATE_FILE).read_text())["assets"]["pump"]
    assert entry["returned_ts"] == T0 + 500 and "silent" not in entry

    second, client = daemon_with(drifting, tmp_path, stale_after_s=60)
    second.alerts.restore_until = time.monotonic() + 60  # as start() sets it
    client.published.clear()
    second.housekeeping(time.monotonic() + 61)  # it sent nothing since
    events = _published(client, "sensorguard/alerts/pump")
    assert [(e["state"], e["kind"], e["ts"]) for e in events] == [("sensor_fault", "silent", iso(T0 + 500))]
    assert _published(client, "sensorguard/state/pump")[-1]["state"] == "stale"
    assert value(second, "sensorguard_assets_silent") == 1
    second.alerts.save()  # silent again: the silence is saved, the return mark gone
    entry = json.loads((tmp_path / STATE_FILE).read_text())["assets"]["pump"]
    assert "silent" in entry and "returned_ts" not in entry


def test_the_return_mark_ends_at_the_first_judged_window_and_a_restart_restates_it(drifting, tmp_path):
    """The mark lasts until a window of the asset is judged; while it lasts a restart restates the
    asset's state (naming the model served), at the time it came back, not the clock's."""
    first, client = daemon_with(drifting, tmp_path)
    first.alerts.apply("pump", T0, 0.1, [])
    first.alerts.end("pump", T0 + 5)
    first.ingest.handle(client, message("pump", T0 + 500))
    first.publish_sensor_faults()
    first.stop()
    second, client = daemon_with(drifting, tmp_path, stale_after_s=60)
    second.alerts.resend_states()
    states = _published(client, "sensorguard/state/pump")
    assert states and states[-1]["state"] == "normal" and states[-1]["score"] is None
    assert states[-1]["ts"] == iso(T0 + 500)  # when it came back, not the clock's time
    second.alerts.apply("pump", T0 + 510, 0.2, [])  # its first window back
    second.alerts.save()
    assert "returned_ts" not in json.loads((tmp_path / STATE_FILE).read_text())["assets"]["pump"]


def test_a_layout_change_moves_the_return_mark_unless_judged_or_silent_since(tmp_path):
    save_states(tmp_path, {}, {}, returned={"a/p": T0 + 5, "b/p": T0 + 5})
    relayout_states(str(tmp_path), _plans(tmp_path, 2))
    moved = {**saved_extras(tmp_path / "w0").returned, **saved_extras(tmp_path / "w1").returned}
    assert moved == {"a/p": T0 + 5, "b/p": T0 + 5}
    # back to one daemon: a copy judged after the return, or silent after it, drops the mark
    save_states(tmp_path / "w0", {}, {}, returned={"c/p": T0 + 5, "c/q": T0 + 5, "c/r": T0 + 5})
    save_states(tmp_path / "w1", {"c/p": AlertState(last_score=0.3)}, {}, judged={"c/p": T0 + 9},
                silent={"c/q": (T0 + 9, 0.1), "c/r": (T0, 0.1)})
    relayout_states(str(tmp_path), _plans(tmp_path, 1))
    merged = saved_extras(tmp_path)
    assert merged.returned == {"c/r": T0 + 5}
    assert set(merged.silences) == {"c/q"}

"""A restart's sensor watch: the last plausible values of channels walked past their limits
(``past_limits`` in ``assets.json``), when they are taken back and when not, and what a save costs."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np

from sensorguard.service.scoring_worker import WALK_SAVE_S
from sensorguard.service.sensors import ChannelLimits, SensorRules, SensorWatch
from sensorguard.service.series_faults import watch_rows
from sensorguard.service.state import saved_extras
from sensorguard.service.windows import Buffers
from tests.test_daemon import T0, make, message
from tests.test_state import daemon_with

LIMITS = (ChannelLimits(-100.0, 100.0, None, jump=20.0),) * 3
WALK = (0.0, 50.0, 90.0, 105.0, 120.0, 135.0, 150.0)  # b walks past 100 in steps of 15


def _faults(client, asset: str = "pump-1") -> list[tuple[str, str]]:
    events = [json.loads(p) for t, p, _ in client.published if t == f"sensorguard/alerts/{asset}"]
    return [(e["state"], e["kind"]) for e in events if e["state"] in ("sensor_fault", "sensor_ok")]


def _bundle(tiny_bundle, limits=LIMITS):
    return replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5))


def _walk(daemon, client, values, t0: int = 0) -> None:
    for i, b in enumerate(values):
        daemon.ingest.handle(client, message("pump-1", T0 + t0 + i, mid=t0 + i + 1, a=1.0 + i, b=b, c=0.0))
    daemon.publish_sensor_faults()


def test_a_silence_while_the_daemon_was_down_starts_the_watch_afresh(tiny_bundle, tmp_path):
    """The machine was off while the daemon was down: its readings come back 1,000 s after the last
    judged window. Offline that gap is a silence and starts a new watch (from the nearest limit);
    the restart took the value from before it and told a cold start's reading a sensor fault (a
    review). The saved values are taken only within the silence of the asset's last judged window."""
    bundle = _bundle(tiny_bundle)
    first, client = daemon_with(bundle, tmp_path, stale_after_s=60)
    _walk(first, client, WALK)
    first.alerts.apply("pump-1", T0 + 6, 0.5, [])
    first.stop()
    second, client = daemon_with(bundle, tmp_path, stale_after_s=60)
    second.ingest.handle(client, message("pump-1", T0 + 1000, mid=99, a=0.0, b=-110.0, c=0.0))
    second.publish_sensor_faults()
    times = np.r_[T0 + np.arange(7.0), T0 + 1000]
    values = np.c_[np.zeros(8), [*WALK, -110.0], np.zeros(8)]
    _, _, opened = watch_rows(times, values, replace(bundle.sensors, silence_s=60.0))
    assert opened == 0  # offline: the silence starts a new watch, -110 is 10 past the nearest limit
    assert _faults(client) == []


def test_a_silent_asset_leaves_no_past_limits_behind(tiny_bundle, tmp_path):
    """Its buffer goes with its silence, and so do the values a restart would go on from."""
    first, client = daemon_with(_bundle(tiny_bundle), tmp_path, stale_after_s=60)
    _walk(first, client, WALK)
    first.alerts.apply("pump-1", T0 + 6, 0.5, [])
    first.alerts.save()
    assert saved_extras(tmp_path).past == {"pump-1": {"b": 150.0}}
    first.housekeeping(time.monotonic() + 61)  # silent: its buffer forgotten
    first.stop()
    assert saved_extras(tmp_path).past == {}


def test_a_restart_under_limits_that_hold_the_saved_value_judges_it_afresh(tiny_bundle, tmp_path):
    first, client = daemon_with(_bundle(tiny_bundle), tmp_path)
    _walk(first, client, WALK)
    first.alerts.apply("pump-1", T0 + 6, 0.5, [])
    first.stop()
    wide = (ChannelLimits(-200.0, 200.0, None, jump=40.0),) * 3
    second, client = daemon_with(_bundle(tiny_bundle, wide), tmp_path)
    assert second.buffers.resumed_past == {"pump-1": {"b": 150.0}}
    _walk(second, client, (160.0,), t0=7)
    assert second.buffers._assets["pump-1"].watch.good[1] == 160.0 and _faults(client) == []


def test_cluster_mode_saves_no_past_limits(tiny_bundle, tmp_path):
    """Cluster mode reads nothing back from the file (the state bucket is what an owner adopts), so a
    save there neither writes them nor takes the ingest's lock for them (a review)."""
    daemon, _ = make(_bundle(tiny_bundle), state_dir=str(tmp_path), cluster=("nats://127.0.0.1:1",))
    for i, b in enumerate(WALK):
        daemon.buffers.add("pump-1", T0 + i, {"a": 1.0 + i, "b": b, "c": 0.0}, 0.0)
    daemon.alerts.apply("pump-1", T0 + 6, 0.5, [])
    daemon.alerts.save()
    assert saved_extras(tmp_path).judged and saved_extras(tmp_path).past == {}


def test_a_save_looks_only_at_watches_whose_last_reading_was_not_quiet(monkeypatch):
    """Every save walked every channel of every asset under the ingest's lock (a review: 30 to 70 ms
    for 10,000 assets, the network thread waiting). A reading taken on the quiet path has every
    value inside its limits: that watch has none past them, and is not looked at."""
    rules = SensorRules(("a", "b", "c"), LIMITS, fill_limit=5)
    bufs = Buffers(("a", "b", "c"), window=16, hop=2, sensors=rules)
    for k in range(50):
        bufs.add(f"p{k}", T0, {"a": 0.0, "b": 1.0, "c": 0.0}, 0.0)
    for k, b in enumerate((90.0, 105.0, 110.0)):
        bufs.add("p7", T0 + 1 + k, {"a": 0.0, "b": b, "c": 0.0}, 0.0)
    looked = []
    real = SensorWatch.past_limits
    monkeypatch.setattr(SensorWatch, "past_limits", lambda self, r: looked.append(self) or real(self, r))
    assert bufs.past_limits() == {"p7": {"b": 110.0}} and len(looked) == 1
    bufs.add("p7", T0 + 4, {"a": 0.0, "b": 95.0, "c": 0.0}, 0.0)  # back inside: quiet again
    assert bufs.past_limits() == {}


def test_a_swap_to_narrower_limits_saves_a_value_now_past_them():
    """A value inside the old limits, taken on the quiet path, may lie past the new ones."""
    bufs = Buffers(("a", "b", "c"), window=16, hop=2, sensors=SensorRules(("a", "b", "c"), LIMITS, fill_limit=5))
    bufs.add("pump-1", T0, {"a": 0.0, "b": 90.0, "c": 0.0}, 0.0)
    assert bufs.past_limits() == {}
    narrow = (ChannelLimits(-50.0, 50.0, None, jump=10.0),) * 3
    bufs.set_sensors(SensorRules(("a", "b", "c"), narrow, fill_limit=5))
    assert bufs.past_limits() == {"pump-1": {"b": 90.0}}


def test_a_walk_that_moves_on_by_half_a_jump_is_saved_within_a_tick(tiny_bundle, tmp_path):
    """Saved only every ``SAVE_INTERVAL_S`` (30 s), a ``kill -9`` during a walk restarted the watch
    from an older value, or from the limit when the walk crossed it since the last save: the
    process was told a sensor fault, held, and the alert it raised cleared (an operator walk). A
    walked channel that moved by half its ``jump`` (here 10) since the last look asks for a save
    at the next housekeeping tick; one that moved less does not."""
    daemon, client = daemon_with(_bundle(tiny_bundle), tmp_path)
    _walk(daemon, client, WALK)
    daemon.alerts.apply("pump-1", T0 + 6, 0.5, [])
    now = time.monotonic()  # (the ticks below: WALK_SAVE_S apart, all before the next timed save)
    daemon.housekeeping(now)
    assert saved_extras(tmp_path).past == {"pump-1": {"b": 150.0}}
    _walk(daemon, client, (155.0,), t0=7)
    daemon.housekeeping(now + WALK_SAVE_S)
    assert saved_extras(tmp_path).past == {"pump-1": {"b": 150.0}}  # less than half a jump: no save
    _walk(daemon, client, (165.0, 172.0), t0=8)
    daemon.housekeeping(now + 2 * WALK_SAVE_S)
    assert saved_extras(tmp_path).past == {"pump-1": {"b": 172.0}}
    daemon.stop()


def test_a_walk_asks_for_a_save_at_most_every_walk_save_s(tiny_bundle, tmp_path):
    """A plant-wide walk (10,000 assets past their limits) asked for a save of the whole state file
    every second (a review: 0.2 s of the scoring thread and 1.7 MB each). A move within
    ``WALK_SAVE_S`` of the last save waits for the first tick after it, and is not forgotten."""
    daemon, client = daemon_with(_bundle(tiny_bundle), tmp_path)
    _walk(daemon, client, WALK)
    daemon.alerts.apply("pump-1", T0 + 6, 0.5, [])
    now = time.monotonic()
    daemon.housekeeping(now)
    _walk(daemon, client, (162.0,), t0=7)
    daemon.housekeeping(now + 1)
    assert saved_extras(tmp_path).past == {"pump-1": {"b": 150.0}}
    daemon.housekeeping(now + WALK_SAVE_S)
    assert saved_extras(tmp_path).past == {"pump-1": {"b": 162.0}}
    daemon.stop()


def test_noise_on_a_half_jump_edge_saves_nothing_more(tiny_bundle, tmp_path, monkeypatch):
    """A channel that settled past its limit, its noise across a half-``jump`` step's edge (150 here):
    cut into fixed steps, its mark changed at nearly every look and the whole state file was saved
    every second for as long as it stayed there (a review). Only a move of half a ``jump`` from the
    value saved asks for a save."""
    from sensorguard.service import carried_states

    daemon, client = daemon_with(_bundle(tiny_bundle), tmp_path)
    _walk(daemon, client, WALK)
    daemon.alerts.apply("pump-1", T0 + 6, 0.5, [])
    now = time.monotonic()
    daemon.housekeeping(now)
    assert saved_extras(tmp_path).past == {"pump-1": {"b": 150.0}}
    saves = []
    real = carried_states.save_states
    monkeypatch.setattr(carried_states, "save_states", lambda *a, **k: saves.append(1) or real(*a, **k))
    for i, b in enumerate((149.5, 150.5, 149.0, 151.0, 149.5, 150.5)):  # (each tick past WALK_SAVE_S)
        _walk(daemon, client, (b,), t0=7 + i)
        daemon.housekeeping(now + WALK_SAVE_S + i)
    assert saves == [] and saved_extras(tmp_path).past == {"pump-1": {"b": 150.0}}
    _walk(daemon, client, (160.5,), t0=13)
    daemon.housekeeping(now + WALK_SAVE_S + 6)
    assert saved_extras(tmp_path).past == {"pump-1": {"b": 160.5}}
    daemon.stop()

"""Sensor-fault rules a mutation audit found unpinned (service/sensors.py, open_faults.py, asset_faults.py).

Each test passed on the code as it stands and failed under a small change to the rule it names that
every other test let through. No trained model: each runs in milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sensorguard.service.sensors import ChannelLimits, SensorRules, SensorWatch, learn_sensor_rules
from tests.test_daemon import T0, make, value

NAN = math.nan
INF = math.inf


def kinds(events):
    return [(e.kind, e.fault) for e in events]


def two(limits: ChannelLimits, fill_limit: int = 5) -> SensorRules:
    """Rules for channels a (the one under test) and b (always 1.0, never faulted)."""
    return SensorRules(("a", "b"), (limits, ChannelLimits(-10.0, 10.0, None)), fill_limit=fill_limit)


# --- bundle.json ``sensors``: what a hand-written file may say -------------------------------------------


@pytest.mark.parametrize("entry, needle", [
    ({"low": 5.0, "high": 5.0}, "below"),  # an empty range: every reading out of range
    ({"low": 0.0, "high": 1.0, "stuck_after": 1}, "stuck_after"),  # stuck at every reading, for good
    ({"low": 0.0, "high": 1.0, "stuck_after": 2.5}, "stuck_after"),  # not a count of readings
])
def test_limits_a_bundle_cannot_mean_are_refused_at_their_boundaries(entry, needle):
    """``low < high`` strictly, ``stuck_after`` an integer >= 2: a bundle saying otherwise would
    flag every reading (or round a fraction silently); refused at load, with the rule named."""
    with pytest.raises(ValueError, match=needle):
        SensorRules.from_dict({"a": entry}, ("a",), 5)


def test_the_smallest_limits_a_bundle_may_say_are_taken():
    """The other side of each boundary: stuck_after 2, an integral float 3.0, a one-point ``seen``
    range (a channel that held one level in training) are valid and load as said."""
    rules = SensorRules.from_dict({"a": {"low": 0.0, "high": 1.0, "stuck_after": 2, "seen": [0.5, 0.5]},
                                   "b": {"low": 0.0, "high": 1.0, "stuck_after": 3.0}}, ("a", "b"), 5)
    assert rules.limits[0] == ChannelLimits(0.0, 1.0, 2, (0.5, 0.5))
    assert rules.limits[1].stuck_after == 3 and type(rules.limits[1].stuck_after) is int


# --- learned limits --------------------------------------------------------------------------------------


def test_a_channel_barely_moving_in_training_gets_a_tenth_of_its_magnitude_as_width():
    """A level near 100 that moved by 0.5 in training: its plausible range is widened by 3 * 10.05 (a
    tenth of its magnitude) on each side, not by 3 * 0.5, so its first ordinary move is not a sensor
    fault. The magnitude is the larger end's (range [10, 10.5]: width 1.05, not 1.0)."""
    values = np.c_[np.r_[np.full(10, 100.0), np.full(10, 100.5)], np.r_[np.full(10, 10.0), np.full(10, 10.5)]]
    a, b = learn_sensor_rules(("a", "b"), values, np.zeros(20, dtype=int), fill_limit=2).limits
    assert a.low == pytest.approx(100.0 - 3 * 10.05) and a.high == pytest.approx(100.5 + 3 * 10.05)
    assert b.low == pytest.approx(10.0 - 3 * 1.05) and b.high == pytest.approx(10.5 + 3 * 1.05)


def test_a_channel_constant_in_training_has_no_seen_range():
    """``seen`` restricts where a still run is stuck; a constant channel is never stuck, so it has
    none and ``bundle.json`` carries none for it (a channel that moved keeps its own)."""
    values = np.c_[np.full(40, 5.0), np.repeat(np.arange(20.0), 2)]
    rules = learn_sensor_rules(("const", "steps"), values, np.zeros(40, dtype=int), fill_limit=2)
    assert rules.limits[0].stuck_after is None and rules.limits[0].seen is None
    assert "seen" not in rules.to_dict()["const"] and rules.to_dict()["steps"]["seen"] == [0.0, 19.0]


# --- the watch -------------------------------------------------------------------------------------------


def test_a_channel_dead_since_the_start_is_held_at_the_middle_of_its_limits():
    """With no plausible value yet, a missing channel is held at the middle of its limits (where the
    scaler centres it), not at its low limit; with infinite limits, 0."""
    watch = SensorWatch(2)
    row = [NAN, 1.0]
    assert kinds(watch.step(0.0, row, two(ChannelLimits(0.0, 100.0, None), fill_limit=0))) == [("missing", True)]
    assert row == [50.0, 1.0]
    assert ChannelLimits(-INF, INF, None).hold == 0.0
    assert ChannelLimits(-INF, 10.0, None).hold == 10.0


def test_a_faulted_channel_is_held_at_its_last_plausible_value():
    """An implausible or missing value is replaced by the channel's last plausible reading, so the
    window continues where the sensor left off (not at the middle of its limits). A missing reading
    before the fault opens leaves that last plausible value as it was."""
    rules = two(ChannelLimits(0.0, 100.0, None), fill_limit=1)
    watch = SensorWatch(2)
    held = []
    for t, v in enumerate([7.0, 500.0, 8.0]):
        row = [v, 1.0]
        watch.step(float(t), row, rules)
        held.append(row[0])
    assert held == [7.0, 7.0, 7.0]  # 8.0 in range, but the out_of_range fault's off-delay still holds
    watch = SensorWatch(2)
    held = []
    for t, v in enumerate([7.0, NAN, NAN]):
        row = [v, 1.0]
        watch.step(float(t), row, rules)
        held.append(row[0])
    assert held[0] == 7.0 and held[2] == 7.0 and ("missing", 0) in watch.open


def test_an_infinite_value_is_missing_not_out_of_range():
    """The module's rule: absent, NaN or infinite is ``missing`` (forward fill's business up to
    ``fill_limit``), not an implausible reading of a live sensor."""
    watch = SensorWatch(2)
    rules = two(ChannelLimits(0.0, 10.0, None), fill_limit=1)
    assert kinds(watch.step(0.0, [1.0, 1.0], rules)) == []
    assert kinds(watch.step(1.0, [INF, 1.0], rules)) == []
    assert kinds(watch.step(2.0, [-INF, 1.0], rules)) == [("missing", True)]


def test_a_gap_within_the_fill_limit_resets_once_a_value_comes():
    """Missing readings count in a row: a present reading between two short gaps restarts the count,
    also when it takes the quick path (nothing open, every value in range)."""
    rules = two(ChannelLimits(0.0, 10.0, None), fill_limit=2)
    watch = SensorWatch(2)
    seen = [kinds(watch.step(float(t), [v, 1.0], rules)) for t, v in enumerate([1.0, NAN, 2.0, NAN, NAN, 3.0])]
    assert seen == [[]] * 6 and watch.missing == [0, 0]



def test_a_missing_fault_follows_the_fill_limit_of_the_rules_in_force():
    """``missing`` means more than ``fill_limit`` readings missing in a row under the rules in force:
    after a hot swap to a bundle with a larger fill limit (no ``fill_limit`` setting overrides it), a
    gap within the new limit is forward fill's again, so the fault closes even before a value comes."""
    short, long = two(ChannelLimits(0.0, 10.0, None), fill_limit=2), two(ChannelLimits(0.0, 10.0, None), fill_limit=5)
    watch = SensorWatch(2)
    seen = [kinds(watch.step(float(t), [v, 1.0], short)) for t, v in enumerate([1.0, NAN, NAN, NAN])]
    assert seen[-1] == [("missing", True)]
    assert kinds(watch.step(4.0, [NAN, 1.0], long)) == [("missing", False)]  # 4 in a row: within 5
    assert kinds(watch.step(5.0, [NAN, 1.0], long)) == []
    assert kinds(watch.step(6.0, [NAN, 1.0], long)) == [("missing", True)]  # 6 in a row: past 5

def test_a_one_channel_model_never_calls_a_value_out_of_range_even_on_the_full_step():
    """In a model of one channel an extreme value is the process's (``judges_range``): also when a
    gap just before it sends the reading through the full step rather than the quick path."""
    rules = SensorRules(("a",), (ChannelLimits(0.0, 10.0, None),), fill_limit=3)
    watch = SensorWatch(1)
    assert kinds(watch.step(0.0, [NAN], rules)) == []
    row = [1e6]
    assert kinds(watch.step(1.0, row, rules)) == [] and row == [1e6]  # kept, for the score to judge


def test_a_restored_missing_fault_goes_on_and_ends_at_the_first_reading():
    """A ``missing`` fault saved open by the previous run is resumable under any rules that know the
    channel, and the watch ends it at the channel's first value (not announced again before)."""
    rules = two(ChannelLimits(0.0, 10.0, None), fill_limit=2)
    fault = {"kind": "missing", "channel": "a", "since": 0.0, "value": NAN}
    assert rules.resumable(fault)
    watch = SensorWatch(2)
    watch.resume([fault], rules)
    assert watch.faulted() == (0,)
    assert kinds(watch.step(1.0, [NAN, 1.0], rules)) == []  # still missing: already open, not told again
    assert kinds(watch.step(2.0, [4.0, 1.0], rules)) == [("missing", False)]


def test_a_saved_fault_the_rules_cannot_judge_is_not_resumed_by_the_watch():
    """A watch resumes only what its rules can end: a ``stuck`` fault on a channel that can no longer
    be stuck (``stuck_after`` None, e.g. after a swap) or one on a channel it does not know stays
    closed, rather than open for good or failing the asset's first reading."""
    rules = two(ChannelLimits(0.0, 10.0, None))
    watch = SensorWatch(2)
    watch.resume([{"kind": "stuck", "channel": "a", "since": 0.0, "value": 3.0},
                  {"kind": "missing", "channel": "gone", "since": 0.0, "value": NAN}], rules)
    assert watch.open == set() and watch.faulted() == ()
    assert kinds(watch.step(1.0, [3.0, 1.0], rules)) == []


def test_faults_are_listed_by_channel_and_closed_in_a_fixed_order():
    """The retained state lists open faults by channel (model order), then kind; ``close_all`` (a swap
    to a bundle without limits) tells them in one sorted order, not the set's: the same events in the
    same order on every run and every worker."""
    channels = tuple(f"c{k}" for k in range(8))
    rules = SensorRules(channels, (ChannelLimits(0.0, 10.0, 5),) * 8, fill_limit=2)
    watch = SensorWatch(8)
    saved = [{"kind": kind, "channel": c, "since": 0.0, "value": 1.0}
             for c in reversed(channels) for kind in ("stuck", "out_of_range", "missing")]
    watch.resume(saved, rules)
    described = watch.describe(rules)
    assert described[:3] == [{"kind": "missing", "channel": "c0"}, {"kind": "out_of_range", "channel": "c0"},
                             {"kind": "stuck", "channel": "c0"}]
    assert [d["channel"] for d in described] == [c for c in channels for _ in range(3)]
    closed = [(e.kind, e.channel) for e in watch.close_all(1.0, channels)]
    assert closed == sorted(closed, key=lambda e: (("missing", "out_of_range", "stuck").index(e[0]), e[1]))
    assert watch.open == set()


def test_a_window_leaves_out_a_channel_faulted_in_any_of_its_rows_and_no_further():
    """``window_faults``: the window ending at row t covers rows t-window+1..t. A fault at row 2 is
    left out of the windows ending at rows 2..4 (window 3), not the one ending at row 5; and never
    across a segment boundary (a gap restarts the window)."""
    from sensorguard.service.series_faults import window_faults

    faulted = np.zeros((8, 2), dtype=bool)
    faulted[2, 1] = True
    out = window_faults(faulted, np.zeros(8, dtype=int), window=3)
    assert np.flatnonzero(out[:, 1]).tolist() == [2, 3, 4] and not out[:, 0].any()
    out = window_faults(faulted, np.r_[np.zeros(3, int), np.ones(5, int)], window=3)
    assert np.flatnonzero(out[:, 1]).tolist() == [2]  # rows 3.. start a new segment


def test_offline_readings_refused_for_their_rate_bridge_a_gap_as_live():
    """Offline, a gap between rows longer than ``silence_s`` starts the watch afresh, unless readings
    refused for their rate (``alive``) kept the asset alive through it, as they do live: then a channel
    stuck before the gap stays stuck after it. ``opened`` counts faults opened, not closes."""
    from sensorguard.service.series_faults import watch_rows

    rules = SensorRules(("a", "b"), (ChannelLimits(-100.0, 100.0, 5), ChannelLimits(-100.0, 100.0, None)),
                        fill_limit=5, silence_s=60.0)
    times = np.r_[np.arange(8.0), 200.0 + np.arange(3.0)]
    values = np.c_[np.ones(11), np.arange(11.0)]
    _, gap, _ = watch_rows(times, values, rules)
    assert gap[:, 0].tolist() == [False] * 4 + [True] * 4 + [False] * 3  # a new watch after the silence
    _, bridged, opened = watch_rows(times, values, rules, alive=np.arange(8.0, 200.0, 30.0))
    assert bridged[:, 0].tolist() == [False] * 4 + [True] * 7 and opened == 1
    values[9:, 0] = 2.0  # moves again at row 9: the fault closes there, and is still one opened
    _, _, opened = watch_rows(times, values, rules, alive=np.arange(8.0, 200.0, 30.0))
    assert opened == 1


# --- open faults and silent assets (service/open_faults.py, service/asset_faults.py) ---------------------


def open_faults():
    from prometheus_client import CollectorRegistry

    from sensorguard.service.metrics import Metrics
    from sensorguard.service.open_faults import OpenFaults

    registry = CollectorRegistry()
    return OpenFaults(Metrics(registry)), registry


def test_an_asset_whose_faults_all_closed_leaves_nothing_in_the_state_file():
    """Closing an asset's last channel fault forgets the asset: the saved faults (``state_dir``) do not
    grow an empty entry for every asset that ever had a fault."""
    faults, registry = open_faults()
    faults.change("p", "stuck", "a", 1.0, True, 3.0)
    faults.change("p", "stuck", "a", 2.0, False)
    assert faults.saved() == {} and faults.listed("p") == []
    assert registry.get_sample_value("sensorguard_sensor_faults_open") == 0


def test_an_asset_silent_again_is_the_newest_silence_for_the_cap():
    """The silent assets awaited are capped oldest first; one told silent again (a return with no
    usable reading, then quiet) is the newest, so the cap forgets the older silence, not it."""
    faults, _ = open_faults()
    assert faults.went_silent("a", 1.0, 0.0, kept=2) == []
    assert faults.went_silent("b", 2.0, 0.0, kept=2) == []
    assert faults.went_silent("a", 3.0, 0.0, kept=2) == []
    assert faults.went_silent("c", 4.0, 0.0, kept=2) == ["b"]
    assert faults.silent_assets() == ["a", "c"] and faults.silent("a") == (3.0, 0.0)


def test_an_asset_moved_to_another_worker_is_no_longer_silent_here():
    """Cluster mode: a silent asset handed to another worker is forgotten whole: not listed silent,
    not counted in ``assets_silent``, and its return is its new owner's to tell."""
    faults, registry = open_faults()
    faults.went_silent("p", 1.0, 0.5, kept=10)
    faults.change("p", "missing", "b", 1.0, True)
    faults.forget("p")
    assert faults.silent("p") is None and faults.silent_assets() == [] and faults.saved() == {}
    assert registry.get_sample_value("sensorguard_assets_silent") == 0
    assert not faults.back("p")  # no silent fault to close here
    assert faults._values == {}  # nor the value its fault opened on (kept, every moved asset's stayed)


def test_a_silent_asset_leaves_no_per_asset_entry_behind(tiny_bundle):
    """An asset that goes silent is forgotten but for its drift baseline and its awaited return: its
    score gauge goes, and so do its last window and its raise's publish handle (kept, every silent
    asset of a churning fleet was held for good)."""
    daemon, _ = make(tiny_bundle, stale_after_s=60)
    for i in range(3):
        daemon.alerts.apply("pump-1", T0 + i, 5.0, [])
    assert value(daemon, "sensorguard_anomaly_score", asset="pump-1") == 5.0
    daemon.alerts.end("pump-1", T0 + 2)
    assert value(daemon, "sensorguard_anomaly_score", asset="pump-1") is None
    alerts = daemon.alerts
    for kept in (alerts._latest, alerts._grid_ts, alerts._judged_ts, alerts._raise_info, alerts._states):
        assert "pump-1" not in kept


def test_a_restored_asset_silent_before_its_first_window_keeps_its_drift_baseline(tiny_bundle, tmp_path):
    """Restored after a restart and ended silent before its first window, an asset keeps the drift
    baseline it was restored with: back at the level it had drifted to, it is not raised against
    the bare line (the baseline is what the restart saved)."""
    from tests.test_state import RULE, daemon_with, raised

    bundle = tiny_bundle.with_threshold(1.0, {"method": "alerts", "drift": RULE.to_dict()})  # test_state's drifting
    first, _ = daemon_with(bundle, tmp_path)
    for i, level in enumerate([0.9] * 20 + [1.2] * 10):  # a slow drift
        first.alerts.apply("pump-2", T0 + i, level, [])
    first.stop()
    second, _ = daemon_with(bundle, tmp_path)
    second.alerts.end("pump-2", T0 + 30)  # silent before any window here
    second.stop()
    third, client = daemon_with(bundle, tmp_path)
    for i in range(5):
        third.alerts.apply("pump-2", T0 + 4000 + i, 1.2, [])
    assert third.snapshot()["pump-2"].status == "normal" and raised(client) == []


def test_an_adopted_asset_silent_before_its_first_window_names_no_old_channels_when_back(tiny_bundle):
    """An asset adopted from another worker lists that worker's top channels until its first window
    here. Silent before it, those channels go with it: back, its state (a sensor fault before any
    window) named the channels of a window from before its silence."""
    import json

    from sensorguard.service.alerts import AlertState
    from sensorguard.service.publisher import iso
    from sensorguard.service.sensors import SensorEvent

    daemon, client = make(tiny_bundle, stale_after_s=60)
    daemon.alerts.adopt("pump-1", AlertState(), None, True, channels=[{"name": "b", "share": 0.9}])
    daemon.alerts.end("pump-1", T0 + 9)
    daemon.alerts.sensor("pump-1", SensorEvent("stuck", "a", True, T0 + 500, 1.0))
    state = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/state/pump-1"][-1]
    assert state["channels"] == []
    assert {"kind": "stuck", "channel": "a", "since": iso(T0 + 500)} in state["sensor_faults"]


def test_restored_faults_keep_the_value_they_opened_on_through_the_next_save():
    """A stuck fault is resumed at the value it opened on (the next equal reading keeps it open): a
    fault restored from the state file must be saved again with that value, or after a second
    restart the still-stuck sensor's fault closed and opened again (told twice)."""
    faults, _ = open_faults()
    faults.restore({"p": [{"kind": "stuck", "channel": "a", "since": 5.0, "value": 3.25}]})
    assert faults.saved() == {"p": [{"kind": "stuck", "channel": "a", "since": 5.0, "value": 3.25}]}


def test_held_faults_count_every_channel_fault_of_a_held_asset():
    """``sensor_faults_held`` counts channel faults, not assets: two faults on one held asset are 2,
    a fault on an unheld asset is not counted."""
    faults, _ = open_faults()
    faults.change("p", "stuck", "a", 1.0, True, 1.0)
    faults.change("p", "missing", "b", 2.0, True)
    faults.change("q", "stuck", "a", 1.0, True, 1.0)
    assert faults.counted_on(lambda asset: asset == "p") == 2


def test_an_assets_faults_are_listed_oldest_first_silence_first():
    """The retained state lists open faults oldest first, whatever their kind or channel, and an
    asset's silence before its channel faults (pinned on the class: the daemon clears channel
    faults when an asset goes silent, so both rarely show at once)."""
    from sensorguard.service.publisher import iso

    faults, _ = open_faults()
    faults.change("p", "missing", "a", 2.0, True)
    faults.change("p", "stuck", "b", 1.0, True, 1.0)
    assert [(f["kind"], f["since"]) for f in faults.listed("p")] == [("stuck", iso(1.0)), ("missing", iso(2.0))]
    faults.went_silent("p", 3.0, 0.0, kept=10)
    assert [f["kind"] for f in faults.listed("p")] == ["silent", "stuck", "missing"]

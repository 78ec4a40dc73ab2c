"""Sensor faults apart from process anomalies: learned limits, the per-reading watch, the daemon's events."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from sensorguard.service.publisher import iso
from sensorguard.service.sensors import ChannelLimits, SensorRules, SensorWatch, learn_sensor_rules
from tests.test_daemon import T0, make, message, value

NAN = math.nan


def test_limits_are_the_training_range_widened_and_twice_the_longest_still_run():
    values = np.array([[0.0, 5.0, 1.0]] * 4 + [[10.0, 5.0, 2.0]] * 2 + [[5.0, 5.0, 3.0]] * 30)
    rules = learn_sensor_rules(("a", "b", "c"), values, np.zeros(len(values), dtype=int), fill_limit=2)
    a, b, c = rules.limits
    assert (a.low, a.high) == (-30.0, 40.0) and a.stuck_after == 60  # still for 30 readings in training
    assert b.stuck_after is None and (b.low, b.high) == (-10.0, 20.0)  # constant: the scaler's unit as width
    assert c.stuck_after == 60 and rules.fill_limit == 2


def test_a_channel_at_zero_through_training_is_not_out_of_range_at_its_first_move():
    """Its width was 1e-6 (a tenth of 0, floored): a closed valve's first opening to 0.5 was an
    ``out_of_range`` sensor fault, held and left out of the process score (found by review)."""
    values = np.c_[np.linspace(0, 1, 50), np.zeros(50)]
    rules = learn_sensor_rules(("a", "valve"), values, np.zeros(50, dtype=int), fill_limit=2)
    assert (rules.limits[1].low, rules.limits[1].high) == (-3.0, 3.0)
    watch = SensorWatch(2)
    assert kinds(watch.step(0.0, [0.5, 0.5], rules)) == []
    assert kinds(watch.step(1.0, [0.5, 50.0], rules)) == [("out_of_range", True)]  # implausible still is


def test_a_still_run_split_by_a_segment_boundary_is_two_runs():
    values = np.array([[1.0]] * 20 + [[2.0]])
    segments = np.r_[np.zeros(10, int), np.ones(11, int)]
    assert learn_sensor_rules(("a",), values, segments, 5).limits[0].stuck_after == 20


def kinds(events):
    return [(e.kind, e.fault) for e in events]


def test_the_watch_opens_and_closes_each_kind_once():
    rules = SensorRules(("a", "b"), (ChannelLimits(0.0, 10.0, 3), ChannelLimits(0.0, 10.0, None)), fill_limit=1)
    watch = SensorWatch(2)
    steps = [[1.0, 1.0], [1.0, 1.0], [1.0, NAN], [NAN, NAN], [2.0, 11.0], [3.0, 5.0], [3.0, 5.0], [3.0, 5.0]]
    seen = [kinds(watch.step(float(i), row, rules)) for i, row in enumerate(steps)]
    assert seen == [
        [], [],
        [("stuck", True)],  # a: three equal readings
        [("missing", True)],  # b: missing twice in a row, past fill_limit 1 (a's NaN keeps it stuck)
        [("stuck", False), ("out_of_range", True), ("missing", False)],
        [], [],  # b in range again: out_of_range ends at the third reading in range in a row (BACK_IN_RANGE)
        [("stuck", True), ("out_of_range", False)],
    ]
    assert watch.describe(rules) == [{"kind": "stuck", "channel": "a"}]


def test_a_value_chattering_across_its_limit_is_one_fault_not_one_per_reading():
    """Found by a walk: a pressure alternating between normal and 1000 at every reading sent a
    fault and a clear per reading (each a log line, an event and a retained state). The fault
    ends after BACK_IN_RANGE readings in range in a row; a new excursion counts afresh."""
    rules = SensorRules(("a", "b"), (ChannelLimits(0.0, 10.0, None),) * 2, fill_limit=1)
    watch = SensorWatch(2)
    values = [5.0, 11.0] * 50 + [5.0, 6.0, NAN, 5.0, 11.0, 5.0]
    seen = [kinds(watch.step(float(i), [5.0, v], rules)) for i, v in enumerate(values)]
    changes = [(i, e) for i, events in enumerate(seen) for e in events]
    assert changes == [(1, ("out_of_range", True)), (103, ("out_of_range", False)), (104, ("out_of_range", True))]
    assert watch.faulted() == (1,)
    watch = SensorWatch(2)  # a missing reading is not one in range (an audit: NaN counted, it closed a reading early)
    seen = [kinds(watch.step(float(i), [5.0, v], rules)) for i, v in enumerate([11.0, 5.0, NAN, 5.0, 5.0])]
    assert [(i, e) for i, events in enumerate(seen) for e in events] == [
        (0, ("out_of_range", True)), (4, ("out_of_range", False))]


@pytest.mark.parametrize("raw, needle", [
    ({"a": {"low": 1.0, "high": 0.0}}, "below"),
    ({"a": {"low": 0.0, "high": 1.0, "stuck_after": 0}}, "stuck_after"),
    ({"b": {"low": 0.0, "high": 1.0}}, "exactly"),
    ({"a": {"low": 0.0, "high": 1.0, "stuck_after": True}}, "stuck_after"),
    ({"a": {"low": 0.0, "high": 1.0, "stuck_after": float("inf")}}, "stuck_after"),
])
def test_bad_limits_in_a_bundle_are_refused(raw, needle):
    with pytest.raises(ValueError, match=needle):
        SensorRules.from_dict(raw, ("a",), 5)


def test_the_daemon_publishes_sensor_faults_apart_from_alerts(tiny_bundle):
    limits = (ChannelLimits(-100.0, 100.0, 5), ChannelLimits(-100.0, 100.0, None), ChannelLimits(-100.0, 100.0, None))
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5))
    daemon, client = make(bundle)
    for i in range(8):  # a stays at 1.0: stuck from the fifth reading on
        daemon.ingest.handle(client, message("pump-1", T0 + i, a=1.0, b=float(i), c=-float(i)))
    daemon.ingest.handle(client, message("pump-1", T0 + 8, a=2.0, b=500.0, c=0.0))  # moves again; b implausible
    daemon.publish_sensor_faults()  # what the scoring worker does before each batch
    events = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-1"]
    assert [(e["state"], e["kind"], e["channel"]) for e in events] == [
        ("sensor_fault", "stuck", "a"), ("sensor_ok", "stuck", "a"), ("sensor_fault", "out_of_range", "b")]
    assert events[-1]["value"] == 500.0 and events[0]["model"]["version"] == bundle.version
    states = [json.loads(p) for t, p, r in client.published if t == "sensorguard/state/pump-1" and r]
    assert states[-1]["sensor_faults"][0] | {"since": None} == {"kind": "out_of_range", "channel": "b", "since": None}
    assert value(daemon, "sensorguard_sensor_faults_total", kind="stuck") == 1
    assert value(daemon, "sensorguard_sensor_faults_open") == 1
    assert value(daemon, "sensorguard_readings_total") == 9  # a faulty channel loses no reading


def test_sensor_faults_of_a_held_asset_are_counted_apart(tiny_bundle):
    """The shipped rule paged half an hour into a maintenance whose technician unplugged a sensor (the
    runbook's cure for paging about a machine under work): ``sensor_faults_held`` counts the open
    faults of held assets, which the rule subtracts, from the tick after the hold starts to its end."""
    import time

    from sensorguard.service.commands import Command

    limits = (ChannelLimits(-100.0, 100.0, 5), ChannelLimits(-100.0, 100.0, None), ChannelLimits(-100.0, 100.0, None))
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5))
    daemon, client = make(bundle)
    for asset in ("pump-1", "pump-2"):
        for i in range(8):  # a stays at 1.0: stuck from the fifth reading on
            daemon.ingest.handle(client, message(asset, T0 + i, a=1.0, b=float(i), c=-float(i)))
    daemon.publish_sensor_faults()
    daemon.housekeeping(time.monotonic())
    assert value(daemon, "sensorguard_sensor_faults_open") == 2 and value(daemon, "sensorguard_sensor_faults_held") == 0
    assert daemon.controls.apply(Command("maintenance", "pump-1", action="start"), now=time.time())[0]
    daemon.housekeeping(time.monotonic())
    assert value(daemon, "sensorguard_sensor_faults_open") == 2 and value(daemon, "sensorguard_sensor_faults_held") == 1
    assert daemon.controls.apply(Command("maintenance", "pump-1", action="end"), now=time.time())[0]
    daemon.housekeeping(time.monotonic())
    assert value(daemon, "sensorguard_sensor_faults_held") == 0


def test_score_reports_the_same_sensor_faults_in_a_column(tiny_bundle, tmp_path, capsys):
    import pandas as pd

    from sensorguard.cli import main
    from sensorguard.service.bundle import save_bundle

    limits = (ChannelLimits(-100.0, 100.0, 5), ChannelLimits(-100.0, 100.0, None), ChannelLimits(-100.0, 100.0, None))
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5))
    rows = [{"timestamp": T0 + i, "a": 1.0 if i < 8 else float(i), "b": 500.0 if i == 8 else float(i), "c": 0.0}
            for i in range(20)]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    assert main(["score", str(save_bundle(bundle, tmp_path / "b")), str(tmp_path / "d.csv"),
                 "--out", str(tmp_path / "s.csv")]) == 0
    faults = pd.read_csv(tmp_path / "s.csv", keep_default_na=False)["sensor_faults"].tolist()
    assert faults[:4] == [""] * 4 and faults[4:8] == ["stuck:a"] * 4
    assert faults[8:11] == ["out_of_range:b"] * 3 and faults[11:] == [""] * 9  # (its off-delay: 3 in range)
    # a channel left out of a window has no error of its own there (a 0 read as a perfect fit: a walk)
    table = pd.read_csv(tmp_path / "s.csv")
    scored = table["score"].notna().to_numpy()
    held = scored & np.array([i - bundle.window < 10 for i in range(20)])  # windows holding b's fault (8-10)
    assert held.any() and table.loc[held, "error_b"].isna().all() and table.loc[held, "error_c"].notna().all()
    assert table.loc[scored & ~held, "error_b"].notna().all()
    # the summary names the channels (it said "2 sensor faults opened" alone: found by a README walk)
    assert "2 sensor faults opened (a, b)" in capsys.readouterr().out


def test_a_dead_sensor_raises_no_process_alarm_yet_a_process_fault_still_does(trained):
    from sensorguard.service.alerts import AlertRules
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.offline import score_data
    from tests.conftest import plant_frame

    bundle = trained[0]
    frame = plant_frame(rows=900, channels=3, seed=21)
    frame.loc[300:799, "c2"] = 1e6  # the sensor died: an implausible reading for 500 samples
    frame.loc[600:699, "c0"] += 6.0  # meanwhile a real process fault on another channel

    def alerts(sensors):
        data = series_from_frame(frame, "plant", policy=bundle.cleaning, sensors=sensors)
        return score_data(bundle, data, AlertRules()).alert

    held = alerts(bundle.sensors)
    assert held[320:600].sum() == 0  # the dead sensor alone: no process alarm
    assert held[600:720].any()  # the process fault: caught
    assert alerts(None)[320:600].all()  # without sensor limits the dead sensor alarms on every window


def sensing_buffers(window=4):
    from sensorguard.service.windows import Buffers

    limits = (ChannelLimits(-10.0, 10.0, None), ChannelLimits(-10.0, 10.0, None))
    return Buffers(("a", "b"), window=window, hop=1, sensors=SensorRules(("a", "b"), limits, fill_limit=5))


def test_a_channel_faulted_anywhere_in_a_window_is_left_out_of_it():
    bufs = sensing_buffers(window=4)
    for i in range(12):
        bufs.add("p", float(i), {"a": float(i % 3), "b": 99.0 if i == 5 else float(i % 2)}, 0.0)
    excluded = {w.ts: w.excluded for w in bufs.drain()}
    # row 5 out of range, rows 6 and 7 in its off-delay: the windows holding any of them
    assert [t for t, e in excluded.items() if e] == [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert excluded[5.0] == (1,) and excluded[11.0] == ()



def test_a_channel_dead_from_the_first_reading_is_held_so_the_asset_is_scored():
    """A channel NaN since the watch began (a restart, a new asset) had no plausible value to hold:
    every reading was dropped as missing_channel, no window was ever scored and the asset flapped
    silent (found by review). It is held inside its limits and left out, as a channel that died later."""
    bufs = sensing_buffers(window=4)
    reasons = [bufs.add("p", float(i), {"a": float(i % 3), "b": NAN}, 0.0) for i in range(16)]
    assert reasons[:5] == ["missing_channel"] * 5 and reasons[6:] == [None] * 10  # dropped until it is a fault
    windows = bufs.drain()
    assert len(windows) >= 6 and all(w.excluded == (1,) for w in windows)
    assert all(np.isfinite(w.window).all() for w in windows)

def test_priming_names_the_channel_faults_its_readings_leave_open_without_queueing_them():
    """Cluster mode's takeover primes the new owner's watch from readings its previous owner took
    and announced: the faults stay unannounced, but the new owner's retained state listed none of
    them until they closed (a known gap). Prime names those still open: here b is out of range from
    reading 6 on, and a's fault at reading 2 ended in its off-delay."""
    bufs = sensing_buffers()
    rows = [(float(i), {"a": 99.0 if i == 2 else 1.0, "b": 99.0 if i >= 6 else 2.0}) for i in range(10)]
    taken, opened = bufs.prime("p", rows, 0.0)
    assert taken == 10 and not bufs.sensor_events  # nothing announced again
    assert opened == [{"kind": "out_of_range", "channel": "b", "since": 6.0, "value": 99.0}]
    assert bufs.faulted("p") == (1,)
    # a full event queue (other assets' faults not yet published) dropped the primed readings'
    # events and counted them as lost: the new owner named no open fault (a review)
    from sensorguard.service.sensors import SensorEvent
    from sensorguard.service.windows import SENSOR_EVENTS_MAX

    full = sensing_buffers()
    waiting = [(f"q{i}", SensorEvent("stuck", "a", True, 0.0, 1.0)) for i in range(SENSOR_EVENTS_MAX)]
    full.sensor_events.extend(waiting)
    assert full.prime("p", rows, 0.0) == (10, opened)
    assert list(full.sensor_events) == waiting and full.sensor_events_dropped == 0


def test_a_hot_swap_to_a_bundle_without_sensor_limits_ends_the_open_faults():
    bufs = sensing_buffers()
    bufs.add("p", 0.0, {"a": 1.0, "b": 99.0}, 0.0)  # a first reading also tells a silent fault it ended
    assert [(e.kind, e.fault) for _, e in bufs.sensor_events] == [("silent", False), ("out_of_range", True)]
    bufs.sensor_events.clear()
    bufs.sensors = None
    bufs.add("p", 1.0, {"a": 1.0, "b": 99.0}, 0.0)
    assert [(e.kind, e.fault) for _, e in bufs.sensor_events] == [("out_of_range", False)]
    assert bufs.faulted("p") == ()


def test_a_window_with_every_channel_faulted_is_not_judged():
    from sensorguard.service.scorer import Scores, without_channels

    scores = Scores(error=np.array([2.0, 2.0]), score=np.array([4.0, 4.0]), channel_error=np.array([[1.0, 3.0]] * 2))
    out = without_channels(scores, np.array([[True, False], [True, True]]), threshold=0.5)
    assert out.score[0] == 6.0 and np.isnan(out.score[1])
    assert out.channel_error[0].tolist() == [0.0, 3.0]  # judged: the faulted channel counts nothing
    assert np.isnan(out.channel_error[1]).all()  # not judged: no channel error (was 0: "perfect")
    early = Scores(error=np.array([np.nan, 2.0]), score=np.array([np.nan, 4.0]),
                   channel_error=np.array([[np.nan, np.nan], [1.0, 3.0]]))  # no full window yet, then one
    out = without_channels(early, np.array([[True, False], [True, False]]), threshold=0.5)
    assert np.isnan(out.channel_error[0]).all() and out.channel_error[1].tolist() == [0.0, 3.0]


def test_the_fill_limit_setting_reaches_the_sensor_watch(tiny_bundle):
    limits = tuple(ChannelLimits(-100.0, 100.0, None) for _ in tiny_bundle.channels)
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5))
    daemon, _ = make(bundle, fill_limit=2)
    assert daemon.buffers.policy.fill_limit == 2 and daemon.buffers.sensors.fill_limit == 2


def test_readings_with_a_sensor_fault_open_are_not_recorded_for_retraining(tiny_bundle, tmp_path):
    import pandas as pd

    limits = tuple(ChannelLimits(-100.0, 100.0, None) for _ in tiny_bundle.channels)
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5))
    daemon, client = make(bundle, record_dir=str(tmp_path / "rec"), record_guard_s=0)
    for i in range(8):
        b = 500.0 if i in (2, 3) else float(i)
        daemon.ingest.handle(client, message("pump-1", T0 + i, a=float(i), b=b, c=1.0))
    daemon.recorder.flush(T0 + 100, force=True)
    files = sorted((tmp_path / "rec").glob("*/*.parquet"))
    recorded = sorted(pd.concat([pd.read_parquet(f) for f in files]).ts - T0)
    # the held readings 2 and 3 are no data to learn from, nor 4 and 5 (the fault's off-delay)
    assert recorded == [0.0, 1.0, 6.0, 7.0]


@pytest.mark.parametrize("seed", range(5))
def test_the_quick_path_leaves_the_state_the_full_step_would(seed):
    rng = np.random.default_rng(seed)
    rules = SensorRules(("a", "b", "c"), tuple(ChannelLimits(-5.0, 5.0, 6, None if k == 0 else (-2.0, 2.0))
                                              for k in range(3)), fill_limit=2)
    quick, full = SensorWatch(3), SensorWatch(3)
    for t in range(400):
        row = np.round(rng.normal(0, 2.5, 3)).tolist()  # repeats, excursions out of range
        if rng.random() < 0.1:
            row[int(rng.integers(3))] = NAN
        if rng.random() < 0.05:
            row = [row[0]] * 3
        full.missing_any = True  # forces the full step
        row_q, row_f = list(row), list(row)
        assert quick.step(float(t), row_q, rules) == full.step(float(t), row_f, rules)
        assert np.array_equal(row_q, row_f, equal_nan=True)  # the same values held
        for name in ("still", "missing", "open"):
            assert getattr(quick, name) == getattr(full, name), (t, name)
        for name in ("last", "good"):
            assert np.array_equal(getattr(quick, name), getattr(full, name), equal_nan=True), (t, name)
    quick, full = SensorWatch(3), SensorWatch(3)  # a held channel reaching stuck_after with nothing open: the
    for t in range(10):  # quick path's own edge, which random rows never met (an audit: one late passed)
        row = [1.0, float(t % 3) - 1.0, float(t % 2)]
        full.missing_any = True
        assert quick.step(float(t), list(row), rules) == full.step(float(t), list(row), rules), t
        assert quick.open == full.open, t
    assert ("stuck", 0) in full.open



def test_a_silence_starts_the_watch_afresh_offline_as_live(tiny_bundle):
    """Live, a silent asset's watch is forgotten (its stuck count and open faults with it); offline
    one watch ran through the gap, so a channel stuck before it stayed faulted, and left out of the
    score, on every row after it (found by review)."""
    import time

    from sensorguard.service.series_faults import watch_rows

    limits = (ChannelLimits(-100.0, 100.0, 5), ChannelLimits(-100.0, 100.0, None), ChannelLimits(-100.0, 100.0, None))
    rules = SensorRules(tiny_bundle.channels, limits, fill_limit=5, silence_s=60.0)
    times = np.r_[T0 + np.arange(8.0), T0 + 1000 + np.arange(3.0)]  # a stuck at 1.0, silent 990 s, still 1.0
    values = np.c_[np.ones(11), np.arange(11.0), -np.arange(11.0)]
    _, faulted, _ = watch_rows(times, values, rules)
    offline = faulted[:, 0].tolist()

    bundle = replace(tiny_bundle, sensors=rules)
    daemon, client = make(bundle, stale_after_s=60)
    live = []
    for i, (ts, row) in enumerate(zip(times, values, strict=True)):
        if i == 8:
            daemon.housekeeping(time.monotonic() + 61)  # the gap: silent, its watch forgotten
        daemon.ingest.handle(client, message("pump-1", float(ts), mid=i + 1, a=row[0], b=row[1], c=row[2]))
        daemon.publish_sensor_faults()
        live.append(any(f["kind"] == "stuck" for f in daemon.alerts.sensor_faults("pump-1")))
    assert offline == live == [False] * 4 + [True] * 4 + [False] * 3
    # and score's sensor_faults column, which runs its own watch per machine (an audit: its restart
    # could go, and this test stayed green)
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.offline import sensor_fault_column

    frame = pd.DataFrame({"timestamp": pd.to_datetime(times, unit="s", utc=True),
                          **dict(zip(tiny_bundle.channels, values.T, strict=True))})
    data = series_from_frame(frame, "plant", time_column="timestamp", channels=tiny_bundle.channels, sensors=rules)
    column = sensor_fault_column(data, rules)
    assert [f == "stuck:a" for f in column] == offline


def test_a_quantized_channel_holding_a_level_training_never_read_is_not_stuck():
    """A flow that reads 32.0 (now and then 31 or 33) and holds 26.0 while a valve stays shut is
    the process, not a frozen sensor: called stuck, it was left out of the process score for the
    rest of the fault (found by a README walk). Held at a value training read, it is still stuck."""
    flow = np.full(400, 32.0)
    flow[::40], flow[20::40] = 31.0, 33.0  # held for 19 readings at a time
    rules = learn_sensor_rules(("flow",), flow[:, None], np.zeros(400, dtype=int), fill_limit=2)
    lim = rules.limits[0]
    assert lim.seen == (31.0, 33.0) and lim.stuck_after is not None and lim.low < 26.0
    moving = np.linspace(0, 1, 400)
    moving[200:206] = moving[200]  # a gap of 5 forward-filled: a run of 6, yet the channel moves (a review)
    lim_moving = learn_sensor_rules(("t",), moving[:, None], np.zeros(400, dtype=int), 2).limits[0]
    assert lim_moving.stuck_after == 12 and lim_moving.seen is None  # it moves on most steps: stuck at any value
    held = [26.0] * (3 * lim.stuck_after)
    watch = SensorWatch(1)
    assert [kinds(watch.step(float(t), [v], rules)) for t, v in enumerate(held)] == [[]] * len(held)
    frozen = [32.0] * lim.stuck_after
    events = [kinds(watch.step(float(len(held) + t), [v], rules)) for t, v in enumerate(frozen)]
    assert events[-1] == [("stuck", True)] and not any(events[:-1])


def test_the_training_range_round_trips_through_the_bundle_and_old_bundles_stick_anywhere():
    rules = SensorRules(("a", "b"), (ChannelLimits(0.0, 10.0, 3, (2.0, 4.0)), ChannelLimits(0.0, 10.0, 3)), 5)
    raw = json.loads(json.dumps(rules.to_dict()))
    assert raw["a"]["seen"] == [2.0, 4.0] and "seen" not in raw["b"]
    assert SensorRules.from_dict(raw, ("a", "b"), 5) == rules
    watch = SensorWatch(2)
    seen = [kinds(watch.step(float(t), [7.0, 7.0], rules)) for t in range(3)]
    assert seen[-1] == [("stuck", True)]  # b, a bundle's limits without a range: stuck at any value
    assert watch.describe(rules) == [{"kind": "stuck", "channel": "b"}]


def test_a_value_that_walks_past_learned_limits_is_the_process_one_that_jumps_a_sensor():
    """Learned limits are the training range widened, not the instrument's: Tennessee Eastman's process
    faults walked a channel past them 44 times (steps under 1.3 widths), each told an ``out_of_range`` sensor
    fault and left out of the very score that should judge it (found by a walk). A failing sensor jumps."""
    values = np.c_[np.linspace(0.0, 10.0, 50), np.linspace(5.0, 6.0, 50)]  # a's width 10: limits -30 .. 40
    rules = learn_sensor_rules(("a", "b"), values, np.zeros(50, dtype=int), fill_limit=2)
    assert rules.limits[0].jump == 20.0  # JUMP_WIDTHS training widths
    walk, jumped = SensorWatch(2), SensorWatch(2)
    told = [kinds(walk.step(float(t), [v, 5.0 + t % 7 / 10], rules)) for t, v in enumerate(np.arange(10.0, 100.0, 5.0))]
    assert not any(told)  # 10 -> 95 in steps of 5: past 40, no sensor fault: the process, scored
    row = [95.0, 5.5]
    assert walk.step(100.0, row, rules) == [] and row == [95.0, 5.5]  # not held: the model sees it
    assert kinds(walk.step(101.0, [-9999.0, 5.5], rules)) == [("out_of_range", True)]  # then the sensor dies
    assert kinds(jumped.step(0.0, [10.0, 5.5], rules)) == []
    row = [45.0, 5.5]
    assert kinds(jumped.step(1.0, row, rules)) == [("out_of_range", True)] and row == [10.0, 5.5]  # a jump of 35
    fresh = SensorWatch(2)  # no plausible value yet (a start, a restart): the step from the nearest limit
    assert kinds(fresh.step(0.0, [45.0, 5.5], rules)) == []  # 5 past it: walked there, as offline saw
    assert kinds(SensorWatch(2).step(0.0, [65.0, 5.5], rules)) == [("out_of_range", True)]  # 25 past: a jump


def test_limits_a_user_set_flag_any_value_past_them_and_jump_round_trips_through_the_bundle():
    """A bundle's hand-set limits (no ``jump``: an instrument's range, or an older bundle's) are the
    user's word: a value walked past them is a sensor fault all the same."""
    rules = SensorRules(("a", "b"), (ChannelLimits(0.0, 10.0, None), ChannelLimits(0.0, 10.0, None, None, 4.0)), 5)
    raw = json.loads(json.dumps(rules.to_dict()))
    assert "jump" not in raw["a"] and raw["b"]["jump"] == 4.0
    assert SensorRules.from_dict(raw, ("a", "b"), 5) == rules
    watch = SensorWatch(2)
    told = [kinds(watch.step(float(t), [v, v], rules)) for t, v in enumerate([8.0, 9.0, 10.0, 11.0])]
    assert told[-1] == [("out_of_range", True)] and watch.describe(rules) == [{"kind": "out_of_range",
                                                                                "channel": "a"}]


@pytest.mark.parametrize("jump", [0, -1.0, float("nan"), float("inf"), "2", True])
def test_a_bad_jump_in_a_bundle_is_refused(jump):
    with pytest.raises(ValueError, match="jump"):
        SensorRules.from_dict({"a": {"low": 0.0, "high": 10.0, "stuck_after": 3, "jump": jump}}, ("a",), 5)


@pytest.mark.parametrize("seen", [[4.0, 2.0], [0.0, float("inf")], [1.0], "ab", "12", ["3", "4"], [False, True],
                                  {"x": 1, "y": 2}, True])
def test_a_bad_training_range_in_a_bundle_is_refused(seen):
    with pytest.raises(ValueError, match="seen"):
        SensorRules.from_dict({"a": {"low": 0.0, "high": 10.0, "stuck_after": 3, "seen": seen}}, ("a",), 5)


def test_a_hot_swap_that_ends_an_out_of_range_fault_leaves_no_count_behind():
    """Found by review: close_all kept the readings counted back in range, so after a swap back the
    next out_of_range fault ended after one reading in range instead of BACK_IN_RANGE."""
    rules = SensorRules(("a", "b"), (ChannelLimits(0.0, 10.0, None),) * 2, fill_limit=1)
    watch = SensorWatch(2)
    for i, v in enumerate([11.0, 5.0, 6.0]):
        watch.step(float(i), [float(i), v], rules)
    watch.close_all(3.0, rules.channels)
    seen = [kinds(watch.step(float(4 + i), [float(i), v], rules)) for i, v in enumerate([12.0, 5.0, 5.0, 5.0])]
    assert seen == [[("out_of_range", True)], [], [], [("out_of_range", False)]]


def test_a_one_channel_model_scores_an_extreme_value_instead_of_holding_it():
    """With one channel nothing can fill a held value in: the spike was an out_of_range sensor fault,
    the window was not judged and the largest anomaly of the series never alerted (found by a walk:
    NAB's latency at 3x its training peak). Now the score judges it, offline as live."""
    from sensorguard.service.alerts import AlertRules
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.offline import score_data
    from sensorguard.training.train import TrainOptions, train_bundle

    rng = np.random.default_rng(5)
    rows = 1200
    frame = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=rows, freq="min"),
                          "latency": 40 + 3 * np.sin(np.arange(rows) / 30) + rng.normal(0, 0.5, rows)})
    train = series_from_frame(frame.iloc[:800], "train")
    bundle = train_bundle(train, TrainOptions(progress=False, max_epochs=3, seed=0))[0]
    limit = bundle.sensors.limits[0].high
    test = frame.iloc[800:].reset_index(drop=True)
    test.loc[200:209, "latency"] = 3 * limit + np.arange(10.0)  # far beyond the widened training range, moving
    data = series_from_frame(test, "test", policy=bundle.cleaning, sensors=bundle.sensors)
    scores = score_data(bundle, data, AlertRules())
    score = scores.scores.score
    assert np.isfinite(score[200:210]).all() and (score[200:210] >= 1).all()
    assert scores.alert[200:212].any()
    assert not bundle.sensors.judges_range
    watch = SensorWatch(1)
    assert kinds(watch.step(0.0, [3 * limit], bundle.sensors)) == []  # live: no sensor fault, the value kept


def test_junk_whose_readings_are_all_dropped_announces_no_fault_and_holds_no_slot():
    """A reading with a channel left out and another out of range opened a sensor fault, which made
    the asset known: junk took the max_assets slots (real readings refused as too_many_assets), each
    junk asset with a sensor_fault event and a retained state (found by a walk)."""
    from sensorguard.service.windows import Buffers

    limits = (ChannelLimits(-10.0, 10.0, None), ChannelLimits(-10.0, 10.0, None))
    bufs = Buffers(("a", "b"), window=4, hop=1, sensors=SensorRules(("a", "b"), limits, fill_limit=5), max_assets=1)
    assert bufs.add("junk", 0.0, {"a": 99.0}, 0.0) == "missing_channel"
    assert list(bufs.sensor_events) == []
    assert bufs.add("real", 0.0, {"a": 1.0, "b": 1.0}, 0.0) is None  # the slot was free
    assert [(asset, e.kind, e.fault) for asset, e in bufs.sensor_events] == [("real", "silent", False)]
    assert bufs.add("real", 1.0, {"a": 99.0, "b": 1.0}, 0.0) is None  # a taken asset's fault is announced
    assert [(a, e.kind) for a, e in list(bufs.sensor_events)[1:]] == [("real", "out_of_range")]


def test_open_sensor_faults_go_on_across_a_restart(tiny_bundle, tmp_path):
    """A restart forgot every open sensor fault: an out_of_range one never got its sensor_ok, a stuck
    one was announced a second time with no sensor_ok between (found by a walk)."""
    from tests.test_state import daemon_with

    limits = (ChannelLimits(-100.0, 100.0, 5), ChannelLimits(-100.0, 100.0, None), ChannelLimits(-100.0, 100.0, None))
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5))
    first, client = daemon_with(bundle, tmp_path)
    for i in range(8):  # a stuck at 1.0 from the fifth reading, b out of range at the last
        first.ingest.handle(client, message("pump-1", T0 + i, a=1.0, b=500.0 if i == 7 else float(i), c=0.0))
    first.publish_sensor_faults()
    first.alerts.apply("pump-1", T0 + 7, 0.5, [])
    first.stop()
    second, client = daemon_with(bundle, tmp_path)
    assert value(second, "sensorguard_sensor_faults_open") == 2
    for i in range(8, 12):  # a still stuck; b back in range: its fault ends at the third such reading
        second.ingest.handle(client, message("pump-1", T0 + i, a=1.0, b=float(i), c=0.0))
    second.ingest.handle(client, message("pump-1", T0 + 12, a=2.0, b=1.0, c=0.0))  # a moves: stuck ends
    second.publish_sensor_faults()
    events = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-1"]
    assert [(e["state"], e["kind"], e["channel"], pd.Timestamp(e["ts"]).timestamp()) for e in events] == [
        ("sensor_ok", "out_of_range", "b", T0 + 10), ("sensor_ok", "stuck", "a", T0 + 12)]
    assert value(second, "sensorguard_sensor_faults_open") == 0


def test_a_sensor_fault_is_saved_at_the_next_tick_not_in_up_to_30_s(tiny_bundle, tmp_path):
    """Killed in the 30 s between two saves, a restart announced again a fault opened meanwhile
    (no sensor_ok between): a fault opened or closed is saved within a second, as a raise is."""
    import time

    from sensorguard.service.state import saved_faults
    from tests.test_state import daemon_with

    limits = (ChannelLimits(-100.0, 100.0, None),) * 3
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5))
    daemon, client = daemon_with(bundle, tmp_path)
    daemon.ingest.handle(client, message("pump-1", T0, a=1.0, b=1.0, c=0.0))
    daemon.alerts.apply("pump-1", T0, 0.5, [])  # (an asset with a state: its faults are saved with it)
    daemon.housekeeping(time.monotonic())  # a save
    daemon._next_save = float("inf")  # the 30 s are not up from here
    daemon.ingest.handle(client, message("pump-1", T0 + 1, a=1.0, b=500.0, c=0.0))
    daemon.publish_sensor_faults()
    daemon.housekeeping(time.monotonic())
    assert [f["channel"] for f in saved_faults(tmp_path)["pump-1"]] == ["b"]


def test_a_dropped_first_readings_fault_is_told_with_the_first_reading_taken_as_offline_keeps_it():
    """The first fix dropped the fault from the watch too: live no channel was held for the fault's
    off-delay, while offline (every row through one watch) held it: the windows differed (a review)."""
    from sensorguard.service.series_faults import watch_rows
    from sensorguard.service.windows import Buffers

    limits = (ChannelLimits(-10.0, 10.0, None), ChannelLimits(-10.0, 10.0, None))
    rules = SensorRules(("a", "b"), limits, fill_limit=5)
    bufs = Buffers(("a", "b"), window=2, hop=1, sensors=rules)
    rows = [[99.0, NAN], [1.0, 1.0], [1.0, 2.0], [1.0, 3.0], [2.0, 1.0]]
    live = []
    for i, (a, b) in enumerate(rows):
        bufs.add("p", float(i), {"a": a} if b != b else {"a": a, "b": b}, 0.0)
        live.append(bufs.faulted("p"))
    told = [(e.kind, e.channel, e.fault, e.ts) for _, e in bufs.sensor_events]
    assert told == [("silent", None, False, 1.0), ("out_of_range", "a", True, 0.0), ("out_of_range", "a", False, 3.0)]
    _, faulted, _ = watch_rows(np.arange(5.0), np.array(rows), rules)
    assert [tuple(np.flatnonzero(f)) for f in faulted] == live  # the same channels held, live and offline


def test_a_deferred_fault_that_ends_with_the_first_reading_taken_is_told_opened_then_closed():
    """Judged after the taking reading's step, the deferred open was dropped and its close told
    alone: a sensor_ok with no sensor_fault before it (a review)."""
    from sensorguard.service.windows import Buffers

    limits = (ChannelLimits(-10.0, 10.0, None), ChannelLimits(-10.0, 10.0, None))
    bufs = Buffers(("a", "b"), window=2, hop=1, sensors=SensorRules(("a", "b"), limits, fill_limit=5))
    for i, values in enumerate([{"a": 99.0}, {"a": 1.0}, {"a": 1.0}, {"a": 1.0, "b": 1.0}]):
        bufs.add("p", float(i), values, 0.0)
    told = [(e.kind, e.channel, e.fault, e.ts) for _, e in bufs.sensor_events]
    assert told == [("silent", None, False, 3.0), ("out_of_range", "a", True, 0.0), ("out_of_range", "a", False, 3.0)]


def test_a_saved_fault_the_served_rules_cannot_end_is_not_restored(tiny_bundle, tmp_path):
    """Restored under rules that cannot open it (no stuck_after now, or no sensor limits at all), a
    fault was listed and counted for good, no watch able to end it (a review)."""
    from tests.test_state import daemon_with

    limits = (ChannelLimits(-100.0, 100.0, 5), ChannelLimits(-100.0, 100.0, None), ChannelLimits(-100.0, 100.0, None))
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5))
    first, client = daemon_with(bundle, tmp_path)
    for i in range(8):
        first.ingest.handle(client, message("pump-1", T0 + i, a=1.0, b=500.0 if i == 7 else float(i), c=0.0))
    first.publish_sensor_faults()
    first.alerts.apply("pump-1", T0 + 7, 0.5, [])
    first.stop()
    never_stuck = (ChannelLimits(-100.0, 100.0, None), *limits[1:])
    second, client = daemon_with(replace(bundle, sensors=SensorRules(bundle.channels, never_stuck, fill_limit=5)),
                                 tmp_path)
    assert value(second, "sensorguard_sensor_faults_open") == 1  # out_of_range b alone
    # the one left out is told ended, so a subscriber pairing each sensor_fault with its sensor_ok closes
    # it (left out unsaid, it stayed open there for good: a walk), at the asset's last judged window
    second.publish_sensor_faults()
    told = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-1"]
    assert [(e["state"], e["kind"], e["channel"], e["ts"]) for e in told] == [
        ("sensor_ok", "stuck", "a", iso(T0 + 7))]
    second.stop()
    third, client = daemon_with(replace(bundle, sensors=None), tmp_path)
    assert not value(third, "sensorguard_sensor_faults_open")
    third.publisher.client = None  # the worker's first round, before start() opened the connection: they wait
    third.publish_sensor_faults()
    third.publisher.client = client
    assert client.published == []
    third.publish_sensor_faults()
    told = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-1"]
    assert [(e["state"], e["kind"], e["channel"]) for e in told] == [("sensor_ok", "out_of_range", "b")]


def test_a_swap_ends_a_restored_fault_its_limits_cannot_judge_before_the_asset_is_heard(tiny_bundle, tmp_path):
    """A fault restored for an asset not heard from since the restart stayed open for good after a
    swap to limits that cannot judge it (live assets' watches end theirs): a review."""
    from tests.test_state import daemon_with

    limits = (ChannelLimits(-100.0, 100.0, 5), ChannelLimits(-100.0, 100.0, None), ChannelLimits(-100.0, 100.0, None))
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5))
    first, client = daemon_with(bundle, tmp_path)
    for i in range(8):  # a stuck
        first.ingest.handle(client, message("pump-1", T0 + i, a=1.0, b=float(i), c=0.0))
    first.publish_sensor_faults()
    first.alerts.apply("pump-1", T0 + 7, 0.5, [])
    first.stop()
    second, client = daemon_with(bundle, tmp_path)
    second.publish_sensor_faults()
    assert value(second, "sensorguard_sensor_faults_open") == 1 and client.published == []
    second._swapped(replace(bundle, sensors=None))
    second.publish_sensor_faults()
    told = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-1"]
    assert [(e["state"], e["kind"], e["channel"], e["ts"]) for e in told] == [("sensor_ok", "stuck", "a", iso(T0 + 7))]
    assert value(second, "sensorguard_sensor_faults_open") == 0 and second.buffers.resumed_faults == {}


def test_clearing_an_assets_channel_faults_recounts_the_gauge():
    """A restored asset's faults ended unheard left sensor_faults_open where it was (a review)."""
    from prometheus_client import CollectorRegistry

    from sensorguard.service.metrics import Metrics
    from sensorguard.service.open_faults import OpenFaults

    registry = CollectorRegistry()
    faults = OpenFaults(Metrics(registry))
    faults.restore({"p": [{"kind": "stuck", "channel": "a", "since": T0, "value": 1.0}]})
    assert registry.get_sample_value("sensorguard_sensor_faults_open") == 1
    faults.clear_channels("p")
    assert registry.get_sample_value("sensorguard_sensor_faults_open") == 0


def test_a_sensor_pegged_outside_its_range_is_one_fault():
    """A dead sensor reading -9999 was announced twice, out_of_range and stuck (the demo said "2
    sensor faults" of one; a walk)."""
    rules = SensorRules(("a", "b"), (ChannelLimits(-10.0, 10.0, 3), ChannelLimits(-10.0, 10.0, None)), fill_limit=1)
    watch = SensorWatch(2)
    seen = [e for i in range(20) for e in watch.step(float(i), [-9999.0 if i >= 5 else float(i), 1.0], rules)]
    assert [(e.kind, e.fault) for e in seen] == [("out_of_range", True)]
    assert watch.describe(rules) == [{"kind": "out_of_range", "channel": "a"}]


def test_a_restored_assets_faults_survive_its_eviction_before_it_is_taken():
    """Evicted (max_assets) before a reading of it was taken, a restored asset came back with a
    fresh watch: its restored fault was never ended (a review)."""
    from sensorguard.service.windows import Buffers

    limits = (ChannelLimits(-10.0, 10.0, None), ChannelLimits(-10.0, 10.0, None))
    bufs = Buffers(("a", "b"), window=2, hop=1, sensors=SensorRules(("a", "b"), limits, fill_limit=5), max_assets=1)
    bufs.resumed_faults = {"p": [{"kind": "out_of_range", "channel": "a", "since": 0.0, "value": 99.0}]}
    assert bufs.add("p", 1.0, {"a": 1.0}, 0.0) == "missing_channel"  # untaken
    assert bufs.add("q", 1.0, {"a": 1.0, "b": 1.0}, 0.0) is None  # takes p's slot
    bufs.forget("q")
    for i in range(2, 5):
        assert bufs.add("p", float(i), {"a": 1.0, "b": 1.0}, 0.0) is None
    told = [(asset, e.kind, e.fault) for asset, e in bufs.sensor_events if asset == "p"]
    assert ("p", "out_of_range", False) in told and "p" not in bufs.resumed_faults


def test_a_flood_of_sensor_faults_keeps_the_log_to_its_budget_and_says_what_it_left_out(caplog):
    """Junk machines with one implausible reading each wrote ten lines a message, 50,000 for 5,000
    messages (a walk): the log keeps SENSOR_LINES a minute and says how many it left out; the
    events themselves are still published (the publisher is not asked to drop any)."""
    import logging

    from sensorguard.service.config import Settings
    from sensorguard.service.logs import LineBudget
    from sensorguard.service.publisher import SENSOR_LINES, Publisher
    from sensorguard.service.sensors import SensorEvent

    now = [0.0]
    publisher = Publisher(Settings())
    publisher._sensor_lines = LineBudget(SENSOR_LINES, 60.0, clock=lambda: now[0])
    sent = []
    publisher._publish_json = lambda kind, topic, body, retain=False: sent.append(body)
    publisher.client = object()
    caplog.set_level(logging.INFO, logger="sensorguard.service.publisher")
    for k in range(3 * SENSOR_LINES):
        publisher.sensor(f"junk-{k}", SensorEvent("out_of_range", "a", True, 1.0, 1e29), ("m", "v1"))
    lines = [r for r in caplog.records if "out_of_range" in r.getMessage()]
    assert len(lines) == SENSOR_LINES and len(sent) == 3 * SENSOR_LINES
    said = [r.getMessage() for r in caplog.records]  # at once, that lines are being left out (a review)
    assert said[SENSOR_LINES].startswith(f"over {SENSOR_LINES} sensor fault lines this minute") and len(said) == 101
    now[0] = 61.0  # the next minute: its first line, after one saying how many were left out
    publisher.sensor("pump-1", SensorEvent("stuck", "a", True, 62.0, 3.0), ("m", "v1"))
    said = [r.getMessage() for r in caplog.records][-2:]
    assert said[0].startswith(f"{2 * SENSOR_LINES} sensor fault lines were left out") and "stuck" in said[1]


def test_the_holds_rule_and_the_seen_range_at_their_boundaries():
    """From a mutation audit, two boundaries no test pinned: a channel unchanged on exactly half its
    training steps holds values (``seen`` kept: a still run counts as stuck only at a level training
    read), and both ends of that range are such levels."""
    column = np.r_[np.repeat(np.arange(50.0), 2), 50.0]  # 101 rows: 100 steps, 50 of them unchanged
    assert (column[1:] == column[:-1]).mean() == 0.5
    limits = learn_sensor_rules(("a",), column[:, None], np.zeros(len(column), dtype=int), fill_limit=2).limits[0]
    assert limits.seen == (0.0, 50.0)
    assert limits.can_stick(50.0) and limits.can_stick(0.0) and not limits.can_stick(50.5)


def test_a_channel_walked_past_its_limits_goes_on_as_the_process_across_a_restart(tiny_bundle, tmp_path):
    """A restart's fresh watch judged a channel's next step from the nearest limit, so a process that
    had walked farther than ``jump`` past it was told an ``out_of_range`` sensor fault at the first
    reading after the restart, held and left out of the score (session 70's known gap). The last
    plausible value of each channel past its limits is saved with the asset's state and resumed."""
    from sensorguard.service.state import saved_extras
    from tests.test_state import daemon_with

    limits = (ChannelLimits(-100.0, 100.0, None, jump=20.0),) * 3
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5))
    first, client = daemon_with(bundle, tmp_path)
    for i, b in enumerate((0.0, 50.0, 90.0, 105.0, 120.0, 135.0, 150.0)):  # b walks out in steps of 15
        first.ingest.handle(client, message("pump-1", T0 + i, a=1.0 + i, b=b, c=0.0))
    first.publish_sensor_faults()
    first.alerts.apply("pump-1", T0 + 6, 0.5, [])
    first.stop()
    assert saved_extras(tmp_path).past == {"pump-1": {"b": 150.0}}
    second, client = daemon_with(bundle, tmp_path)
    second.ingest.handle(client, message("pump-1", T0 + 7, a=8.0, b=160.0, c=0.0))  # 60 past the limit, 10 on
    second.ingest.handle(client, message("pump-1", T0 + 8, a=9.0, b=-5000.0, c=0.0))  # then the sensor dies
    second.publish_sensor_faults()
    events = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-1"]
    assert [(e["state"], e["kind"], pd.Timestamp(e["ts"]).timestamp()) for e in events] == [
        ("sensor_fault", "out_of_range", T0 + 8)]


def test_past_limits_are_saved_only_for_learned_limits_and_resumed_only_while_still_past_them():
    """What a watch saves and takes back: a channel past limits that carry ``jump`` (a user's limits
    flag any value past them: nothing to go on from), and, resumed, a channel the rules know whose
    saved value is still past them (a retrained model's wider limits: judged afresh)."""
    learned, users = ChannelLimits(-10.0, 10.0, None, jump=4.0), ChannelLimits(-10.0, 10.0, None)
    rules = SensorRules(("a", "b", "c"), (learned, users, learned), fill_limit=5)
    watch = SensorWatch(3)
    watch.step(0.0, [9.0, 9.0, 9.0], rules)
    watch.step(1.0, [12.0, 9.0, 1.0], rules)  # a walks out; c goes back in
    assert watch.past_limits(rules) == {"a": 12.0}
    assert SensorRules(("a",), (learned,), fill_limit=5).judges_range is False
    one = SensorWatch(1)
    one.step(0.0, [50.0], SensorRules(("a",), (learned,), fill_limit=5))
    assert one.past_limits(SensorRules(("a",), (learned,), fill_limit=5)) == {}  # one channel: range not judged
    resumed = SensorWatch(3)
    resumed.resume_past({"a": 12.0, "b": 30.0, "c": 5.0, "gone": 99.0}, rules)
    assert resumed.good[0] == 12.0 and all(math.isnan(v) for v in resumed.good[1:])
    assert resumed.step(2.0, [15.0, 1.0, 1.0], rules) == []  # 3 on from 12: walked (a fresh watch: 5 past 10)
    assert kinds(SensorWatch(3).step(2.0, [15.0, 1.0, 1.0], rules)) == [("out_of_range", True)]


def test_past_limits_round_trip_through_the_state_file_and_bad_pairs_are_left_out(tmp_path):
    """``past_limits`` is a known field (an older file or a hand edit: each pair checked, the rest kept)."""
    from sensorguard.service.alerts import AlertState
    from sensorguard.service.state import load_states, save_states, saved_extras

    save_states(tmp_path, {"p": AlertState(), "q": AlertState()}, {}, past={"p": {"a": 12.5}, "q": {}})
    raw = json.loads((tmp_path / "assets.json").read_text())
    assert raw["assets"]["p"]["past_limits"] == {"a": 12.5} and "past_limits" not in raw["assets"]["q"]
    raw["assets"]["q"]["past_limits"] = {"a": "12", "b": None, "c": -3.0, "d": True}
    (tmp_path / "assets.json").write_text(json.dumps(raw))
    assert saved_extras(tmp_path).past == {"p": {"a": 12.5}, "q": {"c": -3.0}}
    load_states(tmp_path)
    assert not (tmp_path / "assets.json.bad").exists()  # not an unknown field

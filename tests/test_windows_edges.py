"""Windowing rules a second mutation audit (session 68) found unpinned: each test fails under its mutation."""

from __future__ import annotations

import numpy as np

from sensorguard.service import windows
from sensorguard.service.asset_buffer import AssetBuffer, DueWindow
from sensorguard.service.cleaning import CleaningPolicy, admit_rows, clean_rows
from sensorguard.service.due_windows import DueWindows
from sensorguard.service.sensors import ChannelLimits, SensorRules
from sensorguard.service.windows import Buffers

CH = ("a", "b")
OK = {"a": 1.0, "b": 1.0}
RANGE = SensorRules(CH, (ChannelLimits(0.0, 10.0, None),) * 2, fill_limit=5)
STUCK = SensorRules(CH, (ChannelLimits(0.0, 1e9, 2), ChannelLimits(0.0, 1e9, None)), fill_limit=5)
PERIOD = CleaningPolicy(1.0, True, 5)


def test_columns_the_model_ignores_are_dropped_not_refused():
    bufs = Buffers(CH, 3, 1, ignored=("x",))
    assert bufs.add("p", 1.0, {"a": 1.0, "b": 1.0, "x": 2.0}, 0.0) is None
    bufs.set_ignored(())
    assert bufs.add("p", 2.0, {"a": 1.0, "b": 1.0, "x": 2.0}, 0.0) == "unknown_channel"


def test_a_new_asset_whose_first_reading_drops_is_seen_when_it_came():
    bufs = Buffers(CH, 3, 1)
    assert bufs.add("p", 1.0, {"a": 1.0}, received=5.0) == "missing_channel"
    assert bufs.last_seen("p") == 5.0 and bufs.idle(4.0) == []


def test_a_reading_refused_for_its_rate_is_its_newest_stamp_and_not_taken():
    bufs = Buffers(CH, 3, 1, policy=PERIOD)
    got = [bufs.add("p", t, OK, t) for t in range(0, 16, 2)]  # (a half-rate feed: refused from its 7th step)
    assert got == [None] * 7 + ["slow_rate"]
    assert bufs.last_ts("p") == 14.0 and bufs.taken_ts("p") == 12.0
    assert bufs.add("p", 14.0, OK, 15.0) == "duplicate_ts"


def test_a_reading_refused_for_its_rate_makes_an_untaken_asset_heard():
    bufs = Buffers(CH, 3, 1, policy=CleaningPolicy(1.0, True, 0), max_assets=1)
    got = [bufs.add("p", t, {"a": 1.0}, t) for t in (0.0, 2.0, 4.0, 6.0)]  # (fill_limit 0: refused past its
    assert got == ["missing_channel"] * 3 + ["slow_rate"]  # restart gap, 1.5 periods)
    assert bufs.taken("p")
    assert bufs.add("q", 0.0, OK, 7.0) == "too_many_assets"


def test_a_swap_to_a_model_without_sensor_limits_closes_the_open_faults():
    bufs = Buffers(CH, 3, 1, sensors=RANGE)
    bufs.add("p", 0.0, OK, 0.0)
    bufs.add("p", 1.0, {"a": 1.0, "b": 11.0}, 0.0)
    assert bufs.faulted("p") == (1,)
    bufs.sensor_events.clear()
    bufs.sensors = None
    assert bufs.add("p", 2.0, OK, 0.0) is None
    assert [(e.kind, e.channel, e.fault) for _, e in bufs.sensor_events] == [("out_of_range", "b", False)]
    assert bufs.faulted("p") == ()


def test_the_last_row_holds_the_forward_fill():
    bufs = Buffers(CH, 3, 1)
    bufs.add("p", 1.0, {"a": 1.0, "b": 2.0}, 0.0)
    bufs.add("p", 2.0, {"a": 3.0}, 0.0)
    assert bufs.last_row("p") == [3.0, 2.0]


def test_priming_with_a_later_judged_window_queues_only_the_windows_after_it():
    samples = [(float(t), {"a": float(t), "b": 0.0}) for t in range(4, 14)]
    bufs = Buffers(CH, 4, 2, alert_hop=1)
    bufs.prime("p", samples, 0.0, window_ts=8.0, judged_ts=11.0)
    assert [w.ts for w in bufs.drain()] == [12.0, 13.0]


def test_a_refused_older_stamp_with_other_values_is_no_stuck_clock():
    bufs = Buffers(CH, 3, 1)
    bufs.add("p", 1.0, OK, 0.0)
    bufs.add("p", 2.0, OK, 0.0)
    bufs.refused("p", "duplicate_ts", 5.0, ts=1.0, values={"a": 9.0, "b": 9.0})
    assert bufs.refused_since("p") is None
    bufs.refused("p", "duplicate_ts", 5.0, ts=2.0, values={"a": 9.0, "b": 9.0})
    assert bufs.refused_since("p") == "duplicate_ts"


def fast_return(bufs: Buffers) -> list[str | None]:
    """The first readings of ``p`` (a publisher twice the model's rate) back from a silence."""
    return [bufs.add("p", 100 + 0.5 * i, OK, 0.0) for i in range(4)]


def publish_fast_and_forget(bufs: Buffers, asset: str = "p", start: float = 0.0) -> None:
    for i in range(40):
        bufs.add(asset, start + 0.5 * i, OK, 0.0)
    bufs.forget(asset)


def forget_others(bufs: Buffers, names) -> None:
    for name in names:
        bufs.add(name, 0.0, OK, 0.0)
        bufs.add(name, 1.0, OK, 0.0)
        bufs.forget(name)


KEPT, LOST = [None, "resampled", None, "resampled"], [None, None, None, None]


def test_forgotten_rates_are_kept_up_to_the_cap_oldest_dropped(monkeypatch):
    monkeypatch.setattr(windows, "RATES_KEPT", 3)
    bufs = Buffers(CH, 4, 2, policy=PERIOD)
    publish_fast_and_forget(bufs)
    forget_others(bufs, ["x", "y"])
    assert fast_return(bufs) == KEPT  # three kept: p's still there
    bufs = Buffers(CH, 4, 2, policy=PERIOD)
    publish_fast_and_forget(bufs)
    forget_others(bufs, ["x", "y", "z"])
    assert fast_return(bufs) == LOST


def test_ten_thousand_forgotten_rates_are_kept():
    bufs = Buffers(CH, 4, 2, policy=PERIOD)
    publish_fast_and_forget(bufs)
    forget_others(bufs, [str(k) for k in range(9_999)])
    assert fast_return(bufs) == KEPT


def test_a_forgotten_restored_asset_back_without_a_floor_gives_its_slot():
    bufs = Buffers(CH, 3, 1, max_assets=2, policy=CleaningPolicy(None, True, 0))
    bufs.floors = {"r": 0.0}
    assert bufs.add("r", 1.0, {"a": 1.0}, 0.0) == "missing_channel"
    bufs.forget("r")
    assert bufs.add("r", 2.0, {"a": 1.0}, 0.0) == "missing_channel"
    assert bufs.add("n1", 1.0, OK, 0.0) is None
    assert bufs.add("n2", 1.0, OK, 0.0) is None  # r, untaken and no longer restored, gives its slot
    assert bufs.assets() == ["n1", "n2"]


def test_drop_floors_forgets_only_the_assets_not_kept():
    bufs = Buffers(CH, 3, 1)
    bufs.floors = {"a1": 1.0, "a2": 2.0}
    bufs.resumed_faults = {"a1": [], "a2": []}
    bufs.drop_floors(lambda asset: asset == "a1")
    assert bufs.floors == {"a1": 1.0} and list(bufs.resumed_faults) == ["a1"]


def stuck_events(bufs: Buffers, n: int, asset: str = "p") -> None:
    """About one sensor event a reading (a stuck fault opening and closing)."""
    for i in range(n):
        bufs.add(asset, float(i), {"a": float(i // 2), "b": 1.0}, 0.0)


def test_sensor_events_beyond_the_cap_are_dropped_and_counted(monkeypatch):
    monkeypatch.setattr(windows, "SENSOR_EVENTS_MAX", 3)
    bufs = Buffers(CH, 3, 1, sensors=STUCK)
    stuck_events(bufs, 5)  # its return (silent ends), then opens at 1, 3 and closes at 2, 4
    assert len(bufs.sensor_events) == 3 and bufs.sensor_events_dropped == 2


def test_ten_thousand_sensor_events_queue_before_any_is_dropped():
    bufs = Buffers(CH, 3, 1, sensors=STUCK)
    stuck_events(bufs, 10_000)
    assert len(bufs.sensor_events) == 10_000 and bufs.sensor_events_dropped == 0
    stuck_events(bufs, 2, "q")  # its return and a stuck fault
    assert bufs.sensor_events_dropped == 2


def test_priming_names_the_open_faults_past_the_event_cap(monkeypatch):
    monkeypatch.setattr(windows, "SENSOR_EVENTS_MAX", 1)
    bufs = Buffers(CH, 3, 1, sensors=RANGE)
    samples = [(0.0, OK), (1.0, {"a": 11.0, "b": 11.0})]
    taken, opened = bufs.prime("p", samples, 0.0)
    assert taken == 2 and sorted(f["channel"] for f in opened) == ["a", "b"]
    assert bufs.sensor_events_dropped == 0 and not bufs.sensor_events


def test_faults_opened_by_dropped_primed_readings_are_not_told_again():
    bufs = Buffers(CH, 3, 1, sensors=RANGE, policy=CleaningPolicy(None, True, 0))
    assert bufs.prime("p", [(10.0, {"a": 11.0})], 0.0) == (0, [])
    assert bufs.add("p", 11.0, OK, 0.0) is None
    assert [(e.kind, e.fault) for _, e in bufs.sensor_events] == [("silent", False)]


def test_a_fault_a_dropped_reading_opened_and_the_first_taken_one_closed_is_told_both_ways():
    bufs = Buffers(CH, 3, 1, sensors=STUCK, policy=CleaningPolicy(None, True, 0))
    got = [bufs.add("p", t, v, 0.0) for t, v in [(0.0, {"a": 1.0}), (1.0, {"a": 1.0}), (2.0, {"a": 2.0, "b": 1.0})]]
    assert got == ["missing_channel", "missing_channel", None]
    told = [(e.kind, e.fault, e.ts) for _, e in bufs.sensor_events]
    assert told == [("silent", False, 2.0), ("stuck", True, 1.0), ("stuck", False, 2.0)]


def test_resumed_faults_are_resumed_once_not_again_after_a_silence():
    bufs = Buffers(CH, 3, 1, sensors=RANGE)
    bufs.resumed_faults = {"p": [{"kind": "out_of_range", "channel": "a", "since": 0.0, "value": 99.0}]}
    bufs.add("p", 1.0, OK, 0.0)
    assert bufs.faulted("p") == (0,) and bufs.resumed_faults == {}
    bufs.forget("p")
    bufs.add("p", 2.0, OK, 0.0)
    assert bufs.faulted("p") == ()


def test_the_daemon_sees_windows_of_the_assets_it_asks_about():
    bufs = Buffers(CH, 1, 1)
    bufs.add("p", 0.0, OK, 0.0)
    bufs.add("q", 0.0, OK, 0.0)
    assert bufs.pending_of({"p"}) and not bufs.pending_of({"r"})


def due(ts: float, coarse: bool = True) -> DueWindow:
    return DueWindow("p", ts, np.zeros((1, 1)), 0.0, coarse=coarse)


def test_keep_since_keeps_what_it_is_told_after_the_mark_and_counts_the_off_grid():
    queue = DueWindows()
    for ts, coarse in ((1.0, True), (2.0, False), (3.0, False), (4.0, True)):
        queue.append(due(ts, coarse))
    queue.keep_since(1, lambda w: w.ts != 3.0)
    assert [w.ts for w in queue.windows] == [1.0, 2.0, 4.0] and queue.pending() == 2
    queue.keep_since(0, lambda w: False)
    assert len(queue) == 0 and queue.pending() == 0


def faulted_buffer(rows: list[tuple[int, ...]]) -> AssetBuffer:
    buf = AssetBuffer(3, 2)
    for faulted in rows:
        buf.write([1.0, 1.0], faulted)
    return buf


def test_a_fault_in_the_oldest_row_of_a_window_leaves_its_channel_out():
    assert faulted_buffer([(1,), (), ()]).cut("p", 0.0, 0.0, True).excluded == (1,)


def test_a_fault_just_before_a_window_leaves_its_channel_in():
    assert faulted_buffer([(0,), (1,), (), ()]).cut("p", 0.0, 0.0, True).excluded == (1,)


def test_redeliveries_are_told_apart_past_the_seen_times_ring():
    bufs = Buffers(CH, 3, 1)
    for t in range(1100):
        assert bufs.add("p", float(t), OK, 0.0) is None
    assert bufs.add("p", 1050.0, OK, 0.0) == "duplicate_ts"


def glitch(stamp: float, clock: float = 1000.0, pre=range(10), policy: CleaningPolicy | None = None) -> Buffers:
    bufs = Buffers(CH, 3, 1, policy=policy)
    for t in pre:
        assert bufs.add_at("p", float(t), OK, 0.0, clock) == (None, None)
    assert bufs.add_at("p", stamp, OK, 0.0, clock) == (None, None)
    return bufs


def behind(bufs: Buffers, stamps, clock: float = 1000.0) -> list[float | None]:
    return [bufs.add_at("p", float(t), OK, 0.0, clock)[1] for t in stamps]


def test_a_reading_exactly_at_the_clock_counts_towards_a_rewind():
    assert behind(glitch(2000.0), [996, 997, 998, 999, 1000]) == [None] * 4 + [2000.0]


def test_a_stamp_taken_exactly_at_the_clock_is_the_last_before_the_jump():
    bufs = glitch(2000.0, pre=[*range(10), 1000])
    assert behind(bufs, range(10, 16)) == [None] * 6


def test_a_rewind_restarts_the_window_and_the_rate_estimate():
    bufs = glitch(2000.0, policy=PERIOD)
    bufs.drain()
    gaps = bufs.gaps
    assert behind(bufs, range(10, 15)) == [None] * 4 + [2000.0]
    assert bufs.gaps == gaps + 1
    assert bufs.add("p", 15.0, OK, 0.0) is None
    assert bufs.add("p", 16.0, OK, 0.0) is None
    assert [w.ts for w in bufs.drain()] == [16.0]


def test_a_rewind_whose_reading_is_refused_goes_back_to_the_stamp_before_the_jump():
    bufs = glitch(2000.0)
    assert behind(bufs, range(100, 104)) == [None] * 4
    assert bufs.add_at("p", 104.0, {**OK, "x": 1.0}, 0.0, 1000.0) == ("unknown_channel", 2000.0)
    assert bufs.last_ts("p") == 9.0


def test_a_publisher_exactly_on_the_resampling_bound_is_taken():
    keep, counts = admit_rows([0.0, 0.25, 0.5, 0.75, 1.0], PERIOD)
    assert keep.tolist() == [True, True, False, False, True] and counts["resampled"] == 2


def test_an_asset_back_at_its_last_seen_stamp_keeps_its_rate_estimate():
    bufs = Buffers(CH, 4, 2, policy=PERIOD)
    for i in range(40):
        bufs.add("p", 0.5 * i, OK, 0.0)
    bufs.forget("p")
    assert [bufs.add("p", t, OK, 0.0) for t in (19.5, 20.0)] == [None, "resampled"]


def test_values_missing_in_a_dropped_reading_are_not_counted_filled():
    times = [0.0, 2.0]
    values = [[1.0, 1.0], [1.0, np.nan]]
    *_, counts = clean_rows(times, values, CleaningPolicy(1.0, True, 1))
    assert counts["inserted"] == 1 and counts["dropped"] == 1 and counts["missing"] == 1 and counts["filled"] == 0

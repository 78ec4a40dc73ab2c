"""Ring buffer and window rules a mutation audit found unpinned (session 65): each test fails under its mutation."""

from __future__ import annotations

from sensorguard.service.asset_buffer import AssetBuffer
from sensorguard.service.cleaning import CleaningPolicy
from sensorguard.service.sensors import ChannelLimits, SensorRules
from sensorguard.service.windows import Buffers

CH = ("a", "b")
RANGE = SensorRules(CH, (ChannelLimits(0.0, 10.0, None),) * 2, fill_limit=5)


def test_a_new_asset_takes_the_slot_of_the_oldest_untaken_one():
    """A new asset takes the slot of the oldest asset never taken, not the newest."""
    bufs = Buffers(("a", "b"), 3, 1, max_assets=2, policy=CleaningPolicy(None, True, 0))
    assert bufs.add("x", 0.0, {"a": 1.0}, 0.0) == "missing_channel"
    assert bufs.add("y", 0.0, {"a": 1.0}, 0.0) == "missing_channel"
    assert bufs.add("z", 0.0, {"a": 1.0, "b": 1.0}, 0.0) is None
    assert bufs.assets() == ["y", "z"]


def test_a_reading_refused_for_its_rate_keeps_the_asset_alive():
    """An asset publishing off its rate is alive: not idle, not stale."""
    bufs = Buffers(CH, 3, 1, policy=CleaningPolicy(1.0, True, 5))
    got = [bufs.add("p", t, {"a": 1.0, "b": 1.0}, received=t) for t in range(0, 24, 3)]
    assert got[-1] == "slow_rate"
    assert bufs.last_seen("p") == 21.0 and bufs.idle(20.5) == []


def test_a_restart_before_any_row_is_written_is_no_window_restart():
    """A dropped first reading inflated ``window_restarts``."""
    bufs = Buffers(CH, 3, 1, policy=CleaningPolicy(1.0, True, 2))
    assert bufs.add("p", 0.0, {"a": 1.0}, 0.0) == "missing_channel"
    assert bufs.add("p", 1.0, {"a": 1.0, "b": 1.0}, 1.0) is None
    assert bufs.gaps == 0


def test_a_fault_closed_before_a_long_gap_leaves_no_channel_out_after_it():
    """A long gap restarts the fault rows with the window: no channel left out after it."""
    bufs = Buffers(CH, 3, 1, max_gap_s=10.0, sensors=RANGE)
    for t, b in enumerate([11.0, 5.0, 5.0, 5.0, 5.0, 5.0]):
        bufs.add("p", float(t), {"a": 1.0, "b": b}, float(t))
    bufs.drain()
    for t in (100.0, 101.0, 102.0):
        bufs.add("p", t, {"a": 1.0, "b": 5.0}, t)
    assert [w.excluded for w in bufs.drain()] == [()]


def test_a_grid_row_inserted_before_the_reading_that_opens_a_fault_is_not_faulted():
    """A filled grid row before the reading that opens a fault is not faulted."""
    bufs = Buffers(CH, 2, 1, policy=CleaningPolicy(1.0, True, 5), sensors=RANGE)
    for t, b in [(0.0, 5.0), (1.0, 5.0), (3.0, 11.0)]:
        bufs.add("p", t, {"a": 1.0, "b": b}, t)
    assert [(w.ts, w.excluded) for w in bufs.drain()] == [(1.0, ()), (2.0, ()), (3.0, (1,))]


def test_priming_from_the_first_full_window_queues_the_windows_after_it():
    """A takeover primed from the first full window scores the windows completed after it."""
    samples = [(float(t), {"a": float(t), "b": -float(t)}) for t in range(1, 8)]
    bufs = Buffers(CH, 4, 2)
    bufs.prime("p", samples, 0.0, window_ts=4.0)
    assert [w.ts for w in bufs.drain()] == [6.0]


def test_a_missing_value_at_the_newest_stamp_is_no_stuck_clock():
    """A partial redelivery at the newest stamp is not a stuck clock."""
    bufs = Buffers(CH, 3, 1)
    bufs.add("p", 1.0, {"a": 1.0, "b": 2.0}, 0.0)
    bufs.refused("p", "duplicate_ts", 5.0, ts=1.0, values={"a": 1.0})
    assert bufs.refused_since("p") is None


def test_an_asset_heard_exactly_at_the_cutoff_is_not_idle():
    """The idle cutoff is strict."""
    bufs = Buffers(CH, 3, 1)
    bufs.add("p", 1.0, {"a": 1.0, "b": 2.0}, received=10.0)
    assert bufs.idle(10.0) == [] and bufs.idle(10.5) == ["p"]


def test_shifting_the_cadence_shifts_the_fault_rows_too():
    """A takeover's cadence shift moves the fault rows with the samples."""
    buf = AssetBuffer(3, 2)
    buf.write([1.0, 1.0], (1,))
    for _ in range(3):
        buf.write([1.0, 1.0], ())
    assert buf.cut("p", 0.0, 0.0, True).excluded == ()
    buf.shift(1)
    assert buf.cut("p", 0.0, 0.0, True).excluded == ()


def test_a_redelivery_a_thousand_readings_back_is_a_duplicate():
    """QoS 1 redeliveries up to the in-flight window back are duplicates, not out of order."""
    bufs = Buffers(CH, 3, 1)
    for t in range(1000):
        bufs.add("p", float(t), {"a": 1.0, "b": 1.0}, 0.0)
    assert bufs.add("p", 10.0, {"a": 1.0, "b": 1.0}, 0.0) == "duplicate_ts"


def glitched(pre=range(10)) -> Buffers:
    """Readings at ``pre``, then one stamped 2000 while the clock reads 1000 (a glitch ahead of it)."""
    bufs = Buffers(CH, 3, 1)
    for t in pre:
        assert bufs.add_at("p", float(t), {"a": 1.0, "b": 1.0}, 0.0, 1000.0) == (None, None)
    assert bufs.add_at("p", 2000.0, {"a": 1.0, "b": 1.0}, 0.0, 1000.0) == (None, None)
    return bufs


def test_redeliveries_of_one_refused_reading_do_not_rewind():
    """Redeliveries of one refused reading are not five readings in order: no rewind."""
    bufs = glitched()
    got = [bufs.add_at("p", 10.0, {"a": 1.0, "b": 1.0}, 0.0, 1000.0) for _ in range(6)]
    assert got == [("out_of_order", None)] * 6


def test_a_redelivery_of_the_newest_stamp_before_the_jump_does_not_count_towards_a_rewind():
    """The newest stamp before a clock jump, delivered again, does not count towards a rewind."""
    bufs = glitched()
    got = [bufs.add_at("p", float(t), {"a": 1.0, "b": 1.0}, 0.0, 1000.0)[1] for t in (9, 10, 11, 12, 13, 14)]
    assert got == [None] * 5 + [2000.0]


def test_a_rewind_whose_reading_is_refused_again_keeps_a_finite_newest_stamp():
    """A rewind whose reading is refused keeps a finite newest stamp (-inf crashed the housekeeping, a review)."""
    bufs = glitched(pre=())
    for t in (100.0, 101.0, 102.0, 103.0):
        assert bufs.add_at("p", t, {"a": 1.0, "b": 1.0}, 0.0, 1000.0) == ("out_of_order", None)
    assert bufs.add_at("p", 104.0, {"a": 1.0, "b": 1.0, "x": 1.0}, 0.0, 1000.0) == ("unknown_channel", 2000.0)
    assert bufs.last_ts("p") == 103.0


def test_a_refusal_received_with_the_last_kept_reading_is_not_since_it():
    """A refusal in the same message as the last kept reading is not the silence's reason."""
    bufs = Buffers(CH, 3, 1)
    bufs.add("p", 1.0, {"a": 1.0, "b": 2.0}, received=5.0)
    bufs.refused("p", "out_of_order", 5.0)
    assert bufs.refused_since("p") is None
    bufs.refused("p", "out_of_order", 5.5)
    assert bufs.refused_since("p") == "out_of_order"


def test_a_restored_asset_whose_first_readings_drop_keeps_its_slot():
    """A review: a restored asset's kept slot went with its floor once it had a buffer, though none of
    its readings was taken (a dead channel): the next new asset evicted it as an untaken one, and its
    good readings were refused as too_many_assets. An untaken asset that was restored is not evicted."""
    bufs = Buffers(CH, 3, 1, max_assets=3, policy=CleaningPolicy(None, True, 0))
    bufs.floors = {"r1": 0.0, "r2": 0.0}
    assert bufs.add("n1", 1.0, {"a": 1.0, "b": 1.0}, 0.0) is None
    assert bufs.add("r1", 1.0, {"a": 1.0}, 0.0) == "missing_channel"  # a dead channel: not taken
    assert bufs.add("n2", 1.0, {"a": 1.0, "b": 1.0}, 0.0) == "too_many_assets"  # r2's slot and r1's are kept
    assert bufs.add("r1", 2.0, {"a": 1.0, "b": 1.0}, 0.0) is None
    assert bufs.add("r2", 2.0, {"a": 1.0, "b": 1.0}, 0.0) is None
    assert sorted(bufs.assets()) == ["n1", "r1", "r2"]

"""Edges of the ingest that no test pinned (found by mutating service/ingest.py): the far-future
rule's bounds, what is counted for a message, and how the wait for the scorer ends."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import sensorguard.service.ingest as ingest_module
import sensorguard.service.ingest_lines as ingest_lines
from sensorguard.service.ingest import Ingest, far_ahead
from tests.test_ingest import T0, ingest, reading


def counted(taker: Ingest, reason: str) -> float:
    return taker.metrics.rejected.labels(reason)._value.get()


def backlogged_ingest() -> Ingest:
    """An ingest whose scorer is ``BACKLOG_BATCHES`` batches of one window behind (window 4, hop 2:
    windows due after readings 4, 6, 8 and 10)."""
    taker = ingest(batch_max=1)
    for i in range(10):
        assert taker.take("sensors/pump-1/readings", reading(T0 + i)) == ([], 1, "pump-1")
    assert taker.buffers.pending() == ingest_module.BACKLOG_BATCHES
    return taker


def test_far_ahead_needs_both_the_clock_and_the_assets_newest_reading_strictly_passed():
    """``future_ts`` is a stamp *further* than ``max_future_s`` ahead of the clock and of the
    asset's newest reading: one exactly at either bound is a true reading and is kept."""
    assert far_ahead(T0 + 7201.0, T0, T0 + 3600.0, 3600.0)
    assert not far_ahead(T0 + 3600.0, T0 - 10_000.0, T0 + 3600.0, 3600.0)  # at the clock's bound
    assert not far_ahead(T0 + 7200.0, T0 + 3600.0, T0 + 3600.0, 3600.0)  # at the newest reading's bound


def test_a_retained_reading_while_not_accepting_is_neither_acknowledged_nor_counted():
    """While not ``accepting`` (before the connect, shutting down) nothing is acknowledged, a
    retained reading included: it stays with the broker for the next session, and is not counted
    as a rejection of this one."""
    taker = ingest()
    acks: list = []
    client = SimpleNamespace(ack=lambda mid, qos: acks.append(mid))
    message = SimpleNamespace(topic="sensors/pump-1/readings", payload=reading(T0), mid=5, qos=1, retain=True)
    taker.handle(client, message)
    assert acks == [] and counted(taker, "retained") == 0
    taker.accepting = True
    taker.handle(client, message)
    assert acks == [5] and counted(taker, "retained") == 1


def test_a_message_that_fails_unexpectedly_is_acknowledged_and_counted_as_parse_error(monkeypatch):
    """A bug hit by one message must neither stop the network thread nor drop the message
    uncounted: it is acknowledged (it would fail again) and counted as ``parse_error``."""
    taker = ingest()
    taker.accepting = True

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ingest_module, "parse_message", broken)
    assert taker.accept("sensors/pump-1/readings", reading(T0)) is True
    assert counted(taker, "parse_error") == 1


def test_every_sample_of_a_batch_is_counted_as_a_reading():
    """``sensorguard_readings_total`` counts readings, not messages: a batch of three is three."""
    taker = ingest()
    taker.accepting = True
    batch = b'{"samples": [' + b", ".join(reading(T0 + i) for i in range(3)) + b"]}"
    assert taker.accept("sensors/pump-1/readings", batch)
    assert taker.metrics.readings._value.get() == 3


def test_stop_ends_a_wait_for_the_scorer_at_once():
    """``stop`` ends any wait for room (the network thread's and ``take``'s): a shutdown waited the
    whole ``wait_s`` and then reported the scorer still full."""
    taker = backlogged_ingest()
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(taker.backlogged(60.0)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.1)
    taker.stop()
    waiter.join(60.0)
    assert got == [False] and time.monotonic() - started < 30.0  # (a loaded CI machine: far from 60 s)


def test_a_wait_for_the_scorer_says_there_is_room_once_it_caught_up():
    """``backlogged(wait_s)`` is False as soon as the scorer made room during the wait (the MQTT
    client goes on reading then, instead of another trip round its loop)."""
    taker = backlogged_ingest()
    assert taker.backlogged(0.0)

    def drain() -> None:
        time.sleep(0.1)
        with taker.cond:
            taker.buffers.drain()  # what the scoring worker does
            taker.cond.notify_all()

    worker = threading.Thread(target=drain)
    worker.start()
    assert taker.backlogged(5.0) is False
    worker.join()


def test_the_floor_of_the_last_run_is_what_a_replay_ahead_of_the_clock_is_judged_from():
    """After a restart, before the asset's first reading, its floor (the last window the previous
    run judged) is its newest stamp: a replay running hours ahead of the clock carries on, instead
    of every reading refused as ``future_ts`` until the clock caught up."""
    taker = ingest()
    ahead = time.time() + 3 * 3600.0
    taker.buffers.floors = {"replay": ahead}
    assert taker.take("sensors/replay/readings", reading(ahead + 1.0)) == ([], 1, "replay")
    fresh = ingest()  # with no floor, the same reading is a jump
    assert fresh.take("sensors/replay/readings", reading(ahead + 1.0)) == (["future_ts"], 0, "replay")


def test_a_stamp_less_than_a_minute_ahead_of_the_clock_is_no_clock_step():
    """Only a newest stamp over ``CLOCK_SLACK_S`` ahead of this machine's clock can be a sender's
    clock that stepped back: readings behind one 30 s ahead stay ``out_of_order``, the asset is not
    rewound (a sender's clock a little fast, or this machine's a little slow)."""
    taker = ingest()
    now = time.time()
    for ts in (now - 100.0, now - 99.0, now + 30.0):
        assert taker.take("sensors/pump-1/readings", reading(ts))[:2] == ([], 1)
    for k in range(6):
        assert taker.take("sensors/pump-1/readings", reading(now - 98.0 + k))[:2] == (["out_of_order"], 0)
    assert taker.metrics.window_restarts._value.get() == 0


class Recorder:
    """What the ingest tells the recorder, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def add(self, asset: str, ts: float, row: list[float]) -> None:
        self.calls.append(("add", asset, ts))

    def rewound(self, asset: str, ts: float) -> None:
        self.calls.append(("rewound", asset, ts))


def test_the_reading_a_clock_step_undoes_is_never_recorded():
    """A batch holding a glitch's stamp ten minutes ahead and the five true readings after it that
    rewind the asset: the glitch's row is no true reading, and is not offered to the recorder (it
    is told of the rewind first, so it could not take the row back)."""
    base = ingest()
    recorder = Recorder()
    taker = Ingest(base.settings, base.buffers, base.metrics, recorder)
    now = float(round(time.time()))
    stamps = [now - 100, now - 99, now + 600] + [now - 98 + k for k in range(5)]
    batch = b'{"samples": [' + b", ".join(reading(ts) for ts in stamps) + b"]}"
    assert taker.take("sensors/p/readings", batch) == (["out_of_order"] * 4, 4, "p")
    assert recorder.calls == [("rewound", "p", now - 94), ("add", "p", now - 100), ("add", "p", now - 99),
                              ("add", "p", now - 94)]


def test_a_message_whose_every_sample_was_refused_names_its_last_reason():
    """Why an asset's readings were refused since it was last heard is the latest reason, the last
    sample's of a message refused whole."""
    taker = ingest()
    assert taker.take("sensors/p/readings", reading(T0))[:2] == ([], 1)
    batch = b'{"samples": [{"ts": "never", "values": {"a": 1}}, {"ts": %d, "values": {"a": "x"}}]}' % (T0 + 1)
    assert taker.take("sensors/p/readings", batch)[:2] == (["bad_ts", "bad_values"], 0)
    assert taker.forget_silent(time.monotonic() + 1)[2] == {"p": "bad_values"}


def test_the_worker_is_woken_as_soon_as_its_batch_is_full():
    """The scorer waits up to ``batch_wait_ms`` for a batch to fill; the reading that fills it
    wakes it at once (else every full batch waited the whole time)."""
    taker = ingest(batch_max=2, batch_wait_ms=60000)
    got: list = []
    worker = threading.Thread(target=lambda: got.append(taker.next_batch(60.0)))
    worker.start()
    for i in range(4):  # the first window: the worker wakes and waits for a second one
        taker.take("sensors/p/readings", reading(T0 + i))
    taker.sensor_events()  # (the asset's first reading's: they wake the worker too)
    time.sleep(0.2)
    assert worker.is_alive()
    full = time.monotonic()
    for i in range(4, 6):  # the second window fills the batch
        taker.take("sensors/p/readings", reading(T0 + i))
    worker.join(60.0)
    assert time.monotonic() - full < 20.0 and len(got[0][0]) == 2 and got[0][1] is False


def rewind_line(taker: Ingest, assets: list[str], caplog) -> str:
    """The "clock stepped back" line said for ``assets`` rewound one after another within the
    interval of one line (the limiter's clock moved by hand)."""
    from sensorguard.service.logs import RateLimiter

    clock = [0.0]
    taker._reject_log = RateLimiter(10.0, clock=lambda: clock[0])
    taker._reject_log.hit("clock stepped back")  # a line just said: the rewinds below wait for the next
    with caplog.at_level("WARNING", logger="sensorguard.service.ingest"):
        with taker.cond:
            for asset in assets:
                taker._stepped_back(asset, T0 + 600, T0)
        assert not caplog.records
        clock[0] = 10.0
        taker.say_rewound()
    (record,) = caplog.records
    caplog.clear()
    return record.getMessage()


def test_the_rewind_line_counts_every_asset_once_named_or_not(caplog):
    """``clock stepped back`` names the first ``REWOUND_SHOWN`` assets and counts the rest ("and N
    more"), those beyond the ``REWOUND_NAMED`` remembered too; an asset rewound twice is one asset;
    and the count starts over after each line."""
    named = ingest_lines.REWOUND_NAMED
    taker = ingest()
    assets = [f"a{k}" for k in range(named)] + ["a1", f"a{named}", f"a{named + 1}"]  # named + 2 assets
    line = rewind_line(taker, assets, caplog)
    assert f" and {named + 2 - ingest_lines.REWOUND_SHOWN} more:" in line
    line = rewind_line(taker, ["x", "y"], caplog)
    assert "'x'" in line and "'y'" in line and " more:" not in line
    line = rewind_line(taker, [f"s{k}" for k in range(ingest_lines.REWOUND_SHOWN)], caplog)
    assert " more:" not in line  # every one named: no "and 0 more"


def test_the_memo_of_topics_outside_the_partitions_stays_bounded(monkeypatch):
    """Each topic's partition check is remembered, up to ``MAX_TOPICS_MEMO`` topics: made-up
    topics (one per junk asset) must not grow it without end."""
    monkeypatch.setattr(ingest_module, "MAX_TOPICS_MEMO", 3)
    taker = ingest(partition=["line-1/#"])
    for k in range(10):
        assert taker.take(f"sensors/line-2/junk-{k}/readings", reading(T0))[0] == ["not_ours"]
        assert len(taker._ours) <= 3
    assert taker.take("sensors/line-1/pump/readings", reading(T0)) == ([], 1, "line-1/pump")


def test_a_replay_ahead_of_the_clock_is_primed_step_by_step():
    """Taking an asset over, the readings its previous owner took are judged for ``future_ts`` as
    they were there, each against the one before it: a replay stepping past the clock's bound
    one second at a time is all primed, not cut off at ``max_future_s`` ahead of the clock."""
    taker = ingest()
    now = float(round(time.time()))
    samples = [(now + taker.settings.max_future_s - 10 + k, {"a": 1.0, "b": 2.0}) for k in range(20)]
    assert taker.prime("p", samples, None) == (20, [])
    jump = ingest()  # one stamp far ahead of the clock and of the reading before it is left out
    assert jump.prime("p", [(now, {"a": 1.0, "b": 2.0}), (now + 2 * 3600 + 1, {"a": 1.0, "b": 2.0})], None)[0] == 1


def test_windows_primed_for_scoring_wake_the_worker():
    """Windows the previous owner completed but never scored, primed on a takeover, wake the
    scoring worker at once (not at its next housekeeping tick)."""
    taker = ingest()
    got: list = []
    worker = threading.Thread(target=lambda: got.append(taker.next_batch(60.0)))
    worker.start()
    time.sleep(0.1)
    primed = time.monotonic()
    assert taker.prime("p", [(T0 + k, {"a": 1.0, "b": 2.0}) for k in range(10)], T0 + 3) == (10, [])
    worker.join(60.0)
    assert time.monotonic() - primed < 20.0 and len(got[0][0]) == 3


def test_an_asset_is_released_only_once_its_queued_windows_were_scored():
    """Cluster mode: a partition handed over releases its assets' buffers only when none of their
    windows waits to be scored (they would be lost unscored)."""
    taker = ingest()
    for i in range(4):
        taker.take("sensors/p/readings", reading(T0 + i))
    assert taker.buffers.pending() == 1
    assert taker.release({"p"}) is False and taker.holds("p")
    batch, _ = taker.next_batch(0.0)
    assert len(batch) == 1 and taker.release({"p"}) is True and not taker.holds("p")
    assert taker.metrics.assets._value.get() == 0


def test_a_sensor_fault_wakes_the_worker_at_once():
    """A sensor fault opened by a reading that completes no window still wakes the worker, which
    publishes the fault now rather than at its next tick."""
    from sensorguard.service.sensors import ChannelLimits, SensorRules

    taker = ingest()
    taker.buffers.sensors = SensorRules(("a", "b"), (ChannelLimits(0.0, 10.0, None),) * 2, fill_limit=5)
    taker.take("sensors/p/readings", reading(T0))
    taker.sensor_events()  # (the asset's first reading's)
    got: list = []
    worker = threading.Thread(target=lambda: got.append(taker.next_batch(60.0)))
    worker.start()
    time.sleep(0.1)
    fault = time.monotonic()
    taker.take("sensors/p/readings", reading(T0 + 1, a=50.0, b=2.0))  # out of range
    worker.join(60.0)
    assert time.monotonic() - fault < 20.0 and got == [([], False)]
    assert [(asset, event.kind, event.channel) for asset, event in taker.sensor_events()] == [
        ("p", "out_of_range", "a")]


def test_sensor_events_dropped_are_counted_once_each():
    """``sensor_events_dropped`` adds the drops since the last call, not the running total again."""
    taker = ingest()
    taker.buffers.sensor_events_dropped = 3  # as the buffers count the events a full queue drops
    taker.sensor_events()
    taker.buffers.sensor_events_dropped = 5
    taker.sensor_events()
    taker.sensor_events()
    assert taker.metrics.sensor_events_dropped._value.get() == 5


def test_a_faulted_assets_held_values_are_not_recorded():
    """While a channel is faulted (out of range), its value is held at the last good one: those rows
    are no data, and are not offered to the recorder for retraining."""
    from sensorguard.service.sensors import ChannelLimits, SensorRules

    base = ingest()
    recorder = Recorder()
    taker = Ingest(base.settings, base.buffers, base.metrics, recorder)
    taker.buffers.sensors = SensorRules(("a", "b"), (ChannelLimits(0.0, 10.0, None),) * 2, fill_limit=5)
    for i, a in enumerate((1.0, 50.0, 1.5)):
        assert taker.take("sensors/p/readings", reading(T0 + i, a=a, b=2.0)) == ([], 1, "p")
    assert taker.buffers.faulted("p") and recorder.calls == [("add", "p", T0)]


def test_in_cluster_mode_no_topic_is_refused_as_not_ours():
    """Cluster mode has no static partitions (the leases decide what a worker reads): every reading
    handed to the ingest is its own, none refused as ``not_ours``."""
    taker = ingest(cluster=["nats://127.0.0.1:4222"])
    assert taker.take("sensors/line-2/pump/readings", reading(T0)) == ([], 1, "line-2/pump")


def test_a_full_batch_goes_without_waiting_for_more():
    """``batch_wait_ms`` lets a batch fill; one already full (``batch_max``) is taken at once."""
    taker = ingest(batch_max=2, batch_wait_ms=60000)
    for i in range(8):
        taker.take("sensors/p/readings", reading(T0 + i))
    started = time.monotonic()
    batch, last = taker.next_batch(60.0)
    assert len(batch) == 2 and last is False and time.monotonic() - started < 20.0
    assert taker.metrics.buffered_windows._value.get() == 1  # the gauge follows each batch taken


def test_a_batch_waits_batch_wait_ms_to_fill_not_more():
    """A batch short of ``batch_max`` waits ``batch_wait_ms`` milliseconds for more windows."""
    taker = ingest(batch_wait_ms=100)
    for i in range(4):
        taker.take("sensors/p/readings", reading(T0 + i))
    started = time.monotonic()
    batch, _ = taker.next_batch(60.0)
    assert len(batch) == 1 and 0.05 < time.monotonic() - started < 20.0  # (not 100 s: milliseconds)


def test_the_worker_waits_for_a_window_instead_of_spinning():
    """With nothing queued, ``next_batch`` waits up to ``wait_s`` for a window, and hands over the
    one that comes meanwhile. The asset's first reading is taken and its sensor event (the asset
    heard from) handed over first: that event wakes the worker too, which then returns no batch, so
    under load the worker woke before the window was due and the test failed now and then."""
    taker = ingest()
    taker.take("sensors/p/readings", reading(T0))
    assert [e.kind for _, e in taker.sensor_events()] == ["silent"]
    got: list = []
    worker = threading.Thread(target=lambda: got.append(taker.next_batch(60.0)))
    worker.start()
    time.sleep(0.1)
    for i in range(1, 4):
        taker.take("sensors/p/readings", reading(T0 + i))
    worker.join(60.0)
    assert len(got[0][0]) == 1 and got[0][1] is False


def test_a_lost_partitions_windows_are_each_counted_as_dropped():
    """``windows_dropped{reason="partition_lost"}`` counts the windows freed unscored, not the drops."""
    taker = ingest()
    for i in range(6):
        taker.take("sensors/p/readings", reading(T0 + i))
    assert taker.drop({"p"}) == 2
    assert taker.metrics.windows_dropped.labels("partition_lost")._value.get() == 2
    assert not taker.holds("p") and taker.metrics.buffered_windows._value.get() == 0


def test_a_hot_swap_forgets_the_saved_faults_it_told_ended():
    """Saved open faults the swapped-in model cannot judge are told ended once and forgotten (a
    channel it lacks), so no later watch resumes them; the ones it can judge are kept."""
    from sensorguard.service.cleaning import CleaningPolicy
    from sensorguard.service.sensors import ChannelLimits, SensorRules

    taker = ingest()
    kept = {"kind": "out_of_range", "channel": "a", "since": T0, "value": 50.0}
    gone = {"kind": "out_of_range", "channel": "z", "since": T0, "value": 50.0}
    taker.buffers.resumed_faults = {"p": [kept, gone]}
    taker.set_policy(CleaningPolicy(), SensorRules(("a", "b"), (ChannelLimits(0.0, 10.0, None),) * 2))
    assert taker.buffers.resumed_faults == {"p": [kept]}
    assert [(asset, e.kind, e.channel, e.fault) for asset, e in taker.sensor_events()] == [
        ("p", "out_of_range", "z", False)]

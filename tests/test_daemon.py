"""Daemon pieces without a broker (ingest, batching, scoring, housekeeping): ack after buffering,
batching, stale assets, listeners, logging."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from sensorguard.service.config import load_settings
from sensorguard.service.daemon import Daemon
from sensorguard.service.logs import JsonFormatter, RateLimiter, configure_logging
from sensorguard.service.publisher import iso

T0 = 1_767_225_600.0


class FakeClient:
    """Records acks and publishes; the ack checks the reading was already buffered."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.acks: list[tuple[int, int, int]] = []
        self.published: list[tuple[str, bytes, bool]] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append((mid, qos, len(self.daemon.buffers)))

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        self.published.append((topic, payload, retain))
        return SimpleNamespace(wait_for_publish=lambda timeout=None: None, is_published=lambda: True)


def make(tiny_bundle, **overrides) -> tuple[Daemon, FakeClient]:
    settings = load_settings({"model": None, "registry": None, "metrics_port": 0, **overrides}, {},
                             require_model=False)
    daemon = Daemon(settings, tiny_bundle, CollectorRegistry())
    client = FakeClient(daemon)
    daemon.publisher.client = client
    daemon.ingest.accepting = True
    daemon.connection.connected_since = time.monotonic() - 3600  # as if connected an hour ago
    return daemon, client


def message(asset: str, ts: float, mid: int = 1, qos: int = 1, **values) -> SimpleNamespace:
    doc = {"ts": ts, "values": values or {"a": 1.0, "b": 2.0, "c": 3.0}}
    return SimpleNamespace(topic=f"sensors/{asset}/readings", payload=json.dumps(doc).encode(), mid=mid, qos=qos)


def value(daemon: Daemon, name: str, **labels) -> float | None:
    return daemon.registry.get_sample_value(name, labels)


def test_a_reading_is_acknowledged_only_once_it_is_buffered(tiny_bundle):
    daemon, client = make(tiny_bundle)
    daemon.ingest.handle(client, message("pump-1", T0, mid=7))
    assert client.acks == [(7, 1, 1)]  # the asset's buffer existed when the ack went out
    assert value(daemon, "sensorguard_readings_total") == 1


def test_rejected_messages_are_acknowledged_and_counted(tiny_bundle):
    daemon, client = make(tiny_bundle)
    daemon.ingest.handle(client, SimpleNamespace(topic="sensors/p/readings", payload=b"{", mid=3, qos=1))
    assert client.acks == [(3, 1, 0)]
    assert value(daemon, "sensorguard_messages_rejected_total", reason="invalid_json") == 1


def test_one_reading_stamped_far_ahead_is_rejected_and_the_true_ones_after_it_are_kept(tiny_bundle):
    """A glitching clock's one reading (years ahead) must not make every true reading after it
    out of order (found by review: it did, until the asset went silent)."""
    daemon, client = make(tiny_bundle)
    for i in range(5):
        daemon.ingest.handle(client, message("pump-1", T0 + i, mid=i))
    daemon.ingest.handle(client, message("pump-1", T0 + 5e9, mid=5))  # about 2184: a clock glitch
    for i in range(5, 11):
        daemon.ingest.handle(client, message("pump-1", T0 + i, mid=10 + i))
    assert value(daemon, "sensorguard_messages_rejected_total", reason="future_ts") == 1
    assert value(daemon, "sensorguard_messages_rejected_total", reason="out_of_order") == 0
    assert value(daemon, "sensorguard_readings_total") == 11  # all true readings accepted
    assert daemon.buffers.last_ts("pump-1") == T0 + 10
    near, _ = make(tiny_bundle)  # within max_future_s (an hour): a clock a little ahead is no glitch
    near.ingest.handle(client, message("pump-2", time.time() + 600))
    # an accelerated replay runs ahead of the clock step by step, hours ahead in the end: kept (review)
    start = time.time() + 600
    for i in range(1, 4000):  # the model's 1 s steps, sent at once: 4,600 s ahead at the end
        near.ingest.handle(client, message("pump-2", start + i))
    assert value(near, "sensorguard_messages_rejected_total", reason="future_ts") == 0
    assert value(near, "sensorguard_readings_total") == 4000



def test_a_reading_minutes_ahead_of_the_clock_blinds_its_asset_for_a_few_readings_only(tiny_bundle, caplog,
                                                                                       tmp_path):
    """One reading from a glitching clock, ten minutes ahead (within max_future_s, so taken), made
    every true reading after it out_of_order until the asset went silent (about 5 minutes; issue 9's
    list). Five in a row, in order and behind a stamp no true reading has, now rewind the asset:
    its window restarts at the fifth and the readings after it are scored."""
    from sensorguard.service.asset_buffer import STEP_BACK_AFTER

    daemon, client = make(tiny_bundle, record_dir=str(tmp_path / "rec"))
    now = time.time() - 30
    for i in range(10):
        daemon.ingest.handle(client, message("pump-1", now + i, mid=i))
    daemon.ingest.handle(client, message("pump-1", now + 600, mid=10))  # a glitch, taken: within the hour
    assert daemon.recorder.held("pump-1")[-1] == now + 600
    restarts = value(daemon, "sensorguard_window_restarts_total")
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.ingest"):
        for i in range(10, 40):
            daemon.ingest.handle(client, message("pump-1", now + i, mid=11 + i))
    assert value(daemon, "sensorguard_messages_rejected_total", reason="out_of_order") == STEP_BACK_AFTER - 1
    assert daemon.buffers.last_ts("pump-1") == now + 39
    assert value(daemon, "sensorguard_window_restarts_total") == restarts + 1  # no window spans the step
    # the window refilled from the fifth (now + 14): 16 rows, then one every hop of 2; none ends at the glitch
    assert [w.ts - now for w in daemon.buffers.drain()] == [29, 31, 33, 35, 37, 39]
    assert "clock stepped back" in caplog.text and "'pump-1'" in caplog.text
    # another asset rewound seconds later is named too, at the next line or housekeeping tick (one line
    # a 10 s for all assets left it unnamed: a walk)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.ingest"):
        for i in range(10):
            daemon.ingest.handle(client, message("pump-4", now + i, mid=100 + i))
        daemon.ingest.handle(client, message("pump-4", now + 600, mid=110))
        for i in range(10, 20):
            daemon.ingest.handle(client, message("pump-4", now + i, mid=111 + i))
        assert "pump-4" not in caplog.text  # (within the interval)
        daemon.ingest._reject_log.interval_s = 0.0  # (the interval passed)
        daemon.housekeeping(time.monotonic())
    assert "clock stepped back: 'pump-4' (newest reading" in caplog.text
    # the recorder forgets the glitch's reading: held, it kept every true one from being committed
    # until the clock caught up, and went into the file out of order (a review)
    assert daemon.recorder.held("pump-1") == [now + i for i in (*range(10), *range(14, 40))]

    # a redelivered backlog (older than what came before the jump) does not rewind it
    old, client = make(tiny_bundle)
    for i in range(10):
        old.ingest.handle(client, message("pump-2", now + i, mid=i))
    old.ingest.handle(client, message("pump-2", now + 600, mid=10))
    for i in range(-20, 0):
        old.ingest.handle(client, message("pump-2", now + i, mid=30 + i))
    assert old.buffers.last_ts("pump-2") == now + 600
    assert value(old, "sensorguard_messages_rejected_total", reason="out_of_order") == 20
    # nor do readings that are themselves ahead of the clock (a sender's clock ten minutes fast)
    for i in range(1, 10):
        old.ingest.handle(client, message("pump-2", now + 590 + i / 10, mid=50 + i))
    assert old.buffers.last_ts("pump-2") == now + 600


def test_a_rewind_keeps_the_stamp_before_the_jump_and_needs_one(tiny_bundle):
    """Two holes a review found in the rewind above. (1) Its fifth reading refused again (a firmware
    update: a new channel, and the clock set back) left the asset's newest stamp at -inf: an old
    redelivery was taken, and the asset's silence crashed the housekeeping pass writing -inf as a
    time. (2) A sender whose every remembered stamp is ahead of the clock (20 minutes fast) showed
    no jump, yet an old backlog rewound it and was scored again."""
    from sensorguard.service.asset_buffer import STEP_BACK_AFTER

    daemon, client = make(tiny_bundle, stale_after_s=60)
    now = time.time() - 30
    for i in range(10):
        daemon.ingest.handle(client, message("pump-1", now + i, mid=i))
    daemon.ingest.handle(client, message("pump-1", now + 600, mid=10))
    for i in range(10, 20):
        daemon.ingest.handle(client, message("pump-1", now + i, mid=11 + i, a=1.0, b=2.0, c=3.0, x=4.0))
    assert value(daemon, "sensorguard_messages_rejected_total", reason="unknown_channel") == 6
    assert daemon.buffers.last_ts("pump-1") == now + 9  # back to the newest stamp before the jump
    assert daemon.buffers.add("pump-1", now + 1.5, {"a": 1.0, "b": 2.0, "c": 3.0}, 0.0) == "out_of_order"
    daemon.housekeeping(time.monotonic() + 61)  # its silence: ended, its last reading's time said
    assert "pump-1" not in daemon.buffers
    assert any(b'"silent"' in payload for _, payload, _ in client.published)

    # a takeover primes the new owner with the same readings: it rewinds at the same fifth, or it was
    # blinded again by the glitch its predecessor had got over (a review)
    heir, client = make(tiny_bundle)
    values = {"a": 1.0, "b": 2.0, "c": 3.0}
    primed = [(now + i, values) for i in range(10)] + [(now + 600, values)] + [(now + i, values) for i in range(10, 20)]
    assert value(heir, "sensorguard_alerts_total", asset="pump-1") is None
    assert heir.ingest.prime("pump-1", primed, None)[0] == 10 + 1 + 10 - (STEP_BACK_AFTER - 1)
    # its alerts_total is at 0 from the takeover, as from a first reading taken: born at its first
    # scored window, a first alert counted it at 1 and increase() never saw it (session 74's open end)
    assert value(heir, "sensorguard_alerts_total", asset="pump-1") == 0
    assert heir.buffers.last_ts("pump-1") == now + 19
    # what the old owner refused as future_ts is in the window stream too: left out again (a review)
    ahead = [(now + 20, values), (now + 7200, values), (now + 21, values)]
    assert heir.ingest.prime("pump-5", ahead, None)[0] == 2 and heir.buffers.last_ts("pump-5") == now + 21
    heir.ingest.handle(client, message("pump-1", now + 20))
    assert value(heir, "sensorguard_readings_total") == 1  # taken, not out of order

    # a glitch as a new asset's first reading: nothing before it, yet the run shows it (a walk: ~300
    # readings refused, then a false silent fault, while it sent every second)
    fresh, client = make(tiny_bundle)
    fresh.ingest.handle(client, message("pump-3", now + 600))
    for i in range(10):
        fresh.ingest.handle(client, message("pump-3", now + i, mid=i + 1))
    assert fresh.buffers.last_ts("pump-3") == now + 9
    assert value(fresh, "sensorguard_messages_rejected_total", reason="out_of_order") == STEP_BACK_AFTER - 1
    for i in (1, 2):  # but a new sender whose clock runs 5 min fast, then its backlog: not rewound (a review)
        fresh.ingest.handle(client, message("pump-6", now + 300 + i))
    for i in range(8):
        fresh.ingest.handle(client, message("pump-6", now - 100 + i))
    assert fresh.buffers.last_ts("pump-6") == now + 302

    fast, client = make(tiny_bundle)
    for i in range(1100):
        fast.ingest.handle(client, message("pump-2", now + 1200 + i, mid=i))
    for i in range(10):  # older than all of them, behind the clock: a backlog sent again
        fast.ingest.handle(client, message("pump-2", now - 100 + i, mid=5000 + i))
    assert fast.buffers.last_ts("pump-2") == now + 2299
    assert value(fast, "sensorguard_messages_rejected_total", reason="out_of_order") == 10


def test_one_message_cannot_step_an_assets_clock_weeks_ahead(tiny_bundle):
    """500 samples each 3,599 s after the one before passed the future check one by one (each
    within max_future_s of the last, most refused for their rate yet stepping the clock) and
    stamped the asset 21 days ahead: its true readings were out of order until it went silent
    (found by review). Only readings taken step it."""
    daemon, client = make(tiny_bundle)
    now = time.time()
    daemon.ingest.handle(client, message("pump-1", now))
    samples = [{"ts": now + 3599 * (k + 1), "values": {"a": 1.0, "b": 2.0, "c": 3.0}} for k in range(500)]
    payload = json.dumps({"samples": samples}).encode()
    daemon.ingest.handle(client, SimpleNamespace(topic="sensors/pump-1/readings", payload=payload, mid=2, qos=1))
    # the first few are taken (a gap, then the rate estimate sees them slow): hours ahead, not weeks
    assert daemon.buffers.last_ts("pump-1") <= now + 8 * 3600  # (7 steps at SLOW_RATE 1.75)
    assert value(daemon, "sensorguard_messages_rejected_total", reason="future_ts") >= 490
    # a batched replay of a 10 s recording, hours ahead of the clock in one message: kept (review)
    from dataclasses import replace

    replayed, _ = make(replace(tiny_bundle, sample_period=10.0))
    samples = [{"ts": now + 10 * k, "values": {"a": 1.0, "b": 2.0, "c": 3.0}} for k in range(900)]
    payload = json.dumps({"samples": samples}).encode()
    replayed.ingest.handle(client, SimpleNamespace(topic="sensors/pump-9/readings", payload=payload, mid=3, qos=1))
    assert value(replayed, "sensorguard_messages_rejected_total", reason="future_ts") == 0


def test_readings_sent_one_a_message_cannot_walk_an_asset_clock_ahead_either(tiny_bundle):
    """The same 3,599 s steps sent one per message: each refused for its rate still moved the stamp
    the future check compared with, so the asset ended 8 days ahead (found by review)."""
    daemon, client = make(tiny_bundle)
    now = time.time()
    daemon.ingest.handle(client, message("pump-1", now))
    for k in range(200):
        daemon.ingest.handle(client, message("pump-1", now + 3599 * (k + 1), mid=k + 2))
    assert daemon.buffers.last_ts("pump-1") <= now + 8 * 3600  # (7 steps at SLOW_RATE 1.75)
    assert value(daemon, "sensorguard_messages_rejected_total", reason="future_ts") >= 190


def test_a_retained_reading_is_a_stale_last_value_counted_and_acknowledged_not_taken(tiny_bundle):
    """A broker sends a retained reading again at every (re)subscription: taken, a dead sensor's
    last value brought its silent asset back and ended its fault at each reconnect (review)."""
    daemon, client = make(tiny_bundle)
    stale = message("pump-1", time.time() - 3600, mid=7)
    stale.retain = True
    daemon.ingest.handle(client, stale)
    assert (7, 1) in [(mid, qos) for mid, qos, _ in client.acks] and len(daemon.buffers) == 0
    assert value(daemon, "sensorguard_messages_rejected_total", reason="retained") == 1
    daemon.ingest.handle(client, message("pump-1", time.time(), mid=8))  # a live one: taken
    assert len(daemon.buffers) == 1


def test_a_topic_that_is_not_utf8_is_counted_and_acknowledged_not_fatal(tiny_bundle):
    """paho hands such a message over and raises when its topic is read: in the callback that
    stopped its network thread, so nothing more was received (found by review)."""
    import paho.mqtt.client as paho

    daemon, client = make(tiny_bundle)
    bad = paho.MQTTMessage(mid=5, topic=b"sensors/\xff/readings")
    bad.qos = 1
    daemon.connection._route(client, None, bad)
    assert client.acks[-1][:2] == (5, 1)
    assert value(daemon, "sensorguard_messages_rejected_total", reason="bad_asset") == 1
    daemon.connection._route(client, None, message("pump-1", T0, mid=6))
    assert value(daemon, "sensorguard_readings_total") == 1

def test_while_stopping_messages_are_left_unacknowledged_for_the_session(tiny_bundle):
    daemon, client = make(tiny_bundle)
    daemon.ingest.accepting = False
    daemon.ingest.handle(client, message("pump-1", T0))
    assert client.acks == [] and len(daemon.buffers) == 0


def test_windows_are_batched_up_to_batch_max(tiny_bundle):
    daemon, client = make(tiny_bundle, batch_max=3, batch_wait_ms=0)
    for asset in ("a1", "a2", "a3", "a4"):
        for i in range(tiny_bundle.window):
            daemon.ingest.handle(client, message(asset, T0 + i))
    batch, last = daemon.ingest.next_batch(0.0)
    assert (len(batch), last) == (3, False)
    assert [w.asset for w in batch] == ["a1", "a2", "a3"]
    daemon.ingest.stop()
    batch, last = daemon.ingest.next_batch(0.0)  # stopping: everything still due, in one last batch
    assert ([w.asset for w in batch], last) == (["a4"], True)


def test_scored_windows_step_alerts_publish_and_reach_listeners(tiny_bundle):
    daemon, client = make(tiny_bundle, raise_after=1, clear_after=1)
    seen = []
    daemon.add_listener(seen.append)
    for i in range(tiny_bundle.window):
        daemon.ingest.handle(client, message("pump-1", T0 + i, a=1e3 * (i % 2), b=-1e3, c=1e3))
    batch, _ = daemon.ingest.next_batch(0.0)
    daemon.score_batch(batch)
    assert [(w.asset, w.ts, w.status) for w in seen] == [("pump-1", T0 + tiny_bundle.window - 1, "alerting")]
    topics = [t for t, _, _ in client.published]
    assert topics == ["sensorguard/alerts/pump-1", "sensorguard/state/pump-1"]
    event = json.loads(client.published[0][1])
    assert event["state"] == "raised" and event["ts"] == iso(T0 + tiny_bundle.window - 1)
    assert [c["name"] for c in event["channels"]] and len(event["channels"]) == 3
    assert client.published[1][2] is True  # state is retained
    assert value(daemon, "sensorguard_alerts_total", asset="pump-1") == 1
    assert value(daemon, "sensorguard_anomaly_active", asset="pump-1") == 1
    assert value(daemon, "sensorguard_windows_scored_total") == 1


def test_windows_never_judged_are_counted_and_a_failed_batch_keeps_the_sensor_faults(tiny_bundle, monkeypatch):
    """A batch whose scoring failed was logged but not counted, and the sensor events taken just
    before it were lost with it; windows queued for an asset that went silent vanished uncounted;
    window restarts were counted but not exported (found by review)."""
    daemon, client = make(tiny_bundle, stale_after_s=60)
    for i in range(tiny_bundle.window):
        daemon.ingest.handle(client, message("pump-1", T0 + i))
    daemon.ingest.handle(client, message("pump-1", T0 + 1000))  # a long gap: the window restarts
    assert value(daemon, "sensorguard_window_restarts_total") == 1
    sensor_events = []
    monkeypatch.setattr(daemon.alerts, "sensor", lambda asset, event: sensor_events.append(asset))
    monkeypatch.setattr(daemon, "score_batch", lambda batch: 1 / 0)
    daemon.ingest.stop()
    daemon._work()  # one last batch: its scoring fails, the worker carries on and returns
    assert value(daemon, "sensorguard_windows_dropped_total", reason="scoring_failed") == 1
    assert sensor_events == ["pump-1"]  # the asset's first reading (silent -> back) was still told
    # a failed batch of an alert's windows off the hop grid counts too (it added 0: the rule never fired)
    import numpy as np

    from sensorguard.service.asset_buffer import DueWindow

    daemon._score_counted([DueWindow("pump-1", T0 + 2000 + k, np.zeros((3, 16)), 0.0, coarse=False)
                           for k in range(2)])
    assert value(daemon, "sensorguard_windows_dropped_total", reason="scoring_failed") == 3


def test_a_silent_assets_queued_windows_are_judged_before_its_silence_ends_it(tiny_bundle):
    """An abuse walk drained a backlog for longer than ``stale_after_s``: assets whose readings
    were all in hand went silent, and their queued windows were dropped unscored (12,304 of them),
    an alert they held never raised. They are judged first, as offline judges every row before a
    gap; then the silence ends the alert they raised."""
    daemon, client = make(tiny_bundle, stale_after_s=60, raise_after=1, clear_after=1)
    for i in range(tiny_bundle.window):
        daemon.ingest.handle(client, message("pump-2", T0 + i, a=1e3 * (i % 2), b=-1e3, c=1e3))
    assert daemon.buffers.pending() == 1
    daemon.housekeeping(time.monotonic() + 61)  # silent with its window still queued
    events = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-2"]
    assert [e["state"] for e in events] == ["raised", "sensor_fault"]  # judged: its alert rose, then ended
    assert value(daemon, "sensorguard_windows_scored_total") == 1
    assert value(daemon, "sensorguard_windows_dropped_total", reason="scoring_failed") == 0
    assert (events[1]["kind"], events[1]["alert_id"]) == ("silent", events[0]["alert_id"])  # the alert it ends
    assert daemon.buffers.queued() == 0 and "pump-2" not in daemon.buffers


def test_an_asset_back_while_its_silent_windows_are_judged_keeps_its_new_readings(tiny_bundle, tmp_path):
    """A review: the windows judged before a silence ends its asset free the queue, so the network
    thread may take the asset's next readings meanwhile; the end then forgot them in the recorder
    (held as normal data). Only what came before the silence goes; the return is told after it."""
    daemon, client = make(tiny_bundle, stale_after_s=60, record_dir=str(tmp_path / "rec"))
    for i in range(tiny_bundle.window):
        daemon.ingest.handle(client, message("pump-2", T0 + i))
    daemon.publish_sensor_faults()
    judge = daemon._score_counted

    def judging(batch):  # the asset is back while its old windows are judged
        judge(batch)
        for i in range(3):
            daemon.ingest.handle(client, message("pump-2", T0 + 100 + i))

    daemon._score_counted = judging
    daemon.housekeeping(time.monotonic() + 61)
    assert [ts for ts, _ in daemon.recorder._pending["pump-2"]] == [T0 + 100, T0 + 101, T0 + 102]
    daemon.publish_sensor_faults()
    told = [(json.loads(p)["state"], json.loads(p).get("kind")) for t, p, _ in client.published
            if t == "sensorguard/alerts/pump-2"]
    assert told == [("sensor_fault", "silent"), ("sensor_ok", "silent")]


def test_a_lost_partitions_queued_windows_are_dropped_and_counted_not_scored_twice(tiny_bundle):
    """Cluster mode: after a lease ran out and another worker took the partition, this worker still
    scored its queued windows, which the new owner primes and scores too: the same alerts twice
    (found by review). They are dropped at once, and counted."""
    daemon, client = make(tiny_bundle)
    for asset in ("pump-1", "pump-2"):
        for i in range(tiny_bundle.window):
            daemon.ingest.handle(client, message(asset, T0 + i))
    assert daemon.buffers.pending() == 2
    assert daemon.ingest.drop({"pump-1"}) == 1
    assert daemon.buffers.pending() == 1 and "pump-1" not in daemon.buffers and "pump-2" in daemon.buffers
    assert value(daemon, "sensorguard_windows_dropped_total", reason="partition_lost") == 1


def test_a_silent_assets_windows_of_a_partition_lost_meanwhile_are_dropped_not_scored(tiny_bundle, monkeypatch):
    """A review: taken out of the queue to be judged before their silence, a silent asset's windows
    escaped Ingest.drop when the lease was lost meanwhile, and the new owner scored them too. Before
    each batch the partition is asked again: windows no longer this worker's are dropped, counted."""
    from types import SimpleNamespace

    daemon, client = make(tiny_bundle, stale_after_s=60)
    for asset in ("pump-1", "pump-2"):
        for i in range(tiny_bundle.window):
            daemon.ingest.handle(client, message(asset, T0 + i))
    daemon.source = SimpleNamespace(serves=lambda asset: asset == "pump-2", step=lambda: None)
    scored = []
    monkeypatch.setattr(daemon, "score_batch", lambda batch: scored.extend(w.asset for w in batch))
    daemon.housekeeping(time.monotonic() + 61)
    assert scored == ["pump-2"]
    assert value(daemon, "sensorguard_windows_dropped_total", reason="partition_lost") == 1


def test_an_asset_whose_readings_are_all_refused_is_told_so_not_that_it_sent_nothing(tiny_bundle, caplog):
    """A plant added a sensor: every reading of the asset carried its channel and was refused, and
    after stale_after_s the daemon said the asset "sent nothing" (its event, its log line), sending
    an operator to chase a network outage (a walk). It is still silent (nothing scored, its alert
    ends), but the event and the line say its readings were refused, and why."""
    import logging

    daemon, client = make(tiny_bundle, stale_after_s=60)
    for asset in ("pump-1", "pump-2"):
        daemon.ingest.handle(client, message(asset, T0))
    for i in range(1, 4):  # pump-1 goes on sending, with a new sensor's channel; pump-2 goes quiet
        daemon.ingest.handle(client, message("pump-1", T0 + i, a=1.0, b=2.0, c=3.0, speed=4.0))
    with caplog.at_level(logging.INFO, logger="sensorguard"):
        daemon.housekeeping(time.monotonic() + 61)
    events = {t.rsplit("/", 1)[1]: json.loads(p) for t, p, _ in client.published if t.startswith("sensorguard/alerts/")}
    assert events["pump-1"]["kind"] == "silent" and events["pump-1"]["refused"] == "unknown_channel"
    assert events["pump-2"]["kind"] == "silent" and "refused" not in events["pump-2"]
    said = caplog.text
    assert "asset pump-1: none of its readings taken for 60 s, they were refused (unknown_channel" in said
    assert "pump-1 silent: every reading refused (unknown_channel) after" in said
    assert "asset pump-2 sent nothing for 60 s" in said and "asset pump-1 sent nothing" not in said

    # a QoS 1 redelivery after the last reading is no refusal (it said "refused: duplicate_ts" for a
    # machine that went quiet: a review); a message refused whole (bad values) is one
    daemon, client = make(tiny_bundle, stale_after_s=60)
    for asset in ("pump-3", "pump-4"):
        daemon.ingest.handle(client, message(asset, T0))
        daemon.ingest.handle(client, message(asset, T0 + 1))
    daemon.ingest.handle(client, message("pump-3", T0 + 1, mid=2))
    bad = message("pump-4", T0 + 2)
    daemon.ingest.handle(client, SimpleNamespace(**{**vars(bad), "payload": b'{"ts": %d, "values": "x"}' % (T0 + 2)}))
    daemon.housekeeping(time.monotonic() + 61)
    events = {t.rsplit("/", 1)[1]: json.loads(p) for t, p, _ in client.published if t.startswith("sensorguard/alerts/")}
    assert "refused" not in events["pump-3"]
    assert events["pump-4"]["refused"] == "bad_values"
    # a clock stuck on one stamp, with new values, is refused readings, not silence (a review)
    daemon, client = make(tiny_bundle, stale_after_s=60)
    for i in range(3):
        daemon.ingest.handle(client, message("pump-5", T0 + min(i, 1), mid=i + 1, a=float(i), b=2.0, c=3.0))
    daemon.housekeeping(time.monotonic() + 61)
    events = {t.rsplit("/", 1)[1]: json.loads(p) for t, p, _ in client.published if t.startswith("sensorguard/alerts/")}
    assert events["pump-5"]["refused"] == "duplicate_ts"


def test_silent_assets_get_a_silent_sensor_fault_and_free_their_slot(tiny_bundle):
    daemon, client = make(tiny_bundle, stale_after_s=60, max_assets=1)
    daemon.ingest.handle(client, message("pump-1", T0))
    daemon.publish_sensor_faults()
    daemon.housekeeping(time.monotonic())  # not silent yet
    assert client.published == []  # (a first reading ends no silent fault: there was none)
    daemon.housekeeping(time.monotonic() + 61)
    events = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-1"]
    assert [(e["state"], e["kind"], e["channel"]) for e in events] == [("sensor_fault", "silent", None)]
    assert events[0]["ts"] == iso(T0)  # reading time, like every other event: its last reading
    assert "alert_id" not in events[0]  # no alert was up
    state = [json.loads(p) for t, p, r in client.published if t == "sensorguard/state/pump-1" and r]
    assert state[-1]["state"] == "stale"
    assert state[-1]["sensor_faults"] == [{"kind": "silent", "channel": None, "since": iso(T0)}]
    assert value(daemon, "sensorguard_sensor_faults_total", kind="silent") == 1
    assert value(daemon, "sensorguard_assets_silent") == 1 and value(daemon, "sensorguard_sensor_faults_open") == 0
    assert len(daemon.buffers) == 0 and daemon.snapshot() == {}
    daemon.ingest.handle(client, message("pump-2", T0))  # the slot is free again
    assert value(daemon, "sensorguard_messages_rejected_total", reason="too_many_assets") == 0


def test_a_silent_asset_ends_its_alert_and_its_first_reading_back_closes_the_fault(tiny_bundle):
    daemon, client = make(tiny_bundle, stale_after_s=60)
    for i in range(3):
        daemon.alerts.apply("pump-1", T0 + i, 5.0, [])
    alert_id = daemon.snapshot()["pump-1"].alert_id
    assert alert_id
    daemon.ingest.handle(client, message("pump-1", T0 + 3))
    daemon.publish_sensor_faults()
    daemon.housekeeping(time.monotonic() + 61)
    client.published.clear()
    daemon.ingest.handle(client, message("pump-1", T0 + 500))  # back
    daemon.publish_sensor_faults()
    events = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-1"]
    assert [(e["state"], e["kind"], e["ts"]) for e in events] == [("sensor_ok", "silent", iso(T0 + 500))]
    state = [json.loads(p) for t, p, r in client.published if t == "sensorguard/state/pump-1" and r]
    assert state[-1]["state"] == "normal" and state[-1]["sensor_faults"] == []
    assert value(daemon, "sensorguard_assets_silent") == 0


def test_a_silent_assets_log_lines_read_as_the_whole_assets(tiny_bundle, caplog):
    """The line read `sensor_fault: clk-b silent of None (value nan)` (a walk): a silence is the
    whole asset's and has no value; the line says when its last reading was, and its first back."""
    daemon, client = make(tiny_bundle, stale_after_s=60)
    daemon.ingest.handle(client, message("clk-b", T0))
    daemon.publish_sensor_faults()  # (its first reading ever ends no silence)
    with caplog.at_level(logging.INFO, logger="sensorguard.service.publisher"):
        daemon.housekeeping(time.monotonic() + 61)
        daemon.ingest.handle(client, message("clk-b", T0 + 500))  # back
        daemon.publish_sensor_faults()
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("sensor_")] == [
        "sensor_fault: clk-b silent: no reading after 2026-01-01T00:00:00.000Z",
        "sensor_ok: clk-b silent ended: a reading at 2026-01-01T00:08:20.000Z"]


def test_the_silent_fault_names_the_alert_it_ends(tiny_bundle):
    daemon, client = make(tiny_bundle, stale_after_s=60)
    for i in range(3):
        daemon.alerts.apply("pump-1", T0 + i, 5.0, [])
    alert_id = daemon.snapshot()["pump-1"].alert_id
    daemon.alerts.end("pump-1", T0 + 2)
    silent = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-1"][-1]
    assert silent["kind"] == "silent" and silent["alert_id"] == alert_id


def test_silent_assets_awaited_are_capped(tiny_bundle, monkeypatch):
    import sensorguard.service.asset_faults as asset_faults

    monkeypatch.setattr(asset_faults, "SILENT_KEPT", 2)
    daemon, _ = make(tiny_bundle)
    for k in range(3):
        daemon.alerts.end(f"a{k}", T0)
    assert value(daemon, "sensorguard_assets_silent") == 2
    assert value(daemon, "sensorguard_sensor_events_dropped_total") == 1
    assert daemon.alerts.sensor_faults("a0") == [] and daemon.alerts.sensor_faults("a2")


def test_a_broker_outage_makes_no_asset_stale(tiny_bundle):
    daemon, client = make(tiny_bundle, stale_after_s=60)
    daemon.ingest.handle(client, message("pump-1", T0))
    now = time.monotonic()
    daemon.connection.connected_since = None  # the broker went away: the readings wait there
    daemon.housekeeping(now + 61)
    daemon.connection.connected_since = now + 100  # back: silence counts from the reconnect
    daemon.housekeeping(now + 120)
    assert client.published == [] and "pump-1" in daemon.buffers
    daemon.housekeeping(now + 161)  # connected for stale_after_s and still nothing: now it is stale
    assert [json.loads(p)["kind"] for t, p, _ in client.published if t == "sensorguard/alerts/pump-1"] == ["silent"]


def test_rate_limiter_reports_counts_once_per_interval():
    clock = iter([0.0, 0.5, 1.0, 10.5, 11.0]).__next__
    limiter = RateLimiter(10.0, clock=clock)
    assert [limiter.hit("x") for _ in range(5)] == [1, None, None, 3, None]
    assert RateLimiter(10.0, clock=lambda: 0.0).hit("y") == 1


def test_json_log_lines_carry_extras():
    stream = io.StringIO()
    configure_logging(json_lines=True, level="INFO", stream=stream)
    try:
        logging.getLogger("sensorguard.test").warning("rejected %s", "bad_ts", extra={"reason": "bad_ts"})
    finally:
        configure_logging(stream=io.StringIO())
    line = json.loads(stream.getvalue())
    assert line["msg"] == "rejected bad_ts" and line["reason"] == "bad_ts" and line["level"] == "WARNING"
    assert line["ts"].endswith("Z") and line["logger"] == "sensorguard.test"
    assert set(line) == {"ts", "level", "logger", "msg", "reason"}  # extras in, LogRecord internals out


def test_json_formatter_time_and_exception():
    record = logging.LogRecord("sensorguard.x", logging.ERROR, __file__, 1, "boom %d", (1,), None)
    record.created = T0 + 0.25
    try:
        raise ValueError("bad input")
    except ValueError:
        record.exc_info = sys.exc_info()
    out = json.loads(JsonFormatter().format(record))
    assert out["ts"] == "2026-01-01T00:00:00.250Z" and out["level"] == "ERROR" and out["msg"] == "boom 1"
    assert out["exc"].startswith("Traceback") and out["exc"].endswith("ValueError: bad input")


@pytest.mark.parametrize("ts, text", [(0.0, "1970-01-01T00:00:00.000Z"), (T0 + 0.25, "2026-01-01T00:00:00.250Z")])
def test_iso_timestamps(ts, text):
    assert iso(ts) == text


def test_network_thread_waits_while_the_scorer_is_far_behind(tiny_bundle):
    import threading

    daemon, client = make(tiny_bundle, batch_max=1)  # backlog limit: BACKLOG_BATCHES windows
    for i in range(22):  # window 16, hop 2: windows due after samples 16, 18, 20, 22
        daemon.ingest.handle(client, message("pump-1", T0 + i, mid=i + 1))
    assert daemon.buffers.pending() == 4
    late = threading.Thread(target=daemon.ingest.handle, args=(client, message("pump-1", T0 + 22, mid=99)))
    late.start()
    late.join(0.3)
    assert late.is_alive() and client.acks[-1][0] == 22  # held back, not acknowledged: the broker keeps it
    with daemon.ingest.cond:
        daemon.buffers.drain()  # what the scoring worker does
    late.join(2.0)
    assert not late.is_alive() and client.acks[-1][0] == 99


def test_a_message_caught_by_shutdown_is_neither_buffered_nor_acknowledged(tiny_bundle):
    import threading

    daemon, client = make(tiny_bundle, batch_max=1)
    for i in range(22):  # the scorer is BACKLOG_BATCHES behind: the next message waits
        daemon.ingest.handle(client, message("pump-1", T0 + i, mid=i + 1))
    late = threading.Thread(target=daemon.ingest.handle, args=(client, message("pump-1", T0 + 22, mid=99)))
    late.start()
    late.join(0.3)
    daemon.ingest.stop()
    last, is_last = daemon.ingest.next_batch(0.0)  # the worker's last batch
    late.join(2.0)
    assert not late.is_alive() and is_last and len(last) == 4
    assert client.acks[-1][0] == 22  # 99 stays with the broker: its window would never be scored
    assert daemon.buffers.pending() == 0


def test_a_serving_hop_other_than_the_bundles_is_warned_about(tiny_bundle):
    from dataclasses import replace

    from sensorguard.service.bundle_checks import hop_warning

    bundle = replace(tiny_bundle, hop=4, focus=4, calibration={"expected_false_alarms_per_day": 1.0})
    assert hop_warning(4, bundle) is None
    assert "judged more than once" in hop_warning(1, bundle) and "train --hop 1" in hop_warning(1, bundle)
    assert "expect about 4 or more" in hop_warning(1, bundle)  # the promise at the serving hop, not the bundle's
    assert "partly not at all" in hop_warning(8, bundle)


def test_a_raise_after_other_than_the_promises_is_warned_about(tiny_bundle, caplog):
    """The promise counts alerts under the raise rule it was calibrated with; serving another one
    changed it without a word (found by review)."""
    from sensorguard.service.alerts import AlertRules
    from sensorguard.service.bundle_checks import rules_warning

    calibration = {"alerts": {"raise_after": 3, "promised_per_day": 1.0}}
    assert rules_warning(AlertRules(raise_after=3), calibration) is None
    assert rules_warning(AlertRules(raise_after=1), {}) is None  # no alert-level promise to break
    note = rules_warning(AlertRules(raise_after=1), calibration)
    assert "expect more false alerts than its 1.0 a day" in note and "raise_after 3" in note
    assert "expect fewer" in rules_warning(AlertRules(raise_after=5), calibration)
    bundle = tiny_bundle.with_threshold(0.5, {"method": "alerts", **calibration})
    daemon, _ = make(bundle, raise_after=1)
    with caplog.at_level(logging.WARNING):
        daemon.announce()
    assert any("raise_after 1 differs" in r.getMessage() for r in caplog.records)


def test_a_hot_swap_adopts_the_new_bundles_cleaning_policy(tiny_bundle, tmp_path):
    from dataclasses import replace

    from sensorguard.service.bundle import save_bundle

    save_bundle(tiny_bundle, tmp_path / "m")
    daemon, _ = make(tiny_bundle, model=str(tmp_path / "m"))
    assert daemon.buffers.policy.fill_limit == 5
    save_bundle(replace(tiny_bundle, fill_limit=2), tmp_path / "m")
    assert daemon.models.check(force=True) is True  # the same directory, reloaded (SIGHUP)
    assert daemon.buffers.policy == replace(tiny_bundle.cleaning, fill_limit=2)


def test_a_bundle_directory_that_will_not_load_is_named_in_the_refusal(tiny_bundle, tmp_path, caplog):
    """SIGHUP with a damaged ``model.pt`` logged "model m (none) refused": a bundle directory that
    does not load has no version to name, so the line names the directory (a walk)."""
    from sensorguard.service.bundle import save_bundle

    where = save_bundle(tiny_bundle, tmp_path / "m")
    daemon, _ = make(tiny_bundle, model=str(where))
    (where / "model.pt").write_bytes(b"not a model")
    with caplog.at_level(logging.ERROR):
        assert daemon.models.check(force=True) is False
    [line] = [r.getMessage() for r in caplog.records if "refused, still serving" in r.getMessage()]
    assert line.startswith(f"model {tiny_bundle.name} in {where} refused, still serving {tiny_bundle.version}: ")


def test_the_daemons_silence_follows_its_models_sampling_unless_set(tiny_bundle, tmp_path):
    """Unset, stale_after_s is 300 s or the gap the bundle fills, and a model swapped in with
    another sample period brings its own; set, it stays as set."""
    from dataclasses import replace

    from sensorguard.service.bundle import save_bundle

    daemon, _ = make(tiny_bundle, model=str(save_bundle(tiny_bundle, tmp_path / "m")))
    assert daemon.rules.stale_after == 300.0 and daemon.alerts.rules is daemon.rules
    save_bundle(replace(tiny_bundle, sample_period=600.0), tmp_path / "m")
    assert daemon.models.check(force=True) is True
    assert daemon.rules.stale_after == 6.5 * 600.0 and daemon.alerts.rules.stale_after == 6.5 * 600.0
    pinned, _ = make(replace(tiny_bundle, sample_period=600.0), stale_after_s=120.0)
    assert pinned.rules.stale_after == 120.0


def test_a_stale_after_shorter_than_the_filled_gap_is_warned_about(tiny_bundle):
    from sensorguard.service.bundle_checks import stale_warning
    from sensorguard.service.cleaning import CleaningPolicy

    policy = CleaningPolicy(sample_period=60.0, fill_limit=5)  # fills gaps up to 390 s (6.5 periods)
    assert "stale_after_s >= 390" in stale_warning(policy, 300.0)
    assert stale_warning(policy, 390.0) is None and stale_warning(CleaningPolicy(), 1.0) is None


def test_a_full_outgoing_queue_drops_and_counts_but_keeps_room_for_the_status(tiny_bundle, monkeypatch):
    """paho refused messages past its queue silently, the retained 'online' status among them, so the
    Last Will's 'offline' stood while the daemon served (found by review). A real paho client, not
    connected, holds what it cannot send, as during an outage."""
    from sensorguard.service import mqtt
    from sensorguard.service.alerts import AlertState

    monkeypatch.setattr(mqtt, "MAX_QUEUED_OUT", 3)
    daemon, _ = make(tiny_bundle)
    client = mqtt.create_client(daemon.settings)
    daemon.publisher.client = client
    for i in range(5):
        daemon.publisher.state(f"p{i}", AlertState(), T0, [], ("m", "v1"), 1.0)
    assert client.queued_out() == 3
    assert value(daemon, "sensorguard_publishes_dropped_total", kind="state") == 2
    info = daemon.publisher.status(online=True)  # behind the full backlog, in the room kept for it
    assert info.rc != 15 and client.queued_out() == 4
    assert value(daemon, "sensorguard_publishes_dropped_total", kind="status") == 0  # (there at 0, never raised)


def test_the_last_will_names_the_partitions_the_clean_status_names():
    from sensorguard.service import mqtt
    from sensorguard.service.config import load_settings

    settings = load_settings({"model": None, "cluster": ["nats://127.0.0.1:4222"]}, {}, require_model=False)
    client = mqtt.create_client(settings)
    assert json.loads(client._will_payload)["partitions"] == []  # as publisher.status says in cluster mode


def test_a_refused_subscription_is_said_and_the_daemon_is_not_ready(tiny_bundle, caplog):
    """A subscription the broker's access rules refuse meant no readings ever, logged at debug level
    by paho only, while /readyz said ready (found by review)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    daemon, _ = make(tiny_bundle)
    daemon.connection.connected.set()
    assert daemon.ready()
    granted, refused = ReasonCode(PacketTypes.SUBACK, identifier=1), ReasonCode(PacketTypes.SUBACK, "Not authorized")
    with caplog.at_level(logging.ERROR):
        daemon.connection._on_subscribe(None, None, 1, [refused], None)
        daemon.connection._on_subscribe(None, None, 2, [granted], None)  # the commands' filter, granted
    assert not daemon.ready() and "refused a subscription (Not authorized)" in caplog.text


def test_a_window_whose_alert_step_failed_is_not_judged_for_the_recorder(tiny_bundle, tmp_path, monkeypatch):
    """Found by review: the recorder was told a window was judged before its alert step ran, so
    when that step failed the readings were committed as normal though nothing had judged them."""
    daemon, client = make(tiny_bundle, record_dir=str(tmp_path / "rec"))
    for i in range(tiny_bundle.window):
        daemon.ingest.handle(client, message("pump-1", T0 + i))
    monkeypatch.setattr(daemon.alerts, "apply", lambda *a, **k: 1 / 0)
    batch, _ = daemon.ingest.next_batch(0.0)
    daemon.score_batch(batch)
    assert "pump-1" not in daemon.recorder._judged
    monkeypatch.undo()
    for i in range(tiny_bundle.window, tiny_bundle.window + tiny_bundle.hop):
        daemon.ingest.handle(client, message("pump-1", T0 + i))
    batch, _ = daemon.ingest.next_batch(0.0)
    daemon.score_batch(batch)
    assert daemon.recorder._judged["pump-1"] == T0 + tiny_bundle.window + tiny_bundle.hop - 1



def test_healthz_fails_when_the_scoring_worker_is_dead_or_stuck(tiny_bundle):
    """/healthz answered 200 whatever happened to the scoring worker, and /readyz too while the
    network thread blocked on the full buffers (found by review)."""
    import threading

    from sensorguard.service import daemon as daemon_module

    daemon, _ = make(tiny_bundle)
    assert daemon.alive()  # not started yet
    done = threading.Thread(target=lambda: None)
    done.start()
    done.join()
    daemon.connection.connected.set()  # otherwise ready
    daemon._threads = [done]  # the worker died
    assert not daemon.alive() and not daemon.ready()
    running = threading.Thread(target=threading.Event().wait, args=(2,), daemon=True)
    running.start()
    daemon._threads = [running]
    assert daemon.alive() and daemon.ready()
    daemon._beat -= daemon_module.STUCK_S + 1  # not round its loop for too long
    assert not daemon.alive()


def test_a_reconnect_takes_the_brokers_receive_maximum_and_without_the_session_publishes_every_state(tiny_bundle):
    """A broker restarted without persistence loses our session and its retained states; only
    `online` was published again, and an asset's state only at its next status change, days later
    perhaps (found by review). A reconnect that resumes the session publishes nothing more."""
    from paho.mqtt.reasoncodes import ReasonCode

    class Broker(FakeClient):
        def subscribe(self, *args, **kwargs):
            return 0, 1

        def receive_maximum(self, n: int) -> None:
            self.max_inflight = n

    daemon, _ = make(tiny_bundle)
    client = Broker(daemon)
    daemon.publisher.client = client
    for asset in ("pump-1", "pump-2"):
        daemon.alerts.apply(asset, T0, 0.5, [])
    ok = ReasonCode(2, "Success")

    def states_after_connect(session_present: bool) -> list[str]:
        client.published.clear()
        daemon.connection._on_connect(client, None, SimpleNamespace(session_present=session_present), ok, None)
        daemon.housekeeping(time.monotonic())
        return sorted(t for t, _, retain in client.published if t.startswith("sensorguard/state/") and retain)

    props = SimpleNamespace(ReceiveMaximum=10)  # a broker that takes 10 unacknowledged messages (HiveMQ)
    daemon.connection._on_connect(client, None, SimpleNamespace(session_present=True), ok, props)
    assert client.max_inflight == 10  # paho's 20 got the client disconnected for exceeding it
    daemon.connection._on_connect(client, None, SimpleNamespace(session_present=True), ok, None)
    assert client.max_inflight == 20
    daemon.connection._connected_before = False
    assert states_after_connect(False) == []  # the first connect of this run: nothing was published before
    assert states_after_connect(True) == []  # the session resumed: the broker kept what it had
    daemon.ingest.handle(client, message("pump-3", T0))
    daemon.housekeeping(time.monotonic() + 3600)  # pump-3 and the two went silent: published stale
    for asset in ("pump-1", "pump-2"):
        daemon.alerts.apply(asset, T0 + 4000, 0.5, [])  # back
    assert states_after_connect(False) == ["sensorguard/state/pump-1", "sensorguard/state/pump-2",
                                           "sensorguard/state/pump-3"]  # the silent one's stale state too
    stale = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/state/pump-3"]
    assert [s["state"] for s in stale] == ["stale"]


def test_messages_still_queued_at_the_stop_are_said_lost(tiny_bundle, caplog):
    """With the broker down at the stop, the final states and any backlog vanished at loop_stop
    without a log line (found by review)."""
    import logging

    class Down(FakeClient):
        def disconnect(self, **kwargs):
            pass

        def loop_stop(self):
            pass

        def queued_out(self) -> int:
            return 3

    daemon, _ = make(tiny_bundle)
    client = Down(daemon)
    daemon.publisher.client = client
    daemon.connection.connected.clear()
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.connection"):
        daemon.connection.close(lambda: [])
    assert any("3 outgoing messages" in r.getMessage() and "lost" in r.getMessage() for r in caplog.records)


def test_the_training_files_other_columns_are_ignored_live_and_other_names_refused(tiny_bundle):
    """A feed that mirrors the training file sends the columns train left out (a constant one, a
    label): every reading was refused as unknown_channel and the asset never scored (a walk). The
    bundle's ``ignored_columns`` are dropped from a reading; a name the file did not have is still
    a typo, and a swapped-in model's list replaces the old one."""
    from dataclasses import replace

    daemon, client = make(replace(tiny_bundle, ignored_columns=("flush_on", "anomaly")))
    daemon.ingest.handle(client, message("pump-1", T0, a=1.0, b=2.0, c=3.0, flush_on=1.0, anomaly=0.0))
    assert value(daemon, "sensorguard_readings_total") == 1
    assert daemon.buffers.last_row("pump-1") == [1.0, 2.0, 3.0]
    daemon.ingest.handle(client, message("pump-1", T0 + 1, mid=2, a=1.0, b=2.0, c=3.0, flush_onn=1.0))
    assert value(daemon, "sensorguard_messages_rejected_total", reason="unknown_channel") == 1
    # a text value under an ignored name (a run state) was bad_values for the whole reading (a review)
    daemon.ingest.handle(client, message("pump-1", T0 + 2, mid=3, a=1.0, b=2.0, c=3.0, flush_on="RUN"))
    assert value(daemon, "sensorguard_readings_total") == 2
    daemon.ingest.handle(client, message("pump-1", T0 + 3, mid=4, a=1.0, b=2.0, c="RUN"))  # a channel's: bad
    assert value(daemon, "sensorguard_messages_rejected_total", reason="bad_values") == 1
    daemon._swapped(tiny_bundle)  # a model trained on a file without those columns
    daemon.ingest.handle(client, message("pump-1", T0 + 4, mid=5, a=1.0, b=2.0, c=3.0, flush_on=1.0))
    assert value(daemon, "sensorguard_messages_rejected_total", reason="unknown_channel") == 2


def test_a_bundle_calibrated_with_raise_at_raises_on_one_strong_window_and_an_old_one_does_not(tiny_bundle):
    """The one-window raise is part of the line's promise: the daemon applies it when the bundle's
    calibration recorded it (and after a swap to such a bundle), never to a bundle calibrated
    without it, whose promise assumed three windows in a row."""
    calibrated = tiny_bundle.with_threshold(1.0, {"method": "alerts", "alerts": {"raise_after": 3, "raise_at": 2.0}})
    daemon, client = make(calibrated)
    assert daemon.alerts.apply("pump", T0, 2.5, [])[0].status == "alerting"
    old, _ = make(tiny_bundle)
    assert old.alerts.apply("pump", T0, 2.5, [])[0].status == "pending"
    # a window scored by the new model, also before the swap's callback ran: judged by its model's rule
    assert old.alerts.apply("pump-2", T0, 2.5, [], calibrated)[0].status == "alerting"
    old._swapped(calibrated)
    assert old.rules.raise_at == 2.0 and old.alerts.rules.raise_at == 2.0
    assert old.alerts.apply("pump-3", T0, 2.5, [], tiny_bundle)[0].status == "pending"


def test_a_daemon_cut_off_from_its_broker_past_the_grace_no_longer_publishes(tiny_bundle):
    """Cluster mode hands a worker's partitions on when what it judges cannot reach the broker: not
    at a reconnect's blip, and it takes none before its first connect."""
    from sensorguard.service.connection import PUBLISH_GRACE_S

    daemon, client = make(tiny_bundle)
    daemon.connection.connected_since = None
    assert not daemon.connection.publishes()  # never connected: nothing it judged would reach anyone
    daemon.connection.connected_since = time.monotonic()
    assert daemon.connection.publishes()
    daemon.connection._on_disconnect(client, None, None, 0, None)  # a drop starts the grace
    assert daemon.connection.connected_since is None and daemon.connection.publishes()
    daemon.connection.down_since -= PUBLISH_GRACE_S + 1
    assert not daemon.connection.publishes()
    clustered, _ = make(tiny_bundle, cluster=("nats://127.0.0.1:4222",))  # (connects at start only)
    clustered.connection.connected_since = None
    assert clustered.source.publishes() is False  # the ownership asks the daemon's connection
    clustered.connection.connected_since = time.monotonic()
    assert clustered.source.publishes() is True


def test_a_state_published_for_a_sensor_fault_carries_its_reading_time(tiny_bundle):
    """Found by a walk: a fault opened before any window was scored published the asset's
    retained state at the daemon's clock, its event at reading time ("every ts is reading time")."""
    from dataclasses import replace

    from sensorguard.service.sensors import ChannelLimits, SensorRules

    limits = tuple(ChannelLimits(-100.0, 100.0, None) for _ in tiny_bundle.channels)
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5))
    daemon, client = make(bundle)
    stamp = T0 - 7200.0  # two hours old: a backlog
    daemon.ingest.handle(client, message("pump-1", stamp, a=1.0, b=500.0, c=3.0))
    daemon.publish_sensor_faults()
    events = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-1"]
    assert [(e["state"], e["kind"], e["ts"]) for e in events] == [("sensor_fault", "out_of_range", iso(stamp))]
    states = [json.loads(p) for t, p, r in client.published if t == "sensorguard/state/pump-1" and r]
    assert states and states[-1]["ts"] == iso(stamp)


def test_the_retained_states_time_never_goes_back_when_a_fault_opens_before_the_first_window(tiny_bundle):
    """Found by a walk: a fault at reading 20 published the state at 20 before the batch that holds
    the first windows (ending at 15, 17, 19) was scored; the first window's state said 15."""
    from dataclasses import replace
    from datetime import datetime

    from sensorguard.service.sensors import ChannelLimits, SensorRules

    limits = tuple(ChannelLimits(-100.0, 100.0, None) for _ in tiny_bundle.channels)
    daemon, client = make(replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5)))
    for i in range(26):
        daemon.ingest.handle(client, message("pump-1", T0 + i, a=float(i % 3), b=500.0 if i == 20 else 1.0, c=3.0))
    batch, _ = daemon.ingest.next_batch(0.0)
    daemon.publish_sensor_faults()
    daemon.score_batch(batch)
    stamps = [datetime.fromisoformat(json.loads(p)["ts"].replace("Z", "+00:00")).timestamp() - T0
              for t, p, r in client.published if t == "sensorguard/state/pump-1" and r]
    assert len(stamps) >= 2 and stamps[0] == 20.0 and stamps == sorted(stamps), stamps


def test_a_silent_asset_back_with_no_usable_reading_stays_silent(tiny_bundle):
    """Found by review: back from a silence with a reading that was dropped (a channel missing), an
    asset ended its silent fault and was retained ``normal``; quiet again, it went unsaid, its
    state ``normal`` for good. It is back once a reading of it is taken."""
    daemon, client = make(tiny_bundle, stale_after_s=60)
    daemon.ingest.handle(client, message("pump-1", T0))
    daemon.publish_sensor_faults()
    daemon.housekeeping(time.monotonic() + 61)  # silent: a silent fault, its state stale
    client.published.clear()
    daemon.ingest.handle(client, message("pump-1", T0 + 500, a=1.0, b=2.0))  # c missing: dropped
    daemon.publish_sensor_faults()
    daemon.housekeeping(time.monotonic() + 200)  # quiet again: forgotten, still awaited
    assert client.published == [] and value(daemon, "sensorguard_assets_silent") == 1
    daemon.ingest.handle(client, message("pump-1", T0 + 900))  # a reading taken: back
    daemon.publish_sensor_faults()
    events = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-1"]
    assert [(e["state"], e["kind"], e["ts"]) for e in events] == [("sensor_ok", "silent", iso(T0 + 900))]
    assert value(daemon, "sensorguard_assets_silent") == 0


def test_the_retained_states_time_never_goes_back_when_a_fault_opens_ahead_of_its_windows(tiny_bundle):
    """Found by review: sensor faults are published before the batch their reading's windows are
    scored in; a state stamped with the fault's reading (60) was followed by the windows' (43)."""
    from dataclasses import replace
    from datetime import datetime

    from sensorguard.service.sensors import ChannelLimits, SensorRules

    limits = tuple(ChannelLimits(-100.0, 100.0, None) for _ in tiny_bundle.channels)
    daemon, client = make(replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, fill_limit=5)))
    for lo, hi in ((0, 20), (20, 41), (41, 61)):
        for i in range(lo, hi):
            b = 500.0 if i in (40, 60) else float(i % 2)
            daemon.ingest.handle(client, message("pump-1", T0 + i, a=float(i % 3), b=b, c=3.0))
        batch, _ = daemon.ingest.next_batch(0.0)
        daemon.publish_sensor_faults()
        if hi < 61:
            daemon.score_batch(batch)  # (the untrained model alerts)
        else:
            for window in batch:  # the windows before the fault at 60 score low: the alert clears
                daemon.alerts.apply("pump-1", window.ts, 0.0, [])
    stamps = [datetime.fromisoformat(json.loads(p)["ts"].replace("Z", "+00:00")).timestamp()
              for t, p, r in client.published if t == "sensorguard/state/pump-1" and r]
    assert len(stamps) >= 3 and stamps == sorted(stamps), [s - T0 for s in stamps]


def test_the_stale_partitions_unsubscribe_is_said_once_not_at_every_connect(tiny_bundle, caplog):
    """A walk: "unsubscribed from sensors/site-c/#: no longer this instance's partitions" was logged
    at every reconnect (and every second of a client-id clash), read as a layout change each time.
    The unsubscribe is sent at every connect (a resumed session may hold the filter); said once."""
    from paho.mqtt.reasoncodes import ReasonCode

    class Broker(FakeClient):
        def subscribe(self, *args, **kwargs):
            return 0, 1

        def unsubscribe(self, topics):
            self.unsubscribed = [*getattr(self, "unsubscribed", []), *topics]
            return 0, 1

    daemon, _ = make(tiny_bundle)
    client = Broker(daemon)
    daemon.connection.unsubscribe = ("sensors/site-c/#",)
    with caplog.at_level(logging.DEBUG, logger="sensorguard.service.connection"):
        for _ in range(3):
            daemon.connection._on_connect(client, None, SimpleNamespace(session_present=True),
                                          ReasonCode(2, "Success"), None)
    assert client.unsubscribed == ["sensors/site-c/#"] * 3
    said = [r for r in caplog.records if r.getMessage().startswith("unsubscribed from sensors/site-c/#")]
    assert [r.levelno for r in said] == [logging.INFO, logging.DEBUG, logging.DEBUG]


def test_a_states_peak_score_is_its_alerts_and_null_without_one(tiny_bundle):
    """A walk read a normal asset's retained state as ``"score": 0.993686, "peak_score": 0.0``: a
    peak under the score. The peak is the alert's (pending or up), null without one."""
    daemon, client = make(tiny_bundle)

    def last() -> dict:
        return [json.loads(p) for t, p, _ in client.published if t == "sensorguard/state/pump-1"][-1]

    daemon.alerts.apply("pump-1", T0, 0.5, [])
    daemon.alerts.publish_state("pump-1")
    assert (last()["state"], last()["score"], last()["peak_score"]) == ("normal", 0.5, None)
    daemon.alerts.apply("pump-1", T0 + 1, 2.5, [])
    daemon.alerts.apply("pump-1", T0 + 2, 1.5, [])
    daemon.alerts.publish_state("pump-1")
    assert (last()["state"], last()["score"], last()["peak_score"]) == ("pending", 1.5, 2.5)

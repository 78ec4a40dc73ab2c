"""Edges of a cluster takeover that no test pinned (found by mutating service/takeover.py): which
readings a new owner primes, which state and controls it adopts, and what it says.

The tests in tests/test_cluster.py run a real nats-server; these drive :class:`Takeover` against
an in-memory stand-in (:class:`FakeNats`: the few JetStream calls a rebuild makes), in milliseconds."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from nats.js.errors import KeyNotFoundError, NotFoundError
from prometheus_client import CollectorRegistry

from sensorguard.service import cluster
from sensorguard.service.alerts import AlertState
from sensorguard.service.commands import AlarmControls
from sensorguard.service.config import load_settings
from sensorguard.service.ingest import Ingest
from sensorguard.service.metrics import Metrics
from sensorguard.service.sensors import ChannelLimits, SensorRules
from sensorguard.service.state_entry import encode_asset
from sensorguard.service.takeover import PRIME_WARM, QUIET_BATCH, Takeover, prime_span
from sensorguard.service.windows import Buffers

T0 = 1_767_225_600.0
PARTITIONS = 8
WINDOW, HOP = 4, 2


def partition(asset: str) -> int:
    return cluster.partition_of(asset, PARTITIONS)


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching for the filters a rebuild uses (a trailing ``>`` or none)."""
    return subject.startswith(pattern[:-1]) if pattern.endswith(">") else subject == pattern


@dataclass
class Msg:
    subject: str
    data: bytes
    seq: int
    headers: dict | None = None
    time: datetime | None = None


@dataclass
class FakeNats:
    """The streams and the state bucket a takeover reads: ``streams`` by name (the readings stream
    holds only what no owner took yet), each stream's source position (``sources``; None: the
    server says none), and the window stream's ``keep``."""

    streams: dict[str, list[Msg]] = field(default_factory=dict)
    sources: dict[str, int | None] = field(default_factory=dict)
    keep: int = 0
    kv: dict[str, bytes] = field(default_factory=dict)
    unsubscribed: int = 0
    subscribed: int = 0
    input_seq: int = 0

    def jetstream(self) -> FakeNats:
        return self

    def add(self, stream: str, subject: str, data: bytes, headers: dict | None = None,
            stored: float | None = None) -> None:
        messages = self.streams.setdefault(stream, [])
        seq = max((m.seq for s in self.streams.values() for m in s), default=0) + 1  # interleaved sequences
        messages.append(Msg(subject, data, seq, headers,
                            datetime.fromtimestamp(time.time() if stored is None else stored, UTC)))

    def send(self, asset: str, stamps: list[float], taken: int = 0, stored: float | None = None,
             body: Any = None) -> None:
        """Readings of ``asset`` (channel ``a``) at ``T0 + stamp``, copied into both streams; the
        first ``taken`` were taken by the previous owner (gone from the readings stream)."""
        k = partition(asset)
        for i, stamp in enumerate(stamps):
            self.input_seq += 1
            data = json.dumps(body if body is not None else {"ts": T0 + stamp, "values": {"a": stamp}}).encode()
            header = {"Nats-Stream-Source": f"{cluster.IN_STREAM} {self.input_seq} x"}
            self.add(cluster.WINDOWS_STREAM, f"{cluster.WINDOWS_ROOT}.{k}.{asset}", data, header, stored)
            if i >= taken:
                self.add(cluster.READINGS_STREAM, f"{cluster.READINGS_ROOT}.{k}.{asset}", data, header, stored)
        for stream in (cluster.READINGS_STREAM, cluster.WINDOWS_STREAM):
            self.sources[stream] = self.input_seq

    def put(self, key: str, value: bytes) -> None:
        self.kv[key] = value
        self.add(f"KV_{cluster.STATE_BUCKET}", f"$KV.{cluster.STATE_BUCKET}.{key}", value)

    # -- what Takeover calls
    async def request(self, subject: str, body: bytes, timeout: float) -> Any:
        stream = subject.removeprefix("$JS.API.STREAM.INFO.")
        wanted = json.loads(body).get("subjects_filter", ">") if body else ">"
        counts = Counter(m.subject for m in self.streams.get(stream, []) if matches(wanted, m.subject))
        reply: dict = {"total": len(counts), "state": {"subjects": dict(counts)},
                       "config": {"max_msgs_per_subject": self.keep}}
        if self.sources.get(stream) is not None:
            reply["sources"] = [{"seq": self.sources[stream]}]
        return SimpleNamespace(data=json.dumps(reply).encode())

    async def get_msg(self, stream: str, seq: int, subject: str, next: bool) -> Msg:
        for message in self.streams.get(stream, []):
            if message.subject == subject and message.seq >= seq:
                return message
        raise NotFoundError

    async def get_last_msg(self, stream: str, subject: str) -> Msg:
        found = [m for m in self.streams.get(stream, []) if m.subject == subject]
        if not found:
            raise NotFoundError
        return found[-1]

    async def subscribe(self, subject: str, stream: str, ordered_consumer: bool, deliver_policy: Any,
                        cb: Any) -> Any:
        self.subscribed += 1
        messages = [m for m in self.streams.get(stream, []) if matches(subject, m.subject)]

        async def deliver() -> None:
            for message in messages:  # one at a time, as a subscription's callbacks run
                await cb(message)
                await asyncio.sleep(0)

        task = asyncio.ensure_future(deliver())
        fake = self

        class Subscription:
            async def unsubscribe(self) -> None:
                fake.unsubscribed += 1
                task.cancel()

        return Subscription()

    async def get(self, key: str) -> Any:  # the state bucket
        if key not in self.kv:
            raise KeyNotFoundError
        return SimpleNamespace(value=self.kv[key])


class Adopted:
    """An ``AssetAlerts`` stand-in: what the takeover handed it."""

    def __init__(self) -> None:
        self.adopted: dict[str, tuple] = {}
        self.faults: dict[str, list[dict]] = {}
        self.recorder: Any = None  # (a test's Recorder: the guard band handed on)

    def adopt(self, asset: str, *state: Any) -> None:
        self.adopted[asset] = state

    def restore_faults(self, faults: dict[str, list[dict]]) -> None:
        self.faults.update(faults)


def takeover(nats: FakeNats, controls: AlarmControls | None = None, ignored: tuple[str, ...] = (),
             sensors: SensorRules | None = None, **settings: Any) -> tuple[Takeover, Ingest, Adopted]:
    loaded = load_settings({"model": None, **settings}, {}, require_model=False)
    buffers = Buffers(("a",) if sensors is None else sensors.channels, WINDOW, HOP, ignored=ignored, sensors=sensors)
    ingest = Ingest(loaded, buffers, Metrics(CollectorRegistry()), None)
    alerts = Adopted()
    return Takeover(nats, nats, loaded, ingest, alerts, controls), ingest, alerts


def rebuild(nats: FakeNats, asset: str = "pump-1", partitions: int = PARTITIONS, **kwargs: Any
            ) -> tuple[list[str], int, Ingest, Adopted]:
    t, ingest, alerts = takeover(nats, **kwargs)
    assets, primed = asyncio.run(t.rebuild(partition(asset), partitions))
    return assets, primed, ingest, alerts


def test_a_takeover_primes_the_taken_readings_and_counts_them():
    """Readings 1-6 taken, 7-10 waiting: 1-6 prime the window (the count is what the rebuild's log
    line says), 7 is the first the new owner takes."""
    nats = FakeNats()
    nats.send("pump-1", list(range(1, 11)), taken=6)
    assets, primed, ingest, _ = rebuild(nats)
    assert assets == ["pump-1"] and primed == 6 and ingest.buffers.last_ts("pump-1") == T0 + 6


def test_the_cut_is_the_earliest_reading_of_a_batch_message():
    """A message of several samples waiting in the readings stream: its earliest sample is the
    first not taken. Cut at its latest, the earlier ones were primed as taken, then refused as
    repeats when the message came: lost, never scored."""
    nats = FakeNats()
    nats.send("pump-1", [1, 2, 3, 4, 5], taken=5)
    nats.send("pump-1", [0], body={"samples": [{"ts": T0 + 6, "values": {"a": 6}},
                                               {"ts": T0 + 7, "values": {"a": 7}}]})
    _, primed, ingest, _ = rebuild(nats)
    assert primed == 5 and ingest.buffers.last_ts("pump-1") == T0 + 5


@pytest.mark.parametrize("unreadable", [1, 3])
def test_unreadable_messages_before_the_first_untaken_reading_are_passed_over(unreadable: int):
    """An unreadable message (no time) first in the readings stream, among other assets'
    messages: the cut is the next readable one, not "none waits" (which primed the waiting
    readings too, refused as repeats when they came)."""
    nats = FakeNats()
    nats.send("pump-1", list(range(1, 7)), taken=6)
    nats.send("other-9", [1, 2, 3])  # (sequences in between: the next message is looked up by its own)
    nats.send("pump-1", [0] * unreadable, body={"ts": "never", "values": {"a": 1}})
    nats.send("other-9", [4, 5])
    nats.send("pump-1", [7, 8])
    _, primed, ingest, _ = rebuild(nats)
    assert ingest.buffers.last_ts("pump-1") == T0 + 6 and primed == 6


def test_a_reading_of_an_ignored_column_is_read_as_the_scorer_reads_it():
    """A reading with a text column the bundle ignores (a run state) is a reading: it primes the
    window and, waiting, it is the cut. Parsed without the ignored names it was ``bad_values``."""
    nats = FakeNats()
    for stamp in range(1, 9):
        nats.send("pump-1", [stamp], taken=1 if stamp <= 5 else 0,
                  body={"ts": T0 + stamp, "values": {"a": stamp, "run": "RUN"}})
    _, primed, ingest, _ = rebuild(nats, ignored=("run",))
    assert primed == 5 and ingest.buffers.last_ts("pump-1") == T0 + 5


def test_an_asset_with_nothing_waiting_is_primed_whole_whatever_other_assets_cuts():
    """Two assets: one with readings waiting (its cut early in the stream), one with none waiting
    whose readings come later in the stream. Reading stops once every cut showed only when no
    asset needs all it has: the second one's window must not stop at the first's cut."""
    nats = FakeNats()
    k = partition("pump-1")
    second = next(f"pump-{n}" for n in range(2, 1000) if partition(f"pump-{n}") == k)
    nats.send("pump-1", [1, 2, 3, 4], taken=2)
    nats.send(second, list(range(1, 9)), taken=8)
    assets, primed, ingest, _ = rebuild(nats)
    assert sorted(assets) == sorted(["pump-1", second]) and primed == 2 + 8
    assert ingest.buffers.last_ts("pump-1") == T0 + 2 and ingest.buffers.last_ts(second) == T0 + 8


def test_only_assets_with_nothing_waiting_can_be_left_unprimed_as_quiet():
    """An asset whose readings the window stream stored long ago but with one still waiting in
    the readings stream is not quiet: its window is rebuilt (the waiting reading continues it)."""
    nats = FakeNats()
    long_ago = time.time() - 3600
    nats.send("pump-1", list(range(1, 7)), taken=5, stored=long_ago)
    _, primed, ingest, _ = rebuild(nats, stale_after_s=60.0)
    assert primed == 5 and ingest.buffers.last_ts("pump-1") == T0 + 5


def test_every_quiet_asset_is_found_not_only_the_first_batch():
    """More assets silent for stale_after, none waiting, than are looked up at once: none is primed
    (each would be told silent again by the new owner)."""
    nats = FakeNats()
    k = partition("pump-1")
    assets = ["pump-1", *[f"pump-{n}" for n in range(2, 5000) if partition(f"pump-{n}") == k][:QUIET_BATCH + 2]]
    for asset in assets:
        nats.send(asset, [1, 2, 3, 4, 5], taken=5, stored=time.time() - 3600)
    listed, primed, ingest, _ = rebuild(nats, stale_after_s=60.0)
    assert sorted(listed) == sorted(assets) and primed == 0
    assert all(ingest.buffers.last_ts(asset) is None for asset in assets)


def test_an_asset_whose_last_stored_time_is_unknown_is_not_taken_for_quiet():
    """The stored time of an asset's last message unknown (none, or gone since the listing): it is
    not quiet, its window is rebuilt."""
    nats = FakeNats()
    nats.send("pump-1", [1, 2, 3, 4, 5], taken=5)
    nats.streams[cluster.WINDOWS_STREAM][-1].time = None
    _, primed, ingest, _ = rebuild(nats, stale_after_s=60.0)
    assert primed == 5 and ingest.buffers.last_ts("pump-1") == T0 + 5

    class Gone(FakeNats):
        async def get_last_msg(self, stream: str, subject: str) -> Msg:
            raise NotFoundError

    gone = Gone()
    gone.send("pump-1", [1, 2, 3, 4, 5], taken=5, stored=time.time() - 3600)
    _, primed, ingest, _ = rebuild(gone, stale_after_s=60.0)
    assert primed == 5 and ingest.buffers.last_ts("pump-1") == T0 + 5


def bucket_state(nats: FakeNats, asset: str, **kwargs: Any) -> None:
    alert = kwargs.pop("alert", AlertState("alerting", above=3, peak=2.5, last_score=2.0, alert_id="a1"))
    nats.put(cluster.state_key(asset), encode_asset(alert, None, **kwargs))


def test_the_adopted_state_is_handed_on_as_the_bucket_holds_it():
    """The alert state, whether its raise was announced, the cadence and the top channels go to
    the alert machine as the previous owner saved them (an unannounced raise is told by the new
    owner; channels are those its state names until the next window)."""
    nats = FakeNats()
    nats.send("pump-1", list(range(1, 11)), taken=10)
    channels = [{"name": "a", "share": 1.0}]
    bucket_state(nats, "pump-1", window_ts=T0 + 8, announced=False, judged_ts=T0 + 9, channels=channels)
    _, _, _, alerts = rebuild(nats)
    alert, drift, announced, window_ts, judged_ts, told, silence = alerts.adopted["pump-1"]
    assert alert.alert_id == "a1" and announced is False and (window_ts, judged_ts) == (T0 + 8, T0 + 9)
    assert told == channels and silence is None


def test_an_alert_taken_over_up_is_said(caplog: pytest.LogCaptureFixture):
    """A cluster walk: after a kill -9 the new owner logged only "took partition 3", nothing of the
    alert it carried on. The alerts taken over up are named with their ids."""
    nats = FakeNats()
    nats.send("pump-1", list(range(1, 11)), taken=10)
    nats.send("pump-2", list(range(1, 11)), taken=10)
    bucket_state(nats, "pump-1", window_ts=T0 + 8)
    bucket_state(nats, "pump-2", window_ts=T0 + 8, alert=AlertState(last_score=0.2))
    with caplog.at_level(logging.INFO, logger="sensorguard.service.takeover"):
        rebuild(nats)
    assert "took over 1 asset with an alert up, kept under its id: pump-1 (a1)" in caplog.text


def test_the_guard_band_after_the_last_clear_moves_with_the_asset(tmp_path):
    """A cluster walk: the band after a clear (the fault's tail, no normal data) stayed in the old
    owner's recorder; the asset moved within it and its new owner recorded the tail as normal. The
    band now travels in the state bucket and the new owner records nothing before its end."""
    import numpy as np

    from sensorguard.service.recorder import Recorder
    from sensorguard.service.state_entry import guard_of

    nats = FakeNats()
    nats.send("pump-1", list(range(1, 11)), taken=10)
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + 8, guard_until=T0 + 40)
    t, _, alerts = takeover(nats)
    alerts.recorder = Recorder(tmp_path, ("a",), guard_s=10, flush_interval_s=0)
    asyncio.run(t.rebuild(partition("pump-1"), PARTITIONS))
    assert alerts.recorder.band_of("pump-1") == T0 + 40
    for ts in range(11, 61):
        alerts.recorder.add("pump-1", T0 + ts, np.array([1.0]))
    alerts.recorder.judged("pump-1", T0 + 60)
    alerts.recorder.flush(now_ts=T0 + 1000, force=True)
    import pandas as pd

    recorded = pd.concat(pd.read_parquet(f) for f in tmp_path.glob("*/*.parquet"))
    assert recorded.ts.min() >= T0 + 40  # the tail inside the band: not normal data
    assert guard_of(encode_asset(AlertState(), None)) is None and guard_of(b"not json") is None


def test_the_cadence_and_judged_window_of_the_bucket_carry_into_the_buffer():
    """Old owner (window 4, hop 2): windows at 4, 6, 8, it scored the one at 8 and judged up to 9.
    Primed from the window before it, the new owner's next windows are at 10, 12 as the old
    owner's were (without the anchor the buffer alone puts them at 11, 13) and none before."""
    nats = FakeNats()
    nats.send("pump-1", list(range(1, 14)), taken=9)
    bucket_state(nats, "pump-1", window_ts=T0 + 8, judged_ts=T0 + 9)
    _, _, ingest, _ = rebuild(nats)
    for stamp in range(10, 14):
        ingest.buffers.add("pump-1", T0 + stamp, {"a": float(stamp)}, 0.0)
    assert [w.ts - T0 for w in ingest.buffers.drain()] == [10.0, 12.0]


def test_a_rebuild_reaches_back_to_the_last_scored_window_and_scores_only_what_was_not_judged():
    """The old owner scored the window at 100 and judged (an alert-hop window) up to 110, then took
    readings up to 200 without scoring them (it was dying). The new owner primes back to the window
    before 100 (plus ``PRIME_WARM`` for the rate estimate) and queues the windows after 110 on the
    old cadence: none judged twice, none skipped."""
    nats = FakeNats()
    nats.send("pump-1", list(range(1, 205)), taken=200)
    bucket_state(nats, "pump-1", window_ts=T0 + 100, judged_ts=T0 + 110)
    _, primed, ingest, _ = rebuild(nats)
    assert primed == 200 - (100 - WINDOW - PRIME_WARM)
    assert [w.ts - T0 for w in ingest.buffers.drain()][:2] == [112.0, 114.0]


def test_channel_faults_the_primed_readings_leave_open_are_listed_in_the_alert_state():
    """Channel ``b`` out of range from reading 6 on, all taken by the old owner, who announced it:
    the new owner lists the fault as open (its retained state said none until it closed)."""
    nats = FakeNats()
    for stamp in range(1, 11):
        values = {"a": 1.0, "b": 99.0 if stamp >= 6 else 2.0}
        nats.send("pump-1", [stamp], taken=1, body={"ts": T0 + stamp, "values": values})
    limits = (ChannelLimits(-10.0, 10.0, None), ChannelLimits(-10.0, 10.0, None))
    sensors = SensorRules(("a", "b"), limits, fill_limit=5)
    _, _, _, alerts = rebuild(nats, sensors=sensors)
    assert alerts.faults == {"pump-1": [{"kind": "out_of_range", "channel": "b", "since": T0 + 6, "value": 99.0}]}


def test_a_silent_asset_in_the_bucket_is_not_primed_unless_it_came_back_since():
    """Silent when the bucket heard last: no buffer (its first reading here tells its return).
    A reading in the window stream after its silence began means it came back on the old owner
    before the bucket heard: adopted live, its window rebuilt."""
    nats = FakeNats()
    nats.send("pump-1", list(range(1, 7)), taken=6)
    bucket_state(nats, "pump-1", alert=AlertState("stale", last_score=1.0), silence=(T0 + 6, 1.0))
    _, _, ingest, alerts = rebuild(nats)
    assert ingest.buffers.last_ts("pump-1") is None and alerts.adopted["pump-1"][-1] == (T0 + 6, 1.0)

    back = FakeNats()
    back.send("pump-1", list(range(1, 7)), taken=6)
    bucket_state(back, "pump-1", alert=AlertState("stale", last_score=1.0), silence=(T0 + 5.5, 1.0))
    _, _, ingest, alerts = rebuild(back)
    assert ingest.buffers.last_ts("pump-1") == T0 + 6 and alerts.adopted["pump-1"][-1] is None


def test_a_silent_asset_taken_over_takes_no_metrics_label_slot():
    """A silent asset's readings teach the new owner's cleaner its rate (primed, then its buffer
    forgotten): it is no live asset, and nothing frees a label slot for it until it comes back and
    goes silent again. Labelled at that prime (alerts_total at 0), each takeover of a partition of
    silent machines filled ``max_assets`` slots with them, and live assets shared ``_other``."""
    nats = FakeNats()
    nats.send("pump-1", list(range(1, 7)), taken=6)
    bucket_state(nats, "pump-1", alert=AlertState("stale", last_score=1.0), silence=(T0 + 6, 1.0))
    _, _, ingest, alerts = rebuild(nats)
    assert alerts.adopted["pump-1"][-1] == (T0 + 6, 1.0) and ingest.buffers.last_ts("pump-1") is None
    assert "pump-1" not in ingest.metrics._labelled
    assert ("pump-1",) not in ingest.metrics.alerts._metrics  # (no alerts_total series for it either)

    live = FakeNats()  # (a live one's alerts_total is at 0 from its rebuild, as before)
    live.send("pump-1", list(range(1, 7)), taken=6)
    _, _, ingest, _ = rebuild(live)
    assert "pump-1" in ingest.metrics._labelled


def test_a_silence_is_judged_against_the_newest_reading_not_the_oldest():
    """Readings 1-6 kept, silent since 3 in the bucket: 4-6 came after it began, so it came back."""
    nats = FakeNats()
    nats.send("pump-1", list(range(1, 7)), taken=6)
    bucket_state(nats, "pump-1", alert=AlertState("stale", last_score=1.0), silence=(T0 + 3, 1.0))
    _, _, ingest, alerts = rebuild(nats)
    assert alerts.adopted["pump-1"][-1] is None and ingest.buffers.last_ts("pump-1") == T0 + 6


def test_a_silence_from_the_newest_reading_on_stays_a_silence():
    """The silence began after the newest reading kept (its ``since`` is that reading's time): no
    reading came after it, so it is still silent and not primed."""
    nats = FakeNats()
    nats.send("pump-1", list(range(1, 7)), taken=6)
    bucket_state(nats, "pump-1", alert=AlertState("stale", last_score=1.0), silence=(T0 + 6, 1.0))
    _, _, ingest, alerts = rebuild(nats)
    assert alerts.adopted["pump-1"][-1] == (T0 + 6, 1.0) and ingest.buffers.last_ts("pump-1") is None


def test_controls_are_adopted_without_a_partition_count_not_a_crash():
    """Without ownership (partitions 0) the controls are not looked up: a partition of 0 would
    divide by zero for every controls key in the bucket and end the rebuild."""
    nats = FakeNats()
    nats.send("pump-1", [1, 2, 3, 4], taken=4)
    doc = {"controls": [{"kind": "maintenance", "since": 1.0, "until": None, "reason": "swap", "by": "op"}],
           "alerts": {}}
    nats.put(cluster.controls_key("pump-1"), json.dumps(doc).encode())
    controls = AlarmControls()
    assets, _, _, _ = rebuild(nats, partitions=0, controls=controls)
    assert assets == ["pump-1"] and controls.assets() == set()
    assets, _, _, _ = rebuild(nats, controls=controls)
    assert controls.assets() == {"pump-1"}


def test_an_emptied_controls_key_is_passed_over_without_a_warning(caplog: pytest.LogCaptureFixture):
    """A controls key whose value is empty holds nothing to take over: no "unusable" line."""
    nats = FakeNats()
    nats.put(cluster.controls_key("pump-1"), b"")
    controls = AlarmControls()
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.takeover"):
        rebuild(nats, controls=controls)
    assert controls.assets() == set() and "unusable" not in caplog.text


def test_a_fresh_asset_is_not_said_to_be_short_of_readings(caplog: pytest.LogCaptureFixture):
    """An asset whose first reading still waits (nothing taken) has no window to rebuild: that is
    not the window stream falling short of ``--keep``, and no warning says so."""
    nats = FakeNats()
    nats.send("pump-1", [1, 2, 3])
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.takeover"):
        assets, primed, _, _ = rebuild(nats)
    assert assets == ["pump-1"] and primed == 0 and "no longer reaches back" not in caplog.text


def test_the_short_window_warning_names_the_fewest_readings(caplog: pytest.LogCaptureFixture):
    """Two assets rebuilt short of a window (3 and 2 readings, the stream keeping 5): the line
    names the fewest, the asset worst off."""
    nats = FakeNats(keep=5)
    k = partition("pump-1")
    second = next(f"pump-{n}" for n in range(2, 1000) if partition(f"pump-{n}") == k)
    nats.send("pump-1", [6, 7, 8, 9, 10], taken=3)
    nats.send(second, [6, 7, 8, 9, 10], taken=2)
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.takeover"):
        rebuild(nats)
    assert "2 assets' windows were rebuilt from fewer readings than the window (2 of 4" in caplog.text


def test_a_window_of_exactly_the_window_length_is_no_shortfall(caplog: pytest.LogCaptureFixture):
    """Exactly a window's readings before the cut (the stream keeping no more): the window is
    whole, no warning."""
    nats = FakeNats(keep=4)
    nats.send("pump-1", [1, 2, 3, 4], taken=4)
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.takeover"):
        _, primed, _, _ = rebuild(nats)
    assert primed == 4 and "fewer readings than the window" not in caplog.text


def test_two_readings_short_of_a_full_stream_are_said_too(caplog: pytest.LogCaptureFixture):
    """The stream holding exactly ``--keep`` readings of the asset (full), two of them before the
    cut: too few for a window, said."""
    nats = FakeNats(keep=3)
    nats.send("pump-1", [1, 2, 3], taken=2)
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.takeover"):
        rebuild(nats)
    assert "(2 of 4" in caplog.text and "keeps 3 readings per asset" in caplog.text


def test_an_empty_partition_is_rebuilt_at_once_without_a_warning(caplog: pytest.LogCaptureFixture):
    """A partition with no reading in the window stream: nothing to read, so the window stream is
    not subscribed to (which waited 5 s for a message and then said it "ended early")."""
    nats = FakeNats()
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.takeover"):
        assets, primed, _, _ = rebuild(nats)
    assert (assets, primed) == ([], 0) and nats.subscribed == 0 and "ended early" not in caplog.text


def test_the_window_streams_subscription_is_ended_after_the_rebuild():
    """The ordered consumer a rebuild reads through is unsubscribed (each takeover left one on the
    server otherwise)."""
    nats = FakeNats()
    nats.send("pump-1", [1, 2, 3, 4, 5, 6], taken=4)
    rebuild(nats)
    assert nats.subscribed == 1 and nats.unsubscribed == 1


def test_prime_span_replays_prime_warm_readings_before_the_window():
    """Without an anchor: the last window and ``PRIME_WARM`` readings before it; with one, back to
    the window before the anchor (each reading's stamp is its index here)."""
    samples = [(float(t), {}) for t in range(200)]
    assert len(prime_span(samples, None, 4)) == 4 + PRIME_WARM
    assert prime_span(samples, 150.0, 4)[0][0] == 151 - 4 - PRIME_WARM
    assert prime_span(samples[:10], None, 4) == samples[:10]
    assert math.isfinite(prime_span(samples, 199.0, 4)[0][0])



def _walked(nats: FakeNats, values: list[float]) -> SensorRules:
    """Readings of ``pump-1`` whose channel ``b`` walks as ``values`` (limits -100..100, jump 20),
    all taken by the old owner; the rules that judge them."""
    for i, b in enumerate(values):
        nats.send("pump-1", [i + 1], taken=1, body={"ts": T0 + i + 1, "values": {"a": 1.0, "b": b}})
    limits = (ChannelLimits(-100.0, 100.0, None, jump=20.0),) * 2
    return SensorRules(("a", "b"), limits, fill_limit=5)


WALK = [50.0 + i for i in range(1, 151)]  # b walks from 51 to 200 in steps of 1: past 100 at reading 50


def test_a_channel_walked_past_its_limits_stays_the_process_s_across_a_takeover():
    """The old owner watched ``b`` walk past its limit of 100 in steps of 1 up to 200 and scored it
    (the process's). The new owner replays only the last window and ``PRIME_WARM`` readings, which
    start at 133: a fresh watch measured the step from the limit (33, past ``jump``) and told an
    ``out_of_range`` sensor fault, held and left out of the score (a known gap). The old owner's
    state in the bucket now carries the channel's last plausible value (``past_limits``), and a
    replayed reading on the way from the limit to it is the process's."""
    nats = FakeNats()
    sensors = _walked(nats, WALK)
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + 150, past={"b": 200.0})
    _, primed, ingest, alerts = rebuild(nats, sensors=sensors)
    assert primed == WINDOW + PRIME_WARM and alerts.faults == {}
    ingest.buffers.add("pump-1", T0 + 151, {"a": 1.0, "b": 201.0}, 0.0)
    watch = ingest.buffers._assets["pump-1"].watch
    assert watch.open == set() and watch.good[1] == 201.0


def test_without_the_saved_value_the_replay_tells_the_walk_a_sensor_fault():
    """The same walk with an older owner's state (no ``past_limits``): the replay's first reading,
    33 past the limit, is judged from the limit, so the fault is told (what the field fixes)."""
    nats = FakeNats()
    sensors = _walked(nats, WALK)
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + 150)
    _, _, _, alerts = rebuild(nats, sensors=sensors)
    assert [(f["kind"], f["value"]) for f in alerts.faults["pump-1"]] == [("out_of_range", 133.0)]


def test_a_replayed_reading_past_the_saved_value_by_a_jump_is_still_a_sensor_s():
    """The saved value vouches for the path from the limit to it, not for a rail beyond: a sensor
    that jumped to 9,999 at the replay's first reading is told a fault. (Its previous owner held
    ``b`` at 132 from then on, past the limit all along, so 132 is the value it saved.)"""
    walk = [*WALK[:82], 9999.0, *WALK[83:]]
    nats = FakeNats()
    sensors = _walked(nats, walk)
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + 150, past={"b": 132.0})
    _, _, _, alerts = rebuild(nats, sensors=sensors)
    assert [(f["kind"], f["value"]) for f in alerts.faults["pump-1"]] == [("out_of_range", 9999.0)]


def test_a_walk_out_beyond_the_saved_value_and_back_stays_the_process_s():
    """``b`` walks out to 200 and back to 150 in steps of 1, all past the limit: the previous
    owner saved 150. The replay starts on the way back, at 183: judged from the saved value (33,
    past ``jump``) it was told a sensor fault (a review); the replay runs from 183 to 150 in steps
    of 1, the path the previous owner took as the process's."""
    walk = [*WALK, *(200.0 - i for i in range(1, 51))]
    nats = FakeNats()
    sensors = _walked(nats, walk)
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + len(walk), past={"b": 150.0})
    _, primed, ingest, alerts = rebuild(nats, sensors=sensors)
    assert primed == WINDOW + PRIME_WARM and alerts.faults == {}
    assert ingest.buffers._assets["pump-1"].watch.open == set()


def test_a_rail_held_through_the_replay_is_a_sensor_fault_whatever_the_saved_value():
    """A sensor that jumped to 9,999 before the replay began and stayed there: the previous owner
    held ``b`` at 132 (its last plausible value, saved). The replay's path never comes near it,
    so the rail is judged from the way to 132 and told a fault, as the previous owner had."""
    walk = [*WALK[:60], *([9999.0] * 90)]
    nats = FakeNats()
    sensors = _walked(nats, walk)
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + 150, past={"b": 110.0})
    _, _, _, alerts = rebuild(nats, sensors=sensors)
    assert [(f["kind"], f["value"]) for f in alerts.faults["pump-1"]] == [("out_of_range", 9999.0)]


def test_an_asset_the_window_stream_no_longer_reaches_back_for_starts_from_the_saved_value():
    """More readings arrived since the previous owner stopped than the window stream keeps: the
    asset is not primed, and its first reading (newer than the saved value, as after a restart)
    is judged from the saved value, not from the limit (a review: 1 past the saved 200 was told a
    sensor fault, 101 past the limit of 100)."""
    nats = FakeNats()
    for i in range(10):  # none taken yet: the readings stream holds them all
        nats.send("pump-1", [i + 1], body={"ts": T0 + i + 1, "values": {"a": 1.0, "b": 201.0 + i}})
    del nats.streams[cluster.WINDOWS_STREAM][:5]  # the window stream no longer holds the oldest
    sensors = SensorRules(("a", "b"), (ChannelLimits(-100.0, 100.0, None, jump=20.0),) * 2, fill_limit=5)
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 - 10, past={"b": 200.0})
    _, primed, ingest, _ = rebuild(nats, sensors=sensors)
    assert primed == 0 and "pump-1" not in ingest.buffers
    ingest.buffers.add("pump-1", T0 + 1, {"a": 1.0, "b": 201.0}, 0.0)
    assert ingest.buffers._assets["pump-1"].watch.open == set()


def test_a_saved_value_no_reading_took_is_left_behind_by_the_prime():
    """Every replayed reading refused (a channel the model does not know): the saved value was
    never taken by a watch, and must not start a later one (a review)."""
    nats = FakeNats()
    sensors = _walked(nats, [float(i) for i in range(10)])
    for message in nats.streams[cluster.WINDOWS_STREAM]:
        message.data = json.dumps({"ts": json.loads(message.data)["ts"], "values": {"zz": 1.0}}).encode()
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + 8, past={"b": 200.0})
    _, _, ingest, _ = rebuild(nats, sensors=sensors)
    assert "pump-1" not in ingest.buffers and ingest.buffers.resumed_past == {}


def test_walk_marks_step_by_half_a_jump_per_channel_with_one():
    """The state bucket is written again when a walked channel crosses a half-``jump`` step, so the
    value saved stays within half a ``jump`` of the newest reading; a channel without ``jump``
    (limits a user set: any value past them is a fault) has no walk to carry."""
    from sensorguard.service.walked_channels import walk_marks

    limits = (ChannelLimits(-100.0, 100.0, None, jump=20.0), ChannelLimits(-1.0, 1.0, None))
    rules = SensorRules(("a", "b"), limits, fill_limit=5)
    assert walk_marks({"p": {"a": 109.9, "b": 5.0}}, rules) == {}  # within half a jump of its limit
    assert walk_marks({"p": {"a": 110.0}}, rules) == {"p": (("a", 110.0),)}
    assert walk_marks({"p": {"a": -110.5}}, rules) == {"p": (("a", -110.5),)}
    assert walk_marks({"p": {"a": 119.9}}, rules, {"p": (("a", 110.0),)}) == {"p": (("a", 110.0),)}
    assert walk_marks({"p": {"a": 120.0}}, rules, {"p": (("a", 110.0),)}) == {"p": (("a", 120.0),)}
    assert walk_marks({"p": {"a": 150.0}}, None) == {} and walk_marks({}, rules) == {}


def test_walk_marks_stay_put_for_noise_on_a_step_s_edge():
    """Cut into fixed half-``jump`` steps (``floor(value / (jump / 2))``), a channel settled past its
    limit with its noise across a step's edge changed its mark at nearly every look: its state
    written to the bucket, or the whole state file saved, every second for as long as it stayed
    there (a review). A mark moves only when the value moved half a ``jump`` from it."""
    from sensorguard.service.walked_channels import walk_marks

    rules = SensorRules(("a", "b"), (ChannelLimits(-100.0, 100.0, None, jump=20.0),) * 2, fill_limit=5)
    marks = walk_marks({"p": {"a": 150.0}}, rules)
    for a in (149.9, 150.1, 149.5, 150.4, 141.0, 159.0):
        assert walk_marks({"p": {"a": a}}, rules, marks) == marks
    marks = walk_marks({"p": {"a": 101.0}}, rules)  # about its limit: no mark, in or out
    assert marks == {} and walk_marks({"p": {"a": 109.0}}, rules, marks) == {}


def test_walk_marks_take_a_tiny_jump_and_a_huge_value():
    """``floor(value / (jump / 2))`` raised ZeroDivisionError for a ``jump`` of 5e-324 (a bundle
    takes any finite jump > 0) and OverflowError for a quotient past the floats: the housekeeping
    (or the cluster step) failed at every tick, nothing saved again, no asset went stale."""
    from sensorguard.service.walked_channels import walk_marks

    tiny = SensorRules(("a", "b"), (ChannelLimits(-100.0, 100.0, None, jump=5e-324),) * 2, fill_limit=5)
    assert walk_marks({"p": {"a": 200.0}}, tiny) == {"p": (("a", 200.0),)}
    unit = SensorRules(("a", "b"), (ChannelLimits(-100.0, 100.0, None, jump=1.0),) * 2, fill_limit=5)
    assert walk_marks({"p": {"a": 1.5e308}}, unit) == {"p": (("a", 1.5e308),)}
    assert walk_marks({"p": {"a": -1.5e308}}, unit, {"p": (("a", 1.5e308),)}) == {"p": (("a", -1.5e308),)}


def test_a_walked_channel_s_new_step_writes_the_asset_s_state_again(tiny_bundle):
    """Written only at status changes and every 30 s, a walk at 10 readings a second left the bucket
    hundreds of readings behind: the replay no longer reached the saved value and the new owner told
    a sensor fault. A mark that changes (a new half-``jump`` step) writes the state again; one that
    stays does not."""
    from tests.test_state import daemon_with

    daemon, _ = daemon_with(tiny_bundle, None)
    daemon.alerts.apply("pump-1", T0, 0.5, [])
    assert set(daemon.alerts.changed_states(marks={})) == {"pump-1"}
    assert daemon.alerts.changed_states(marks={}) == {}
    assert set(daemon.alerts.changed_states(marks={"pump-1": (("a", 10),)})) == {"pump-1"}
    assert daemon.alerts.changed_states(marks={"pump-1": (("a", 10),)}) == {}
    assert set(daemon.alerts.changed_states(marks={"pump-1": (("a", 11),)})) == {"pump-1"}


def test_a_window_stream_that_no_longer_reaches_back_to_the_saved_state_is_said(caplog: pytest.LogCaptureFixture):
    """The window stream keeps fewer readings than an asset sent since its state was last saved
    (a walk: cluster init --keep 64 at 10 Hz, the state saved at a raise 30 s before the kill):
    the replay starts after the saved window, past the limit by more than ``jump``, and the walk
    was told an out_of_range sensor fault, held and left out of the score, the alert cleared, and
    nothing said why (the docs promise "the log says when it did not")."""
    nats = FakeNats()
    sensors = _walked(nats, WALK)
    del nats.streams[cluster.WINDOWS_STREAM][:80]  # the stream keeps the last 70: from b = 131
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + 40)  # saved before the walk crossed 100
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.takeover"):
        rebuild(nats, sensors=sensors)
    assert "no longer reaches back to where 1 asset's state was last saved (pump-1)" in caplog.text
    assert "--keep" in caplog.text


def test_a_replay_from_before_the_saved_state_is_not_said_to_be_short(caplog: pytest.LogCaptureFixture):
    """The stream reaches back before the saved window: no such line."""
    nats = FakeNats()
    sensors = _walked(nats, WALK)
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + 150, past={"b": 200.0})
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.takeover"):
        rebuild(nats, sensors=sensors)
    assert "state was last saved" not in caplog.text


def test_the_partitions_taken_together_list_the_state_bucket_once(monkeypatch):
    """Each partition's takeover listed the whole state bucket for its long-silent assets (its keys
    hold no partition): a worker starting and taking 64 partitions of a 100,000-key bucket pulled
    millions of subjects (a review). The listing is shared by a worker's takeovers for
    KEYS_LISTED_S, then taken again."""
    from sensorguard.service import state_adoption
    from sensorguard.service.state_adoption import KEYS_LISTED_S, StateKeys

    calls: list[str] = []
    keys = {f"$KV.{cluster.STATE_BUCKET}.{cluster.state_key(f'pump-{n}')}": 1 for n in range(40)}

    async def listing(nc: Any, stream: str, subjects: str) -> dict[str, int]:
        calls.append(stream)
        return keys

    monkeypatch.setattr(state_adoption, "stream_subjects", listing)
    clock = [1000.0]
    monkeypatch.setattr(state_adoption.time, "monotonic", lambda: clock[0])
    shared = StateKeys()
    found = []
    nc = SimpleNamespace(jetstream=lambda: None)
    for k in range(4):  # (a Takeover per partition, as owned_partitions makes them)
        taker = Takeover(nc, None, None, None, None, None, shared)
        found += asyncio.run(taker._bucket_only(k, 4, set()))
    assert len(calls) == 1 and sorted(found) == sorted(f"pump-{n}" for n in range(40))
    clock[0] += KEYS_LISTED_S + 1
    asyncio.run(Takeover(nc, None, None, None, None, None, shared)._bucket_only(0, 4, set()))
    assert len(calls) == 2


def test_a_channel_stuck_past_its_limits_keeps_its_fault_across_a_takeover():
    """An upgrade walk: ``b`` jumped from 50 to 110 (60, past ``jump`` 20) and stayed there; the old
    owner told an ``out_of_range`` fault. The new owner replays only the last readings, 10 past the
    limit of 100 from the limit: a walk there, so the fault was dropped, none listed and no
    ``sensor_ok`` ever told. The old owner's state now carries its open faults; the new owner's
    watch resumes them, lists those the replay leaves open, and tells the end when ``b`` is back."""
    stuck = [50.0] * 9 + [110.0] * 141
    carried = [{"kind": "out_of_range", "channel": "b", "since": T0 + 10, "value": 110.0}]
    nats = FakeNats()
    sensors = _walked(nats, stuck)
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + 150)  # (an older owner's: no faults)
    assert rebuild(nats, sensors=sensors)[3].faults == {}  # the gap: a walk from the limit
    nats = FakeNats()
    sensors = _walked(nats, stuck)
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + 150, faults=carried)
    _, _, ingest, alerts = rebuild(nats, sensors=sensors)
    assert alerts.faults == {"pump-1": carried}
    assert ingest.buffers._assets["pump-1"].watch.open == {("out_of_range", 1)}
    for i in range(1, 4):  # back in range (3 readings in a row: the off-delay): its end is told here
        ingest.buffers.add("pump-1", T0 + 150 + i, {"a": 1.0, "b": 50.0}, 0.0)
    assert [(e.kind, e.channel, e.fault) for _, e in ingest.buffers.sensor_events] == [("out_of_range", "b", False)]


def test_a_carried_fault_the_replay_ends_is_not_listed_and_one_with_nothing_to_replay_waits():
    """A fault the previous owner's state still held, which the replayed readings end (its state was
    written before the end it told), is not listed again. An asset with nothing to replay (the
    window stream no longer reaches back) lists its carried fault, and its first reading resumes it."""
    back = [50.0] * 9 + [110.0] * 40 + [50.0] * 101
    carried = [{"kind": "out_of_range", "channel": "b", "since": T0 + 10, "value": 110.0}]
    nats = FakeNats()
    sensors = _walked(nats, back)
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + 150, faults=carried)
    _, _, ingest, alerts = rebuild(nats, sensors=sensors)
    assert alerts.faults == {} and ingest.buffers._assets["pump-1"].watch.open == set()
    nats = FakeNats()
    sensors = SensorRules(("a", "b"), (ChannelLimits(-100.0, 100.0, None, jump=20.0),) * 2, fill_limit=5)
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + 150, faults=carried)
    nats.send("pump-2", [1], taken=1, body={"ts": T0 + 1, "values": {"a": 1.0, "b": 1.0}})  # (another asset)
    t, ingest, alerts = takeover(nats, sensors=sensors)
    asyncio.run(t.rebuild(partition("pump-1"), PARTITIONS))
    assert alerts.faults.get("pump-1") == carried and ingest.buffers.resumed_faults["pump-1"] == carried


def test_a_short_asset_with_carried_faults_keeps_its_saved_values_too():
    """The window stream no longer reaches back (the asset is not primed), and its state carries both
    a channel walked past its limits (``past_limits``) and an open fault on another channel: the
    prime with nothing to replay that resumes the fault must leave the saved value the takeover set
    for its first reading (it popped it, and ``b``, 1 past the saved 200, was told a sensor fault)."""
    nats = FakeNats()
    for i in range(10):  # none taken yet: the readings stream holds them all
        nats.send("pump-1", [i + 1], body={"ts": T0 + i + 1, "values": {"a": 1.0, "b": 201.0 + i}})
    del nats.streams[cluster.WINDOWS_STREAM][:5]  # the window stream no longer holds the oldest
    sensors = SensorRules(("a", "b"), (ChannelLimits(-100.0, 100.0, None, jump=20.0),) * 2, fill_limit=5)
    carried = [{"kind": "missing", "channel": "a", "since": T0 - 20, "value": float("nan")}]
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 - 10, past={"b": 200.0}, faults=carried)
    _, primed, ingest, alerts = rebuild(nats, sensors=sensors)
    assert primed == 0 and "pump-1" not in ingest.buffers and alerts.faults.get("pump-1")
    assert ingest.buffers.resumed_past == {"pump-1": {"b": 200.0}}
    ingest.buffers.add("pump-1", T0 + 1, {"a": 1.0, "b": 201.0}, 0.0)
    assert ("out_of_range", 1) not in ingest.buffers._assets["pump-1"].watch.open


def test_partitions_taken_at_once_share_one_listing_of_the_state_bucket(monkeypatch):
    """A worker starting takes its partitions at once, one task each: their takeovers reach the
    state bucket's listing together, and those that came while the first was still listing (a
    100,000-key bucket: a large answer) listed it too, each (a review)."""
    from sensorguard.service import state_adoption
    from sensorguard.service.state_adoption import StateKeys

    calls: list[str] = []
    keys = {f"$KV.{cluster.STATE_BUCKET}.{cluster.state_key(f'pump-{n}')}": 1 for n in range(40)}

    async def listing(nc: Any, stream: str, subjects: str) -> dict[str, int]:
        calls.append(stream)
        await asyncio.sleep(0.01)  # (the answer takes a while)
        return keys

    monkeypatch.setattr(state_adoption, "stream_subjects", listing)
    shared = StateKeys()
    nc = SimpleNamespace(jetstream=lambda: None)

    async def together() -> list[list[str]]:
        return await asyncio.gather(*(Takeover(nc, None, None, None, None, None, shared)._bucket_only(k, 4, set())
                                      for k in range(4)))

    found = asyncio.run(together())
    assert len(calls) == 1 and sorted(a for f in found for a in f) == sorted(f"pump-{n}" for n in range(40))


def test_a_carried_fault_the_new_owners_model_cannot_judge_is_told_ended():
    """A rolling upgrade: the old owner's model watched channel ``c`` and told a ``stuck`` fault on it;
    the new owner's model has no ``c``. Its watch cannot resume the fault: dropped unsaid, a subscriber
    pairing each ``sensor_fault`` with its ``sensor_ok`` held it open for good. It is told ended, as a
    restart's are (``sensors.resumed_faults``)."""
    carried = [{"kind": "stuck", "channel": "c", "since": T0 + 2, "value": 7.0},
               {"kind": "out_of_range", "channel": "b", "since": T0 + 3, "value": 110.0}]
    nats = FakeNats()
    sensors = _walked(nats, [110.0] * 10)
    bucket_state(nats, "pump-1", alert=AlertState(), window_ts=T0 + 10, faults=carried)
    _, _, ingest, alerts = rebuild(nats, sensors=sensors)
    assert alerts.faults == {"pump-1": carried[1:]}
    assert [(a, e.kind, e.channel, e.fault) for a, e in ingest.buffers.sensor_events] == [
        ("pump-1", "stuck", "c", False)]

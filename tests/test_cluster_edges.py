"""Edges of cluster mode's carried state and layout that no test pinned (found by mutating
service/carried_states.py and service/cluster.py): what an adoption may overwrite, what a full
sync and a hand-over pass on, when a raise is held back, and what ``cluster init`` refuses.

The carried-state tests drive a daemon's :class:`AssetAlerts` directly (as tests/test_state.py
does), the layout tests pure functions: no NATS server."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sensorguard.service import cluster
from sensorguard.service.alerts import AlertState
from sensorguard.service.bundle import Bundle
from sensorguard.service.cluster import ClusterError, Layout, asset_of
from sensorguard.service.drift import DriftRule
from sensorguard.service.logs import span
from sensorguard.service.publisher import iso
from tests.test_daemon import T0, value
from tests.test_state import daemon_with, raised

RULE = DriftRule(baseline=math.log(0.3), halflife=2, warmup=0, cap=1.5)
CHANNELS = [{"name": "a", "share": 0.75}, {"name": "b", "share": 0.25}]


@pytest.fixture
def drifting(tiny_bundle: Bundle) -> Bundle:
    return tiny_bundle.with_threshold(1.0, {"method": "alerts", "drift": RULE.to_dict()})


def test_an_adopted_silence_does_not_overwrite_an_asset_already_live_here(drifting: Bundle) -> None:
    """An adoption can be taken in after the asset's first window here (it is queued from another
    thread): the live state is newer than the bucket's copy. A silence adopted over it marked a
    reporting asset silent: ``assets_silent`` counted it, and its next reading told a
    ``sensor_ok`` for a silence that never was here."""
    daemon, _ = daemon_with(drifting, None)
    daemon.alerts.changed_states()  # cluster mode
    daemon.alerts.apply("pump-1", T0, 0.5, [])
    daemon.alerts.adopt("pump-1", AlertState(), None, True, silence=(T0 - 600, 0.4))
    daemon.alerts.hand_over(set())  # (takes the adoption in)
    assert value(daemon, "sensorguard_assets_silent") in (None, 0.0)
    assert daemon.alerts.state_of("pump-1").last_score == 0.5 and "pump-1" not in daemon.alerts.restored


def test_a_full_sync_passes_every_state_on_even_unchanged(drifting: Bundle) -> None:
    """Every ``STATE_FULL_S`` the owner writes every asset's state again, changed or not: it carries
    the latest window's time (a new owner after a crash judges on from there, not again from the
    last status change) and heals a bucket entry a failed write or a purge lost."""
    daemon, _ = daemon_with(drifting, None)
    daemon.alerts.apply("pump-1", T0, 0.5, [])
    assert set(daemon.alerts.changed_states()) == {"pump-1"}
    daemon.alerts.apply("pump-1", T0 + 1, 0.5, [])  # same status: nothing to pass on at a normal sync
    assert daemon.alerts.changed_states() == {}
    assert set(daemon.alerts.changed_states(full=True)) == {"pump-1"}


def test_an_adopted_alerts_channels_go_on_with_it_before_its_first_window_here(drifting: Bundle) -> None:
    """An alert's retained state names the channels that drive it (what an operator looks at
    first). An asset adopted and handed on again before its first window here passed on none:
    the next owner's retained state listed no channel until the asset's next window."""
    daemon, _ = daemon_with(drifting, None)
    up = AlertState("alerting", alert_id="pump-1@1", last_score=5.0, peak=5.0)
    daemon.alerts.adopt("pump-1", up, None, True, T0, None, CHANNELS)
    daemon.alerts.hand_over(set())  # (takes the adoption in)
    assert daemon.alerts.hand_over({"pump-1"})["pump-1"][5] == CHANNELS


def test_a_raise_in_cluster_mode_is_told_at_its_window_not_held_for_the_state_file(drifting: Bundle,
                                                                                   tmp_path: Path) -> None:
    """A raise is held back for a state-file save only where the file is what a restart reads; in
    cluster mode the state bucket, written after the batch, is what a new owner reads. Held, each
    batch's raises waited for a local file write that no worker reads back."""
    daemon, client = daemon_with(drifting, tmp_path)
    daemon.alerts.changed_states()  # cluster mode
    daemon.alerts.hold_raises = True  # (as a batch is scored)
    for i in range(3):
        daemon.alerts.apply("pump", T0 + 2 * i, 5.0, [])
    assert daemon.alerts.state_of("pump").status == "alerting"
    assert [e["asset"] for e in raised(client)] == ["pump"]


def test_the_raises_released_after_a_save_ask_for_no_second_save(drifting: Bundle, tmp_path: Path) -> None:
    """The raises a batch held back go out right after the state file was saved; the next save
    comes once the broker confirms them. Announcing them asked for another save at once (each
    announce does), so every batch with a raise wrote the state file twice."""
    daemon, client = daemon_with(drifting, tmp_path)
    daemon.alerts.hold_raises = True
    for i in range(3):
        daemon.alerts.apply("pump", T0 + 2 * i, 5.0, [])
    daemon.alerts.hold_raises = False
    daemon.alerts.release_raises()
    assert [e["asset"] for e in raised(client)] == ["pump"]
    assert daemon.alerts.save_soon is False


def test_an_adoption_without_channels_forgets_an_earlier_adoptions(drifting: Bundle) -> None:
    """An asset adopted twice (its partition moved away and back) names the channels of the state
    it adopted last: one adopted from an owner that had judged no window of it yet kept the first
    adoption's channels, and its retained state named channels of an alert long gone."""
    daemon, _ = daemon_with(drifting, None)
    up = AlertState("alerting", alert_id="pump-1@1", last_score=5.0, peak=5.0)
    daemon.alerts.adopt("pump-1", up, None, True, T0, None, CHANNELS)
    daemon.alerts.hand_over(set())  # (takes the adoption in)
    daemon.alerts.adopt("pump-1", AlertState(), None, True)
    assert daemon.alerts.hand_over({"pump-1"})["pump-1"][5] == []


def test_a_silence_not_synced_yet_does_not_wipe_an_alert_adopted_since(drifting: Bundle) -> None:
    """The sync after an asset went silent tells the bucket its alert ended. An alert adopted for
    that asset in between waits here for its first window: passed on as ended, the bucket forgot
    it, and the next owner (after a crash) started the asset afresh, the alert never cleared."""
    daemon, _ = daemon_with(drifting, None)
    daemon.alerts.changed_states()  # cluster mode
    daemon.alerts.apply("pump-1", T0, 0.5, [])
    assert set(daemon.alerts.changed_states()) == {"pump-1"}
    daemon.alerts.end("pump-1", T0 + 4)  # silent; not synced yet
    up = AlertState("alerting", alert_id="pump-1@9", last_score=5.0, peak=5.0)
    daemon.alerts.adopt("pump-1", up, None, True, T0 + 8)
    daemon.alerts.hand_over(set())  # (takes the adoption in)
    assert "pump-1" in daemon.alerts.restored
    assert "pump-1" not in daemon.alerts.changed_states()


def test_an_adopted_asset_that_never_came_back_names_no_channels_afterwards(drifting: Bundle) -> None:
    """An asset adopted with the channels of its last window there and never heard here ends at
    the expiry (quietly: it was normal). Its channels kept after that, every later restatement of
    the asset (a maintenance started on the switched-off machine) named the channels of a window
    long gone, and each such asset was kept in memory for good."""
    daemon, client = daemon_with(drifting, None)
    daemon.alerts.adopt("pump-1", AlertState(last_score=0.5), None, True, None, None, CHANNELS)
    daemon.alerts.hand_over(set())  # (takes the adoption in)
    daemon.alerts.expire_restored(daemon.alerts.restore_until + 1.0)
    assert "pump-1" not in daemon.alerts.restored
    client.published.clear()
    daemon.alerts.publish_state("pump-1")
    [state] = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/state/pump-1"]
    assert state["channels"] == [], state


def test_a_raise_confirmed_after_the_save_that_marked_it_unannounced_asks_for_a_save(drifting: Bundle,
                                                                                     tmp_path: Path) -> None:
    """A save taken before the broker confirmed a raise marks it unannounced (a restart tells it
    again). Once confirmed, the file must say so at the next tick: else, until the 30 s save, a
    ``kill -9`` made the restart raise it a second time."""
    from tests.test_state import unconfirmed

    daemon, client = daemon_with(drifting, tmp_path)
    confirmed = unconfirmed(client)
    for i in range(3):
        daemon.alerts.apply("pump-1", T0 + i, 5.0, [])
    daemon.alerts.save()
    assert not daemon.alerts.confirmed_since_save()
    confirmed["yes"] = True
    assert daemon.alerts.confirmed_since_save()
    daemon.alerts.save()
    assert not daemon.alerts.confirmed_since_save()


def test_a_raise_released_after_its_save_asks_for_a_save_once_confirmed(drifting: Bundle, tmp_path: Path) -> None:
    """A batch's raises go out right after the save that marks them unannounced. Once the broker
    confirms one, the file must say so at the next tick: else, until the 30 s save, a ``kill -9``
    made the restart raise it a second time under the same id."""
    from tests.test_state import unconfirmed

    daemon, client = daemon_with(drifting, tmp_path)
    confirmed = unconfirmed(client)
    daemon.alerts.hold_raises = True
    for i in range(3):
        daemon.alerts.apply("pump-1", T0 + i, 5.0, [])
    daemon.alerts.hold_raises = False
    daemon.alerts.release_raises()
    assert [e["asset"] for e in raised(client)] == ["pump-1"]
    assert not daemon.alerts.confirmed_since_save()
    confirmed["yes"] = True
    assert daemon.alerts.confirmed_since_save()


def test_an_adopted_alert_whose_partition_sends_nothing_ends_at_expiry(drifting: Bundle) -> None:
    """Adoptions are taken in at an asset's window; a partition taken over that sends nothing at
    all has none. The expiry takes them in first: else the adopted alert waited for good, up in
    the metrics and never told silent."""
    daemon, client = daemon_with(drifting, None)
    up = AlertState("alerting", alert_id="pump-1@1", last_score=5.0, peak=5.0)
    daemon.alerts.adopt("pump-1", up, None, True, T0)
    daemon.alerts.expire_restored(time.monotonic() + 1e6)  # (past any restore_until the adoption sets)
    events = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/alerts/pump-1"]
    assert [(e["state"], e["alert_id"]) for e in events] == [("sensor_fault", "pump-1@1")]
    assert "pump-1" not in daemon.alerts.restored


# -- the layout (service/cluster.py)


@pytest.mark.parametrize("edge", [{"partitions": 1}, {"partitions": 1024}, {"replicas": 3}, {"replicas": 5},
                                  {"keep": 2}, {"readings_max_age_s": 0.1},
                                  {"readings_max_age_s": cluster.MAX_AGE_LIMIT_S}])
def test_the_documented_limits_of_a_layout_are_accepted(edge: dict) -> None:
    """``cluster init --help`` and the docs give these ranges: a limit itself refused (1024
    partitions, five replicas: a Raft group of five is the usual large cluster) turned an
    operator away from a documented setting."""
    Layout(**edge).check()


@pytest.mark.parametrize("bad, says", [
    ({"partitions": 1025}, "partitions must be 1 to 1024"),
    ({"topic_prefix": "plant sensors"}, "without wildcards"),  # (a space ends a NATS subject token)
])
def test_a_layout_just_past_a_limit_is_refused(bad: dict, says: str) -> None:
    """A prefix with a space cannot be a NATS subject: its streams' subjects were refused by the
    server halfway through init (some created, some not) instead of in one line before anything."""
    with pytest.raises(ClusterError, match=says):
        Layout(**bad).check()


def test_a_subject_whose_partition_token_is_no_number_is_no_cluster_subject() -> None:
    """``asset_of`` reads an asset from a stream subject; a subject of another layout (or written
    by hand) with no partition number there must be refused, not crash the fetch loop with an
    unexplained int() error."""
    with pytest.raises(ValueError, match="not a sensorguard cluster subject"):
        asset_of("sensorguard.readings.p3.pump-1")


def test_a_source_header_without_a_sequence_counts_as_none() -> None:
    """A copied message's ``Nats-Stream-Source`` names the input stream's sequence; a header
    without a number there (another server version's format) must read as 0, not crash the
    takeover that reads it."""
    assert cluster.origin_seq({"Nats-Stream-Source": f"{cluster.IN_STREAM} x12 y"}) == 0
    assert cluster.origin_seq({"Nats-Stream-Source": f"{cluster.IN_STREAM} 12 y"}) == 12


def test_a_stream_read_back_with_its_own_words_for_the_same_limits_is_up_to_date() -> None:
    """The server gives an age back in nanoseconds (a float's last digits differ) and "no byte
    cap" as -1 or nothing: each counted a change, and every ``cluster init`` updated the readings
    stream and said so, as if the layout had drifted."""
    from dataclasses import replace

    want = cluster.stream_configs(Layout())[1]
    have = replace(want, max_age=want.max_age + 1e-6, max_bytes=None)
    assert cluster._differences(want, have) == []
    assert cluster._differences(want, replace(want, max_age=want.max_age + 3600)) == [
        f"max_age {span(want.max_age + 3600)} -> {span(want.max_age)}"]  # (in words, not raw seconds: a walk)
    assert cluster._differences(replace(want, max_age=90000.0), replace(want, max_age=0.0)) == [
        "max_age none -> 1.04 days"]
    assert cluster._differences(want, replace(want, max_age=want.max_age + 60)) == [  # (the words alike)
        f"max_age {span(want.max_age)} ({want.max_age + 60:g} s) -> {span(want.max_age)} ({want.max_age:g} s)"]


def test_the_stray_subjects_start_one_level_past_the_deepest_asset() -> None:
    """Readings of an asset deeper than ``MAX_ASSET_LEVELS`` no partition takes are counted as
    ``bad_asset``; the deepest asset a partition takes must not be among them, or its readings
    were counted bad by one worker while scored by another."""
    from sensorguard.service.payload import MAX_ASSET_LEVELS

    none, deeper = cluster.stray_subjects("sensors")
    assert none == "sensors.readings"
    assert deeper.split(".") == ["sensors", *["*"] * (MAX_ASSET_LEVELS + 1), ">"]


def test_a_controls_key_gives_back_its_asset_with_its_dots() -> None:
    """An asset id may hold dots (``site.a/pump.7``); its state bucket key writes them ``=2E``. Read
    back without undoing that, a takeover adopted the controls (maintenance, shelving) of an
    asset that does not exist, and the real one lost them."""
    assert cluster.key_asset(cluster.controls_key("site.a/pump.7")) == "site.a/pump.7"


def test_the_owners_bucket_expires_a_lease_after_lease_s() -> None:
    """Ownership counts a lease surely its own for ``SURE_S`` after a write because the bucket
    expires it ``LEASE_S`` after it: a longer TTL left a dead worker's partitions unserved that
    much longer, a shorter one let a second owner in while the first still fetched."""
    from sensorguard.service.ownership import SURE_S

    owners = next(c for c in cluster.bucket_configs(Layout()) if c.bucket == cluster.OWNERS_BUCKET)
    assert owners.ttl == cluster.LEASE_S and SURE_S < cluster.LEASE_S


class FakeJetStream:
    """The JetStream calls ``cluster init`` and a joining worker make, answered from ``streams``."""

    def __init__(self, streams: dict[str, object]) -> None:
        self.streams = streams
        self.updated: list[object] = []

    async def stream_info(self, name: str) -> SimpleNamespace:
        from nats.js.errors import NotFoundError

        if name not in self.streams:
            raise NotFoundError
        return SimpleNamespace(config=self.streams[name])

    async def update_stream(self, config: object) -> None:
        self.updated.append(config)


def test_a_joining_worker_refuses_streams_of_another_topic_prefix() -> None:
    """A worker started with another ``--topic-prefix`` than ``cluster init`` was given would serve
    partitions whose readings never come (its subjects are not the streams'): it must refuse to
    start, saying which prefix the streams are for."""
    from nats.js.api import StreamConfig

    meta = {"sensorguard_partitions": "8", "sensorguard_keep": "64", "sensorguard_prefix": "sensors"}
    js = FakeJetStream({cluster.READINGS_STREAM: StreamConfig(name=cluster.READINGS_STREAM, metadata=meta)})
    assert asyncio.run(cluster.joined_layout(js, "sensors/", 64)) == 8
    with pytest.raises(ClusterError, match="topic prefix 'sensors', not 'plant'"):
        asyncio.run(cluster.joined_layout(js, "plant", 64))


def test_a_window_stream_keeping_exactly_a_window_is_no_shortfall(caplog: pytest.LogCaptureFixture) -> None:
    """The window stream keeping as many readings per asset as the model's window is enough for a
    takeover; a warning then told operators to raise ``--keep`` for nothing."""
    import logging

    from nats.js.api import StreamConfig

    meta = {"sensorguard_partitions": "8", "sensorguard_keep": "64", "sensorguard_prefix": "sensors"}
    js = FakeJetStream({cluster.READINGS_STREAM: StreamConfig(name=cluster.READINGS_STREAM, metadata=meta)})
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.cluster"):
        asyncio.run(cluster.joined_layout(js, "sensors", 64))
        assert "fewer than the model's window" not in caplog.text
        asyncio.run(cluster.joined_layout(js, "sensors", 65))
    assert "keeps 64 readings per asset, fewer than the model's window 65" in caplog.text


def test_a_joining_worker_warns_of_a_window_stream_kept_for_good(caplog: pytest.LogCaptureFixture) -> None:
    """An upgrade walk: a cluster set up by an init before the window stream's age limit (or one such
    init run again after it) keeps every asset id's last readings for good, and the workers said
    nothing. A joining worker now says to run this version's init."""
    import logging

    from nats.js.api import StreamConfig

    meta = {"sensorguard_partitions": "8", "sensorguard_keep": "64", "sensorguard_prefix": "sensors"}
    streams = {cluster.READINGS_STREAM: StreamConfig(name=cluster.READINGS_STREAM, metadata=meta),
               cluster.WINDOWS_STREAM: StreamConfig(name=cluster.WINDOWS_STREAM, metadata=meta)}
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.cluster"):
        asyncio.run(cluster.joined_layout(FakeJetStream(streams), "sensors", 64))
        assert "keeps every asset's last readings for good" in caplog.text
        caplog.clear()
        streams[cluster.WINDOWS_STREAM] = StreamConfig(name=cluster.WINDOWS_STREAM, metadata=meta,
                                                       max_age=Layout().windows_max_age_s)
        asyncio.run(cluster.joined_layout(FakeJetStream(streams), "sensors", 64))
    assert "for good" not in caplog.text


def test_a_bucket_update_lowers_the_duplicate_window_to_the_new_ttl_and_raises_replicas() -> None:
    """The server refuses a bucket whose duplicate window exceeds its TTL: lowering a TTL under
    the 2-minute default window without lowering the window failed ``cluster init``; and a bucket
    whose replicas differ is updated (said), not reported up to date on one copy."""
    from nats.js.api import KeyValueConfig, StreamConfig

    name = f"KV_{cluster.OWNERS_BUCKET}"
    js = FakeJetStream({name: StreamConfig(name=name, num_replicas=1, max_age=0.0, duplicate_window=120.0)})
    said = asyncio.run(cluster._ensure_bucket(js, KeyValueConfig(bucket=cluster.OWNERS_BUCKET, ttl=3.0, replicas=3)))
    assert said == f"updated bucket {cluster.OWNERS_BUCKET}: replicas 1 -> 3, ttl none -> 3 s"
    [config] = js.updated
    assert (config.num_replicas, config.max_age, config.duplicate_window) == (3, 3.0, 3.0)


def test_init_waits_while_a_new_cluster_elects_its_leader(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cluster init`` right after starting the servers meets "temporarily unavailable" until
    JetStream has a leader: it tries again (within ``FORMING_S``) instead of failing a deploy
    script that starts the servers and inits at once."""
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    tries: list[int] = []

    async def step(js: object, config: object) -> str:
        tries.append(1)
        if len(tries) < 3:
            raise RuntimeError("nats: JetStream system temporarily unavailable")
        return "created stream X"

    assert asyncio.run(cluster._retrying(step, None, None)) == "created stream X" and len(tries) == 3


def test_a_refusal_for_too_few_servers_says_so() -> None:
    """"insufficient resources" is the server's answer to ``--replicas 3`` on fewer than three
    servers; the hint names the likely cause, which the server's words do not."""

    async def step(js: object, config: object) -> str:
        raise RuntimeError("insufficient resources")

    with pytest.raises(ClusterError, match=r"insufficient resources \(fewer servers than --replicas\?\)"):
        asyncio.run(cluster._retrying(step, None, None))


_real_sleep = asyncio.sleep


async def _no_sleep(delay: float, result: object = None) -> object:
    return await _real_sleep(0, result)


def test_an_adopted_assets_state_restated_before_its_first_window_says_its_last_judged_time(drifting: Bundle) -> None:
    """A state restated before an adopted asset's first window here (a maintenance started just after
    the takeover) said the new owner's clock time; its first window here then said an earlier
    reading time, and the retained state's ts stepped back. It says the end of the last window
    judged by the previous owner, as a restart's restored state does (session 74's open end)."""
    daemon, client = daemon_with(drifting, None)
    daemon.alerts.changed_states()  # cluster mode
    daemon.alerts.adopt("pump-1", AlertState(last_score=0.5), None, True, T0, T0 + 4, CHANNELS)
    daemon.alerts.hand_over(set())  # (takes the adoption in)
    daemon.alerts.request_control_change("pump-1", True)
    daemon.alerts.apply_control_changes()
    daemon.alerts.apply("pump-1", T0 + 6, 0.5, [])
    stamps = [json.loads(p)["ts"] for t, p, _ in client.published if t == "sensorguard/state/pump-1"]
    assert len(stamps) == 2 and stamps == sorted(stamps), stamps
    assert stamps[0] == json.loads(json.dumps(iso(T0 + 4)))


def test_a_maintenance_started_just_after_a_takeover_shows_in_the_adopted_assets_state(drifting: Bundle) -> None:
    """A hold accepted while an adoption still waited in its queue (taken in at the next hand-over
    or housekeeping pass) restated nothing: the asset was neither live nor restored yet, and its
    retained state said no maintenance until its first window here (a machine switched off for
    that maintenance sends none). Seen once in a cluster walk of session 74."""
    from sensorguard.service.command_messages import Command

    daemon, client = daemon_with(drifting, None)
    daemon.alerts.changed_states()  # cluster mode
    daemon.alerts.adopt("pump-1", AlertState(last_score=0.5), None, True, T0, T0 + 4, CHANNELS)
    daemon.controls.apply(Command("maintenance", "pump-1", action="start"), time.time())
    daemon.alerts.request_control_change("pump-1", True)
    daemon.alerts.apply_control_changes()
    states = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/state/pump-1"]
    assert [s["suppressed"] for s in states] == ["maintenance"], states

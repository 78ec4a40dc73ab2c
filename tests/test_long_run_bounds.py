"""What a long-running daemon keeps stays bounded: assets that come, are judged and go silent for
good (machines decommissioned, made-up asset ids) leave nothing behind that grows with their count.
Each test cycles many distinct assets through the real path (readings in, windows scored, the
housekeeping's silence) and looks at what is left."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from sensorguard.service.bundle import Bundle
from sensorguard.service.daemon import Daemon
from tests.test_daemon import FakeClient, make


def cycle(daemon: Daemon, client: FakeClient, assets: int, per_round: int, first: int = 0) -> float:
    """``assets`` new assets, ``per_round`` at a time: a window of readings each (scored), then a
    silence of ``stale_after_s`` ends them; the monotonic time the last housekeeping ran at."""
    now = time.time() - 3600
    clock = time.monotonic()
    window = daemon.bundle.config.window
    for start in range(first, first + assets, per_round):
        for k in range(start, min(first + assets, start + per_round)):
            samples = [{"ts": now + i, "values": {"a": 1.0, "b": 2.0, "c": 3.0}} for i in range(window)]
            daemon.ingest.handle(client, SimpleNamespace(topic=f"sensors/gone-{k}/readings", mid=1, qos=1,
                                                         payload=json.dumps({"samples": samples}).encode()))
        while batch := daemon.ingest.next_batch(0)[0]:
            daemon.score_batch(batch)
        clock += daemon.settings.stale_after_s + 1
        daemon.housekeeping(clock)
        client.published.clear()
    return clock


def test_assets_gone_silent_leave_no_judged_time_behind_without_a_state_dir(tiny_bundle: Bundle):
    """Each judged window set its asset's last judged time (kept for the state file); only a save
    to ``state_dir`` pruned it, and without one (the default) every asset ever judged stayed there
    for the daemon's life: 12,000 assets through, 12,000 entries, against max_assets live ones."""
    daemon, client = make(tiny_bundle, stale_after_s=60, max_assets=200)
    cycle(daemon, client, 1_000, 200)
    assert len(daemon.buffers) == 0 and not daemon.alerts.snapshot()  # all of them silent
    assert len(daemon.alerts._floors) == 0


def test_the_state_bucket_forgets_the_controls_key_of_an_alert_the_controls_forgot(monkeypatch, caplog):
    """Cluster mode writes each asset's acknowledgeable alerts to its controls key at every raise.
    The controls forget the oldest past ``RECENT_ALERTS``, but the key of an asset whose alerts
    were forgotten so was never written again: one key per asset that ever alerted stayed in the
    bucket for the cluster's life (machines retired, made-up ids), and every takeover read them
    all back in (their stale alerts pushing the worker's own out). The key now follows the
    forgetting: rewritten without the alert, deleted once nothing of the asset is left; and the
    alerts forgotten before an acknowledgement (one is refused now) are counted and said."""
    import asyncio

    from sensorguard.service import commands
    from sensorguard.service.commands import AlarmControls
    from sensorguard.service.statesync import StateSync
    from tests.test_cluster import FlakyBucket

    monkeypatch.setattr(commands, "RECENT_ALERTS", 50)
    controls = AlarmControls()
    sync = StateSync(controls, lambda asset: True)
    bucket = FlakyBucket(fails=0)
    sync.open(bucket)
    controls.on_change = sync.mark  # (ClusterSource.controls_changed, without the event loop's hop)
    for k in range(2_000):
        controls.raised(f"gone-{k}@1", f"gone-{k}")
        if k % 100 == 99:
            asyncio.run(sync.flush())
    asyncio.run(sync.flush())
    assert len(controls.assets()) == 50
    assert len(bucket.kept) == 50
    assert controls.alerts_forgotten == 1_950
    assert "1 of them not acknowledged so far" in caplog.text  # (once a minute: the first)


def test_alerts_forgotten_before_their_acknowledgement_are_counted_in_the_metrics(tiny_bundle: Bundle, monkeypatch):
    """Past the recent alerts kept, the oldest go; an operator's acknowledgement of one is then
    refused as "unknown or too old". Those forgotten unacknowledged count in
    ``alerts_forgotten_total`` (an acknowledged one is answered already: not counted)."""
    from sensorguard.service import commands
    from sensorguard.service.command_messages import parse_command
    from tests.test_daemon import value

    monkeypatch.setattr(commands, "RECENT_ALERTS", 5)
    daemon, _ = make(tiny_bundle)
    assert value(daemon, "sensorguard_alerts_forgotten_total") == 0
    daemon.controls.raised("gone-0@1", "gone-0", 1.0)
    assert daemon.controls.apply(parse_command("ack", b'{"alert_id": "gone-0@1"}', 2.0), 2.0)[0]
    for k in range(1, 9):
        daemon.controls.raised(f"gone-{k}@1", f"gone-{k}", 2.0 + k)
    assert value(daemon, "sensorguard_alerts_forgotten_total") == 3  # gone-1 to gone-3 (gone-0 was answered)


def test_a_state_or_controls_key_that_ended_leaves_nothing_in_the_state_bucket(tmp_path, monkeypatch):
    """An asset's state key is deleted when its state ends with nothing to keep (silent without a
    baseline, or forgotten past the silent cap), its controls key when nothing of it is left (its
    alerts forgotten past the recent ones kept). A KV delete leaves a marker, and the state bucket
    (no TTL) kept every one for good: a subject per asset that ever ended, which every takeover
    lists, and reads back for a controls key. The key is now purged whole."""
    import asyncio

    from sensorguard.service import cluster, commands
    from sensorguard.service.cluster import Layout
    from sensorguard.service.commands import AlarmControls
    from sensorguard.service.statesync import StateSync
    from sensorguard.service.stream_reads import stream_subjects
    from tests.nats import NatsCluster

    monkeypatch.setattr(commands, "RECENT_ALERTS", 50)
    node = NatsCluster(tmp_path, 1).start()
    try:
        cluster.run_init(Layout(partitions=8, servers=node.urls))

        async def run() -> tuple[dict[str, int], dict[str, int]]:
            nc = await cluster.connect(node.urls)
            try:
                js = nc.jetstream()
                controls = AlarmControls()
                sync = StateSync(controls, lambda asset: True)
                sync.open(await js.key_value(cluster.STATE_BUCKET), js)
                controls.on_change = sync.mark
                assets = [f"gone-{k}" for k in range(200)]
                sync.queue(dict.fromkeys(assets, b'{"alert":{}}'))
                for asset in assets[:50]:
                    controls.raised(f"{asset}@1", asset)
                await sync.flush()
                listing = f"$KV.{cluster.STATE_BUCKET}.>"
                written = await stream_subjects(nc, f"KV_{cluster.STATE_BUCKET}", listing)
                sync.queue(dict.fromkeys(assets))  # their states ended
                for k in range(50):  # the alerts of 50 others: the first 50 assets' are forgotten
                    controls.raised(f"new-{k}@1", f"new-{k}")
                await sync.flush()
                return written, await stream_subjects(nc, f"KV_{cluster.STATE_BUCKET}", listing)
            finally:
                await nc.close()

        written, left = asyncio.run(run())
    finally:
        node.stop()
    assert len(written) == 250
    assert set(left) == {f"$KV.{cluster.STATE_BUCKET}.{cluster.controls_key(f'new-{k}')}" for k in range(50)}


def test_the_window_stream_keeps_readings_for_a_bounded_time():
    """The window stream kept the last ``--keep`` readings of every asset id ever published for good
    (no age, no byte cap): 5,000 made-up ids sent once held 5,000 subjects and 6.7 MB, up to 1,024
    readings each, refused by the workers and stored all the same, and every takeover listed them.
    It keeps them twice the readings stream's age (at least a day more): a takeover primes from the
    readings before the first one waiting to be scored, at most that age, a window earlier."""
    from sensorguard.service import cluster
    from sensorguard.service.cluster import Layout

    def windows(layout: Layout):
        return next(c for c in cluster.stream_configs(layout) if c.name == cluster.WINDOWS_STREAM)

    assert windows(Layout()).max_age == 14 * 86400.0
    assert windows(Layout(readings_max_age_s=600.0)).max_age == 600.0 + 86400.0
    assert windows(Layout(readings_max_age_s=cluster.MAX_AGE_LIMIT_S)).max_age == cluster.MAX_AGE_LIMIT_S


KEPT, T0 = "pump-7", 1_767_225_600.0  # the asset whose readings the takeover tests' partition holds
RETIRED = [f"retired-{n}" for n in range(40)]  # assets with a state in the bucket and no readings


class Adopting:
    """The alert application's part a takeover calls: what it adopted."""

    recorder = None

    def __init__(self) -> None:
        self.adopted: dict[str, tuple] = {}

    def adopt(self, asset: str, *state: object) -> None:
        self.adopted[asset] = state


def retired_in(k: int) -> list[str]:
    """The ``RETIRED`` assets of partition ``k`` (of 8)."""
    from sensorguard.service.cluster import partition_of

    return [a for a in RETIRED if partition_of(a, 8) == k]


def taken_over(tmp_path, monkeypatch, fill, alerts=None, controls=None) -> tuple[int, list[str], dict[str, int]]:
    """``KEPT``'s partition ``k`` of a one-node cluster, ten readings of it in the streams, taken over
    once ``fill(states, k)`` (awaited) wrote the state bucket, by a takeover given ``alerts`` and
    ``controls`` (None: those ``rebuilt`` gives). ``(k, the assets rebuilt, the bucket's subjects after)``."""
    import asyncio

    from sensorguard.service import cluster, takeover
    from sensorguard.service.stream_reads import stream_subjects
    from tests.nats import NatsCluster
    from tests.test_cluster import initialised, rebuilt, ten_readings

    real = takeover.Takeover
    monkeypatch.setattr(takeover, "Takeover", lambda nc, states, settings, ingest, given, held: real(
        nc, states, settings, ingest, given if alerts is None else alerts, held if controls is None else controls))
    node = NatsCluster(tmp_path, 1).start()
    try:
        _, k = initialised(node.urls, KEPT)

        async def run() -> tuple[list[str], dict[str, int]]:
            nc = await cluster.connect(node.urls)
            try:
                await ten_readings(nc, KEPT, T0, k)
                await fill(await nc.jetstream().key_value(cluster.STATE_BUCKET), k)
                _, _, assets = await rebuilt(nc, k, 30.0)
                return assets, await stream_subjects(nc, f"KV_{cluster.STATE_BUCKET}", f"$KV.{cluster.STATE_BUCKET}.>")
            finally:
                await nc.close()

        assets, left = asyncio.run(run())
    finally:
        node.stop()
    return k, assets, left


def test_a_takeover_adopts_a_silent_asset_the_window_stream_no_longer_holds(tmp_path, monkeypatch):
    """An asset silent longer than the window stream keeps readings has its state (a silence
    awaited, a drift baseline) in the state bucket only: a takeover listed assets from the window
    stream alone, so it was never adopted (its return told no ``sensor_ok``, its baseline lost) and
    its key stayed in the bucket, owned by no worker. It is adopted from the bucket's listing."""
    from sensorguard.service import cluster
    from sensorguard.service.alerts import AlertState
    from sensorguard.service.state_entry import encode_asset

    async def fill(states, k: int) -> None:
        elsewhere = next(a for a in RETIRED if cluster.partition_of(a, 8) != k)
        for asset in [*retired_in(k), KEPT, elsewhere]:  # silent: readings aged out of the window stream (retired)
            await states.put(cluster.state_key(asset), encode_asset(AlertState(), None, silence=(T0, 0.5)))

    alerts = Adopting()
    k, assets, _ = taken_over(tmp_path, monkeypatch, fill, alerts=alerts)
    others = retired_in(k)
    assert others and sorted(assets) == sorted([KEPT, *others])
    assert set(alerts.adopted) == {KEPT, *others}
    assert all(alerts.adopted[asset][-1] == (T0, 0.5) for asset in others)  # awaited as silent


def test_a_takeover_purges_the_delete_markers_an_older_version_left_in_the_state_bucket(tmp_path, monkeypatch):
    """Before 2315eb2 an ended state or controls key was deleted, leaving a marker the bucket (no
    TTL) keeps for good. A cluster upgraded keeps them: each takeover now lists the whole bucket
    (``_bucket_only``) and reads every marker of the partition back, one round trip each, at every
    takeover, for good. The new owner purges each marker it reads (up to it: a write after it stays)."""
    from sensorguard.service import cluster
    from sensorguard.service.commands import AlarmControls

    async def fill(states, k: int) -> None:
        for asset in retired_in(k):  # as an older version ended them: a delete marker left behind
            for key in (cluster.state_key(asset), cluster.controls_key(asset)):
                await states.put(key, b'{"controls":[],"alerts":{},"past":[]}')
                await states.delete(key)

    # (rebuilt gives the takeover no controls: these read the controls keys too)
    k, _, left = taken_over(tmp_path, monkeypatch, fill, controls=AlarmControls())
    assert retired_in(k)
    assert not [s for s in left if "retired-" in s], sorted(left)


def test_a_takeover_counts_no_asset_for_a_delete_marker_it_purges(tmp_path, monkeypatch):
    """An older version's delete marker is a key of the state bucket, so ``_bucket_only`` listed
    it as an asset silent longer than the window stream keeps readings: the first takeover after an
    upgrade (an upgrade walk, 3,000 markers) logged "rebuilt the windows of 373 assets" for a
    partition of 1 asset, and its owner kept those ids as its assets ("handed partition 0 over
    (373 assets)"). A key read back as deleted holds no asset: it is purged, not taken."""
    from sensorguard.service import cluster
    from sensorguard.service.alerts import AlertState
    from sensorguard.service.state_entry import encode_asset

    async def fill(states, k: int) -> None:
        *ended, silent = retired_in(k)
        for asset in ended:  # as an older version ended them: a delete marker left behind
            await states.put(cluster.state_key(asset), encode_asset(AlertState(), None))
            await states.delete(cluster.state_key(asset))
        await states.put(cluster.state_key(silent), encode_asset(AlertState(), None, silence=(T0, 0.5)))

    k, assets, _ = taken_over(tmp_path, monkeypatch, fill, alerts=Adopting())
    *ended, silent = retired_in(k)
    assert ended
    assert sorted(assets) == sorted([KEPT, silent])


def test_a_start_removes_the_temporary_files_a_killed_save_left_in_the_state_dir(tiny_bundle: Bundle, tmp_path):
    """``assets.json`` and ``controls.json`` are written through a temporary file beside them
    (``.assets.json.<8 random>``: written, fsynced, renamed). A process killed in between (``kill
    -9``, the OOM killer, a power cut during the fsync of a file of 10,000 silent assets' baselines)
    left it there, and nothing removed it: one more at each such crash, as large as the file. The
    folder is this process's (``serve`` holds its lock): a start removes them, and nothing else."""
    state = tmp_path / "state"
    state.mkdir()
    left = [state / ".assets.json.k3_9xq2a", state / ".controls.json.0abcdefg"]
    kept = [state / ".assets.json.bad.incoming", state / "assets.json.bad", state / ".assets.json.toolong123"]
    for path in [*left, *kept]:
        path.write_text("{}")
    make(tiny_bundle, state_dir=str(state))
    assert not any(path.exists() for path in left)
    assert all(path.exists() for path in kept)


def test_an_asset_gone_silent_for_good_gives_its_alerted_label_slot_back_in_time():
    """Per-asset series are capped at ``max_assets`` labels; an asset that ever alerted kept its
    slot (its ``alerts_total`` must not vanish while ``increase()`` still looks at it) for the
    daemon's life. Over months, machines retired after an alert filled every slot, and every new
    asset shared ``_other``: one ``anomaly_active`` for them all, the last window's writer wins, so
    an alert of one was hidden by the next normal window of another (no page). The slot and the
    series go once the asset has been silent ``RETIRED_LABEL_S`` (past the rules' 1-day range)."""
    from prometheus_client import CollectorRegistry

    from sensorguard.service import metrics as metrics_module
    from sensorguard.service.metrics import OTHER, Metrics

    now = [0.0]
    registry = CollectorRegistry()
    m = Metrics(registry, max_assets=2, clock=lambda: now[0])
    for asset in ("old-1", "old-2"):
        m.set_score(asset, 2.0, True)
        m.alert_raised(asset)
        m.forget_asset(asset)  # silent: retired
    assert m.asset_label("new") == OTHER  # their series are kept a while yet
    assert registry.get_sample_value("sensorguard_alerts_total", {"asset": "old-1"}) == 1
    now[0] += metrics_module.RETIRED_LABEL_S + 1
    assert m.asset_label("new") == "new"
    assert registry.get_sample_value("sensorguard_alerts_total", {"asset": "old-1"}) is None
    assert registry.get_sample_value("sensorguard_alerts_total", {"asset": "old-2"}) == 1  # (one slot needed)
    m.asset_label("old-2")  # back before its slot was needed: it keeps it, and its series
    now[0] += metrics_module.RETIRED_LABEL_S + 1
    assert m.asset_label("newer") == OTHER
    assert registry.get_sample_value("sensorguard_alerts_total", {"asset": "old-2"}) == 1


def test_a_flapping_assets_controls_key_stays_within_a_nats_message(tmp_path):
    """An asset's controls key held every alert of it the controls keep (up to all 10,000 of
    them, one asset flapping for weeks): 1.3 MB of JSON, over NATS's 1 MB message limit, so its
    write failed at every flush (a debug line, tried again every half second, serialized again each
    time), a command to it was answered "NOT SAVED" and its next owner took over its old controls.
    The key holds its newest ``ALERTS_EXPORTED`` alerts (its one alert up among them)."""
    import asyncio
    import json

    from nats.js.errors import KeyNotFoundError

    from sensorguard.service import cluster
    from sensorguard.service.cluster import Layout
    from sensorguard.service.commands import ALERTS_EXPORTED, AlarmControls
    from sensorguard.service.statesync import StateSync
    from tests.nats import NatsCluster

    asset, t0 = "site-a/line-3/pump-17", 1_767_225_600.0
    node = NatsCluster(tmp_path, 1).start()
    try:
        cluster.run_init(Layout(partitions=8, servers=node.urls))

        async def run() -> tuple[dict | None, set[str]]:
            nc = await cluster.connect(node.urls)
            try:
                js = nc.jetstream()
                bucket = await js.key_value(cluster.STATE_BUCKET)
                controls = AlarmControls()
                sync = StateSync(controls, lambda a: True)
                sync.open(bucket, js)
                for k in range(10_000):
                    controls.raised(f"{asset}@{int((t0 + 600 * k) * 1000)}", asset, t0 + 600 * k)
                sync.mark(asset)
                await sync.flush()
                try:
                    entry = await bucket.get(cluster.controls_key(asset))
                except KeyNotFoundError:
                    return None, sync.controls_dirty
                return json.loads(entry.value), sync.controls_dirty
            finally:
                await nc.close()

        doc, dirty = asyncio.run(run())
    finally:
        node.stop()
    assert doc is not None and not dirty
    assert len(doc["alerts"]) == ALERTS_EXPORTED
    assert f"{asset}@{int((t0 + 600 * 9_999) * 1000)}" in doc["alerts"]  # the newest, the one that may be up

"""Cluster mode's layout (service/cluster.py) on real nats-server processes: ``cluster init`` is
idempotent and refuses a partition change; MQTT readings published into a node's MQTT listener land
in exactly one partition per asset, at any depth, and the window stream keeps the last ``keep``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time

import paho.mqtt.client as paho
import pytest

from sensorguard.service import cluster, stream_reads
from sensorguard.service.cluster import ClusterError, Layout, asset_of, topic_to_subject, transforms
from sensorguard.service.payload import MAX_ASSET_LEVELS
from tests.mosquitto import clean_env, wait_for
from tests.nats import NatsCluster

try:
    import nats  # noqa: F401 - only its presence is checked
except ImportError:  # the test extra installs it: under CI=true its absence is a failure, not a skip
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("nats-py is not installed (pip install 'sensorguard[cluster]')", allow_module_level=True)


@pytest.fixture
def nats_node(tmp_path):
    node = NatsCluster(tmp_path, 1).start()
    yield node
    node.stop()


def test_subjects_name_assets_as_nats_mqtt_maps_topics():
    assert topic_to_subject("sensors/site-a/pump.7/readings") == "sensors.site-a.pump//7.readings"
    assert asset_of("sensorguard.readings.3.site-a.pump//7") == (3, "site-a/pump.7")
    assert asset_of("sensorguard.window.12.pump-1") == (12, "pump-1")
    with pytest.raises(ValueError):
        asset_of("sensors.pump-1.readings")


def test_one_transform_per_depth_partitions_over_every_asset_token():
    moves = transforms(Layout(topic_prefix="plant/sensors", partitions=8), "sensorguard.readings")
    assert len(moves) == MAX_ASSET_LEVELS
    assert moves[0] == ("plant.sensors.*.readings", "sensorguard.readings.{{partition(8,1)}}.{{wildcard(1)}}")
    assert moves[2] == ("plant.sensors.*.*.*.readings",
                        "sensorguard.readings.{{partition(8,1,2,3)}}.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}")


@pytest.mark.parametrize("bad, says", [
    ({"partitions": 0}, "partitions must be 1 to 1024"),
    ({"replicas": 2}, "replicas must be 1, 3 or 5"),
    ({"keep": 1}, "keep must be at least 2"),
    ({"topic_prefix": "sensors/#"}, "without wildcards"),
    # 0 is "keep for ever" to NATS, said nowhere; 1e12 s failed in the server after a stream had changed
    ({"readings_max_age_s": 0.0}, "max-age must be from 100 ms to 100 years, not 0 s"),
    ({"readings_max_age_s": 0.05}, "max-age must be from 100 ms"),
    ({"readings_max_age_s": 1e12}, "max-age must be from 100 ms"),
])
def test_a_bad_layout_is_refused_in_one_line(bad, says):
    with pytest.raises(ClusterError, match=says):
        Layout(**bad).check()


def publish(port: int, messages: list[tuple[str, dict]]) -> None:
    """QoS 1 over MQTT 3.1.1 into a NATS node's MQTT listener, each confirmed."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="sensor", protocol=paho.MQTTv311)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(topic, json.dumps(body), qos=1) for topic, body in messages]
    for info in infos:
        info.wait_for_publish(10)
        assert info.is_published()
    client.disconnect()
    client.loop_stop()


def subject_counts(servers: tuple[str, ...], name: str) -> dict[str, int]:
    async def read() -> dict[str, int]:
        nc = await cluster.connect(servers)
        try:
            info = await nc.jetstream().stream_info(name, subjects_filter=">")
            return dict(info.state.subjects or {})
        finally:
            await nc.close()
    return asyncio.run(read())


def test_init_creates_then_reports_up_to_date_and_refuses_another_partition_count(nats_node):
    layout = Layout(partitions=4, keep=5, servers=nats_node.urls)
    first = cluster.run_init(layout)
    assert first == [f"created stream {cluster.IN_STREAM}", f"created stream {cluster.READINGS_STREAM}",
                     f"created stream {cluster.WINDOWS_STREAM}", f"created bucket {cluster.OWNERS_BUCKET}",
                     f"created bucket {cluster.STATE_BUCKET}"]
    again = cluster.run_init(layout)  # a line per stream and bucket (none said passed too: a test audit)
    assert len(again) == len(first) and all("up to date" in line for line in again), again
    more = cluster.run_init(Layout(partitions=4, keep=6, servers=nats_node.urls))
    assert f"updated stream {cluster.WINDOWS_STREAM}: max_msgs_per_subject 5 -> 6, sensorguard_keep 5 -> 6" in more
    with pytest.raises(ClusterError, match="has 4 partitions, not 8"):
        cluster.run_init(Layout(partitions=8, servers=nats_node.urls))
    # another prefix re-pointed a live cluster: readings under the old one vanished, and the running
    # workers took the new one's as theirs, still ready (a walk)
    with pytest.raises(ClusterError, match="takes readings under topic prefix 'sensors', not 'plant'"):
        cluster.run_init(Layout(partitions=4, keep=6, topic_prefix="plant", servers=nats_node.urls))
    again = cluster.run_init(Layout(partitions=4, keep=6, servers=nats_node.urls))
    assert len(again) == len(first) and all("up to date" in line for line in again), again


def test_init_raises_the_replicas_of_streams_and_buckets_in_place(tmp_path):
    """A cluster set up with one replica, then init with three: every stream and bucket is updated
    (said so), the copies exist, and a key written before is still there."""
    nodes = NatsCluster(tmp_path, 3).start()
    try:
        cluster.run_init(Layout(partitions=2, servers=nodes.urls))
        asyncio.run(_put_owner(nodes.urls))
        lines = cluster.run_init(Layout(partitions=2, replicas=3, servers=nodes.urls))
        assert f"updated bucket {cluster.OWNERS_BUCKET}: replicas 1 -> 3" in lines, lines
        assert f"updated bucket {cluster.STATE_BUCKET}: replicas 1 -> 3" in lines, lines
        assert all(line.startswith("updated ") and "1 -> 3" in line for line in lines), lines
        replicas, value = asyncio.run(_replicas_and_owner(nodes.urls))
        assert set(replicas.values()) == {3}, replicas  # the config, and the copies themselves:
        wait_for(lambda: set(asyncio.run(_replicas_and_owner(nodes.urls, peers=True))[0].values()) == {2}, 30,
                 "two peers beside the leader of every stream and bucket")
        assert value == b"w1"
        assert all("up to date" in line for line in cluster.run_init(Layout(partitions=2, replicas=3,
                                                                            servers=nodes.urls)))
    finally:
        nodes.stop()


def test_init_brings_a_bucket_ttl_up_to_date(nats_node):
    """A bucket's TTL set, lowered and removed in place (the server refuses a duplicate window
    longer than the TTL: it is lowered with it)."""
    from nats.js.api import KeyValueConfig

    async def run() -> list[str]:
        nc = await cluster.connect(nats_node.urls)
        try:
            js = nc.jetstream()
            await js.create_key_value(KeyValueConfig(bucket="probe", history=1))
            said = [await cluster._ensure_bucket(js, KeyValueConfig(bucket="probe", ttl=ttl, history=1))
                    for ttl in (10.0, 3.0, 3.0, None)]
            kv = await js.key_value("probe")
            await kv.put("k", b"v")
            assert (await kv.get("k")).value == b"v"
            return said
        finally:
            await nc.close()

    assert asyncio.run(run()) == ["updated bucket probe: ttl none -> 10 s", "updated bucket probe: ttl 10 s -> 3 s",
                                  "bucket probe is up to date", "updated bucket probe: ttl 3 s -> none"]


async def _put_owner(servers) -> None:
    nc = await cluster.connect(servers)
    try:
        await (await nc.jetstream().key_value(cluster.STATE_BUCKET)).put("probe", b"w1")
    finally:
        await nc.close()


async def _replicas_and_owner(servers, peers: bool = False) -> tuple[dict[str, int], bytes]:
    """Per stream its replicas setting (or with ``peers`` the copies beside the leader), and the probe key."""
    nc = await cluster.connect(servers)
    try:
        js = nc.jetstream()
        names = [cluster.IN_STREAM, cluster.READINGS_STREAM, cluster.WINDOWS_STREAM,
                 f"KV_{cluster.OWNERS_BUCKET}", f"KV_{cluster.STATE_BUCKET}"]
        infos = {name: await js.stream_info(name) for name in names}
        replicas = {name: len((info.cluster.replicas if info.cluster else None) or []) if peers
                    else info.config.num_replicas for name, info in infos.items()}
        return replicas, (await (await js.key_value(cluster.STATE_BUCKET)).get("probe")).value
    finally:
        await nc.close()


def test_mqtt_readings_land_in_one_partition_per_asset_at_any_depth(nats_node):
    cluster.run_init(Layout(partitions=4, keep=3, servers=nats_node.urls))
    assets = ["pump-1", "site-a/pump-2", "site-a/line.2/pump-3", "a/b/c/d/e/f/g/h",
              *(f"line-{i % 3}/pump.{i}" for i in range(12))]
    readings = [(f"sensors/{asset}/readings", {"ts": 1_767_225_600 + k, "values": {"x": k}})
                for k in range(5) for asset in assets]
    publish(nats_node.nodes[0].mqtt_port, [*readings, ("sensors/pump-1/status", {"up": 1})])

    def copied() -> bool:
        return sum(subject_counts(nats_node.urls, cluster.READINGS_STREAM).values()) == len(readings)

    wait_for(copied, 20, "the readings copied into the partitioned stream")
    by_subject = subject_counts(nats_node.urls, cluster.READINGS_STREAM)
    placed = [asset_of(subject) for subject in by_subject]
    assert sorted(asset for _, asset in placed) == sorted(assets)  # each asset in one partition only
    assert all(0 <= partition < 4 for partition, _ in placed)
    assert all(cluster.partition_of(asset, 4) == partition for partition, asset in placed)  # known without NATS
    assert set(by_subject.values()) == {5}
    assert subject_counts(nats_node.urls, cluster.IN_STREAM)["sensors.pump-1.status"] == 1  # captured, not copied
    wait_for(lambda: sum(subject_counts(nats_node.urls, cluster.WINDOWS_STREAM).values()) == 3 * len(assets),
             20, "the window stream holding the last 3 readings of each asset")
    windows = subject_counts(nats_node.urls, cluster.WINDOWS_STREAM)
    assert {asset_of(subject)[1] for subject in windows} == set(assets)


def test_cli_prints_what_it_did_and_one_line_when_the_cluster_is_unreachable(nats_node):
    run = [sys.executable, "-m", "sensorguard", "cluster", "init", "--partitions", "2"]
    ok = subprocess.run([*run, "--cluster", ",".join(nats_node.urls)], capture_output=True, text=True,
                        timeout=60, env=clean_env())
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == f"created stream {cluster.IN_STREAM}"
    down = subprocess.run([*run, "--cluster", "nats://127.0.0.1:1"], capture_output=True, text=True, timeout=60,
                          env=clean_env())
    assert down.returncode != 0
    assert len(down.stderr.strip().splitlines()) == 1 and down.stderr.startswith(
        "sensorguard cluster: error: cannot reach the NATS servers nats://127.0.0.1:1: "
        "nats: no servers available for connection (")
    bad = subprocess.run([*run, "--cluster", "127.0.0.1:4222"], capture_output=True, text=True, timeout=60,
                         env=clean_env())
    assert bad.returncode == 2 and "expected nats://HOST:PORT" in bad.stderr and "Traceback" not in bad.stderr


def test_an_operator_command_to_nats_mqtt_listener_in_mqtt_5_says_which_version(nats_node):
    """`sensorguard maintenance` against NATS's MQTT listener, without --mqtt-version 3.1.1, said
    "Unsupported protocol version (check its access rules and this user's credentials)" (a walk);
    serve said the right thing already."""
    out = subprocess.run([sys.executable, "-m", "sensorguard", "maintenance", "start", "pump-1", "--broker",
                          f"mqtt://127.0.0.1:{nats_node.nodes[0].mqtt_port}", "--timeout", "5"],
                         capture_output=True, text=True, timeout=60, env=clean_env())
    assert out.returncode != 0 and "give --mqtt-version 3.1.1" in out.stderr, out.stderr
    assert "credentials" not in out.stderr and "Traceback" not in out.stderr


def test_a_server_without_jetstream_is_named_as_such(tmp_path):
    """`cluster init` against a nats-server started without JetStream printed "the server refused:
    nats: ServiceUnavailableError: code=None err_code=None description='None'" (a walk)."""
    import socket

    from tests.mosquitto import free_port
    from tests.nats import need_nats_server

    port = free_port()
    server = subprocess.Popen([need_nats_server(), "-a", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 15, "nats-server without JetStream")
        out = subprocess.run([sys.executable, "-m", "sensorguard", "cluster", "init", "--cluster",
                              f"nats://127.0.0.1:{port}"], capture_output=True, text=True, timeout=60, env=clean_env())
    finally:
        server.terminate()
        server.wait(10)
    assert out.returncode != 0 and "no JetStream answered" in out.stderr and "-js" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "code=None" not in out.stderr  # (nats-py's noise)


def test_a_refusal_says_the_servers_words_not_nats_pys(nats_node):
    """Found by a walk: ``--replicas 3`` on one node said "nats: ServerError: code=500
    err_code=10074 description='replicas > 1 not supported in non-clustered mode'"."""
    out = subprocess.run([sys.executable, "-m", "sensorguard", "cluster", "init", "--replicas", "3", "--cluster",
                          ",".join(nats_node.urls)], capture_output=True, text=True, timeout=120, env=clean_env())
    assert out.returncode != 0 and out.stderr.strip() == (
        "sensorguard cluster: error: the server refused: replicas > 1 not supported in non-clustered mode"), out.stderr


def test_a_max_age_shorter_than_a_hand_over_is_warned_of_and_still_set(nats_node):
    """``--max-age 1s`` was accepted without a word: readings waiting for a worker (a takeover takes
    3-10 s) expire unscored first (a walk). It is set as asked, with a warning; a minute is not warned."""
    run = [sys.executable, "-m", "sensorguard", "cluster", "init", "--cluster", ",".join(nats_node.urls), "--max-age"]
    out = subprocess.run([*run, "1s"], capture_output=True, text=True, timeout=120, env=clean_env())
    assert out.returncode == 0 and out.stderr.startswith(
        "warning: --max-age 1 s: readings waiting for a worker expire unscored before one takes them"), out.stderr
    assert f"created stream {cluster.READINGS_STREAM}" in out.stdout
    out = subprocess.run([*run, "60s"], capture_output=True, text=True, timeout=120, env=clean_env())
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr
    out = subprocess.run([*run, "0.05s"], capture_output=True, text=True, timeout=120, env=clean_env())
    assert out.returncode != 0 and out.stderr.startswith("sensorguard cluster: error: max-age must be"), out.stderr


def test_a_refused_password_is_named_not_only_no_servers_available(tmp_path):
    """Found by a walk: a wrong password (or none) said only "nats: no servers available for
    connection", where serve logs the server's 'Authorization Violation'."""
    import socket

    from tests.mosquitto import free_port
    from tests.nats import need_nats_server

    port = free_port()
    server = subprocess.Popen([need_nats_server(), "-a", "127.0.0.1", "-p", str(port), "--user", "sg", "--pass",
                               "s3cretpw"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 15, "nats-server with a password")
        out = subprocess.run([sys.executable, "-m", "sensorguard", "cluster", "init", "--cluster",
                              f"nats://sg:wrongpw@127.0.0.1:{port}"], capture_output=True, text=True, timeout=60,
                             env=clean_env())
    finally:
        server.terminate()
        server.wait(10)
    assert out.returncode != 0 and "authorization violation" in out.stderr.lower(), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "wrongpw" not in out.stderr


def test_init_on_a_three_node_cluster_with_three_replicas(tmp_path):
    nodes = NatsCluster(tmp_path, 3).start()  # init right away: it waits while the cluster elects its leader
    try:
        lines = cluster.run_init(Layout(partitions=4, replicas=3, servers=nodes.urls))
        assert lines[0] == f"created stream {cluster.IN_STREAM}"
        publish(nodes.nodes[2].mqtt_port, [("sensors/pump-9/readings", {"ts": 1_767_225_600, "values": {"x": 1}})])
        wait_for(lambda: subject_counts(nodes.urls, cluster.READINGS_STREAM), 20, "the reading copied")
    finally:
        nodes.stop()


def test_cluster_settings_are_checked_with_the_others():
    from sensorguard.service.config import ConfigError, load_settings

    ok = load_settings({"model": None, "cluster": ["nats://a:4222,nats://b:4222"]}, {}, require_model=False)
    assert ok.cluster_servers() == ("nats://a:4222", "nats://b:4222") and ok.readings_filters() == ()
    assert ok.static_partitions() == ()  # the status names no topic filter: ownership moves
    env = load_settings({"model": None}, {"SENSORGUARD_CLUSTER": "nats://a:4222,nats://b:4222"}, require_model=False)
    assert env.cluster_servers() == ok.cluster_servers()
    with pytest.raises(ConfigError) as err:
        load_settings({"model": None, "cluster": ["a:4222"], "partition": ["site-a/#"], "instance": "w:1"}, {},
                      require_model=False)
    assert [p.split(":")[0] for p in err.value.problems] == ["cluster", "instance", "partition"]
    for given in (",", "nats://127.0.0.1:abc", "nats://127.0.0.1:99999", "nats://:4222"):  # (a walk: each ran
        with pytest.raises(ConfigError) as err:  # silently, or retried every 5 s as if the server were down)
            load_settings({"model": None, "cluster": [given]}, {}, require_model=False)
        assert [p.split(":")[0] for p in err.value.problems] == ["cluster"], given


def test_a_takeover_adopts_every_controls_key_of_its_partition_every_time(nats_node):
    """The controls of a partition's assets are listed from the stream, not by a KV watch: nats-py's
    watch can end its first replay before any entry came (nats-io/nats.py#842), and a new owner then
    ran the asset without its maintenance. 800 takeovers, each complete."""
    from sensorguard.service.commands import AlarmControls
    from sensorguard.service.takeover import Takeover

    cluster.run_init(Layout(partitions=8, servers=nats_node.urls))
    assets = [f"line-1/pump-{i}.{j}" for i in range(12) for j in range(2)]
    ended = set(assets[::5])
    doc = {"controls": [{"kind": "maintenance", "since": 1.0, "until": None, "reason": "swap", "by": "op"}],
           "alerts": {}}

    async def run() -> list[tuple[int, set[str], set[str]]]:
        nc = await cluster.connect(nats_node.urls)
        try:
            states = await nc.jetstream().key_value(cluster.STATE_BUCKET)
            for asset in assets:
                await states.put(cluster.controls_key(asset), json.dumps(doc).encode())
            for asset in ended:
                await states.delete(cluster.controls_key(asset))
            wrong = []
            for _ in range(100):
                for k in range(8):
                    controls = AlarmControls()
                    await Takeover(nc, states, None, None, None, controls)._adopt_controls(k, 8)
                    want = {a for a in assets if cluster.partition_of(a, 8) == k and a not in ended}
                    if controls.assets() != want:
                        wrong.append((k, controls.assets(), want))
            return wrong
        finally:
            await nc.close()

    assert asyncio.run(run()) == []


class PagedServer:
    """STREAM.INFO's subject paging as nats-server does it (sorted subjects, ``limit`` a reply from
    ``offset``, the ``total``), or a server that ignores the offset: for :func:`stream_reads.stream_subjects`."""

    def __init__(self, subjects: list[str], limit: int, honour_offset: bool = True) -> None:
        self.subjects, self.limit, self.honour_offset, self.requests = sorted(subjects), limit, honour_offset, 0

    async def request(self, subject: str, data: bytes, timeout: float):
        self.requests += 1
        offset = json.loads(data)["offset"] if self.honour_offset else 0
        page = self.subjects[offset:offset + self.limit]
        body = {"total": len(self.subjects), "offset": offset, "limit": self.limit, "state": {
            "subjects": {s: 1 for s in page} or None}}
        return type("Reply", (), {"data": json.dumps(body).encode()})()


def test_stream_subjects_reads_every_page_and_stops_when_a_page_brings_nothing_new():
    subjects = [f"s.{i:03d}" for i in range(250)]
    server = PagedServer(subjects, limit=100)
    assert list(asyncio.run(stream_reads.stream_subjects(server, "S", "s.>"))) == subjects and server.requests == 3
    assert asyncio.run(stream_reads.stream_subjects(PagedServer([], limit=100), "S", "s.>")) == {}
    with pytest.raises(ClusterError, match="listed 100 of its 250 subjects"):
        asyncio.run(stream_reads.stream_subjects(PagedServer(subjects, limit=100, honour_offset=False), "S", "s.>"))


async def owned_partition(js, k: int) -> None:
    """Partition ``k``'s durable consumer, as its previous owner left it (readings not taken yet)."""
    from nats.js.api import AckPolicy, ConsumerConfig

    await js.add_consumer(cluster.READINGS_STREAM, ConsumerConfig(
        durable_name=f"sg-p{k}", filter_subject=f"{cluster.READINGS_ROOT}.{k}.>", ack_policy=AckPolicy.EXPLICIT))


async def send_readings(nc, asset: str, t0: float, rows) -> None:
    """One reading of channel ``a`` per row, ``t0 + row`` seconds, on the asset's readings subject."""
    for t in rows:
        await nc.publish(f"sensors.{asset}.readings", json.dumps({"ts": t0 + t, "values": {"a": t}}).encode())
    await nc.flush()


async def stream_counts(nc) -> tuple[int, int]:
    """The last sequence of the readings stream and of the window stream."""
    js = nc.jetstream()
    return tuple([(await js.stream_info(name)).state.last_seq for name in (cluster.READINGS_STREAM,
                                                                           cluster.WINDOWS_STREAM)])


async def counts_reach(nc, ready) -> tuple[int, int]:
    """The streams' counts once ``ready(counts)`` holds, polled for up to 10 s (the last ones after)."""
    for _ in range(100):
        if ready(counts := await stream_counts(nc)):
            break
        await asyncio.sleep(0.1)
    return counts


async def take_readings(nc, k: int, n: int) -> None:
    """The previous owner of partition ``k`` takes and acknowledges its next ``n`` readings."""
    sub = await nc.jetstream().pull_subscribe_bind(f"sg-p{k}", cluster.READINGS_STREAM)
    for message in await sub.fetch(n, timeout=5):
        await message.ack_sync()
    await sub.unsubscribe()


def initialised(urls: list[str], asset: str) -> tuple[Layout, int]:
    """A cluster of 8 partitions set up on ``urls``, and the partition ``asset`` falls in."""
    layout = Layout(partitions=8, servers=urls)
    cluster.run_init(layout)
    return layout, cluster.partition_of(asset, 8)


async def ten_readings(nc, asset: str, t0: float, k: int) -> None:
    """Partition ``k`` owned, and ``asset``'s readings 1-10 sent and copied into both streams."""
    await owned_partition(nc.jetstream(), k)
    await send_readings(nc, asset, t0, range(1, 11))
    await counts_reach(nc, lambda c: min(c) >= 10)


async def rebuilt(nc, k: int, halt_after: float, **settings: float) -> tuple:
    """Partition ``k`` taken over by a fresh worker (channel ``a``, window 4, hop 2; no alerts or
    controls; ``settings`` beside the defaults), halted after ``halt_after`` s: its ingest, the
    seconds the rebuild took, its assets."""
    import time

    from prometheus_client import CollectorRegistry

    from sensorguard.service.config import load_settings
    from sensorguard.service.ingest import Ingest
    from sensorguard.service.metrics import Metrics
    from sensorguard.service.takeover import Takeover
    from sensorguard.service.windows import Buffers

    settings = load_settings({"model": None, **settings}, {}, require_model=False)
    ingest = Ingest(settings, Buffers(("a",), 4, 2), Metrics(CollectorRegistry()), None)
    states = await nc.jetstream().key_value(cluster.STATE_BUCKET)
    halt, started = asyncio.Event(), time.monotonic()
    asyncio.get_running_loop().call_later(halt_after, halt.set)
    assets, _ = await Takeover(nc, states, settings, ingest, None, None).rebuild(k, 8, halt)
    return ingest, time.monotonic() - started, assets


def test_a_takeover_leaves_an_asset_silent_for_stale_after_unprimed(nats_node):
    """A walk: an asset silent (ended as such by its owner) was primed from the window stream by
    each new owner, so each told its silence again after stale_after, its stale state overwritten
    with a score of 0 and no channels. One whose last reading the window stream stored over
    stale_after ago, none waiting, is left alone (its next reading restarts the window anyway)."""

    asset, t0 = "pump-7", 1_767_225_600.0
    _, k = initialised(nats_node.urls, asset)

    async def run() -> list:
        nc = await cluster.connect(nats_node.urls)
        try:
            await ten_readings(nc, asset, t0, k)
            await take_readings(nc, k, 10)  # all taken: none waits
            fresh, _, _ = await rebuilt(nc, k, 30.0)
            await asyncio.sleep(1.5)
            quiet, _, assets = await rebuilt(nc, k, 30.0, stale_after_s=1.0)
            return [fresh.buffers.last_ts(asset), quiet.buffers.last_ts(asset), assets]
        finally:
            await nc.close()

    fresh, quiet, assets = asyncio.run(run())
    assert fresh == t0 + 10  # within stale_after: primed, its window goes on
    assert quiet is None and assets == [asset]  # silent that long: its state adopted, no buffer


def test_a_takeover_primes_only_what_the_readings_stream_copied_too(nats_node, caplog, monkeypatch):
    """After a node died, the readings stream's copy of the input stream can lag the window
    stream's by a minute. A reading in the window stream that the readings stream has not copied
    yet is not taken: priming it would refuse it as a repeat when it came (lost, never scored). So
    the rebuild waits for the readings stream; here its source is cut, so it waits until halted."""
    asset, t0 = "pump-1", 1_767_225_600.0
    layout, k = initialised(nats_node.urls, asset)

    async def rebuild(nc, halt_after: float) -> tuple[float | None, float, list[str]]:
        ingest, took, assets = await rebuilt(nc, k, halt_after)
        return ingest.buffers.last_ts(asset), took, assets

    async def run() -> list:
        nc = await cluster.connect(nats_node.urls)
        js = nc.jetstream()
        try:
            await ten_readings(nc, asset, t0, k)
            await take_readings(nc, k, 6)
            caught_up = await rebuild(nc, 30.0)  # both streams copied everything: 1-6 were taken, 7 is next
            readings = next(c for c in cluster.stream_configs(layout) if c.name == cluster.READINGS_STREAM)
            readings.sources = None
            await js.update_stream(readings)  # its copying stops: the window stream runs ahead
            await take_readings(nc, k, 4)  # the previous owner took 7-10
            await send_readings(nc, asset, t0, range(11, 15))  # 11-14: in the window stream only
            await counts_reach(nc, lambda c: c[1] == 14)
            monkeypatch.setattr("sensorguard.service.takeover.LAG_WARN_S", 0.3)
            with caplog.at_level(logging.WARNING, logger="sensorguard.service.takeover"):
                lagging = await rebuild(nc, 1.0)
            return [caught_up, lagging, await stream_counts(nc)]
        finally:
            await nc.close()

    (last, took, assets), (lagging_last, waited, none), streams = asyncio.run(run())
    assert streams == (10, 14)  # the readings stream never got 11-14
    assert last == t0 + 6 and took < 5 and assets == [asset]  # primed with the taken readings, without waiting
    assert lagging_last is None and waited >= 0.9 and none == []  # nothing primed: it waited until halted
    # and it said why it can wait for ever: the stream's source is gone (it said "waiting" alone)
    assert f"{cluster.READINGS_STREAM} has no source any more" in caplog.text and "cluster init" in caplog.text


def test_a_takeover_waits_for_the_window_stream_to_copy_what_the_previous_owner_took(tmp_path):
    """The other way round (a review): after a node died the window stream can lag the readings
    stream. A reading the previous owner took before the window stream copied it was missing from
    the rebuilt window for good (primed with 7-10, then 13 next). So the rebuild waits for the
    window stream too; here its source is cut, so it waits until halted."""
    node = NatsCluster(tmp_path, 1).start()  # its own: the test cuts a stream's source
    asset, t0 = "pump-3", 1_767_225_600.0
    layout, k = initialised(node.urls, asset)

    async def run() -> tuple:
        nc = await cluster.connect(node.urls)
        js = nc.jetstream()
        try:
            await ten_readings(nc, asset, t0, k)
            windows = next(c for c in cluster.stream_configs(layout) if c.name == cluster.WINDOWS_STREAM)
            windows.sources = None
            await js.update_stream(windows)  # its copying stops: the readings stream runs ahead
            await send_readings(nc, asset, t0, range(11, 15))  # 11-14: in the readings stream only
            await counts_reach(nc, lambda c: c[0] >= 14)
            await take_readings(nc, k, 12)  # the previous owner took 1-12
            ingest, took, assets = await rebuilt(nc, k, 1.0)
            return ingest.buffers.last_ts(asset), took, assets, await stream_counts(nc)
        finally:
            await nc.close()

    try:
        last, waited, assets, streams = asyncio.run(run())
    finally:
        node.stop()
    assert streams == (14, 10)  # the window stream never got 11-14
    assert last is None and waited >= 0.9 and assets == []  # nothing primed: it waited until halted


def test_a_takeover_passes_over_a_bad_asset_id_in_the_window_stream(nats_node):
    """Found by a walk: one reading on ``sensors/pump@7/readings`` (refused as ``bad_asset`` when
    read) stopped its partition for good. Each takeover asked the state bucket for ``pump@7``,
    which is no key, and the bucket's InvalidKeyError ended the rebuild every 5 s, leaving the
    partition's good assets unscored while the worker reported ready."""
    cluster.run_init(Layout(partitions=8, servers=nats_node.urls))
    good, t0 = "pump-3", 1_767_225_600.0
    k = cluster.partition_of(good, 8)
    bad = next(f"pump@{n}" for n in range(1000) if cluster.partition_of(f"pump@{n}", 8) == k)

    async def run() -> list[str]:
        nc = await cluster.connect(nats_node.urls)
        js = nc.jetstream()
        try:
            await owned_partition(js, k)
            before = await stream_counts(nc)
            await send_readings(nc, bad, t0, range(1, 3))
            await send_readings(nc, good, t0, range(1, 7))
            await counts_reach(nc, lambda c: c[1] >= before[1] + 8)
            return (await rebuilt(nc, k, 20.0))[2]
        finally:
            await nc.close()

    assets = asyncio.run(run())
    assert good in assets and bad not in assets


def test_a_takeover_with_fewer_readings_kept_than_a_window_says_so(tmp_path, caplog):
    """``cluster init --keep 33`` for a window of 32 passed the join check, then a takeover rebuilt
    a window from 20 readings and said nothing (a walk): the readings an asset sent meanwhile had
    pushed the rest out of the window stream. Here it keeps 5, the window is 4, and the previous
    owner took 8 of 10 readings: 6-8 are all that is left before the cut."""
    import logging

    node = NatsCluster(tmp_path, 1).start()  # its own: a shared node's streams carry other tests' changes
    cluster.run_init(Layout(partitions=8, keep=5, servers=node.urls))
    asset, t0 = "pump-2", 1_767_225_600.0
    k = cluster.partition_of(asset, 8)

    async def run() -> float | None:
        nc = await cluster.connect(node.urls)
        js = nc.jetstream()
        try:
            await owned_partition(js, k)
            await send_readings(nc, asset, t0, range(1, 11))
            await counts_reach(nc, lambda c: min(c) >= 10)  # both streams: a window stream behind lists no asset
            await take_readings(nc, k, 8)  # the previous owner took 1-8
            return (await rebuilt(nc, k, 20.0))[0].buffers.last_ts(asset)
        finally:
            await nc.close()

    try:
        with caplog.at_level(logging.WARNING, logger="sensorguard.service.takeover"):
            last = asyncio.run(run())
    finally:
        node.stop()
    assert last == t0 + 8  # primed with what was left: 6-8
    assert "1 asset's windows were rebuilt from fewer readings than the window (3 of 4" in caplog.text
    assert "keeps 5 readings per asset" in caplog.text


def test_the_window_reader_keeps_no_reading_copied_after_the_given_input_sequence(nats_node):
    """The rebuild reads the window stream only up to the input stream's sequence the readings
    stream has copied too (the ``Nats-Stream-Source`` header of each copied message): readings
    1-10 are copied, the reader told "up to 7" keeps 1-7; told nothing, all 10."""
    import math

    from sensorguard.service.config import load_settings
    from sensorguard.service.takeover import Takeover

    cluster.run_init(Layout(partitions=8, servers=nats_node.urls))
    asset, t0 = "pump-1", 1_767_225_600.0
    k = cluster.partition_of(asset, 8)
    subject = f"{cluster.WINDOWS_ROOT}.{k}.{asset}"
    settings = load_settings({"model": None}, {}, require_model=False)

    async def run() -> tuple[list, list]:
        nc = await cluster.connect(nats_node.urls)
        try:
            for t in range(1, 11):  # input sequences 1-10 on a fresh server
                await nc.publish(f"sensors.{asset}.readings", json.dumps({"ts": t0 + t, "values": {"a": t}}).encode())
            await nc.flush()
            js = nc.jetstream()
            for _ in range(100):
                if (await js.stream_info(cluster.WINDOWS_STREAM)).state.messages == 10:
                    break
                await asyncio.sleep(0.1)
            takeover = Takeover(nc, None, settings, None, None, None)
            upto7 = await takeover._read_windows(k, {subject: math.inf}, 10, copied=7)
            everything = await takeover._read_windows(k, {subject: math.inf}, 10)
            return [ts - t0 for ts, _ in upto7[subject]], [ts - t0 for ts, _ in everything[subject]]
        finally:
            await nc.close()

    upto7, everything = asyncio.run(run())
    assert upto7 == [1, 2, 3, 4, 5, 6, 7] and everything == list(range(1, 11))


def test_origin_seq_reads_the_input_sequence_of_a_copied_message():
    header = ("SENSORGUARD_IN 17 sensors.*.readings\x0csensors.*.*.readings sensorguard.window.{{partition(8,1)}}"
              ".{{wildcard(1)}} sensors.pump-0.readings q1Au3fhv")
    assert cluster.origin_seq({"Nats-Stream-Source": header}) == 17
    assert cluster.origin_seq(None) == 0 and cluster.origin_seq({"Nats-Stream-Source": "SENSORGUARD_IN"}) == 0


def test_the_taker_maps_readings_subjects_to_topics_and_forgets_them_past_its_cap(monkeypatch):
    """Cluster mode hands readings to the same ingest as MQTT mode, under the topic the sensor
    published to (``.`` in an asset id comes back from NATS's ``//``); what is not a readings
    subject goes on as it is, for the ingest to reject and count. The subject -> topic memo is
    bounded: made-up assets cannot grow it without limit. One thread takes every partition's
    batches, so a batch may wait for it: one whose lease lapsed meanwhile is not taken."""
    import threading
    from types import SimpleNamespace

    from sensorguard.service import taker
    from sensorguard.service.natswire import Delivery

    monkeypatch.setattr(taker, "MAX_TOPICS", 3)
    taken: list[str] = []
    ingest = SimpleNamespace(accept=lambda topic, data: taken.append(topic) or len(taken) < 6, holds=lambda a: True)
    held = {1}
    it = taker.Taker(ingest, "sensors/", lambda k: k in held)
    subjects = ["sensorguard.readings.1.site-a.pump//1", "sensorguard.readings.1.p2", "other.subject",
                "sensorguard.readings.1.p2", "sensorguard.readings.1.p3", "sensorguard.readings.1.p4"]
    messages = [Delivery(subject, b"", b"{}", None) for subject in subjects]
    try:
        assert asyncio.run(it.take(1, messages, threading.Event())) == 5  # the 6th refused (the ingest stopping)
        assert taken == ["sensors/site-a/pump.1/readings", "sensors/p2/readings", "other.subject",
                         "sensors/p2/readings", "sensors/p3/readings", "sensors/p4/readings"]
        assert it.assets[1] == {"site-a/pump.1", "p2", "p3"}  # p4's reading was not taken
        assert len(it._topics) <= 3
        stop = threading.Event()
        stop.set()
        assert it.take_now(1, messages, stop) == 0  # a partition given up meanwhile: nothing more taken
        held.clear()  # a batch that queued for the taking thread until its lease was no longer sure
        with pytest.raises(taker.LeaseLapsed):
            asyncio.run(it.take(1, messages, threading.Event()))
        assert len(taken) == 6  # nothing of either handed to the ingest
        held.add(1)  # a lease that lapses while the batch is being taken (the scorer's backpressure
        ingest.accept = lambda topic, data: taken.append(topic) or held.discard(1) or True  # held one)
        with pytest.raises(taker.LeaseLapsed) as lapsed:  # the rest: not here (they come again)
            it.take_now(1, messages, threading.Event())
        assert lapsed.value.taken == 1 and len(taken) == 7
    finally:
        it.close()


def test_the_taker_remembers_only_assets_the_ingest_buffers(monkeypatch):
    """The assets handed over with a partition were every asset id seen in it: a flood of made-up
    ones (refused beyond max_assets) grew that set for as long as the partition stayed here."""
    import threading

    from prometheus_client import CollectorRegistry

    from sensorguard.service import taker
    from sensorguard.service.config import load_settings
    from sensorguard.service.ingest import Ingest
    from sensorguard.service.metrics import Metrics
    from sensorguard.service.natswire import Delivery
    from sensorguard.service.windows import Buffers

    monkeypatch.setattr(taker, "MAX_TOPICS", 4)
    settings = load_settings({"model": None, "metrics_port": 0, "max_assets": 2}, {}, require_model=False)
    ingest = Ingest(settings, Buffers(("a",), 4, 2, max_assets=2), Metrics(CollectorRegistry(), 2), None)
    ingest.accepting = True
    it = taker.Taker(ingest, "sensors/", lambda k: True)
    body = b'{"ts": 1700000000, "values": {"a": 1.0}}'
    try:
        flood = [Delivery(f"sensorguard.readings.1.made-up-{n}", b"", body, None) for n in range(50)]
        assert it.take_now(1, flood, threading.Event()) == 50
        assert it.assets[1] == {"made-up-0", "made-up-1"}  # the two the ingest took
        for n in range(2):
            ingest.buffers.forget(f"made-up-{n}")
        for n in range(2, 10):  # assets that come and go: the set stays bounded
            assert it.take_now(1, flood[n:n + 1], threading.Event()) == 1
            ingest.buffers.forget(f"made-up-{n}")
        assert len(it.assets[1]) <= 4 and "made-up-9" in it.assets[1]
    finally:
        it.close()


class FlakyBucket:
    """A state bucket whose first ``fails`` writes fail, as while it elects a leader."""

    def __init__(self, fails: int) -> None:
        self.fails, self.kept = fails, {}

    async def put(self, key: str, value: bytes) -> None:
        if self.fails > 0:
            self.fails -= 1
            raise TimeoutError("no leader")
        self.kept[key] = value

    async def delete(self, key: str) -> None:
        await self.put(key, b"")
        del self.kept[key]


def test_the_periodic_flush_writes_no_state_of_an_asset_no_longer_served():
    """A partition lost (its lease lapsed, another worker took it) left its assets' queued states
    in the outbox, and the next flush wrote them over the newer state the new owner had adopted
    and carried on from (found by review)."""
    from sensorguard.service.statesync import StateSync

    served = {"kept", "leaving", "gone"}
    sync = StateSync(None, lambda asset: asset in served, coming=lambda asset: asset == "coming")
    bucket = FlakyBucket(fails=0)
    sync.open(bucket)
    sync.queue({asset: b'{"alert":{}}' for asset in ("kept", "leaving", "gone", "coming")})
    served -= {"leaving", "gone"}
    sync.leaving.add("leaving")
    asyncio.run(sync.flush())
    assert set(bucket.kept) == {cluster.state_key("kept")}
    # kept for a clean hand-over's timeout path, and for a partition being taken over here; one no
    # longer ours is dropped (kept, it was written over the state of a partition that came back later)
    assert set(sync.outbox) == {"leaving", "coming"}


def test_a_hand_over_writes_its_states_and_controls_again_while_the_bucket_fails(monkeypatch):
    """A hand-over's failed writes were dropped and the lease released anyway: the next owner
    adopted an older state (an alert that had cleared came back up; found by review)."""
    from sensorguard.service import statesync
    from sensorguard.service.commands import AlarmControls
    from sensorguard.service.statesync import StateSync

    monkeypatch.setattr(statesync, "RETRY_S", 0.01)
    controls = AlarmControls()
    controls.raised("p1@1", "p1", now=1.0)  # an alert that can still be acknowledged: p1's controls
    sync = StateSync(controls, lambda asset: True)
    bucket = FlakyBucket(fails=5)
    sync.open(bucket)
    left = asyncio.run(sync.hand_over({"p1": b'{"alert":{}}', "p2": b'{"alert":{}}'}))
    assert left == 0 and set(bucket.kept) == {cluster.state_key("p1"), cluster.state_key("p2")}
    bucket.fails = 3
    asyncio.run(sync.hand_over_controls(lambda asset: True, write=True))
    assert cluster.controls_key("p1") in bucket.kept and controls.assets() == set()
    monkeypatch.setattr(statesync, "HANDOVER_WRITE_S", 0.05)
    sync.open(FlakyBucket(fails=10_000))  # never back: given up after HANDOVER_WRITE_S, and said
    assert asyncio.run(sync.hand_over({"p1": None})) == 1


def test_a_commands_write_to_the_bucket_is_made_only_while_this_worker_serves_the_asset():
    """Written before the command's answer, from here only while this worker serves the asset
    (written after a hand-over, the forgotten controls deleted the next owner's key). Handed over
    since, it is saved when a clean hand-over wrote the controls after the change; not when the
    partition was lost (nothing written: said saved, the hold was gone; a review) nor while it is
    being taken over here (the flush writes it once served)."""
    from sensorguard.service.command_messages import Command
    from sensorguard.service.commands import AlarmControls
    from sensorguard.service.statesync import StateSync

    controls = AlarmControls()
    served, coming = {"p1", "p2", "p3"}, set()
    sync = StateSync(controls, lambda asset: asset in served, coming=lambda asset: asset in coming)
    now = time.monotonic()
    assert asyncio.run(sync.write_controls_now("p1", now)) is False  # not opened: nothing written
    bucket = FlakyBucket(fails=0)
    sync.open(bucket)
    for asset in ("p1", "p2", "p3"):
        controls.apply(Command("shelve", asset, until=time.time() + 600), time.time())
    changed = time.monotonic()
    assert asyncio.run(sync.write_controls_now("p1", changed)) is True
    assert json.loads(bucket.kept[cluster.controls_key("p1")])["controls"][0]["kind"] == "shelved"
    bucket.kept[cluster.controls_key("p2")] = b'{"the next owner\'s": 1}'
    served -= {"p2", "p3"}
    asyncio.run(sync.hand_over_controls(lambda asset: asset == "p3", write=False))  # p3 lost: nothing written
    assert asyncio.run(sync.write_controls_now("p3", changed)) is False
    bucket.kept.pop(cluster.controls_key("p2"))
    asyncio.run(sync.hand_over_controls(lambda asset: asset == "p2", write=True))  # a clean hand-over wrote p2
    assert asyncio.run(sync.write_controls_now("p2", changed)) is True
    assert json.loads(bucket.kept[cluster.controls_key("p2")])["controls"][0]["kind"] == "shelved"
    assert asyncio.run(sync.write_controls_now("p2", time.monotonic() + 1)) is False  # a change after it: lost
    coming.add("p2")  # ours again, being taken over: not written now (the flush writes it once served)
    assert asyncio.run(sync.write_controls_now("p2", changed)) is False
    bucket.fails = 1  # the bucket electing a leader: not written, said so
    assert asyncio.run(sync.write_controls_now("p1", changed)) is False


def test_a_slow_hand_over_holds_up_no_commands_write_and_one_for_its_asset_waits_for_it():
    """A hand-over holding the controls' lock through its retries (up to 10 s) made every command's
    write wait behind it, answered "NOT SAVED" past 3 s, and the hand-overs run one at a time (a
    review). A command for an asset being handed over waits for that hand-over's write."""
    from sensorguard.service.command_messages import Command
    from sensorguard.service.commands import AlarmControls
    from sensorguard.service.statesync import StateSync

    class GatedBucket(FlakyBucket):  # p2's writes wait for the gate: a hand-over in its retries
        gate: asyncio.Event

        async def put(self, key: str, value: bytes) -> None:
            if "p2" in key:
                await self.gate.wait()
            await super().put(key, value)

    controls = AlarmControls()
    served = {"p1", "p2"}
    sync = StateSync(controls, lambda asset: asset in served)
    bucket = GatedBucket(fails=0)

    async def scene() -> None:
        bucket.gate = asyncio.Event()
        sync.open(bucket)
        for asset in ("p1", "p2"):
            controls.apply(Command("shelve", asset, until=time.time() + 600), time.time())
        changed = time.monotonic()
        served.discard("p2")
        handing = asyncio.create_task(sync.hand_over_controls(lambda asset: asset == "p2", write=True))
        await asyncio.sleep(0)
        assert await sync.write_controls_now("p1", changed)  # not behind the hand-over
        assert not handing.done()
        theirs = asyncio.create_task(sync.write_controls_now("p2", changed))
        await asyncio.sleep(0)
        assert not theirs.done()  # waits for the hand-over's write
        bucket.gate.set()
        assert await theirs and cluster.controls_key("p2") in bucket.kept
        await handing

    asyncio.run(scene())


def test_the_local_servers_run_in_a_session_of_their_own(nats_node):
    """A walk found: Ctrl-C in a terminal signals the whole process group, so the demo's
    nats-servers died first and its workers then waited ~50 s on them while stopping, with ~35
    warnings. The servers now have their own session; the demo stops them after its workers."""
    import os

    assert all(os.getsid(node.proc.pid) != os.getsid(0) for node in nats_node.nodes)


def test_a_daemons_connection_warnings_name_the_nats_servers(caplog):
    """A walk: a worker that could not reach NATS at start said only "cluster: nats: [Errno 111]
    Connect call failed ('127.0.0.1', 14299)", where the MQTT side names the broker and says it
    keeps trying. The line names the servers (credentials hidden) and that it tries again."""
    from sensorguard.service import nats_connect

    async def attempt() -> None:
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(nats_connect.connect(("nats://sg:pw@127.0.0.1:1",), forever=True), 2.0)

    nats_connect._ERRORS = nats_connect.RateLimiter(60.0)  # (a fresh quota: other tests spent it)
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.cluster"):
        asyncio.run(attempt())
    lines = [r.getMessage() for r in caplog.records if r.name == "sensorguard.service.cluster"]
    assert lines and lines[0].startswith("NATS nats://***@127.0.0.1:1: "), lines
    assert lines[0].endswith("; trying again") and "pw" not in lines[0]

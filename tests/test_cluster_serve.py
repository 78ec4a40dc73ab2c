"""``serve --cluster``: daemons taking readings from JetStream partitions (service/jetstream.py) on a
real nats-server whose MQTT listener the sensors publish to and the daemons publish alerts to."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from sensorguard.service import cluster
from sensorguard.service.cluster import Layout
from sensorguard.service.ownership import assign
from tests.conftest import epoch, plant_frame
from tests.mosquitto import Collector, Publisher, metric, start_daemon, wait_for
from tests.nats import NatsCluster

try:
    import nats  # noqa: F401 - only its presence is checked
except ImportError:  # the test extra installs it: under CI=true its absence is a failure, not a skip
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("nats-py is not installed (pip install 'sensorguard[cluster]')", allow_module_level=True)

CHANNELS = ["c0", "c1", "c2"]
ASSETS = [f"site-{s}/pump-{i}" for s in "ab" for i in range(6)]


@pytest.fixture
def nats_node(tmp_path):
    node = NatsCluster(tmp_path, 1).start()
    cluster.run_init(Layout(partitions=8, keep=64, servers=node.urls))
    yield node
    node.stop()


def daemon(node, trained_dir, name: str):
    """An in-process ``serve --cluster`` worker: readings from JetStream, alerts over MQTT 3.1.1."""
    return start_daemon({"model": str(trained_dir), "cluster": [",".join(node.urls)], "mqtt_version": "3.1.1",
                         "broker": f"mqtt://127.0.0.1:{node.nodes[0].mqtt_port}", "client_id": name,
                         "instance": name, "metrics_port": 0}, ready_timeout=30)


def owned(url: str) -> float:
    return metric(url, "sensorguard_partitions_owned") or 0.0


def publish(node, start: int, rows: int) -> int:
    frame = plant_frame(rows=start + rows, channels=3, seed=3).iloc[start:]
    pub = Publisher(SimpleNamespace(port=node.nodes[0].mqtt_port))
    for asset in ASSETS:
        pub.samples(asset, epoch(frame), frame[CHANNELS].to_numpy(), CHANNELS, batch=1)
    pub.close()
    return rows * len(ASSETS)


@pytest.mark.integration
def test_workers_split_the_partitions_take_each_reading_once_and_share_with_a_joining_one(nats_node, trained_dir):
    watch = Collector(SimpleNamespace(port=nats_node.nodes[0].mqtt_port), "sensorguard/#")
    workers = [daemon(nats_node, trained_dir, "wa"), daemon(nats_node, trained_dir, "wb")]
    try:
        urls = [url for _, url in workers]
        wait_for(lambda: [owned(u) for u in urls] == [4, 4], 20, "two workers with 4 partitions each")
        sent = publish(nats_node, 0, 40)
        wait_for(lambda: sum(metric(u, "sensorguard_readings_total") for u in urls) == sent, 30,
                 "every reading taken once")
        mine = [set(d.buffers.assets()) for d, _ in workers]
        assert mine[0].isdisjoint(mine[1]) and mine[0] | mine[1] == set(ASSETS)  # an asset has one owner

        released = sum(metric(u, "sensorguard_partition_changes_total", change="released") or 0 for u in urls)
        workers.append(daemon(nats_node, trained_dir, "wc"))  # a third joins: it gets its share
        urls.append(workers[2][1])
        wait_for(lambda: sorted(owned(u) for u in urls) == [2, 3, 3], 20, "8 partitions over 3 workers")
        before, after = assign(8, ["wa", "wb"]), assign(8, ["wa", "wb", "wc"])
        moved = sum(before[k] != after[k] for k in range(8))  # handed over by wa and wb, nothing else
        assert sum(metric(u, "sensorguard_partition_changes_total", change="released") or 0 for u in urls) \
            == released + moved
        sent += publish(nats_node, 40, 40)
        wait_for(lambda: sum(metric(u, "sensorguard_readings_total") for u in urls) == sent, 30,
                 "the later readings taken once, by the new owners")
        assert all(not metric(u, "sensorguard_messages_rejected_total", reason="duplicate_ts") for u in urls)
        statuses = {t.rpartition("/")[2]: p for t, p, _ in watch.messages if t.startswith("sensorguard/status/")}
        assert {n: (s["state"], s["partitions"]) for n, s in statuses.items()} == {
            "wa": ("online", []), "wb": ("online", []), "wc": ("online", [])}
    finally:
        watch.close()
        for d, _ in workers:
            d.stop()

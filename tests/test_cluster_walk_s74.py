"""Found walking the README's cluster loop as an operator (session 74): two ``serve --cluster``
workers on a real nats-server, a replayed fault, a worker killed mid-alert, acknowledgements."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from sensorguard.service.recorder import Recorder
from sensorguard.training.recorded_alerts import answers
from sensorguard.training.retrain import load_recorded
from tests.mosquitto import wait_for
from tests.nats import NatsCluster

CHANNELS = ("a", "b")


def test_a_false_alarm_answered_on_a_worker_holding_none_of_its_readings_is_learned(tmp_path: Path, capsys):
    """sg-2 raised an alert and was killed; sg-1 took the asset over, cleared the alert and filed all its
    readings in its own ``alerts/``; sg-2, restarted, got the asset back and answered ``ack
    --false-alarm``: "none of its readings is recorded here", and the answer was kept nowhere, so
    ``retrain --recorded`` over both record dirs left the false alarm unanswered, never learned."""
    verdicts: dict[str, bool] = {}
    took_over = Recorder(tmp_path / "w1", CHANNELS, guard_s=10, flush_interval_s=0, verdict=verdicts.get)
    answering = Recorder(tmp_path / "w2", CHANNELS, guard_s=10, flush_interval_s=0, verdict=verdicts.get)
    for ts in range(0, 40):
        took_over.add("p", float(ts), np.array([ts, -ts], float))
    took_over.alert_raised("p", 20.0)
    took_over.alert_cleared("p", 39.0, "p@1")
    took_over.flush(now_ts=100.0)
    assert [p.name for p in (tmp_path / "w1" / "alerts").iterdir()] == ["p@1.parquet"]

    verdicts["p@1"] = True  # acknowledged as a false alarm, answered by the other worker
    said = answering.acknowledged("p@1")
    assert said.startswith("none of its readings is recorded here") and "retrain --recorded" in said
    assert answers(tmp_path) == {"p@1": "false_alarms"}  # the parts on w1 follow the answer given on w2
    load_recorded(tmp_path, channels=CHANNELS)
    assert "learning 1 alert(s) acknowledged as false alarms" in capsys.readouterr().out

    verdicts["p@1"] = False  # a second answer changes its mind: the one kept follows, not both
    answering.acknowledged("p@1")
    assert answers(tmp_path) == {"p@1": "faults"}
    assert not list((tmp_path / "w2" / "false_alarms").iterdir())


@pytest.mark.integration
def test_readyz_of_a_worker_on_a_cluster_not_initialised_says_to_run_cluster_init(tmp_path, trained_dir, caplog,
                                                                                 monkeypatch):
    """Its log said "the cluster is not initialised; run sensorguard cluster init", while /readyz's
    body (what a probe or an operator's curl shows) said only "the cluster's reading stream is not
    connected", of a worker connected to NATS all along."""
    from sensorguard.service import jetstream
    from sensorguard.service.config import load_settings
    from sensorguard.service.daemon import Daemon
    from sensorguard.service.hotswap import load_model

    node = NatsCluster(tmp_path / "nats", 1).start()
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(jetstream, "CONNECT_RETRY_S", 0.5)
    try:
        settings = load_settings({"model": str(trained_dir), "cluster": [",".join(node.urls)], "mqtt_version": "3.1.1",
                                  "broker": f"mqtt://127.0.0.1:{node.nodes[0].mqtt_port}", "client_id": "walk74",
                                  "instance": "walk74", "metrics_port": 0}, {})
        worker = Daemon(settings, load_model(settings))
        worker.start()
        try:
            wait_for(lambda: "cluster: joining failed" in caplog.text, 20, "a joining failure said")
            reasons = " ".join(worker.not_ready())
            assert "the cluster is not initialised; run sensorguard cluster init" in reasons, reasons
        finally:
            worker.stop()
    finally:
        node.stop()


def test_a_takeover_counts_the_assets_it_rebuilt_in_the_assets_gauge(tmp_path):
    """A worker restarted took two partitions back, rebuilt the windows of an asset in each, and its
    ``sensorguard_assets`` ("Assets with a buffer") stayed 0 while its old owner's went down by them:
    priming set no gauge, so a survivor of a kill -9 under-counted every asset it took over until one
    more asset came or went."""
    from tests.test_cluster import initialised, rebuilt, take_readings, ten_readings

    node = NatsCluster(tmp_path, 1).start()
    try:
        asset, t0 = "pump-7", time.time() - 20
        _, k = initialised(node.urls, asset)

        async def run():
            from sensorguard.service import cluster

            nc = await cluster.connect(node.urls)
            try:
                await ten_readings(nc, asset, t0, k)
                await take_readings(nc, k, 10)
                heir, _, _ = await rebuilt(nc, k, 30.0)
                return heir
            finally:
                await nc.close()

        heir = asyncio.run(run())
        assert heir.buffers.last_ts(asset) == t0 + 10
        assert heir.metrics.assets._value.get() == 1
    finally:
        node.stop()


def test_init_pointed_at_a_nodes_mqtt_port_says_no_nats_server_answered_there(tmp_path):
    """``--cluster nats://host:1883`` (the MQTT listener of the same node) said "cannot reach the NATS
    servers ...: no servers available for connection (TimeoutError)": the server was reached, on the
    wrong port, and nothing said so."""
    import subprocess
    import sys

    from tests.mosquitto import clean_env

    node = NatsCluster(tmp_path, 1).start()
    try:
        mqtt = f"nats://127.0.0.1:{node.nodes[0].mqtt_port}"
        run = subprocess.run([sys.executable, "-m", "sensorguard", "cluster", "init", "--partitions", "2",
                              "--cluster", mqtt], capture_output=True, text=True, timeout=90, env=clean_env())
    finally:
        node.stop()
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "no NATS server answered there: is it the client port" in run.stderr, run.stderr


def test_a_hold_on_an_asset_silent_since_the_takeover_is_not_called_a_typo_in_cluster_mode(tiny_bundle):
    """After both workers restarted, ``shelve line-1/pump-2`` (an asset of the plant, silent since its
    partition came to sg-1, so not rebuilt there) said "no reading of line-1/pump-2 has reached sg-1 yet
    (a typo? it serves 0 assets now) ... `sensorguard alerts` lists it from then", while `alerts` listed
    it already, from its earlier owner's retained state, unheld."""
    import time

    from sensorguard.service.command_messages import Command
    from tests.test_daemon import make

    worker, _ = make(tiny_bundle, cluster=["nats://127.0.0.1:4222"], instance="sg-1", mqtt_version="3.1.1")
    assert worker.source is not None  # cluster mode (not started: no NATS needed to word a reply)
    said = worker._commanded("line-1/pump-2", Command("shelve", "line-1/pump-2", until=time.time() + 600))
    assert "a typo? it serves" not in said and "lists it from then" not in said, said
    assert "since it took the asset's partition" in said and "shows the hold from then" in said, said


def test_init_with_a_tls_url_refuses_a_server_offering_no_tls_instead_of_going_on_in_plain_text(tmp_path):
    """``cluster init --cluster tls://host:4222`` (the docs: "TLS verified against the system's CAs") on a
    server without TLS created the streams in plain text, credentials and all, without a word: nats-py
    starts TLS only when the server requires it, whatever the scheme."""
    import subprocess
    import sys

    from tests.mosquitto import clean_env

    node = NatsCluster(tmp_path, 1).start()
    try:
        tls = node.urls[0].replace("nats://", "tls://secret@")
        run = subprocess.run([sys.executable, "-m", "sensorguard", "cluster", "init", "--partitions", "2",
                              "--cluster", tls], capture_output=True, text=True, timeout=90, env=clean_env())
    finally:
        node.stop()
    assert run.returncode == 1 and run.stdout == "", (run.stdout, run.stderr)
    assert "the server does not require TLS" in run.stderr and "secret" not in run.stderr, run.stderr

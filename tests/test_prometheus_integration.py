"""End to end with real peers: readings -> Mosquitto -> `sensorguard serve` -> Prometheus -> alert.

A real Prometheus scrapes a real daemon (a subprocess) fed through a real Mosquitto, evaluating the
shipped rules (deploy/prometheus/rules/sensorguard.rules.yml) with their `for:` durations shortened
and a 1 s scrape and evaluation interval. Through Prometheus's HTTP API we check that
SensorguardAssetAnomaly fires for an asset fed an injected fault and stays quiet for an asset fed
normal data. Without mosquitto or prometheus the test is skipped with the reason printed; under
CI=true it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import plant_frame
from tests.mosquitto import free_port, need_program
from tests.mosquitto import wait_for as wait_for_any

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "sensorguard.rules.yml"
NORMAL, FAULTY = "line-1/pump-ok", "line-1/pump-bad"


def need(program: str, *extra: str) -> str:
    return need_program(program, *extra, package="mosquitto prometheus")


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    return wait_for_any(predicate, timeout, what, interval=0.25, proc=proc, log=log)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return False


@pytest.fixture
def broker(tmp_path):
    """A private Mosquitto on a free loopback port; yields its mqtt:// URL."""
    mosquitto = need("mosquitto", "/usr/sbin/mosquitto")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n")
    log = tmp_path / "mosquitto.log"
    with log.open("w") as out:
        proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, 15,
                 "mosquitto to listen", proc, log)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        stop(proc)


def fast_rules(text: str) -> str:
    """The shipped rules with every `for:` shortened so the test does not wait minutes."""
    return re.sub(r"^(\s*)for: \S+$", r"\1for: 2s", text, flags=re.M)


@pytest.fixture
def prometheus_for(tmp_path):
    """Start a Prometheus scraping one target every second with the shipped (shortened) rules."""
    binary = need("prometheus")
    procs = []

    def start(target: str) -> str:
        workdir = tmp_path / "prometheus"
        workdir.mkdir()
        rules = fast_rules(RULES.read_text())
        assert rules != RULES.read_text()
        (workdir / "rules.yml").write_text(rules)
        (workdir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "rule_files:\n  - rules.yml\n"
            "scrape_configs:\n  - job_name: sensorguard\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        port = free_port()
        log = tmp_path / "prometheus.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=out, stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_ok(f"{url}/-/ready"), 30, "prometheus to be ready", proc, log)
        return url

    yield start
    for proc in procs:
        stop(proc)


@pytest.fixture
def daemon(tmp_path, trained, broker):
    """`sensorguard serve` on the trained bundle, configured by a TOML file; yields (metrics url, bundle)."""
    from sensorguard.service.bundle import save_bundle

    bundle = trained[0]
    model = save_bundle(bundle, tmp_path / "model") or tmp_path / "model"
    port = free_port()
    config = tmp_path / "sensorguard.toml"
    config.write_text(
        f'model = "{model}"\nbroker = "{broker}"\nclient_id = "sensorguard-it-{port}"\n'
        f'metrics_host = "127.0.0.1"\nmetrics_port = {port}\n'
        "clear_after = 1000\n"
    )
    log = tmp_path / "sensorguard.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORGUARD_")}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sensorguard", "serve", "--config", str(config)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_ok(f"{url}/readyz"), 60, "sensorguard /readyz", proc, log)
        yield url, bundle, log
    finally:
        stop(proc)


def publish_forever(broker_url: str, bundle, stop_event: threading.Event) -> threading.Thread:
    """Feed NORMAL with normal data and FAULTY with the same plant plus a fault on one channel."""
    import paho.mqtt.client as mqtt

    channels = list(bundle.channels)
    normal = plant_frame(rows=6000, channels=len(channels), seed=5)[channels].to_numpy()
    faulty = plant_frame(rows=6000, channels=len(channels), seed=6)[channels].to_numpy().copy()
    faulty[:, 1] = faulty[:, 1] + 6.0 * np.sign(np.sin(np.arange(len(faulty)) / 3.0))  # a square-wave fault
    parsed = urllib.parse.urlparse(broker_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"it-publisher-{parsed.port}")
    client.connect(parsed.hostname, parsed.port)
    client.loop_start()
    start_ts = time.time() - len(normal)  # 1 Hz history ending now

    def run():
        i, batch = 0, 20
        while not stop_event.is_set() and i + batch <= len(normal):
            for asset, data in ((NORMAL, normal), (FAULTY, faulty)):
                samples = [
                    {"ts": start_ts + j, "values": {c: float(data[j, k]) for k, c in enumerate(channels)}}
                    for j in range(i, i + batch)
                ]
                client.publish(f"sensors/{asset}/readings", json.dumps({"samples": samples}), qos=1)
            i += batch
            time.sleep(0.1)
        client.loop_stop()
        client.disconnect()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def firing(prometheus: str, alertname: str) -> list[dict]:
    alerts = get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def query(prometheus: str, promql: str) -> list[dict]:
    data = get_json(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert data["status"] == "success", data
    return data["data"]["result"]


def test_asset_anomaly_alert_fires_for_the_faulty_asset_only(daemon, broker, prometheus_for):
    metrics_url, bundle, log = daemon
    prometheus = prometheus_for(metrics_url.removeprefix("http://"))
    wait_for(lambda: query(prometheus, 'up{job="sensorguard"} == 1'), 30, "the first successful scrape")

    stop_event = threading.Event()
    publisher = publish_forever(broker, bundle, stop_event)
    try:
        alerts = wait_for(lambda: firing(prometheus, "SensorguardAssetAnomaly"), 90,
                          "SensorguardAssetAnomaly to fire", log=log)
        assert {a["labels"]["asset"] for a in alerts} == {FAULTY}
        alert = alerts[0]
        assert alert["labels"]["severity"] == "warning"
        assert float(alert["value"]) >= 1.0  # the expression yields the score
        assert FAULTY in alert["annotations"]["summary"]

        # The normal asset is scored (its series exist) and below the alert line, and never alerts.
        wait_for(lambda: query(prometheus, f'sensorguard_anomaly_score{{asset="{NORMAL}"}}'), 30,
                 "a score for the normal asset", log=log)
        time.sleep(5)  # several more evaluations with both assets streaming
        assert query(prometheus, f'ALERTS{{alertname="SensorguardAssetAnomaly", asset="{NORMAL}"}}') == []
        assert query(prometheus, f'sensorguard_anomaly_active{{asset="{NORMAL}"}} == 1') == []
        assert query(prometheus, 'ALERTS{alertname="SensorguardDown"}') == []
        assert query(prometheus, "sensorguard_mqtt_connected == 1")
    finally:
        stop_event.set()
        publisher.join(timeout=10)


def test_shipped_rules_load_and_fire_in_a_real_prometheus(prometheus_for):
    """The rules work in a real server against a stub exporter (independent of the daemon)."""
    from http.server import ThreadingHTTPServer

    from prometheus_client import CollectorRegistry, Gauge
    from prometheus_client.exposition import MetricsHandler

    registry = CollectorRegistry()
    score = Gauge("sensorguard_anomaly_score", "score", ["asset"], registry=registry)
    active = Gauge("sensorguard_anomaly_active", "active", ["asset"], registry=registry)
    score.labels(FAULTY).set(2.5)
    active.labels(FAULTY).set(1)
    score.labels(NORMAL).set(0.4)
    active.labels(NORMAL).set(0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler.factory(registry))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        prometheus = prometheus_for(f"127.0.0.1:{server.server_address[1]}")
        alerts = wait_for(lambda: firing(prometheus, "SensorguardAssetAnomaly"), 60, "the alert to fire")
        assert [a["labels"]["asset"] for a in alerts] == [FAULTY]
        assert float(alerts[0]["value"]) == 2.5
        assert alerts[0]["annotations"]["summary"] == f"Asset {FAULTY} looks anomalous (score 2.50)"
    finally:
        server.shutdown()

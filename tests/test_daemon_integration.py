"""The daemon end to end: a real Mosquitto, the real HTTP endpoint, a really trained model.

Each test starts its own broker (tests/mosquitto.py) and an in-process :class:`Daemon` with the
metrics server on a free port; readings go in through MQTT and everything checked comes back out
through MQTT or a scrape of ``/metrics``. No fixed sleeps: every wait polls with a timeout.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from sensorguard.service.config import load_settings
from sensorguard.service.daemon import Daemon
from sensorguard.service.drift import DriftState
from sensorguard.service.hotswap import load_model
from sensorguard.service.payload import REJECT_REASONS
from sensorguard.service.publisher import iso
from tests.conftest import epoch, plant_frame
from tests.mosquitto import Collector, Publisher, http_status, metric, scrape, wait_for

pytestmark = pytest.mark.integration

CHANNELS = ["c0", "c1", "c2"]
KEYS = {"asset", "state", "ts", "score", "peak_score", "threshold", "channels", "model", "alert_id"}


def expected_windows(rows: int, window: int, hop: int) -> int:
    return 0 if rows < window else 1 + (rows - window) // hop


class Running:
    """A started daemon plus its URL; stopped by the fixture."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        host, port = daemon.metrics_address
        self.url = f"http://{host}:{port}"

    def value(self, name: str, **labels) -> float:
        return metric(self.url, name, **labels) or 0.0


@pytest.fixture
def serve(trained_dir, mosquitto):
    """``serve(**settings)`` starts a daemon on the test broker; all are stopped at the end."""
    started: list[Daemon] = []

    def start(**overrides) -> Running:
        flags = {"model": str(trained_dir), "broker": mosquitto.url, "metrics_port": 0,
                 "client_id": f"sensorguard-test-{mosquitto.port}", **overrides}
        settings = load_settings(flags, {})
        daemon = Daemon(settings, load_model(settings))
        daemon.start()
        started.append(daemon)
        running = Running(daemon)
        wait_for(lambda: http_status(f"{running.url}/readyz") == 200, 15, "/readyz")
        return running

    yield start
    for daemon in started:
        daemon.stop()


def test_alerts_rise_and_clear_for_a_fault_and_never_for_normal_data(serve, mosquitto, trained):
    bundle = trained[0]
    running = serve()
    events = Collector(mosquitto, "sensorguard/#")
    pub = Publisher(mosquitto)
    frame = plant_frame(rows=1200, channels=3, seed=5)
    times, normal = epoch(frame), frame[CHANNELS].to_numpy()
    faulty = normal.copy()
    faulty[600:800, 1] += 6.0 * np.sign(np.sin(np.arange(200) / 3.0))  # a square-wave fault on c1
    pub.samples("line-1/pump-ok", times, normal, CHANNELS)
    pub.samples("line-1/pump-bad", times, faulty, CHANNELS)
    n = 2 * expected_windows(1200, bundle.window, bundle.hop)
    wait_for(lambda: running.value("sensorguard_windows_scored_total") == n, 30, f"{n} windows scored")

    bad = wait_for(lambda: len(events.on("sensorguard/alerts/line-1/pump-bad")) >= 2 and
                   events.on("sensorguard/alerts/line-1/pump-bad"), 10, "raised and cleared events")
    assert [e["state"] for e in bad] == ["raised", "cleared"]
    raised, cleared = bad
    assert set(raised) == KEYS and set(cleared) == KEYS
    assert raised["asset"] == "line-1/pump-bad" and raised["alert_id"] == cleared["alert_id"]
    assert raised["score"] >= 1.0 and cleared["peak_score"] >= raised["score"] and cleared["score"] < 1.0
    assert raised["threshold"] == pytest.approx(bundle.threshold_)
    version = running.daemon.bundle.version  # a bundle directory's: its files' hash
    assert raised["model"] == {"name": "bundle", "version": version} and version.startswith("local-")
    assert len(raised["channels"]) == 3 and raised["channels"][0]["name"] == "c1"
    assert raised["channels"][0]["share"] > 0.5
    assert sum(c["share"] for c in raised["channels"]) == pytest.approx(1.0, abs=1e-3)
    fault_start, fault_end = times[600], times[800 + bundle.window]
    assert fault_start <= pd.Timestamp(raised["ts"]).timestamp() <= fault_end
    assert events.on("sensorguard/alerts/line-1/pump-ok") == []

    # the clear is published as its window is judged, the asset's gauges set just after: a scrape
    # right after the clear arrived could still read the alert up
    active = ("sensorguard_anomaly_active", (("asset", "line-1/pump-bad"),))
    metrics = wait_for(lambda: (m := scrape(running.url)).get(active) == 0 and m, 10,
                       "pump-bad's gauges after the clear")
    assert metrics[("sensorguard_readings_total", ())] == 2400
    assert metrics[("sensorguard_alerts_total", (("asset", "line-1/pump-bad"),))] == 1
    assert metrics[("sensorguard_alerts_total", (("asset", "line-1/pump-ok"),))] == 0  # at 0: increase() sees a first
    assert metrics[("sensorguard_anomaly_active", (("asset", "line-1/pump-bad"),))] == 0
    assert metrics[("sensorguard_anomaly_score", (("asset", "line-1/pump-ok"),))] < 1.0
    assert metrics[("sensorguard_assets", ())] == 2
    assert metrics[("sensorguard_model_info", (("name", "bundle"), ("version", version)))] == 1
    assert metrics[("sensorguard_model_threshold", ())] == pytest.approx(bundle.threshold_)
    assert metrics[("sensorguard_scoring_duration_seconds_count", ())] >= 1
    assert metrics[("sensorguard_reading_to_score_seconds_count", ())] == n
    assert metrics[("sensorguard_alert_windows_total", ())] > 0  # judged between the hop's while alerting
    events.close()
    pub.close()


def test_state_and_status_are_retained_for_late_subscribers(serve, mosquitto, trained):
    bundle = trained[0]
    running = serve()
    early = Collector(mosquitto, "sensorguard/state/pump-7")  # sees states as the broker gets them
    pub = Publisher(mosquitto)
    frame = plant_frame(rows=200, channels=3, seed=5)
    values = frame[CHANNELS].to_numpy()
    values[150:, 2] += 6.0  # off, yet plausible for the sensor: the last windows raise a process alert
    times = epoch(frame)
    pub.samples("pump-7", times, values, CHANNELS)
    n = expected_windows(200, bundle.window, bundle.hop)
    wait_for(lambda: running.value("sensorguard_windows_scored_total") == n, 30, "windows scored")
    # publishing is asynchronous: only once the broker has passed the alerting state on is it retained
    wait_for(lambda: any(p["state"] == "alerting" for p in early.on("sensorguard/state/pump-7")), 10,
             "the alerting state at the broker")
    early.close()
    newest = iso(times[bundle.window - 1 + (n - 1) * bundle.hop])  # the last window's ts
    late = Collector(mosquitto, "sensorguard/#")  # subscribes after everything was published
    retained = wait_for(lambda: {t: p for t, p, r in late.messages if r}.get("sensorguard/state/pump-7") and
                        {t: p for t, p, r in late.messages if r}, 10, "retained state")
    status = retained[f"sensorguard/status/{running.daemon.settings.instance_name}"]
    assert status["state"] == "online" and status["instance"] == running.daemon.settings.client_id
    assert status["partitions"] == ["#"] and status["topic_prefix"] == "sensors" and status["version"]
    state = retained["sensorguard/state/pump-7"]
    assert set(state) == KEYS | {"sensor_faults", "suppressed", "acked"} and state["state"] == "alerting"
    assert state["score"] >= 1.0 and state["suppressed"] is None and state["acked"] is False
    assert state["sensor_faults"] == []  # a process fault, not a sensor fault
    assert "sensorguard/alerts/pump-7" not in retained  # events are not retained, states are
    # a state goes out when the status changes: the one retained now is from when the alert rose
    assert state["ts"] != newest, "the retained state would not tell the final state apart"
    late.close()

    running.daemon.stop()  # final states and offline, retained
    after = Collector(mosquitto, "sensorguard/#")
    wait_for(lambda: after.statuses() == ["offline"], 10, "retained offline status")
    final = wait_for(lambda: after.on("sensorguard/state/pump-7"), 10, "final state")[-1]
    assert set(final) == KEYS | {"sensor_faults", "suppressed", "acked"} and final["state"] == "alerting"
    assert final["ts"] == newest, (final["ts"], newest)  # published at stop, with the newest window
    assert final["alert_id"] == state["alert_id"] and final["peak_score"] >= state["peak_score"]
    after.close()
    pub.close()


@pytest.mark.parametrize("drift", [False, True])
def test_daemon_scores_equal_offline_score_verb(serve, mosquitto, trained, trained_dir, tmp_path, drift):
    """Same readings through MQTT and through `sensorguard score`: same scores, same alert states
    (with the drift rule on too: the same per-asset baseline, stepped in the same order)."""
    import math
    from dataclasses import replace

    from sensorguard.cli import main
    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.drift import DriftRule, widening
    from sensorguard.training.data import load_frame
    from sensorguard.training.offline import score_data

    bundle = trained[0]
    model_dir = trained_dir
    if drift:  # a quick rule from a baseline far below the data's level: the line widens to the cap
        rule = DriftRule(baseline=math.log(0.05), halflife=4, warmup=1, cap=1.5)
        bundle = replace(bundle, calibration={**bundle.calibration, "drift": rule.to_dict()})
        model_dir = save_bundle(bundle, tmp_path / "drift-bundle")
    frame = plant_frame(rows=700, channels=3, seed=9)
    frame.loc[400:520, "c0"] += 4.0
    path = tmp_path / "readings.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "scores.csv"
    assert main(["score", str(model_dir), str(path), "--out", str(out)]) == 0
    offline = pd.read_csv(out)
    data = load_frame([path])  # exactly the values `score` used

    running = serve(model=str(model_dir))
    scored = []
    running.daemon.add_listener(scored.append)
    pub = Publisher(mosquitto)
    pub.samples("parity", data.times, data.values, list(data.channels))
    n = int(score_data(bundle, data).judged.sum())  # the hop's windows, and the alert hop's while alerting
    assert n > expected_windows(len(data.times), bundle.window, bundle.hop)
    wait_for(lambda: len(scored) == n, 30, f"{n} windows judged")

    offline_ts = pd.to_datetime(offline["timestamp"], utc=True)
    by_ts = dict(zip((offline_ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().round(3), offline.itertuples(),
                     strict=True))
    assert any(w.status == "alerting" for w in scored)  # the comparison covers alerts too
    for window in scored:
        row = by_ts[round(window.ts, 3)]
        assert window.score == pytest.approx(row.score, rel=1e-5, abs=1e-6)
        assert int(window.status == "alerting") == row.alert
    widened = widening(running.daemon.alerts.drift_snapshot().get("parity", DriftState()), bundle.drift_rule)
    assert widened == (1.5 if drift else 1.0)  # the rule really ran (and only when the bundle has one)
    pub.close()


def test_every_bad_reading_is_rejected_counted_and_survived(serve, mosquitto, caplog):
    running = serve(max_assets=2, fill_limit=1, max_payload_bytes=2000, max_samples_per_message=5)
    pub = Publisher(mosquitto)
    t0 = 1_767_225_600.0

    def reading(ts, **values):
        return {"ts": ts, "values": values or {"c0": 1.0, "c1": 2.0, "c2": 3.0}}

    import json

    def send(asset, doc):
        pub.raw(f"sensors/{asset}/readings", doc if isinstance(doc, bytes) else json.dumps(doc))

    send("a", json.dumps({**reading(t0), "pad": "x" * 3000}).encode())  # too_large
    send("a", b"{not json")  # invalid_json
    send("a", b"[1, 2]")  # not_object
    pub.raw("sensors/bad asset/readings", json.dumps(reading(t0)))  # bad_asset
    send("a", {"samples": []})  # bad_samples
    send("a", {"samples": [reading(t0 + i) for i in range(6)]})  # too_many_samples
    send("a", reading("yesterday"))  # bad_ts
    send("a", reading(t0, c0="1", c1=2.0, c2=3.0))  # bad_values
    send("a", b'{"ts": NaN, "values": {"c0": 1, "c1": 1, "c2": 1}}')  # non_finite (a NaN *value* is a missing one)
    send("a", reading(t0))  # accepted (1)
    send("a", reading(t0 + 1, c0=1.0, c1=2.0, c2=3.0, zz=4.0))  # unknown_channel
    send("a", reading(t0 + 1, c0=1.0, c1=2.0))  # accepted, c2 forward-filled (2)
    send("a", reading(t0 + 2, c0=1.0, c1=2.0))  # fill_limit 1 used up: a `missing` sensor fault, c2 held (3)
    send("a", reading(t0 - 10))  # out_of_order
    send("a", reading(t0 + 1))  # duplicate_ts
    send("a", reading(t0 + 5e9))  # future_ts: stamped about 2184, a glitching clock
    send("b", reading(t0, c0=1.0))  # missing_channel: nothing to fill a first reading from
    send("b", reading(t0 + 0.25))  # accepted, second asset (4): one short step is no rate yet
    send("b", reading(t0 + 0.5))  # resampled: the steps now average under 2/3 of the model's 1 s period
    send("b", reading(t0 + 1))  # accepted (5): a period after the last kept one
    for k in range(1, 11):  # one reading every 3 s: nine accepted (6-14) while its average step grows, then
        send("a", reading(t0 + 2 + 3 * k))  # slow_rate (over 1.75 of the model's periods)
    send("c", reading(t0))  # too_many_assets

    # parse_error is a parser bug: nothing sends it; not_ours comes only through a subscription a resumed
    # session kept from other partitions (tests/test_ingest.py), retained only on subscribing: the broker
    # sends nothing else here
    expected = set(REJECT_REASONS) - {"parse_error", "not_ours", "retained"}  # (retained: tests/test_daemon.py)
    total = len(expected)

    def rejected():
        m = scrape(running.url)
        counts = {dict(k[1])["reason"]: v for k, v in m.items() if k[0] == "sensorguard_messages_rejected_total"}
        return counts if sum(counts.values()) == total and m[("sensorguard_readings_total", ())] == 14 else None

    counts = wait_for(rejected, 15, "every rejection counted")
    assert {r for r, v in counts.items() if v} == expected
    assert counts["parse_error"] == counts["not_ours"] == 0 and all(counts[r] == 1 for r in expected)
    # sensor faults are counted by the scoring worker, after their reading was counted as taken
    wait_for(lambda: running.value("sensorguard_sensor_faults_total", kind="missing") >= 1, 10, "the missing fault")
    assert running.value("sensorguard_sensor_faults_total", kind="missing") == 1
    # each reason's log line says what was at fault (it named the topic and asset only)
    said = {r.reason: r.getMessage() for r in caplog.records if hasattr(r, "reason")}
    assert "rejected reading: too_large: 3,0" in said["too_large"]
    assert "invalid_json: the message starts b'{not json'" in said["invalid_json"]
    assert "bad_ts: ts 'yesterday' is not epoch seconds" in said["bad_ts"]
    assert "bad_values: 'c0' is '1', not a number" in said["bad_values"]
    assert "unknown_channel: 'zz' is not one of the model's 3 channels ('c0', 'c1', 'c2')" in said["unknown_channel"]
    assert "missing_channel: no value for 'c1', 'c2'" in said["missing_channel"]
    assert ("out_of_order: ts 2025-12-31T23:59:50.000Z; the asset's newest reading 2026-01-01T00:00:02.000Z"
            in said["out_of_order"])
    assert "future_ts: ts 2184-" in said["future_ts"] and "the daemon's clock reads 20" in said["future_ts"]
    assert http_status(f"{running.url}/healthz") == 200 and http_status(f"{running.url}/readyz") == 200
    assert http_status(f"{running.url}/nothing-here") == 404
    send("b", reading(t0 + 2))  # still serving
    wait_for(lambda: running.value("sensorguard_readings_total") == 15, 10, "a good reading after the bad ones")
    pub.close()


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_readings_sent_while_daemon_and_broker_restart_are_not_lost(serve, mosquitto, trained, version):
    """QoS 1 in a persistent session: what is published while the daemon is away arrives later."""
    bundle = trained[0]
    first = serve(mqtt_version=version)
    first.daemon.stop()  # the session and its subscription stay at the broker
    frame = plant_frame(rows=300, channels=3, seed=3)
    times, values = epoch(frame), frame[CHANNELS].to_numpy()
    pub = Publisher(mosquitto)
    pub.samples("pump-1", times[:150], values[:150], CHANNELS, batch=10)
    pub.close()
    mosquitto.stop()  # the broker restarts too; persistence keeps the session's queue
    mosquitto.start()
    pub = Publisher(mosquitto)
    pub.samples("pump-1", times[150:], values[150:], CHANNELS, batch=10)
    second = serve(mqtt_version=version)
    wait_for(lambda: second.value("sensorguard_readings_total") == 300, 20, "all 300 queued readings")
    wait_for(lambda: second.value("sensorguard_windows_scored_total") ==
             expected_windows(300, bundle.window, bundle.hop), 10, "their windows scored")
    assert sum(v for k, v in scrape(second.url).items() if k[0] == "sensorguard_messages_rejected_total") == 0
    pub.close()


def test_daemon_reconnects_after_a_broker_restart(serve, mosquitto, trained):
    running = serve()
    frame = plant_frame(rows=200, channels=3, seed=4)
    times, values = epoch(frame), frame[CHANNELS].to_numpy()
    pub = Publisher(mosquitto)
    pub.samples("pump-2", times[:100], values[:100], CHANNELS)
    wait_for(lambda: running.value("sensorguard_readings_total") == 100, 10, "first half")
    pub.close()
    mosquitto.stop()
    wait_for(lambda: running.value("sensorguard_mqtt_connected") == 0, 10, "mqtt_connected 0")
    assert http_status(f"{running.url}/readyz") == 503 and http_status(f"{running.url}/healthz") == 200
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"{running.url}/readyz", timeout=5)
    assert answer.value.read() == f"not ready\n- not connected to the broker {mosquitto.url}\n".encode()
    mosquitto.start()
    wait_for(lambda: http_status(f"{running.url}/readyz") == 200, 40, "reconnected (backoff)")
    assert running.value("sensorguard_mqtt_connected") == 1
    status = Collector(mosquitto, "sensorguard/status/#")
    wait_for(lambda: status.statuses()[-1:] == ["online"], 10, "online again")
    pub = Publisher(mosquitto)
    pub.samples("pump-2", times[100:], values[100:], CHANNELS)
    wait_for(lambda: running.value("sensorguard_readings_total") == 200, 10, "second half")
    status.close()
    pub.close()


def test_a_stop_whose_final_publishes_are_not_confirmed_leaves_the_will_not_online(serve, mosquitto, monkeypatch):
    """Found by review: when the final states and the offline status were not confirmed in time
    (a backlog ahead of them), the normal DISCONNECT made the broker discard the Last Will, and the
    retained status said online after the daemon was gone (another instance was then refused its
    partitions). MQTT 5 now disconnects so that the broker publishes the Will (3.1.1 has no way to)."""
    from sensorguard.service import mqtt

    running = serve()
    monkeypatch.setattr(mqtt, "wait_published", lambda infos, timeout_s: False)  # not confirmed in time
    monkeypatch.setattr(running.daemon.publisher, "status", lambda online: None)  # stuck behind the backlog
    running.daemon.stop()
    after = Collector(mosquitto, "sensorguard/#")
    wait_for(lambda: after.statuses() == ["offline"], 10, "the Last Will's offline status, retained")
    after.close()


@pytest.mark.integration
@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_a_retained_reading_on_a_real_broker_is_not_taken_as_news(mosquitto, trained_dir, version):
    """A gateway publishing readings with retain: on subscribing, MQTT 5 asks the broker not to send
    the stored one; MQTT 3.1.1 cannot, so the daemon counts it (``retained``) and takes nothing."""
    import json
    import subprocess
    import time

    from tests.mosquitto import need_program, start_daemon

    mosquitto_pub = need_program("mosquitto_pub", "/usr/bin/mosquitto_pub", package="mosquitto-clients")
    body = json.dumps({"ts": time.time() - 600, "values": {"c0": 1.0, "c1": 2.0, "c2": 3.0}})
    subprocess.run([mosquitto_pub, "-p", str(mosquitto.port), "-t", "sensors/pump-1/readings", "-q", "1", "-r",
                    "-m", body], check=True, timeout=10)
    daemon, url = start_daemon({"model": str(trained_dir), "broker": mosquitto.url, "mqtt_version": version,
                                "client_id": f"retained-{version}", "metrics_port": 0})
    try:
        def rejected() -> float:
            return metric(url, "sensorguard_messages_rejected_total", reason="retained") or 0.0

        if version == "3.1.1":
            wait_for(lambda: rejected() == 1.0, 15, "the retained reading counted")
        else:
            time.sleep(2.0)  # the broker sends a retained message right after the subscription: none came
            assert rejected() == 0.0
        assert (metric(url, "sensorguard_readings_total") or 0.0) == 0.0 and len(daemon.buffers) == 0
    finally:
        daemon.stop()


def test_two_daemons_with_one_client_id_say_why_they_keep_disconnecting(serve, caplog):
    """Found in a README walk: a second daemon started with the same settings took the session from
    the first every second and back; both logs said only "disconnected (Unspecified error)"."""
    serve()
    serve()  # the same client id (in-process, so serve's check of a running pid cannot see it)
    wait_for(lambda: any("times in a row" in r.getMessage() for r in caplog.records if r.levelname == "ERROR"),
             20, "the cut-short connections said")
    said = next(r.getMessage() for r in caplog.records if "times in a row" in r.getMessage())
    assert "client id 'sensorguard-test-" in said and "--client-id" in said


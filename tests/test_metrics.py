"""Metrics on a fresh registry (names are a contract) and a real HTTP round trip on port 0."""

from __future__ import annotations

import doctest
import http.client
import logging
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from sensorguard.service import metrics as metrics_module
from sensorguard.service.metrics import OTHER, Metrics
from sensorguard.service.metrics_http import serve_http, shutdown_http
from sensorguard.service.payload import REJECT_REASONS


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, metric: str, /, **labels: str) -> float | None:
    return registry.get_sample_value(metric, labels)


def test_doctests() -> None:
    assert doctest.testmod(metrics_module).failed == 0


def test_every_contract_name_exists_from_the_start(registry: CollectorRegistry) -> None:
    Metrics(registry)
    for name in (
        "readings_total",
        "windows_scored_total",
        "model_reload_failures_total",
        "record_write_failures_total",
        "model_threshold",
        "mqtt_connected",
        "assets",
        "buffered_windows",
        "scoring_duration_seconds_count",
        "reading_to_score_seconds_count",
        "publishes_refused_total",
    ):
        assert value(registry, "sensorguard_" + name) == 0.0, name
    for reason in REJECT_REASONS:
        assert value(registry, "sensorguard_messages_rejected_total", reason=reason) == 0.0
    for kind in ("stuck", "out_of_range", "missing"):
        assert value(registry, "sensorguard_sensor_faults_total", kind=kind) == 0.0
    assert value(registry, "sensorguard_sensor_faults_open") == 0.0
    for kind in ("alert", "state", "sensor", "event", "status"):  # a first burst of drops shows in increase()
        assert value(registry, "sensorguard_publishes_dropped_total", kind=kind) == 0.0


def test_time_to_acknowledge_tells_acks_within_a_minute_apart(registry: CollectorRegistry) -> None:
    """With a first bucket of 60 s, acks at 26 s read as a 30 s median on the dashboard (a walk)."""
    metrics = Metrics(registry)
    for seconds in (8.0, 26.0, 26.0):
        metrics.ack_seconds.observe(seconds)
    assert value(registry, "sensorguard_ack_seconds_bucket", le="10.0") == 1
    assert value(registry, "sensorguard_ack_seconds_bucket", le="30.0") == 3


def test_exactly_the_contract_families(registry: CollectorRegistry) -> None:
    """DESIGN.md's names (plus two operational ones); a rename here breaks dashboards."""
    Metrics(registry)
    families = {(f.name, f.type) for f in registry.collect()}
    counters = ("readings", "messages_rejected", "windows_scored", "alerts", "model_reload_failures")
    gauges = ("anomaly_score", "anomaly_active", "model_threshold", "model_info", "mqtt_connected", "assets")
    expected = (
        {("sensorguard_" + n, "counter") for n in (*counters, "record_write_failures", "sensor_faults",
                                                    "sensor_events_dropped", "record_dropped", "commands",
                                                    "alerts_suppressed", "alerts_acknowledged", "shadow_alerts",
                                                    "partition_changes", "windows_dropped", "window_restarts",
                                                    "publishes_dropped", "control_changes_dropped",
                                                    "publishes_refused", "publishes_forgotten", "alert_windows",
                                                    "state_write_failures", "alerts_forgotten")}
        | {("sensorguard_" + n, "gauge") for n in (*gauges, "buffered_windows", "sensor_faults_open",
                                                  "sensor_faults_held", "partition_info", "assets_silent",
                                                  "assets_held", "model_promise_alerts_per_day", "shadow_info",
                                                  "partitions_owned", "cluster_members")}
        | {
            ("sensorguard_" + n, "histogram")
            for n in ("scoring_duration_seconds", "reading_to_score_seconds", "ack_seconds", "shadow_score")
        }
    )
    assert families == expected


def test_counters_and_reject(registry: CollectorRegistry) -> None:
    m = Metrics(registry)
    m.readings.inc(3)
    m.reject("bad_ts")
    m.reject("bad_ts", 2)
    m.reject("brand_new_reason")
    assert value(registry, "sensorguard_readings_total") == 3.0
    assert value(registry, "sensorguard_messages_rejected_total", reason="bad_ts") == 3.0
    assert value(registry, "sensorguard_messages_rejected_total", reason="brand_new_reason") == 1.0


def test_asset_labels_are_capped(registry: CollectorRegistry) -> None:
    m = Metrics(registry, max_assets=2)
    for i in range(50):
        m.set_score(f"asset-{i}", float(i), active=i % 2 == 1)
        m.alert_raised(f"asset-{i}")
    labels = {s.labels["asset"] for f in registry.collect() for s in f.samples if "asset" in s.labels}
    assert labels == {"asset-0", "asset-1", OTHER}
    assert value(registry, "sensorguard_anomaly_score", asset="asset-1") == 1.0
    assert value(registry, "sensorguard_anomaly_active", asset="asset-1") == 1.0
    assert value(registry, "sensorguard_anomaly_active", asset="asset-0") == 0.0
    assert value(registry, "sensorguard_alerts_total", asset=OTHER) == 48.0
    assert m.asset_label("asset-0") == "asset-0" and m.asset_label(OTHER) == OTHER


def test_forget_asset_removes_gauges_and_frees_the_label_of_an_asset_that_never_alerted(
        registry: CollectorRegistry) -> None:
    m = Metrics(registry, max_assets=1)
    m.set_score("a", 0.5, False)
    assert m.asset_label("b") == OTHER
    m.forget_asset("a")
    m.forget_asset("never-seen")
    assert value(registry, "sensorguard_anomaly_score", asset="a") is None
    assert m.asset_label("b") == "b"


def test_forget_asset_keeps_the_alert_counter_and_its_slot(registry: CollectorRegistry) -> None:
    m = Metrics(registry, max_assets=1)
    m.set_score("a", 2.0, True)
    m.alert_raised("a")  # raised, then silent before the next scrape: the raise must still count
    m.forget_asset("a")
    assert value(registry, "sensorguard_anomaly_score", asset="a") is None
    assert value(registry, "sensorguard_alerts_total", asset="a") == 1.0
    assert m.asset_label("b") == OTHER  # the slot stays with the series: labels stay bounded
    m.alert_raised("a")  # back and alerting again: the same series goes on
    assert value(registry, "sensorguard_alerts_total", asset="a") == 2.0


def test_counters_start_at_zero_so_their_first_event_shows_in_increase(registry: CollectorRegistry) -> None:
    """increase() cannot see a series' first value: an alert counter born at 1 hid each asset's
    first alert from SensorguardAlarmFlood (ten assets alerting once read as none; found by review)."""
    m = Metrics(registry, max_assets=2)
    m.set_score("a", 0.5, False)
    assert value(registry, "sensorguard_alerts_total", asset="a") == 0.0
    assert value(registry, "sensorguard_alerts_total", asset=OTHER) == 0.0
    m.set_shadow("v0002")
    assert value(registry, "sensorguard_shadow_alerts_total", asset="a") == 0.0
    m.set_score("b", 0.5, False)
    assert value(registry, "sensorguard_shadow_alerts_total", asset="b") == 0.0
    for name, labels in (("commands_total", {"command": "ack", "result": "accepted"}),
                         ("alerts_acknowledged_total", {"false_alarm": "true"}),
                         ("alerts_suppressed_total", {"reason": "shelved"}),
                         ("partition_changes_total", {"change": "lost"})):
        assert value(registry, f"sensorguard_{name}", **labels) == 0.0, name
    m.forget_asset("b")  # never alerted: its series at 0 goes with its slot
    assert value(registry, "sensorguard_alerts_total", asset="b") is None
    assert value(registry, "sensorguard_shadow_alerts_total", asset="b") is None


def test_model_info_keeps_one_series(registry: CollectorRegistry) -> None:
    m = Metrics(registry)
    m.set_model("pumps", "v0001", 0.25)
    m.set_model("pumps", "v0002", 0.5)
    m.set_model("pumps", "v0002", 0.5)
    assert value(registry, "sensorguard_model_info", name="pumps", version="v0001") is None
    assert value(registry, "sensorguard_model_info", name="pumps", version="v0002") == 1.0
    assert value(registry, "sensorguard_model_threshold") == 0.5


def test_histogram_buckets(registry: CollectorRegistry) -> None:
    m = Metrics(registry)
    m.scoring_duration.observe(0.0002)
    m.reading_to_score.observe(3.0)
    assert value(registry, "sensorguard_scoring_duration_seconds_bucket", le="0.0001") == 0.0
    assert value(registry, "sensorguard_scoring_duration_seconds_bucket", le="0.00025") == 1.0
    assert value(registry, "sensorguard_scoring_duration_seconds_bucket", le="1.0") == 1.0
    assert value(registry, "sensorguard_reading_to_score_seconds_bucket", le="0.001") == 0.0
    assert value(registry, "sensorguard_reading_to_score_seconds_bucket", le="5.0") == 1.0
    assert value(registry, "sensorguard_reading_to_score_seconds_bucket", le="10.0") == 1.0


def test_registries_are_independent() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    Metrics(a).readings.inc()
    Metrics(b)
    assert value(a, "sensorguard_readings_total") == 1.0
    assert value(b, "sensorguard_readings_total") == 0.0


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[tuple[int, dict]]:
    state = {"ready": False, "alive": True}
    Metrics(registry).readings.inc(7)
    srv, thread = serve_http(registry, "127.0.0.1", 0, lambda: state["ready"], lambda: state["alive"])
    try:
        yield srv.server_address[1], state
    finally:
        shutdown_http(srv, thread)
        assert not thread.is_alive()


def get(port: int, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def test_http_round_trip(server: tuple[int, dict], caplog: pytest.LogCaptureFixture) -> None:
    port, state = server
    status, ctype, body = get(port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert b"sensorguard_readings_total 7.0" in body
    assert b'sensorguard_messages_rejected_total{reason="bad_ts"} 0.0' in body
    assert b"_created" not in body  # a start-time gauge per counter series: no rule or panel reads them
    assert get(port, "/healthz")[::2] == (200, b"ok\n")
    assert get(port, "/readyz")[::2] == (503, b"not ready\n")
    state["ready"] = True
    assert get(port, "/readyz")[::2] == (200, b"ready\n")
    for path in ("/", "/metricsx", "/metrics/", "/favicon.ico", "/healthz/../metrics"):
        assert get(port, path)[0] == 404, path
    assert get(port, "/metrics?name[]=x")[0] == 200


def test_http_head_and_openmetrics(server: tuple[int, dict]) -> None:
    port, _ = server
    status, _, body = get(port, "/metrics", method="HEAD")
    assert status == 200 and body == b""
    status, ctype, body = get(port, "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_failing_readiness_probe_is_not_ready(registry: CollectorRegistry) -> None:
    def boom() -> bool:
        raise RuntimeError("broken")

    srv, thread = serve_http(registry, "127.0.0.1", 0, boom)
    try:
        assert get(srv.server_address[1], "/readyz")[0] == 503
        assert get(srv.server_address[1], "/healthz")[0] == 200
    finally:
        shutdown_http(srv, thread)


def test_not_ready_says_why_a_line_each_and_a_failing_reason_list_still_gives_503(registry: CollectorRegistry) -> None:
    """A probe's log said only "not ready": which of broker, model, worker, stream was down had to
    be dug out of the daemon's own log."""
    reasons = ["not connected to the broker mqtt://b:1883", "no model loaded yet"]
    srv, thread = serve_http(registry, "127.0.0.1", 0, lambda: not reasons, why_not=lambda: list(reasons))
    try:
        port = srv.server_address[1]
        assert get(port, "/readyz")[::2] == (503, b"not ready\n- not connected to the broker mqtt://b:1883\n"
                                                  b"- no model loaded yet\n")
        reasons.clear()
        assert get(port, "/readyz")[::2] == (200, b"ready\n")
    finally:
        shutdown_http(srv, thread)

    def boom() -> list[str]:
        raise RuntimeError("broken")

    srv, thread = serve_http(registry, "127.0.0.1", 0, lambda: False, why_not=boom)
    try:
        assert get(srv.server_address[1], "/readyz")[::2] == (503, b"not ready\n- the readiness check failed "
                                                                 b"(see the log)\n")
    finally:
        shutdown_http(srv, thread)


def test_requests_are_logged_at_debug_not_stderr(
    server: tuple[int, dict], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    port, _ = server
    with caplog.at_level(logging.DEBUG, logger="sensorguard.service.metrics"):
        get(port, "/nowhere")
    assert "/nowhere" in caplog.text
    assert "/nowhere" not in capfd.readouterr().err



def test_healthz_answers_503_when_not_alive(server: tuple[int, dict]) -> None:
    port, state = server
    assert get(port, "/healthz")[0] == 200
    state["alive"] = False
    status, _, body = get(port, "/healthz")
    assert status == 503 and body == b"stuck\n"


def test_a_client_gone_before_its_answer_is_a_debug_line_not_a_traceback(capfd, caplog):
    """A walk: a scrape that timed out, or a probe closing at once, left socketserver's traceback on
    stderr (25 lines each, outside the JSON log) for every such request."""
    import socket
    import struct

    srv, thread = serve_http(CollectorRegistry(), "127.0.0.1", 0, lambda: True)
    port = srv.server_address[1]
    try:
        with caplog.at_level(logging.DEBUG, logger="sensorguard.service.metrics"):
            for _ in range(20):
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # a reset, before the answer is read
            time.sleep(0.5)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                assert answer.status == 200  # still serving
    finally:
        shutdown_http(srv, thread)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
    left = [r for r in caplog.records if "left before its answer" in r.getMessage()]
    assert left and all(r.levelno == logging.DEBUG for r in left)

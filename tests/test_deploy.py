"""deploy/: Prometheus rules (checked and unit-tested by promtool), compose, Grafana, systemd, container.

promtool comes with Debian's `prometheus` package and systemd-analyze with `systemd`; without them
those tests are skipped locally with the reason printed, and fail under CI=true (README: the
integration tests' promise; .ci/run installs both).
"""

from __future__ import annotations

import configparser
import dataclasses
import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from sensorguard.arguments import build_parser
from sensorguard.service.config import ConfigError, Settings, load_settings
from sensorguard.service.flags import flag_names
from sensorguard.service.metrics import Metrics
from tests.mosquitto import need_program

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "sensorguard.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "rules" / "sensorguard.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "sensorguard.json"
SYSTEMD = DEPLOY / "systemd"

# docs/design.md: the metric names dashboards and alerts may rely on.
COUNTERS = {
    "readings_total", "messages_rejected_total", "windows_scored_total", "alerts_total",
    "model_reload_failures_total", "record_write_failures_total", "sensor_faults_total",
    "sensor_events_dropped_total", "record_dropped_total", "commands_total", "alerts_suppressed_total",
    "alerts_acknowledged_total", "shadow_alerts_total", "worker_restarts_total", "partition_changes_total",
    "windows_dropped_total", "window_restarts_total", "publishes_dropped_total", "control_changes_dropped_total",
    "publishes_refused_total", "alert_windows_total", "state_write_failures_total", "publishes_forgotten_total",
    "alerts_forgotten_total",
}
GAUGES = {
    "anomaly_score", "anomaly_active", "model_threshold", "model_info", "mqtt_connected", "assets",
    "buffered_windows", "sensor_faults_open", "sensor_faults_held", "partition_info", "assets_silent", "assets_held",
    "model_promise_alerts_per_day", "shadow_info", "workers", "partitions_owned", "cluster_members",
}
HISTOGRAMS = {"scoring_duration_seconds", "reading_to_score_seconds", "ack_seconds", "shadow_score"}
METRICS = (
    {f"sensorguard_{n}" for n in COUNTERS | GAUGES}
    | {f"sensorguard_{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
)
BUILTIN_SERIES = {"up", "ALERTS"}
ALERTS = {
    "SensorguardAssetAnomaly", "SensorguardDown", "SensorguardBrokerDisconnected", "SensorguardNoReadings",
    "SensorguardHighRejectionRate", "SensorguardModelReloadFailing", "SensorguardSensorFaults",
    "SensorguardAlarmFlood", "SensorguardAssetAlertRate", "SensorguardWorkerRestarting",
    "SensorguardClusterNoReadings", "SensorguardStateWriteFailing", "SensorguardAssetsSilent",
    "SensorguardOutputLost", "SensorguardScoringFailing", "SensorguardRecordingFailing",
}


PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                   "offset"}


def series_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions or keywords."""
    text = re.sub(r'"[^"]*"', "", expr)  # strings (label values)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", "", text)  # label matchers, ranges, variables
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set(re.findall(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", text))
    return names - PROMQL_KEYWORDS


def promtool() -> str:
    return need_program("promtool", package="prometheus")


def run_promtool(*args: str) -> str:
    result = subprocess.run([promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


# --- Prometheus ----------------------------------------------------------------------------------


def test_promtool_check_config():
    out = run_promtool("check", "config", "deploy/prometheus/prometheus.yml")
    assert "1 rule files found" in out


def test_promtool_check_rules():
    out = run_promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert f"{len(ALERTS)} rules found" in out


def test_promtool_rule_unit_tests():
    out = run_promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    assert "SUCCESS" in out


def test_rule_files_resolve_relative_to_the_config_and_scrape_sensorguard():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file(), rule_file
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs["sensorguard"]["static_configs"] for t in sc["targets"]]
    assert targets == ["sensorguard:10100"]


def rules() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_every_documented_alert_exists_with_severity_and_known_metrics():
    found = rules()
    assert set(found) == ALERTS
    for name, rule in found.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        assert series_names(rule["expr"]) <= METRICS | BUILTIN_SERIES, (name, series_names(rule["expr"]))
    assert found["SensorguardAssetAnomaly"]["for"] == "1m"
    assert "{{ $labels.asset }}" in found["SensorguardAssetAnomaly"]["annotations"]["summary"]
    assert "$value" in found["SensorguardAssetAnomaly"]["annotations"]["summary"]  # the score


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for name in ALERTS:
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no test where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no test where it stays quiet"


def test_series_names_helper():
    assert series_names('sum by (le) (rate(sensorguard_x_bucket{a="b"}[5m]))') == {"sensorguard_x_bucket"}
    assert series_names('up{job="sensorguard"} == 0') == {"up"}
    assert series_names("sensorguard_a and on (asset) (sensorguard_b == 1)") == {"sensorguard_a", "sensorguard_b"}
    assert series_names("histogram_quantile(0.99, sum(rate(x_bucket[$__rate_interval]))) > 1e3") == {"x_bucket"}
    assert series_names("sensorguard_bogus / ignoring (reason) sensorguard_other") == {
        "sensorguard_bogus", "sensorguard_other"}


# --- compose -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_services_have_images_and_the_plant_is_complete(compose):
    services = compose["services"]
    assert {"mosquitto", "trainer", "sensorguard", "simulator", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    # states, maintenance and shelving on the data volume: a re-created container carries them over
    assert services["sensorguard"]["environment"]["SENSORGUARD_STATE_DIR"].startswith("/data/")


def test_compose_mounts_exist_and_volumes_are_declared(compose):
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_compose_ports_bind_to_loopback(compose):
    ports = {name: service.get("ports", []) for name, service in compose["services"].items()}
    assert "127.0.0.1:10100:10100" in ports["sensorguard"]
    assert "127.0.0.1:1883:1883" in ports["mosquitto"]
    assert ports["prometheus"] and ports["grafana"]
    for name, published in ports.items():
        for port in published:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is published on every interface"


def test_compose_daemon_waits_for_the_model_and_a_healthy_broker(compose):
    services = compose["services"]
    daemon = services["sensorguard"]
    command = daemon["command"]
    assert command[0] == "serve"
    assert command[command.index("--broker") + 1] == "mqtt://mosquitto:1883"
    assert command[command.index("--registry") + 1] == "/data/registry"
    assert command[command.index("--name") + 1] == "plant"
    assert daemon["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert daemon["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert "healthcheck" in services["mosquitto"]
    assert daemon["environment"]["SENSORGUARD_CLIENT_ID"]  # stable id: the session survives re-creation
    trainer = " ".join(services["trainer"]["command"])
    assert "sensorguard simulate" in trainer
    assert "sensorguard train" in trainer and "--registry /data/registry --name plant" in trainer
    simulator = " ".join(services["simulator"]["command"])
    assert "sensorguard replay" in simulator and "mqtt://mosquitto:1883" in simulator
    assert "--anomalies" in trainer  # the simulator replays a file with injected faults


def test_compose_prometheus_and_grafana_files_land_where_they_are_read(compose):
    services = compose["services"]
    prom = services["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in prom
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/sensorguard.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in services["grafana"]["volumes"]


# --- compose, cluster mode -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.cluster.yaml").read_text())


NATS_NODES = ("nats-1", "nats-2", "nats-3")
WORKERS = ("sensorguard-a", "sensorguard-b")


def _parsed(command: list[str]):
    """A compose command as sensorguard's own CLI parses it: a typo or a removed flag fails here."""
    return build_parser().parse_args(command)


def test_cluster_compose_is_three_nats_nodes_two_workers_prometheus_and_grafana(cluster_compose):
    services = cluster_compose["services"]
    assert {*NATS_NODES, *WORKERS, "cluster-init", "trainer", "simulator", "prometheus", "grafana"} <= set(services)
    names = {services[n]["environment"]["SERVER_NAME"] for n in NATS_NODES}
    assert names == set(NATS_NODES)  # distinct server names, as JetStream's clustering requires
    for node in NATS_NODES:
        assert services[node]["image"].startswith("nats:") and "healthcheck" in services[node]
        assert "./nats/nats.conf:/etc/nats/nats.conf:ro" in services[node]["volumes"]
    routes = re.search(r"routes: \[(.*)\]", (DEPLOY / "nats" / "nats.conf").read_text()).group(1)
    assert routes == ", ".join(f"nats://{n}:6222" for n in NATS_NODES)  # every node, by its service name
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is published on every interface"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert (DEPLOY / source).exists() if source.startswith(".") else source in cluster_compose["volumes"]


def test_cluster_compose_commands_are_what_sensorguard_accepts(cluster_compose):
    services = cluster_compose["services"]
    init = _parsed(services["cluster-init"]["command"])
    assert (init.verb, init.action, init.replicas) == ("cluster", "init", 3)
    assert sorted(init.cluster) == [f"nats://{n}:4222" for n in NATS_NODES]
    assert all(services["cluster-init"]["depends_on"][n]["condition"] == "service_healthy" for n in NATS_NODES)
    seen = set()
    for name in WORKERS:
        worker = services[name]
        args = _parsed(worker["command"])
        flags = {name: getattr(args, name, None) for name in flag_names()}  # as cli._serve_settings does
        assert (flags.pop("registry"), flags.pop("name")) == ("/data/registry", "plant")  # in the container only
        settings = load_settings(flags, worker["environment"], require_model=False)
        assert args.verb == "serve" and sorted(settings.cluster_servers()) == [f"nats://{n}:4222" for n in NATS_NODES]
        assert settings.mqtt_version == "3.1.1"  # the NATS MQTT listener refuses MQTT 5
        assert settings.broker.split("//")[1].split(":")[0] in NATS_NODES
        seen.add((settings.instance_name, settings.client_id))
        assert worker["depends_on"]["cluster-init"]["condition"] == "service_completed_successfully"
    assert len({i for i, _ in seen}) == len({c for _, c in seen}) == len(WORKERS)  # distinct names and sessions
    replay = services["simulator"]["command"][0]
    assert "--mqtt-version 3.1.1" in replay and "mqtt://nats-" in replay
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.cluster.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == [f"{w}:10100" for w in WORKERS]
    assert "./prometheus/prometheus.cluster.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]


def test_nats_config_is_valid_for_nats_server(tmp_path):
    from tests.nats import need_nats_server

    out = subprocess.run([need_nats_server(), "-c", str(DEPLOY / "nats" / "nats.conf"), "-t"], capture_output=True,
                         text=True, timeout=30, env={"SERVER_NAME": "nats-1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and "is valid" in out.stdout + out.stderr, out.stdout + out.stderr


def test_mosquitto_config_keeps_sessions_and_queues_enough():
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    settings = dict(
        line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#")
    )
    assert settings["persistence"].strip() == "true"
    assert int(settings["max_queued_messages"]) >= 100_000
    assert "default is 1000" in text  # the why, next to the setting


# --- Grafana -------------------------------------------------------------------------------------


def test_dashboard_panels_are_valid_and_use_known_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and grid["x"] + grid["w"] <= 24, panel["title"]
        xs, ys = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        mine = {(x, y) for x in xs for y in ys}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":  # a heading: no query of its own
            assert grid["h"] == 1 and grid["w"] == 24 and not panel.get("targets"), panel["title"]
            continue
        assert panel["datasource"]["uid"] == uid
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = series_names(target["expr"])
            assert names, target["expr"]
            assert names <= METRICS | BUILTIN_SERIES, (panel["title"], names - METRICS)
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid


def test_dashboard_counts_each_event_once_per_step():
    """``increase(x[$__rate_interval])`` drawn every 15 s step spans four steps (the range is at least
    a minute), so one alert read as four bars: 10 alerts summed to 37.9 (a walk); ``increase`` over
    the step itself loses the rise between two ranges' scrapes (about one event in four: a review).
    Per-step counts are the counter's rise over the step, ``x - x offset $__interval``, which
    telescopes: each event once."""
    dashboard = json.loads(DASHBOARD.read_text())
    counting = [p for p in dashboard["panels"] if any("offset $__interval" in t["expr"] or (
        "increase(" in t["expr"] and "$__" in t["expr"]) for t in p.get("targets", ()))]
    assert {p["title"] for p in counting} >= {"Alerts raised", "Failures", "Sensor faults"}
    for panel in counting:
        assert panel.get("interval") == "1m", panel["title"]
        for target in panel["targets"]:
            assert "[$__rate_interval]" not in target["expr"] and "[$__interval]" not in target["expr"], target["expr"]
    assert "sensorguard_assets_silent" in " ".join(t["expr"] for p in counting for t in p["targets"])


def test_dashboard_shows_what_operators_need():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", ()))
    for needed in (
        "sensorguard_anomaly_score", "sensorguard_anomaly_active", "sensorguard_readings_total",
        "sensorguard_windows_scored_total", "sensorguard_messages_rejected_total", "sensorguard_mqtt_connected",
        "sensorguard_model_info", "histogram_quantile(0.99", "histogram_quantile(0.5",
        "sensorguard_reading_to_score_seconds_bucket", "sensorguard_scoring_duration_seconds_bucket", "ALERTS",
        "sensorguard_sensor_faults_open", "sensorguard_sensor_faults_total", "sensorguard_partitions_owned",
        "sensorguard_partition_changes_total", "sensorguard_partition_info", "sensorguard_cluster_members",
    ):
        assert needed in exprs, needed
    # the docs send operators to its cluster row, which did not exist (a walk)
    assert any(p["type"] == "row" and p["title"].startswith("Cluster") for p in dashboard["panels"])
    firing = next(p for p in dashboard["panels"] if p["title"] == "Firing alerts")["targets"][0]["expr"]
    assert 'instance=""' in firing  # plant-wide alerts (no instance) stay when one daemon is picked (a walk)
    score = next(p for p in dashboard["panels"] if p["title"] == "Anomaly score per asset")
    steps = score["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == 1.0  # the alert line
    assert score["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"


# --- systemd -------------------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((SYSTEMD / name).read_text())
    return parser


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ReadWritePaths": "/var/lib/sensorguard",
    "CapabilityBoundingSet": "",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
}


def test_daemon_unit_runs_as_a_dedicated_user_with_hardening():
    service = unit("sensorguard.service")["Service"]
    assert service["DynamicUser"] == "no"
    assert service["User"] == service["Group"] == "sensorguard"
    assert service["ExecStart"] == (
        "/opt/sensorguard/venv/bin/sensorguard serve --config /etc/sensorguard/sensorguard.toml"
    )
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # past the daemon's own stop wait, or systemd kills it before the final states go out
    from sensorguard.service.workers import STOP_TIMEOUT_S

    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) > STOP_TIMEOUT_S
    assert service["Restart"] == "on-failure"
    from sensorguard.service.state_writes import EXIT_UNSAVED  # a failed final save: shown, not restarted

    # EX_IOERR: the journal says status=74/IOERR (3, the first choice, read status=3/NOTIMPLEMENTED)
    assert EXIT_UNSAVED == 74 and service["RestartPreventExitStatus"] == str(EXIT_UNSAVED)
    assert service["EnvironmentFile"] == "-/etc/sensorguard/sensorguard.env"
    for key, value in HARDENING.items():
        assert service[key] == value, key
    assert service["RestrictAddressFamilies"] == "AF_INET AF_INET6 AF_UNIX"
    assert "@system-service" in (SYSTEMD / "sensorguard.service").read_text()
    # Deliberately off: torch's oneDNN CPU kernels are JIT-compiled (see the comment in the unit).
    assert service["MemoryDenyWriteExecute"] == "no"
    assert unit("sensorguard.service")["Install"]["WantedBy"] == "multi-user.target"


def test_retrain_unit_and_weekly_timer():
    service = unit("sensorguard-retrain.service")["Service"]
    assert service["Type"] == "oneshot" and service["User"] == "sensorguard"
    command = service["ExecStart"].split()
    assert command[:2] == ["/opt/sensorguard/venv/bin/sensorguard", "retrain"]
    assert command[command.index("--registry") + 1] == "/var/lib/sensorguard/registry"
    assert command[command.index("--recorded") + 1] == "/var/lib/sensorguard/recorded"
    assert "--name" in command
    for key, value in HARDENING.items():
        assert service[key] == value, key
    timer = unit("sensorguard-retrain.timer")
    assert timer["Timer"]["OnCalendar"] == "weekly"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["RandomizedDelaySec"]
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = need_program("systemd-analyze", package="systemd")
    for path in SYSTEMD.glob("sensorguard*.[st]*"):
        if path.suffix in {".service", ".timer"}:
            # verify checks that ExecStart exists: point it at a program this machine has.
            text = path.read_text().replace("/opt/sensorguard/venv/bin/sensorguard", "/bin/true")
            (tmp_path / path.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.iterdir())
    result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_example_toml_parses_and_env_example_has_the_password():
    settings = tomllib.loads((SYSTEMD / "sensorguard.toml").read_text())
    assert settings["metrics_host"] == "127.0.0.1" and settings["metrics_port"] == 10100
    assert settings["broker"] == "mqtt://127.0.0.1:1883"
    assert "password" not in settings  # secrets live in the env file or password_file
    assert settings["record_dir"] == "/var/lib/sensorguard/recorded"  # what the retrain unit reads
    # the upgrade steps of operations.md carry alert states and shelving over a restart: only with state_dir
    assert settings["state_dir"].startswith("/var/lib/sensorguard/")  # under the unit's StateDirectory
    env = (SYSTEMD / "sensorguard.env.example").read_text()
    assert re.search(r"^# SENSORGUARD_MQTT_PASSWORD=", env, re.M)


def test_the_upgrade_steps_quote_the_format_refusal_this_build_says(tmp_path):
    """operations.md's rollback step quotes what an old build says of a newer bundle; it quoted
    "reads 1 to 4" two formats after 4 (a walk). The quote is this build's refusal of the next format."""
    from sensorguard.service.bundle import FORMAT_VERSION
    from sensorguard.service.bundle_loading import BundleError, load_bundle

    quoted = re.search(r"`(unsupported format_version \d+ \(this build reads 1 to \d+\))`",
                       (ROOT / "docs" / "operations.md").read_text())
    assert quoted is not None
    (tmp_path / "bundle.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(BundleError) as refused:
        load_bundle(tmp_path)
    assert str(refused.value).endswith(quoted.group(1))


def test_installed_as_shipped_the_unit_settings_load(tmp_path):
    """The TOML and the env file as operations.md installs them, unedited, must load: the env
    example set a password while the TOML's username was commented out, and the daemon refused to
    start ("a password is sent only with a username"), systemd retrying until its start limit."""
    env = {}
    for line in (SYSTEMD / "sensorguard.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    flags = {"registry": str(tmp_path)}  # (the unit's registry does not exist on this machine)
    settings = load_settings(flags, env, str(SYSTEMD / "sensorguard.toml"), require_model=False)
    assert settings.broker == "mqtt://127.0.0.1:1883"
    env["SENSORGUARD_MQTT_PASSWORD"] = "change-me"  # uncommented alone: the refusal the comment warns of
    with pytest.raises(ConfigError, match="password is sent only with a username"):
        load_settings(flags, env, str(SYSTEMD / "sensorguard.toml"), require_model=False)


# --- container -----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "container" / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_runs_as_non_root_with_healthcheck():
    steps = dockerfile_instructions()
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    assert final[0][1].startswith("python:3.11-slim")
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    user_at = max(i for i, (op, _) in enumerate(final) if op == "USER")
    for op in ("ENTRYPOINT", "CMD", "HEALTHCHECK"):
        at = [i for i, (o, _) in enumerate(final) if o == op]
        assert at and at[-1] > user_at, f"{op} must come after USER (never run as root)"
    args = dict(final)
    assert "/healthz" in args["HEALTHCHECK"] and "urllib" in args["HEALTHCHECK"]
    assert json.loads(args["ENTRYPOINT"]) == ["sensorguard"]
    assert json.loads(args["CMD"]) == ["serve"]
    assert args["EXPOSE"] == "10100"
    assert "SENSORGUARD_METRICS_HOST=0.0.0.0" in " ".join(arg for op, arg in final if op == "ENV")
    torch = [arg for op, arg in steps if op == "RUN" and "torch==" in arg]
    assert torch and "download.pytorch.org/whl/cpu" in torch[0]


def test_dockerignore_keeps_the_context_small_and_lets_in_every_copied_source():
    """Everything is excluded, then each path the Dockerfile copies from the context is let in
    (sensorguard/ was copied and not let in: the image could not be built)."""
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*"
    copied = [src for line in (ROOT / "deploy/container/Dockerfile").read_text().splitlines()
              if line.startswith("COPY ") and "--from=" not in line for src in line.split()[1:-1]]
    assert {"pyproject.toml", "README.md", "service", "training", "sensorguard"} <= set(copied)
    for src in copied:
        assert f"!{src}" in lines or f"!{src}/" in lines, src


def test_deploy_metric_names_are_the_ones_the_daemon_exports():
    from prometheus_client import CollectorRegistry

    from sensorguard.service.config import load_settings
    from sensorguard.service.workers import Supervisor

    registry = CollectorRegistry()
    Metrics(registry)
    exported = {family.name for family in registry.collect()}
    settings = load_settings({"model": None, "metrics_port": 0}, {}, require_model=False)
    exported |= {family.name for family in Supervisor(settings, [], []).registry.collect()}  # serve --workers N
    # prometheus_client drops the _total suffix from counter family names
    expected = {f"sensorguard_{n.removesuffix('_total')}" for n in COUNTERS | GAUGES | HISTOGRAMS}
    assert exported == expected


def documented_settings() -> set[str]:
    """Setting names in the first column of docs/operations.md's settings table."""
    text = (ROOT / "docs" / "operations.md").read_text()
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, re.M))


def test_the_docs_table_and_the_flags_are_derived_from_the_one_declaration():
    """docs/operations.md holds exactly the generated table; serve has a flag for every flag setting,
    unset by default, and it reaches the same setting as the TOML key and the environment variable."""
    from sensorguard.cli import build_parser
    from sensorguard.service.flags import flag_names, settings_table

    text = (ROOT / "docs" / "operations.md").read_text()
    assert settings_table() in text, (
        "regenerate the table: python -c 'from sensorguard.service.flags import settings_table; "
        "print(settings_table())'"
    )
    parser = build_parser()
    serve = parser.parse_args(["serve"])
    for name in flag_names():
        assert getattr(serve, name) is None, name  # an unset flag never overrides the file or env
    argv = ["serve", "--max-assets", "7", "--clear-level", "0.5", "--log-json", "--mqtt-version", "3.1.1"]
    flags = vars(parser.parse_args(argv))
    settings = load_settings({n: flags[n] for n in flag_names()}, {}, require_model=False)
    from_env = load_settings({}, {"SENSORGUARD_MAX_ASSETS": "7", "SENSORGUARD_CLEAR_LEVEL": "0.5",
                                  "SENSORGUARD_LOG_JSON": "true", "SENSORGUARD_MQTT_VERSION": "3.1.1"},
                             require_model=False)
    assert (settings.max_assets, settings.clear_level, settings.log_json, settings.mqtt_version) == (7, 0.5, True,
                                                                                                    "3.1.1")
    assert dataclasses.replace(from_env, client_id=settings.client_id) == settings
    with pytest.raises(ConfigError, match="max_assets: must be >= 1"):  # checked once, in load_settings
        load_settings({"max_assets": vars(parser.parse_args(["serve", "--max-assets", "0"]))["max_assets"]}, {},
                      require_model=False)


def test_example_toml_and_docs_cover_every_setting(tmp_path):
    names = {f.name for f in dataclasses.fields(Settings) if not f.name.startswith("_")}
    text = (SYSTEMD / "sensorguard.toml").read_text()
    shown = set(re.findall(r"^#? ?([a-z_]+) = ", text, re.M))
    assert shown == names, f"missing {names - shown}, unknown {shown - names}"
    assert documented_settings() == names
    # The example loads as it is, once the directories it names exist.
    (tmp_path / "registry").mkdir()
    local = text.replace("/var/lib/sensorguard", str(tmp_path))
    (tmp_path / "sensorguard.toml").write_text(local)
    settings = load_settings({}, {}, tmp_path / "sensorguard.toml")
    defaults = Settings()
    for name in names - {"registry", "name", "record_dir", "state_dir", "client_id"}:  # (set for systemd)
        assert getattr(settings, name) == getattr(defaults, name), f"{name}: the example differs from the default"


def test_the_docker_run_examples_set_the_client_id_and_the_state_dir():
    """Found by a walk: the Dockerfile's example left out SENSORGUARD_CLIENT_ID and
    SENSORGUARD_STATE_DIR, which docs/operations.md says to set: each new container then started
    an empty MQTT session and forgot alert states, maintenance and shelving."""
    header = (DEPLOY / "container" / "Dockerfile").read_text().split("FROM", 1)[0]
    ops = (ROOT / "docs" / "operations.md").read_text()
    ops_example = ops[ops.index("docker run -d --name sensorguard"):][:400]
    for example in (header, ops_example):
        assert "SENSORGUARD_CLIENT_ID=" in example and "SENSORGUARD_STATE_DIR=/data/state" in example, example


def test_the_docker_run_examples_give_the_stop_its_time():
    """Found by a deploy walk: `docker stop` waits 10 s by default before SIGKILL, and a Dockerfile
    cannot change that (STOPSIGNAL only). The daemon's own stop takes up to STOP_BUDGET_S plus its
    final publishes (60 s for a --workers parent), which the unit (TimeoutStopSec) and the compose
    files (stop_grace_period: 75s) allow for; the `docker run` examples did not, so a slow stop was
    killed before its final save and its `offline` status (alert states, holds lost)."""
    from sensorguard.service.workers import STOP_TIMEOUT_S

    header = (DEPLOY / "container" / "Dockerfile").read_text().split("FROM", 1)[0]
    ops = (ROOT / "docs" / "operations.md").read_text()
    ops_example = ops[ops.index("docker run -d --name sensorguard"):][:400]
    for example in (header, ops_example):
        given = re.search(r"--stop-timeout[ =](\d+)", example)
        assert given is not None and int(given.group(1)) > STOP_TIMEOUT_S, example


def test_the_commands_counter_help_names_every_result_it_counts():
    """Found by a deploy walk: /metrics showed ``sensorguard_commands_total{result="ignored"}`` (at 0
    from the start) under a HELP that listed accepted, rejected, duplicate and retry only, and
    ``result="error"`` (command ``?``) was not named either; design.md lists all six. Every result
    the daemon's code counts is named in the HELP an operator reads beside the series."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    Metrics(registry)
    family = next(f for f in registry.collect() if f.name == "sensorguard_commands")
    source = "".join(p.read_text() for p in (ROOT / "service").glob("*.py"))
    counted = set(re.findall(r'commands\.labels\([^,]+, "(\w+)"', source))
    counted |= {sample.labels["result"] for sample in family.samples}
    assert {"accepted", "rejected", "duplicate", "retry", "ignored", "error"} <= counted
    for result in counted:
        assert result in family.documentation, result
    assert "?" in family.documentation  # the command label of an unknown verb

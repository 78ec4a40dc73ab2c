"""`sensorguard replay` into a real broker, and `sensorguard demo` end to end without a TTY."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sensorguard.broker import DemoBroker
from sensorguard.demo import plan
from tests.conftest import plant_frame
from tests.mosquitto import Collector

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_replay_publishes_every_row_as_a_reading_in_order(tmp_path, mosquitto):
    frame = plant_frame(rows=40, channels=3, seed=1)
    frame["anomaly"] = 0  # label-like columns are not sent as channels
    path = tmp_path / "history.parquet"
    frame.to_parquet(path, index=False)
    watch = Collector(mosquitto, "sensors/#")
    out = subprocess.run(
        [sys.executable, "-m", "sensorguard", "replay", str(path), "--broker", mosquitto.url, "--asset",
         "site-a/pump-3", "--rate", "400", "--timestamps", "original"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "published 40 readings" in out.stdout
    from tests.mosquitto import wait_for

    got = wait_for(lambda: len(watch.on("sensors/site-a/pump-3/readings")) == 40 and
                   watch.on("sensors/site-a/pump-3/readings"), 10, "40 readings")
    assert set(got[0]["values"]) == {"c0", "c1", "c2"}
    assert [m["ts"] for m in got] == sorted(m["ts"] for m in got)
    assert got[0]["ts"] == pytest.approx(frame["timestamp"].iloc[0].timestamp())
    assert got[5]["values"]["c1"] == pytest.approx(frame["c1"].iloc[5], rel=1e-6)
    watch.close()


def test_replay_refuses_a_bad_asset_id_and_conflicting_pacing(tmp_path):
    path = tmp_path / "h.csv"
    plant_frame(rows=5).to_csv(path, index=False)
    base = [sys.executable, "-m", "sensorguard", "replay", str(path), "--broker", "mqtt://127.0.0.1:1"]
    both = subprocess.run([*base, "--asset", "p", "--rate", "1", "--speed", "2"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert both.returncode == 1 and "--rate or --speed" in both.stderr
    bad = subprocess.run([*base, "--asset", "a/../b"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "invalid asset id" in bad.stderr


def test_demo_plan_keeps_the_first_asset_healthy_and_spreads_faults():
    faults = plan(4)
    assert list(faults) == ["pump-1", "pump-2", "pump-3", "pump-4"]
    assert faults["pump-1"] == []
    starts = [f[0].start_s for f in list(faults.values())[1:]]
    assert starts == sorted(starts) and len(set(starts)) == 3


def test_demo_broker_auto_prefers_mosquitto(monkeypatch, tmp_path):
    import sensorguard.broker as demo_broker

    monkeypatch.setattr(demo_broker, "find_mosquitto", lambda: None)
    broker = DemoBroker("auto", tmp_path)
    assert (broker.kind, broker.mqtt_version) == ("amqtt", "3.1.1")
    monkeypatch.setattr(demo_broker, "find_mosquitto", lambda: "/usr/sbin/mosquitto")
    assert DemoBroker("auto", tmp_path).mqtt_version == "5"


@pytest.mark.slow
def test_demo_with_the_embedded_broker_raises_and_clears_alerts_in_plain_lines(tmp_path):
    """The zero-install path: amqtt in process, MQTT 3.1.1, no TTY (plain lines), bounded duration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORGUARD_")}
    out = subprocess.run(
        [sys.executable, "-m", "sensorguard", "demo", "--broker", "amqtt", "--duration", "24", "--assets", "2",
         "--train-rows", "6000", "--max-epochs", "6", "--workdir", str(tmp_path), "--metrics-port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env=env,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert any("amqtt" in line and "MQTT 3.1.1" in line for line in lines)
    assert any("RAISED" in line and "pump-2" in line and "pressure" in line for line in lines), out.stdout
    assert any("CLEARED" in line and "pump-2" in line for line in lines), out.stdout
    # the dead temp_in of pump-2 (3-9 s) is a sensor fault, not a process alert: none is raised before
    # the process fault at 12 s
    assert any("SENSOR_FAULT" in line and "pump-2" in line and "temp_in" in line for line in lines), out.stdout
    raised_at = [float(line.split("s", 1)[0]) for line in lines if "RAISED" in line and "pump-2" in line]
    assert raised_at and min(raised_at) >= 11.0, out.stdout
    assert not any("\x1b[" in line for line in lines)  # no terminal escapes without a TTY
    assert (tmp_path / "model" / "bundle.json").is_file() and (tmp_path / "plant-pump-2.csv").is_file()
    assert "Traceback" not in out.stderr


def test_replay_paces_rows_by_their_own_stamps_so_several_machines_run_in_real_time():
    import numpy as np

    from sensorguard.service.replay import schedule

    two_machines = np.sort(np.r_[np.arange(10.0), np.arange(10.0) + 0.5])  # two assets, 1 Hz each
    due = schedule(two_machines, rate=None, speed=None)
    assert due[-1] == 9.5  # ten seconds of plant take ten seconds, not twenty rows' worth of periods
    assert schedule(two_machines, rate=None, speed=10)[-1] == 0.95
    gap = np.r_[np.arange(5.0), 60 + np.arange(5.0)]
    assert schedule(gap, rate=None, speed=60)[5] == 1.0  # a gap is replayed as a gap, scaled
    assert list(schedule(gap, rate=4, speed=None)[:3]) == [0.0, 0.25, 0.5]

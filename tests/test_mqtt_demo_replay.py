"""`sensorguard replay` into a real broker, and `sensorguard demo` end to end without a TTY."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sensorguard.broker import DemoBroker
from sensorguard.demo import plan
from tests.conftest import plant_frame
from tests.mosquitto import Collector, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_replay_publishes_every_row_as_a_reading_in_order(tmp_path, mosquitto):
    frame = plant_frame(rows=40, channels=3, seed=1)
    frame["anomaly"] = 0  # label-like columns are not sent as channels
    path = tmp_path / "history.parquet"
    pd.concat([frame, frame.iloc[[39]]]).to_parquet(path, index=False)  # the last row twice: sent twice
    watch = Collector(mosquitto, "sensors/#")
    out = subprocess.run(
        [sys.executable, "-m", "sensorguard", "replay", str(path), "--broker", mosquitto.url, "--asset",
         "site-a/pump-3", "--rate", "400", "--timestamps", "original"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "published 41 readings" in out.stdout
    # the rows go out raw: it said "kept the first row of each" of the repeat it then sent (a walk)
    assert "note: sent raw; the daemon will clean them as: 1 duplicate timestamps" in out.stderr
    from tests.mosquitto import wait_for

    got = wait_for(lambda: len(watch.on("sensors/site-a/pump-3/readings")) == 41 and
                   watch.on("sensors/site-a/pump-3/readings"), 10, "41 readings")
    assert set(got[0]["values"]) == {"c0", "c1", "c2"}
    assert [m["ts"] for m in got] == sorted(m["ts"] for m in got)
    assert got[0]["ts"] == pytest.approx(frame["timestamp"].iloc[0].timestamp())
    assert got[5]["values"]["c1"] == pytest.approx(frame["c1"].iloc[5], rel=1e-6)
    watch.close()



@pytest.mark.integration
def test_replay_with_a_model_sends_exactly_its_channels(tmp_path, mosquitto, tiny_bundle):
    """Without the model, a file's other numeric column (a setpoint) went out with every reading and
    the daemon refused them all (unknown_channel) while score scored the file (found by review)."""
    from sensorguard.service.bundle import save_bundle
    from tests.mosquitto import wait_for

    frame = plant_frame(rows=20, channels=3, seed=1)
    frame.columns = ["timestamp", *tiny_bundle.channels]
    frame["setpoint"] = range(20)
    frame.to_csv(tmp_path / "h.csv", index=False)
    watch = Collector(mosquitto, "sensors/#")
    out = subprocess.run(
        [sys.executable, "-m", "sensorguard", "replay", str(tmp_path / "h.csv"), "--broker", mosquitto.url,
         "--asset", "pump-3", "--rate", "400", "--model", str(save_bundle(tiny_bundle, tmp_path / "model"))],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    got = wait_for(lambda: len(watch.on("sensors/pump-3/readings")) == 20 and watch.on("sensors/pump-3/readings"),
                   10, "20 readings")
    assert {tuple(sorted(m["values"])) for m in got} == {tuple(sorted(tiny_bundle.channels))}
    assert "ahead of this machine's clock" not in out.stderr  # (19 s of stamps: none worth saying)
    watch.close()


@pytest.mark.integration
def test_replay_with_a_model_takes_the_machine_column_it_was_trained_with(tmp_path, mosquitto, tiny_bundle):
    """``score`` took a bundle's machine column (``training.asset_column``) by itself and ``replay
    --model`` did not: a file of two pumps was refused without ``--asset`` and sent as one asset with it."""
    from dataclasses import replace

    from sensorguard.service.bundle import save_bundle
    from tests.mosquitto import wait_for

    frames = []
    for k in (1, 2):
        frame = plant_frame(rows=10, channels=3, seed=k)
        frame.columns = ["timestamp", *tiny_bundle.channels]
        frames.append(frame.assign(Machine=f"m{k}"))
    pd.concat(frames).to_csv(tmp_path / "two.csv", index=False)
    trained = replace(tiny_bundle, training={**(tiny_bundle.training or {}), "asset_column": "Machine"})
    watch = Collector(mosquitto, "sensors/#")
    out = subprocess.run(
        [sys.executable, "-m", "sensorguard", "replay", str(tmp_path / "two.csv"), "--broker", mosquitto.url,
         "--rate", "400", "--model", str(save_bundle(trained, tmp_path / "model"))],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "as 2 assets" in out.stdout
    for name in ("m1", "m2"):
        wait_for(lambda name=name: len(watch.on(f"sensors/{name}/readings")) == 10, 10, f"{name}'s 10 readings")
    watch.close()


@pytest.mark.integration
def test_replay_with_a_model_sends_a_channel_the_file_lacks_as_missing_as_score_reads_it(tmp_path, mosquitto,
                                                                                          tiny_bundle):
    """A sensor added to a machine: ``score`` reads its older recordings without the channel as a feed
    without it (the daemon takes such readings: a missing fault, the model fills it in), while ``replay
    --model`` refused them ("channels not found"). It sends the channel as null, which the daemon reads
    as missing; a model without sensor limits (which cannot fill it in) still refuses the file."""
    from dataclasses import replace

    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.sensors import ChannelLimits, SensorRules
    from tests.mosquitto import wait_for

    limits = tuple(ChannelLimits(-50.0, 50.0, 10) for _ in tiny_bundle.channels)
    watched = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, tiny_bundle.fill_limit))
    gone = tiny_bundle.channels[-1]
    frame = plant_frame(rows=12, channels=3, seed=1)
    frame.columns = ["timestamp", *tiny_bundle.channels]
    frame.drop(columns=[gone]).to_csv(tmp_path / "old.csv", index=False)
    watch = Collector(mosquitto, "sensors/#")

    def replay(bundle, name: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sensorguard", "replay", str(tmp_path / "old.csv"), "--broker", mosquitto.url,
             "--asset", "pump-3", "--rate", "400", "--model", str(save_bundle(bundle, tmp_path / name))],
            cwd=ROOT, capture_output=True, text=True, timeout=60)

    out = replay(watched, "watched")
    assert out.returncode == 0, out.stderr
    assert f"'{gone}' not in" in out.stderr and "read as missing in every row" in out.stderr
    # the missing fault is the daemon's to find (replay scores nothing: "left out of the score" alone misled)
    assert "sent raw; the daemon will find these too: 1 sensor faults opened" in out.stderr, out.stderr
    got = wait_for(lambda: len(watch.on("sensors/pump-3/readings")) == 12 and watch.on("sensors/pump-3/readings"),
                   10, "12 readings")
    assert all(m["values"][gone] is None and all(m["values"][c] is not None for c in tiny_bundle.channels[:-1])
               for m in got), got[0]
    watch.close()
    out = replay(tiny_bundle, "plain")
    assert out.returncode != 0 and "Traceback" not in out.stderr and gone in out.stderr, out.stderr


@pytest.mark.integration
def test_a_replay_batch_never_passes_the_daemons_message_size(mosquitto):
    """1,000 samples of 8 channels are about 190 kB: the daemon refused each such message whole
    (too_large) while replay reported them published (found by review)."""
    import json

    import numpy as np

    from sensorguard.service.config import load_settings
    from sensorguard.service.replay import replay
    from tests.mosquitto import wait_for

    settings = load_settings({"broker": mosquitto.url, "client_id": "replay-size"}, {}, require_model=False)
    rows = 2500
    values = np.random.default_rng(0).normal(size=(rows, 8)) * 1e3
    watch = Collector(mosquitto, "sensors/#")
    result = replay(settings, "pump-1", 1.7e9 + np.arange(rows, dtype=float), values,
                    [f"channel_{j}" for j in range(8)], np.zeros(rows), original_ts=True, batch=1000)
    assert result.rows == rows and result.confirmed
    got = wait_for(lambda: sum(len(m["samples"]) for m in watch.on("sensors/pump-1/readings")) == rows
                   and watch.on("sensors/pump-1/readings"), 10, "every sample")
    assert len(got) > 3 and max(len(json.dumps(m, separators=(",", ":"))) for m in got) <= 65536
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
    big = subprocess.run([*base, "--asset", "p", "--batch", "1001"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)  # the daemon refuses messages of more samples (too_many_samples)
    assert big.returncode == 2 and "1 to 1000" in big.stderr
    both = subprocess.run([*base, "--asset", "p", "--model", "m", "--channels", "a"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert both.returncode == 1 and "--channels or --model" in both.stderr


@pytest.mark.integration
def test_replay_takes_the_broker_from_sensorguard_broker_as_the_other_settings_and_has_no_default(tmp_path,
                                                                                                 mosquitto):
    """``replay`` took SENSORGUARD_USERNAME, _TLS_CA and the rest from the environment, but not
    SENSORGUARD_BROKER: "the following arguments are required: --broker" (a walk). Still no default
    broker: a test file is not replayed into a plant's broker by a forgotten flag."""
    from tests.mosquitto import clean_env, wait_for

    path = tmp_path / "h.csv"
    plant_frame(rows=5).to_csv(path, index=False)
    command = [sys.executable, "-m", "sensorguard", "replay", str(path), "--asset", "pump-5", "--rate", "100"]
    none = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, env=clean_env())
    assert none.returncode == 1 and "give --broker" in none.stderr and "Traceback" not in none.stderr, none.stderr
    watch = Collector(mosquitto, "sensors/#")
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env=clean_env(SENSORGUARD_BROKER=mosquitto.url))
    assert out.returncode == 0, out.stderr
    wait_for(lambda: len(watch.on("sensors/pump-5/readings")) == 5, 10, "5 readings")
    watch.close()


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


def test_the_demo_takes_sigterm_as_ctrl_c_so_its_broker_is_stopped():
    """Found in a README walk: SIGTERM (timeout, systemd, compose) ended the demo without its clean
    stop, and its mosquitto or three nats-servers kept running under PID 1."""
    script = """
import os, signal, time
from sensorguard.cli_live import _stopped_by_sigterm_too

def run(options):  # the demo's shape: Ctrl-C caught, the broker stopped in finally
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 0
    except KeyboardInterrupt:
        print("interrupted: stopping")
        return 0
    finally:
        print("broker stopped")

print("exit", _stopped_by_sigterm_too(run, None), signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)

def twice(options):  # a second SIGTERM inside the clean stop must not skip the broker's (a review)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    except KeyboardInterrupt:
        pass
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        print("broker stopped again")
    return 0

print("exit", _stopped_by_sigterm_too(twice, None))

def training(options):  # Lightning turns the interrupt into exit 1: still a SIGTERM's 143 (a review)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    except KeyboardInterrupt:
        raise SystemExit(1)

print("exit", _stopped_by_sigterm_too(training, None))

def hangup(options):  # a closed terminal or SSH session: the same clean stop (a walk left the broker)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(5)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        print("broker stopped on hangup")

print("exit", _stopped_by_sigterm_too(hangup, None), signal.getsignal(signal.SIGHUP) == signal.SIG_DFL)

signal.signal(signal.SIGHUP, signal.SIG_IGN)  # under nohup: the hangup is not the demo's (a review)
print("exit", _stopped_by_sigterm_too(hangup, None), signal.getsignal(signal.SIGHUP) == signal.SIG_IGN)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == ["interrupted: stopping", "broker stopped", "exit 143 True",
                                       "broker stopped again", "exit 143", "exit 143",
                                       "broker stopped on hangup", "exit 129 True",
                                       "broker stopped on hangup", "exit 0 True"], out


def test_the_demo_replaces_only_its_own_files(tmp_path):
    """A walk: ``demo --workdir .`` where the README's steps had trained replaced that model/ and
    normal.csv unasked. A folder holding such files is refused unless a demo made it; a demo's
    folder is taken again, the plant files of an earlier run with more assets removed."""
    from sensorguard.cli_errors import CliError
    from sensorguard.demo_workdir import MARK, claim_workdir, mark_workdir

    mine = tmp_path / "mine"
    (mine / "model").mkdir(parents=True)
    (mine / "normal.csv").write_text("timestamp,a\n")
    with pytest.raises(CliError, match="holds model, normal.csv, which the demo would replace"):
        claim_workdir(mine)
    assert not (mine / MARK).exists() and (mine / "normal.csv").read_text() == "timestamp,a\n"
    claim_workdir(tmp_path / "new" / "demo")  # a new folder, made
    demo = tmp_path / "new" / "demo"
    (demo / "normal.csv").write_text("timestamp,a\n")  # the demo's history, marked once written
    mark_workdir(demo)
    claim_workdir(demo)  # a run stopped while it trained: the folder is the demo's
    (demo / "model").mkdir()
    (demo / "model" / "bundle.json").write_text('{"created": "2026-12-07T04:00:00+00:00"}')  # the user's, trained
    with pytest.raises(CliError, match="holds model"):  # after that stopped run (replaced: a review)
        claim_workdir(demo)
    mark_workdir(demo)  # as a demo run to its end leaves it
    (demo / "plant-pump-6.csv").write_text("old run")
    claim_workdir(demo)  # the demo's own: taken again
    assert (demo / MARK).is_file() and not (demo / "plant-pump-6.csv").exists() and (demo / "model").is_dir()
    (demo / "model" / "bundle.json").write_text('{"created": "2026-12-07T05:00:00+00:00"}')  # trained there since
    with pytest.raises(CliError, match="holds model, normal.csv"):  # (a review: the mark held it the demo's)
        claim_workdir(demo)
    old = tmp_path / "old"  # an earlier version's demo folder: no mark, its plant files beside
    old.mkdir()
    (old / "normal.csv").write_text("timestamp,a\n")
    (old / "plant-pump-1.csv").write_text("timestamp,a\n")
    claim_workdir(old)
    users = tmp_path / "users"  # a user's broker settings beside a model: no demo's (a review)
    (users / "model").mkdir(parents=True)
    (users / "mosquitto.conf").write_text("listener 1883\n")
    with pytest.raises(CliError, match="holds model, mosquitto.conf"):
        claim_workdir(users)
    (demo / "model" / "bundle.json").unlink()  # a model whose bundle.json is gone: not the demo's left one
    with pytest.raises(CliError, match="holds model, normal.csv"):
        claim_workdir(demo)
    claim_workdir(tmp_path / "mine" / "model")  # empty of the demo's names: fine


def test_the_demo_says_which_planned_faults_it_cannot_show():
    """A walk: ``--duration 20`` listed the faults planned at 24 s and later as injected and never
    raised, and at ``--rate 1`` the faults were over before the first window was full."""
    from sensorguard.demo import streamed_faults

    kept, left = streamed_faults(plan(5), duration_s=30.0, rate=20.0, window=32)
    assert [len(f) for f in kept.values()] == [0, 1, 1, 0, 1] and kept["pump-5"][0].kind == "dead_sensor"
    assert left == ["pump-4: level_shift on temp_out at 36s (after --duration 30s)",
                    "pump-5: spike on current at 48s (after --duration 30s)"]
    kept, left = streamed_faults(plan(3), duration_s=55.0, rate=1.0, window=32)
    assert kept == {"pump-1": [], "pump-2": [], "pump-3": []} and len(left) == 3
    assert all("over before the first window is full (32s at --rate 1)" in line for line in left)


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


def test_a_replay_stopped_by_sigterm_does_not_report_success(tmp_path, mosquitto):
    """Found by review: SIGTERM ended the loop, and replay printed "published N readings" for part
    of the file and exited 0: a job runner or a timeout wrapper read the cut replay as done."""
    import signal

    frame = plant_frame(rows=400, channels=3, seed=1)
    path = tmp_path / "history.parquet"
    frame.to_parquet(path, index=False)
    watch = Collector(mosquitto, "sensors/#")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sensorguard", "replay", str(path), "--broker", mosquitto.url, "--asset", "p1",
         "--rate", "20"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        from tests.mosquitto import wait_for

        wait_for(lambda: len(watch.on("sensors/p1/readings")) >= 5, 60, "the replay under way")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        watch.close()
    assert proc.returncode == 143, (out, err)
    assert "stopped by SIGTERM after" in err and "of 400 rows" in err, err


def test_replay_with_the_model_says_when_the_files_rate_is_not_the_models():
    """Found in a README walk: a file sampled every 10 s replayed to a 1 s model was refused row by
    row (slow_rate) and replay reported success."""
    import numpy as np

    from sensorguard.clients import _off_rate

    slow = _off_rate(np.arange(0.0, 400.0, 10.0), "p1", 1.0)
    assert slow.startswith("the file's rows are 10 s apart and the model's sample period is 1 s")
    assert "(slow_rate), so it would take none of these" in slow
    assert "about 1 in 4" in _off_rate(np.arange(0.0, 10.0, 0.25), "p1", 1.0)
    assert _off_rate(np.arange(0.0, 100.0, 1.2), "p1", 1.0) is None  # within the daemon's tolerance
    both = np.repeat(np.arange(100.0), 2)  # two machines at 1 s, interleaved: each judged on its own
    assert _off_rate(both, ["a", "b"] * 100, 1.0) is None
    assert _off_rate(np.array([5.0]), "p1", 1.0) is None  # one row: no spacing to judge


def test_replay_says_when_a_fast_replay_would_run_past_the_daemons_future_limit():
    """Found by review: at --speed 10 a file with a 2 h gap ran 9,000 s ahead of the clock when the
    gap came; the daemon refused the row after it as future_ts, and every later one."""
    import numpy as np

    from sensorguard.clients import _refused_ahead
    from sensorguard.service.replay import schedule

    times = np.r_[np.arange(10_000.0), 10_000.0 + 7200 + np.arange(100.0)]
    said = _refused_ahead(times, schedule(times, None, 10.0), "p1", 3600.0)
    assert said is not None and "p1 resumes after a gap of 2 h" in said and "--timestamps original" in said
    assert _refused_ahead(times, schedule(times, None, 1.0), "p1", 3600.0) is None  # real time: never ahead
    assets = ["a", "b"] * 10_100  # two machines interleaved: the gap is each one's own
    assert _refused_ahead(np.sort(np.r_[times, times]), schedule(np.sort(np.r_[times, times]), None, 10.0),
                          assets, 3600.0) is not None
    # found by review: a machine whose first row comes that far ahead is refused too (the daemon has
    # no reading of it to step from), and no gap was seen
    late = np.r_[np.arange(10_000.0), 10_000.0 + np.arange(100.0)]
    said = _refused_ahead(late, schedule(late, None, 10.0), ["a"] * 10_000 + ["b"] * 100, 3600.0)
    assert said is not None and "b starts" in said


def test_a_fast_replay_says_how_far_ahead_it_left_the_assets_stamps(tmp_path, mosquitto):
    """A docs walk: after a fast replay, a second replay to the same asset was refused reading by
    reading as out_of_order (its stamps not after the first's, hours ahead of the clock) while it
    printed "published". The first now says how far ahead it left them, and the way out."""
    from sensorguard.clients import _left_ahead

    frame = plant_frame(rows=200, channels=3, seed=1, period="1min")
    frame.to_csv(tmp_path / "h.csv", index=False)
    out = subprocess.run(
        [sys.executable, "-m", "sensorguard", "replay", str(tmp_path / "h.csv"), "--broker", mosquitto.url,
         "--asset", "pump-4", "--rate", "400"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "note: the last readings sent are stamped 3.3" in out.stderr and "hours ahead of this machine" in out.stderr
    assert "replay to asset pump-4 again before then as out_of_order" in out.stderr
    now = time.time()
    assert _left_ahead(np.arange(0.0, 3600.0, 60.0), now, "asset p") is not None
    assert _left_ahead(np.arange(0.0, 60.0), now, "asset p") is None  # a minute ahead at most: not said


def test_a_replay_waits_out_a_broker_outage_and_stops_on_sigterm_during_one(tmp_path, mosquitto):
    """Found in a README walk: with the broker gone, replay kept publishing into paho's unbounded
    queue and ended in "internal error: Message publish failed: The client is not currently
    connected". It now waits for the broker, says so, and resumes; SIGTERM still stops it."""
    import signal
    import time

    frame = plant_frame(rows=400, channels=3, seed=1)
    path = tmp_path / "history.parquet"
    frame.to_parquet(path, index=False)
    command = [sys.executable, "-m", "sensorguard", "replay", str(path), "--broker", mosquitto.url, "--asset", "p1",
               "--rate", "40", "--mqtt-version", "3.1.1"]
    def under_way() -> None:
        """Until a second of readings went out (python's start took over 4 s on a busy machine: the broker
        then stopped before the replay had connected, and it never lost it)."""
        watch = Collector(mosquitto, "sensors/#")
        try:
            wait_for(lambda: len(watch.on("sensors/p1/readings")) >= 40, 60, "the replay under way")
        finally:
            watch.close()

    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        under_way()
        mosquitto.stop()
        time.sleep(3)
        mosquitto.start()
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (out, err)
    assert "lost the broker after" in err and "the broker is back after" in err and "Traceback" not in err, err
    assert "published 400 readings" in out, out
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        under_way()
        mosquitto.stop()
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and "stopped by SIGTERM after" in err, (out, err)


def test_the_demo_summary_keeps_its_alerts_column_in_line():
    """An asset with two injected faults pushed its "alerts:" column out of line (a walk)."""
    from sensorguard.demo_view import AssetView, Fault, print_summary

    class Lines:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def print(self, text: str) -> None:
            self.lines.extend(text.strip("\n").splitlines())

    two = [Fault("level_shift", "temp_out", 36, 9), Fault("dead_sensor", "temp_in", 3, 6)]
    views = {"pump-1": AssetView("pump-1", []), "pump-4": AssetView("pump-4", two)}
    console = Lines()
    print_summary(console, views)
    rows = [line for line in console.lines if "injected:" in line]
    assert len(rows) == 2 and len({row.index("alerts:") for row in rows}) == 1, rows


def test_a_demo_interrupted_while_streaming_does_not_exit_0(tmp_path, monkeypatch):
    """A walk: Ctrl-C while the plant streamed printed "interrupted" and exited 0, as a run to its
    end does (Ctrl-C while training gave 130). The broker and the daemon are still stopped."""
    import types

    import sensorguard.demo as demo

    stopped = []
    fake = types.SimpleNamespace(kind="fake", url="mqtt://x", mqtt_version="5", port=1, start=lambda: None,
                                 stop=lambda: stopped.append("broker"))
    daemon = types.SimpleNamespace(metrics_address=("127.0.0.1", 1), add_listener=lambda f: None,
                                   stop=lambda: stopped.append("daemon"))
    watcher = types.SimpleNamespace(loop_stop=lambda: None, disconnect=lambda: None)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "prepare", lambda *a: demo.Prepared(tmp_path, 32, plan(2), {}, [], 0.0))
    monkeypatch.setattr(demo, "DemoBroker", lambda *a: fake)
    monkeypatch.setattr(demo, "start_daemon", lambda *a, **k: daemon)
    monkeypatch.setattr(demo, "watch_alerts", lambda *a: watcher)
    monkeypatch.setattr(demo, "stream_plant", interrupted)
    assert demo.run_demo(demo.DemoOptions(workdir=tmp_path, metrics_port=0)) == 130
    assert stopped == ["daemon", "broker"]


def test_the_demo_names_a_way_to_watch_it_that_the_machine_has(monkeypatch, tmp_path):
    """With the embedded broker there is no mosquitto, and the hint named ``mosquitto_sub`` all the
    same (a walk): without it, sensorguard's own ``alerts`` with the broker's address and version."""
    import sensorguard.broker as demo_broker
    import sensorguard.demo as demo

    monkeypatch.setattr(demo_broker, "find_mosquitto", lambda: None)
    broker = DemoBroker("auto", tmp_path)
    broker.port, broker.url = 1234, "mqtt://127.0.0.1:1234"
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    assert demo.watch_hint(broker) == "sensorguard alerts --all --broker mqtt://127.0.0.1:1234 --mqtt-version 3.1.1"
    monkeypatch.setattr(demo.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert demo.watch_hint(broker) == "mosquitto_sub -p 1234 -t 'sensorguard/#' -v"

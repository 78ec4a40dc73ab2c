"""Recording in the daemon: normal readings go to the Parquet store, readings around alerts do not,
and ``sensorguard retrain --recorded`` trains on them; the running daemon then swaps to the result.

A real Mosquitto and a really trained model; waits poll with timeouts.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sensorguard.service.registry import current_version, publish
from tests.conftest import epoch, plant_frame
from tests.mosquitto import Collector, Publisher, scrape, wait_for
from tests.test_daemon_integration import CHANNELS, expected_windows
from tests.test_hot_swap import ROOT, clean_env, model_infos, start, value

pytestmark = pytest.mark.integration

NAME = "pump"
GUARD_S = 120.0
CHUNK = 20  # samples per message; the two assets are published interleaved, chunk by chunk


@pytest.fixture
def daemons():
    started = []
    yield started
    for daemon in started:
        daemon.stop()


def recorded(directory) -> pd.DataFrame:
    """The normal readings recorded (day folders; an alert's own readings are filed apart)."""
    files = sorted(f for f in directory.glob("*/*.parquet") if f.parent.name.isdigit())
    return pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame(columns=["ts", "asset"])


def test_normal_readings_are_recorded_fault_readings_are_not_and_retrain_uses_them(
    daemons, mosquitto, trained, tmp_path, capsys
):
    bundle = trained[0]
    registry = tmp_path / "registry"
    publish(bundle, registry, NAME)
    record_dir = tmp_path / "recorded"
    daemon, url = start(daemons, mosquitto, registry=str(registry), name=NAME, reload_poll_s=0.1,
                        record_dir=str(record_dir), record_guard_s=GUARD_S)
    daemon.recorder.flush_interval_s = 0.0  # write at every housekeeping pass, not once a minute
    events = Collector(mosquitto, "sensorguard/alerts/#")

    rows = 1600
    frame = plant_frame(rows=rows, channels=3, seed=5)
    times, normal = epoch(frame), frame[CHANNELS].to_numpy()
    faulty = normal.copy()
    faulty[600:800, 1] += 6.0 * np.sign(np.sin(np.arange(200) / 3.0))  # a square-wave fault on c1
    pub = Publisher(mosquitto)
    for start_row in range(0, rows, CHUNK):
        part = slice(start_row, start_row + CHUNK)
        pub.samples("pump-ok", times[part], normal[part], CHANNELS, batch=CHUNK)
        pub.samples("pump-bad", times[part], faulty[part], CHANNELS, batch=CHUNK)
    n = 2 * expected_windows(rows, bundle.window, bundle.hop)
    wait_for(lambda: value(url, "sensorguard_windows_scored_total") == n, 30, f"{n} windows scored")
    alerts = wait_for(lambda: len(events.on("sensorguard/alerts/pump-bad")) >= 2 and
                      events.on("sensorguard/alerts/pump-bad"), 10, "raised and cleared")
    assert [a["state"] for a in alerts] == ["raised", "cleared"]
    raised, cleared = (pd.Timestamp(a["ts"]).timestamp() for a in alerts)
    assert events.on("sensorguard/alerts/pump-ok") == []

    # reading time for the guard band: the newest scored window, the last sample here
    last = times[bundle.window - 1 :: bundle.hop][-1]
    ok_expected = set(times[times < last - GUARD_S])
    wait_for(lambda: set(recorded(record_dir).query("asset == 'pump-ok'").ts) == ok_expected, 15,
             f"{len(ok_expected)} normal readings recorded")
    frame_rec = recorded(record_dir)
    assert list(frame_rec.columns) == ["ts", "asset", *CHANNELS]
    ok = frame_rec[frame_rec.asset == "pump-ok"].sort_values("ts")
    assert len(ok) == len(ok_expected)  # each once
    assert np.allclose(ok[CHANNELS].to_numpy(), normal[: len(ok)])

    bad = np.sort(frame_rec[frame_rec.asset == "pump-bad"].ts.to_numpy())
    fault_start, fault_end = times[600], times[800 + bundle.window]
    assert raised - GUARD_S + CHUNK <= fault_start  # the guard band reaches back past the fault's start
    before, after = bad[bad < fault_start], bad[bad >= fault_start]
    # everything older than the guard band before the alert; at most one message more (the other
    # asset may lead by a message, which moves the reading clock)
    assert set(times[times < raised - GUARD_S]) <= set(before)
    assert before.max() < raised - GUARD_S + CHUNK
    # nothing while alerting, nothing within the guard after the clear, nothing of the fault
    assert len(after) > 0 and after.min() >= cleared + GUARD_S and after.max() < last - GUARD_S
    assert not ((bad >= fault_start) & (bad < fault_end)).any()
    assert len(np.unique(bad)) == len(bad)
    # the alert's own readings are filed under its id, unanswered: never trained on
    (filed,) = (record_dir / "alerts").glob("*.parquet")
    assert filed.name == alerts[0]["alert_id"] + ".parquet"
    held = pd.read_parquet(filed).ts.to_numpy()
    assert held.min() >= raised - GUARD_S - CHUNK and held.max() <= cleared  # to its clear: the band after it
    # may hold the fault's tail, and is recorded nowhere (filed with the alert after a backlog: a walk)
    in_fault = (times >= fault_start) & (times < fault_end) & (times <= cleared)
    assert ((held >= fault_start) & (held < fault_end)).sum() == in_fault.sum() >= 200 and not set(held) & set(bad)
    assert scrape(url)[("sensorguard_record_write_failures_total", ())] == 0

    # retrain on what was recorded; the running daemon follows CURRENT to the new version
    from sensorguard.cli import main

    code = main(["retrain", "--registry", str(registry), "--name", NAME, "--recorded", str(record_dir),
                 "--max-epochs", "2", "--force", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert current_version(registry, NAME) == "v0002"
    wait_for(lambda: model_infos(url) == {"v0002": 1.0}, 10, "the daemon serving the retrained v0002")
    events.close()
    pub.close()


def test_record_flags_reach_the_settings(tmp_path, trained_dir):
    out = subprocess.run(
        [sys.executable, "-m", "sensorguard", "serve", "--model", str(trained_dir), "--print-config",
         "--record-dir", str(tmp_path / "rec"), "--record-guard-s", "60", "--record-max-mb", "5",
         "--record-max-age-days", "7", "--reload-poll-s", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=clean_env(),
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert (shown["record_dir"], shown["record_guard_s"], shown["record_max_mb"], shown["record_max_age_days"],
            shown["reload_poll_s"]) == (str(tmp_path / "rec"), 60.0, 5.0, 7.0, 2.0)


def test_recorder_keeps_readings_offered_before_a_late_clear(tmp_path):
    """The daemon offers readings on arrival, before scoring: after a backlog, readings received
    while the alert was still up may lie after its clear plus guard band, and are kept."""
    from sensorguard.service.recorder import Recorder

    rec = Recorder(tmp_path, ("a", "b"), guard_s=10, flush_interval_s=0)
    for ts in range(0, 300):  # the whole backlog arrives before the worker judged any of it
        rec.add("p1", float(ts), np.array([ts, -ts], float))
    rec.alert_raised("p1", 100.0)  # drops 90.. on, commits 0..89 at once
    for ts in range(300, 320):
        rec.add("p1", float(ts), np.array([ts, -ts], float))  # still alerting: held back, not dropped
    rec.alert_cleared("p1", 150.0)  # drops what is held before 160
    rec.flush(now_ts=1000.0)
    assert sorted(recorded(tmp_path).ts) == list(range(0, 90)) + list(range(160, 320))


def test_an_alert_ended_by_silence_files_its_readings_for_its_acknowledgement(tiny_bundle, tmp_path):
    """Found by review: an alert that ended because its asset went silent lost the readings held
    for it, while an acknowledgement as a false alarm still answered that they would be learned
    as normal data at the next retrain. They are filed as a cleared alert's are."""
    from sensorguard.service.record_files import alert_file
    from tests.test_daemon import T0
    from tests.test_state import daemon_with

    daemon, _ = daemon_with(tiny_bundle, None, record_dir=str(tmp_path / "rec"), record_guard_s=5)
    for i in range(40):
        daemon.recorder.add("pump", T0 + i, [1.0, 2.0, 3.0])
    for i in range(3):
        daemon.alerts.apply("pump", T0 + 30 + i, 50.0, [])
    alert_id = daemon.snapshot()["pump"].alert_id
    assert daemon.snapshot()["pump"].status == "alerting" and alert_id
    daemon.alerts.end("pump", T0 + 39)
    daemon.recorder.flush(now_ts=T0 + 1000, force=True)
    filed = list((tmp_path / "rec" / "alerts").glob("*.parquet"))
    assert [f.stem for f in filed] == [alert_file(alert_id).removesuffix(".parquet")]

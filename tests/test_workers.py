"""``serve --workers N``: the partition-to-worker plan, the merged metrics, and with a real
Mosquitto a two-worker daemon beside two single ones, and a worker SIGKILLed under load whose
readings all arrive (accepted by it, or redelivered to its restarted self)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from sensorguard.service.aggregate import WorkerCounters, merge, parse
from sensorguard.service.config import ConfigError, load_settings
from sensorguard.service.worker_plans import worker_count, worker_settings
from tests.conftest import epoch, plant_frame
from tests.mosquitto import (
    Collector,
    Publisher,
    clean_env,
    free_port,
    http_status,
    metric,
    scrape,
    start_daemon,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ["c0", "c1", "c2"]


def _settings(tmp_path, **flags):
    return load_settings({"model": None, "broker": "mqtt://127.0.0.1:1", "client_id": "sg", **flags}, {},
                         require_model=False)


def test_each_worker_has_its_session_instance_share_of_partitions_and_folders(tmp_path):
    s = _settings(tmp_path, partition=["a/#", "b/#", "c/#"], instance="plant", state_dir=str(tmp_path / "st"),
                  record_dir=str(tmp_path / "rec"), record_max_mb="900")
    plans = worker_settings(s, 2)
    assert [(p.client_id, p.instance_name, p.partition) for p in plans] == [
        ("sg-w0", "plant-w0", ("a/#", "c/#")), ("sg-w1", "plant-w1", ("b/#",))]
    assert [p.state_dir for p in plans] == [str(tmp_path / "st" / "w0"), str(tmp_path / "st" / "w1")]
    assert [p.record_dir for p in plans] == [str(tmp_path / "rec" / "w0"), str(tmp_path / "rec" / "w1")]
    assert {p.record_max_mb for p in plans} == {450.0} and {p.metrics_port for p in plans} == {0}
    assert worker_settings(s, 2) == plans  # stable: a restarted worker gets the same session and share
    assert worker_count(s, cores=2) == 2 and worker_count(s, cores=8) == 3
    assert worker_count(_settings(tmp_path), cores=16) == 1  # the default '#': one plain daemon
    with pytest.raises(ConfigError, match="need at least as many partitions"):
        worker_count(_settings(tmp_path, workers="2"))
    with pytest.raises(ConfigError, match="workers: must be >= 1"):
        _settings(tmp_path, workers="0")


PAGE = """# HELP sensorguard_readings_total Samples accepted.
# TYPE sensorguard_readings_total counter
sensorguard_readings_total {readings}
# HELP sensorguard_mqtt_connected 1 while connected.
# TYPE sensorguard_mqtt_connected gauge
sensorguard_mqtt_connected {connected}
# HELP sensorguard_model_info The model.
# TYPE sensorguard_model_info gauge
sensorguard_model_info{{name="m",version="v1"}} 1
# HELP sensorguard_anomaly_score Latest score.
# TYPE sensorguard_anomaly_score gauge
sensorguard_anomaly_score{{asset="{asset}"}} 0.5
# HELP sensorguard_scoring_duration_seconds Time.
# TYPE sensorguard_scoring_duration_seconds histogram
sensorguard_scoring_duration_seconds_bucket{{le="0.1"}} {readings}
sensorguard_scoring_duration_seconds_bucket{{le="+Inf"}} {readings}
sensorguard_scoring_duration_seconds_count {readings}
sensorguard_scoring_duration_seconds_sum 1.5
"""


def _values(families) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_merged_cluster_members_are_the_members_not_their_sum():
    """Each worker of ``serve --cluster --workers 2`` lists the same members: two workers seeing 3
    members are a cluster of 3, not 6; the partitions they own add up."""
    page = ("# HELP sensorguard_cluster_members Members.\n# TYPE sensorguard_cluster_members gauge\n"
            "sensorguard_cluster_members 3\n# HELP sensorguard_partitions_owned Owned.\n"
            "# TYPE sensorguard_partitions_owned gauge\nsensorguard_partitions_owned {owned}\n")
    got = _values(merge([parse(page.format(owned=3)), parse(page.format(owned=2))],
                        [WorkerCounters(), WorkerCounters()], {}))
    assert got[("sensorguard_cluster_members", ())] == 3 and got[("sensorguard_partitions_owned", ())] == 5


def test_merged_metrics_sum_counters_keep_info_at_one_and_survive_a_restart():
    slots, meta = [WorkerCounters(), WorkerCounters()], {}
    pages = [parse(PAGE.format(readings=10, connected=1, asset="a")),
             parse(PAGE.format(readings=5, connected=0, asset="b"))]
    got = _values(merge(pages, slots, meta))
    assert got[("sensorguard_readings_total", ())] == 15
    assert got[("sensorguard_scoring_duration_seconds_bucket", (("le", "+Inf"),))] == 15
    assert got[("sensorguard_scoring_duration_seconds_sum", ())] == 3.0
    assert got[("sensorguard_mqtt_connected", ())] == 0  # one worker down is down
    assert got[("sensorguard_model_info", (("name", "m"), ("version", "v1")))] == 1
    assert got[("sensorguard_anomaly_score", (("asset", "a"),))] == 0.5
    assert got[("sensorguard_anomaly_score", (("asset", "b"),))] == 0.5

    slots[1].restarted()  # worker 1 died at 5 and came back counting from 0: the sum never goes back
    pages[1] = parse(PAGE.format(readings=2, connected=1, asset="b"))
    got = _values(merge(pages, slots, meta))
    assert got[("sensorguard_readings_total", ())] == 17
    assert got[("sensorguard_scoring_duration_seconds_count", ())] == 17
    assert got[("sensorguard_mqtt_connected", ())] == 1
    got = _values(merge([pages[0], None], slots, meta))  # worker 1 not answering: its counters as last seen,
    # its gauges too (left out, its assets' alerts resolved and fired again in Prometheus at each restart: a walk)
    assert got[("sensorguard_readings_total", ())] == 17
    assert got[("sensorguard_anomaly_score", (("asset", "b"),))] == 0.5
    assert got[("sensorguard_mqtt_connected", ())] == 0
    later = _values(merge([pages[0], None], slots, meta, now=time.monotonic() + 61))  # down over a minute (or its
    assert ("sensorguard_anomaly_score", (("asset", "b"),)) not in later  # partitions taken by a sibling): gone
    assert _values(merge(pages, slots, meta, {("sensorguard_readings", "sensorguard_readings_total", ()): 99.0}))[
        ("sensorguard_readings_total", ())] == 99.0


# --- with a real Mosquitto --------------------------------------------------------------------------


def start_workers(model: Path, broker, port: int, log: Path, *extra: str) -> subprocess.Popen:
    with log.open("a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sensorguard", "serve", "--model", str(model), "--broker", broker.url,
             "--metrics-port", str(port), "--workers", "2", "--partition", "site-a/#", "--partition", "site-b/#",
             *extra],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=clean_env(),
        )
    wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 90, "both workers ready", proc=proc,
             log=log)
    return proc


def stop(proc: subprocess.Popen, log: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]


def worker_pids(proc: subprocess.Popen) -> set[int]:
    """The worker processes of ``serve`` (spawned by multiprocessing; not its resource tracker)."""
    out = set()
    for child in psutil.Process(proc.pid).children():
        try:
            line = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "multiprocessing" in line and "resource_tracker" not in line:
            out.add(child.pid)
    return out


@pytest.mark.integration
def test_a_two_worker_daemon_runs_beside_two_single_daemons(tmp_path, mosquitto, trained_dir):
    suffix = free_port()
    base = {"model": str(trained_dir), "broker": mosquitto.url, "metrics_port": 0}
    c, url_c = start_daemon({**base, "client_id": f"sg-c-{suffix}", "instance": "site-c", "partition": ["site-c/#"]})
    d, url_d = start_daemon({**base, "client_id": f"sg-d-{suffix}", "instance": "site-d", "partition": ["site-d/#"]})
    port, log = free_port(), tmp_path / "workers.log"
    watch = Collector(mosquitto, "sensorguard/#")
    proc = start_workers(trained_dir, mosquitto, port, log, "--instance", "plant", "--client-id", f"sg-p-{suffix}")
    url = f"http://127.0.0.1:{port}"
    try:
        frame = plant_frame(rows=60, channels=3, seed=3)
        pub = Publisher(mosquitto)
        for asset in ("site-a/pump-1", "site-b/pump-2", "site-c/pump-3", "site-d/pump-4"):
            pub.samples(asset, epoch(frame), frame[CHANNELS].to_numpy(), CHANNELS, batch=10)
        pub.close()
        wait_for(lambda: metric(url, "sensorguard_readings_total") == 120, 20, "the workers' readings", proc=proc,
                 log=log)
        wait_for(lambda: metric(url_c, "sensorguard_readings_total") == 60
                 and metric(url_d, "sensorguard_readings_total") == 60, 20, "each single daemon its own readings")
        # readings are counted as they are buffered, windows and scores a moment later as they are scored:
        # wait for every daemon's windows and the workers' scores (a CI run scraped in between: no score)
        windows = (60 - 32) // 4 + 1  # 60 rows, the bundle's window 32 and hop 4

        def all_scored() -> bool:
            page = scrape(url)
            return (page.get(("sensorguard_windows_scored_total", ())) == 2 * windows
                    and {dict(k[1])["asset"] for k in page if k[0] == "sensorguard_anomaly_score"}
                    == {"site-a/pump-1", "site-b/pump-2"}
                    and metric(url_c, "sensorguard_windows_scored_total") == windows
                    and metric(url_d, "sensorguard_windows_scored_total") == windows)

        wait_for(all_scored, 20, "every window scored", proc=proc, log=log)
        statuses = {t.rpartition("/")[2]: p for t, p, _ in watch.messages if t.startswith("sensorguard/status/")}
        assert {name: (s["state"], s["partitions"], s["client_id"]) for name, s in statuses.items()} == {
            "plant-w0": ("online", ["site-a/#"], f"sg-p-{suffix}-w0"),
            "plant-w1": ("online", ["site-b/#"], f"sg-p-{suffix}-w1"),
            "site-c": ("online", ["site-c/#"], f"sg-c-{suffix}"),
            "site-d": ("online", ["site-d/#"], f"sg-d-{suffix}")}
        got = scrape(url)
        assert got[("sensorguard_workers", ())] == 2 and got[("sensorguard_mqtt_connected", ())] == 1
        assert got[("sensorguard_partition_info", (("daemon", "plant-w0"), ("partition", "site-a/#")))] == 1
        assert got[("sensorguard_partition_info", (("daemon", "plant-w1"), ("partition", "site-b/#")))] == 1
        assert {dict(k[1])["asset"] for k in got if k[0] == "sensorguard_anomaly_score"} == {
            "site-a/pump-1", "site-b/pump-2"}
        assert sum(v for k, v in got.items() if k[0] == "sensorguard_model_info") == 1
        assert got[("sensorguard_windows_scored_total", ())] == metric(url_c, "sensorguard_windows_scored_total") * 2
        assert c.buffers.assets() == ["site-c/pump-3"] and d.buffers.assets() == ["site-d/pump-4"]
        # a command naming no asset is answered and counted by one worker (each of them did: a walk)
        pub = Publisher(mosquitto)
        pub.raw("sensorguard/commands/maintenance", b'{"request_id": "r-none"}')
        pub.close()
        wait_for(lambda: {p["instance"] for t, p, _ in watch.messages if t == "sensorguard/responses/r-none"}
                 >= {"site-c", "site-d", "plant-w0"}, 10, "the answers", proc=proc, log=log)
        time.sleep(1.0)  # (a second worker's answer would have come by now)
        answered = [p["instance"] for t, p, _ in watch.messages if t == "sensorguard/responses/r-none"]
        assert sorted(answered) == ["plant-w0", "site-c", "site-d"], answered
        assert metric(url, "sensorguard_commands_total", command="maintenance", result="rejected") == 1
        stop(proc, log)
        offline = wait_for(lambda: {t.rpartition("/")[2] for t, p, _ in watch.messages
                                    if t.startswith("sensorguard/status/plant-") and p["state"] == "offline"}
                           == {"plant-w0", "plant-w1"}, 10, "both workers offline after SIGTERM")
        assert offline and "Traceback" not in log.read_text()
    finally:
        watch.close()
        stop(proc, log)
        c.stop()
        d.stop()


@pytest.mark.integration
def test_a_worker_killed_under_load_loses_no_reading(tmp_path, mosquitto, trained_dir):
    """Each asset's readings arrive in order in one session; a worker buffers and counts a reading
    before acknowledging it, so the restarted worker gets everything from the first unacknowledged
    one: readings counted (exactly, across the kill) >= readings published, per partition, and the
    excess is the redelivered batches the killed worker had buffered but not yet acknowledged."""
    port, log = free_port(), tmp_path / "workers.log"
    proc = start_workers(trained_dir, mosquitto, port, log, "--client-id", f"sg-k-{port}")
    url = f"http://127.0.0.1:{port}"
    frame = plant_frame(rows=3000, channels=3, seed=5)
    times, values = epoch(frame), frame[CHANNELS].to_numpy()
    try:
        before = worker_pids(proc)
        assert len(before) == 2
        pubs = []

        def publish(asset: str) -> None:
            pub = Publisher(mosquitto)
            pubs.append(pub)
            for start in range(0, len(times), 100):  # paced, so the kill lands mid-stream
                pub.samples(asset, times[start:start + 100], values[start:start + 100], CHANNELS, batch=10)
                time.sleep(0.05)

        threads = [threading.Thread(target=publish, args=(a,)) for a in ("site-a/pump-1", "site-b/pump-2")]
        for t in threads:
            t.start()
        wait_for(lambda: (metric(url, "sensorguard_readings_total") or 0) >= 1500, 60, "load", proc=proc, log=log)
        victim = next(p for p in before if "site-a" in _worker_log_partitions(log, p))
        psutil.Process(victim).kill()  # SIGKILL: no final states, no clean disconnect
        for t in threads:
            t.join(60)
        for pub in pubs:
            pub.close()
        wait_for(lambda: metric(url, "sensorguard_worker_restarts_total") == 1, 30, "the worker restarted",
                 proc=proc, log=log)
        marker = Publisher(mosquitto)  # queued behind everything each session holds
        marker.raw("sensors/site-a/pump-1/readings", b"end-of-backlog")
        marker.raw("sensors/site-b/pump-2/readings", b"end-of-backlog")
        marker.close()
        wait_for(lambda: metric(url, "sensorguard_messages_rejected_total", reason="invalid_json") == 2, 60,
                 "both markers behind the queued readings", proc=proc, log=log)
        total = metric(url, "sensorguard_readings_total")
        assert total >= 2 * len(times), f"{2 * len(times) - total} readings vanished"
        redelivered = total - 2 * len(times)
        assert redelivered % 10 == 0 and redelivered <= 2000, redelivered  # whole batches, a bounded few
        rejected = {dict(k[1])["reason"]: v for k, v in scrape(url).items()
                    if k[0] == "sensorguard_messages_rejected_total" and v}
        assert set(rejected) <= {"invalid_json", "duplicate_ts"}, rejected
        assert worker_pids(proc) - before and victim not in worker_pids(proc)
        stop(proc, log)
    finally:
        stop(proc, log)


def _worker_log_partitions(log: Path, pid: int) -> str:
    """The partitions the parent logged for the worker with ``pid``."""
    lines = [line for line in log.read_text().splitlines() if f"(pid {pid})" in line]
    return lines[-1] if lines else ""


def test_a_dead_workers_readings_are_counted_once_before_and_after_its_restart(tmp_path):
    """Found by review: the dead process's shared count went to the carry but stayed in the shared
    value until the respawn (a second later), so a scrape in between counted it twice."""
    from sensorguard.service.workers import Supervisor

    s = _settings(tmp_path, partition=["a/#", "b/#"])
    sup = Supervisor(s, worker_settings(s, 2), [(), ()])

    class Dead:
        pid, exitcode = 4242, -9

        def is_alive(self) -> bool:
            return False

    for slot in sup.slots:
        slot.readings = sup.context.Value("d", 0.0, lock=False)
        slot.process = Dead()
        slot.started = time.monotonic()
    sup.slots[0].readings.value = 100.0
    sup.stopping = True  # found dead, but not respawned here

    def total() -> float:
        return _values(sup.collect())[("sensorguard_readings_total", ())]

    assert total() == 100
    sup.watch(time.monotonic())
    assert total() == 100 and sup.slots[0].generation == 1
    sup.slots[0].readings.value = 7.0  # the restarted process counts from 0
    assert total() == 107


def test_a_restarted_workers_zero_series_are_not_carried():
    """Every labelled asset has an alerts series at 0 now; a worker's restart carried them all, and
    the parent exported them for good (found by review)."""
    from sensorguard.service.aggregate import WorkerCounters

    bucket = ("h", "h_bucket", (("le", "0.1"),))  # a histogram's buckets stay, in their le order
    slot = WorkerCounters(last={("a", "a_total", (("asset", "p1"),)): 0.0, ("a", "a_total", (("asset", "p2"),)): 2.0,
                                bucket: 0.0})
    slot.restarted()
    assert slot.carry == {("a", "a_total", (("asset", "p2"),)): 2.0, bucket: 0.0}


def test_an_alerts_series_a_live_worker_drops_never_makes_the_summed_counter_fall():
    """A worker gives a retired asset's label slot to a new one and drops its alerts_total series
    (metrics.RETIRED_LABEL_S). Summed with another worker's series of it (cluster mode moves assets),
    the parent's counter fell from 5 to 3: Prometheus read a reset, and increase() took the 3 as new
    alerts, paging for an asset quiet for days (a review). Its last value joins the slot's carry; a
    series no other worker or carry holds goes with it."""
    page = "# HELP sensorguard_alerts_total Alerts.\n# TYPE sensorguard_alerts_total counter\n{rows}"

    def row(asset: str, n: int) -> str:
        return f'sensorguard_alerts_total{{asset="{asset}"}} {n}\n'

    slots, meta = [WorkerCounters(), WorkerCounters()], {}
    x, y = ("sensorguard_alerts_total", (("asset", "x"),)), ("sensorguard_alerts_total", (("asset", "y"),))
    got = _values(merge([parse(page.format(rows=row("x", 2) + row("y", 4))), parse(page.format(rows=row("x", 3)))],
                        slots, meta))
    assert got[x] == 5 and got[y] == 4
    got = _values(merge([parse(page.format(rows="")), parse(page.format(rows=row("x", 3)))], slots, meta))
    assert got[x] == 5 and y not in got  # x: still summed with worker 1's, kept; y: worker 0's alone, gone
    got = _values(merge([parse(page.format(rows="")), parse(page.format(rows=row("x", 4)))], slots, meta))
    assert got[x] == 6


def test_a_carried_alerts_series_no_worker_shows_for_the_retirement_span_goes():
    """Every restart carries each asset's alert counter; kept for good, the parent's page exported
    every asset the daemon ever served, past each worker's ``max_assets`` label bound (a review).
    A carried series no worker shows for ``RETIRED_LABEL_S`` goes, as a worker's retired one; one a
    worker still shows stays, and so do the carried counters of no asset."""
    from sensorguard.service.metrics import RETIRED_LABEL_S

    page = "# HELP sensorguard_alerts_total Alerts.\n# TYPE sensorguard_alerts_total counter\n{rows}"
    row = 'sensorguard_alerts_total{{asset="{}"}} 2\n'.format
    slots, meta = [WorkerCounters(), WorkerCounters()], {}
    gone, kept = ("sensorguard_alerts_total", (("asset", "gone"),)), ("sensorguard_alerts_total", (("asset", "kept"),))
    readings = ("sensorguard_readings", "sensorguard_readings_total", ())
    carried = {name: ("sensorguard_alerts", *series) for name, series in (("gone", gone), ("kept", kept))}
    slots[0].last = {carried["gone"]: 2.0, carried["kept"]: 2.0, readings: 7.0}
    slots[0].restarted()  # carried: the restarted worker shows "kept" again, "gone" never
    pages = [parse(page.format(rows=row("kept"))), parse(page.format(rows=""))]
    start = time.monotonic()
    got = _values(merge(pages, slots, meta, now=start))
    assert got[gone] == 2 and got[kept] == 4
    got = _values(merge(pages, slots, meta, now=start + RETIRED_LABEL_S - 1))
    assert got[gone] == 2 and got[kept] == 4  # not yet
    got = _values(merge(pages, slots, meta, now=start + RETIRED_LABEL_S))
    assert gone not in got and got[kept] == 4 and got[("sensorguard_readings_total", ())] == 7
    assert carried["gone"] not in slots[0].carry and carried["gone"] not in slots[0].shown


def test_a_dead_worker_shows_as_disconnected_and_one_dying_young_comes_back_after_a_second(tmp_path, monkeypatch):
    """Found by review: (1) a worker down or not answering was left out of the merged gauges, so
    mqtt_connected was the minimum over the live ones, 1, and an alert on it stayed silent through
    a crash loop; (2) the backoff doubled before its first use: the first restart came after 2 s,
    where the docs say 1 s; (3) the default count took the machine's cores, not the process's
    (a 2-CPU container on a 64-core node)."""
    import os

    from sensorguard.service.workers import RESTART_MIN_S, Supervisor

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert worker_count(_settings(tmp_path, partition=[f"p{k}/#" for k in range(8)])) == 2
    monkeypatch.undo()

    slots, meta = [WorkerCounters(), WorkerCounters()], {}
    got = _values(merge([parse(PAGE.format(readings=10, connected=1, asset="a")), None], slots, meta))
    assert got[("sensorguard_mqtt_connected", ())] == 0
    assert _values(merge([None, None], slots, meta))[("sensorguard_mqtt_connected", ())] == 0

    settings = _settings(tmp_path, partition=["a/#", "b/#"], workers=2)
    supervisor = Supervisor(settings, worker_settings(settings, 2), [(), ()])
    for slot in supervisor.slots:
        slot.started = 100.0  # started, then found dead a second later (it died young)
        slot.readings = supervisor.context.Value("d", 0.0, lock=False)
    supervisor.watch(101.0)
    assert [s.backoff for s in supervisor.slots] == [RESTART_MIN_S, RESTART_MIN_S]


def test_a_busy_metrics_port_stops_the_start_before_any_worker_is_spawned(tmp_path):
    """The workers were spawned before the parent's port was bound: on a busy port they waited
    for ever, and so did the parent at exit (found by review)."""
    import socket

    from sensorguard.service.workers import Supervisor

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        s = _settings(tmp_path, partition=["a/#", "b/#"], metrics_host="127.0.0.1",
                      metrics_port=str(busy.getsockname()[1]))
        sup = Supervisor(s, worker_settings(s, 2), [(), ()])
        with pytest.raises(OSError, match="metrics_port"):
            sup.run_forever(threading.Event())
        assert all(slot.process is None for slot in sup.slots)
    finally:
        busy.close()


def test_the_assets_past_the_label_cap_are_not_summed_over_workers():
    """Found by review: every worker past max_assets reports ``_other``; summed, scores of 0.5 and
    0.5 read as 1.0 (the alert line) and anomaly_active as 2, which `== 1` never matched."""
    slots, meta = [WorkerCounters(), WorkerCounters()], {}
    pages = [parse(PAGE.format(readings=1, connected=1, asset="_other")) for _ in range(2)]
    got = _values(merge(pages, slots, meta))
    assert got[("sensorguard_anomaly_score", (("asset", "_other"),))] == 0.5


class _Running:
    """A worker process stand-in: alive until killed."""

    pid, exitcode = 4242, None

    def __init__(self) -> None:
        self.killed = False

    def is_alive(self) -> bool:
        return not self.killed

    def kill(self) -> None:
        self.killed = True


def test_a_worker_whose_health_check_keeps_failing_is_killed_and_the_parent_says_so(tmp_path):
    """Found by review: only a dead worker was restarted, and the parent's /healthz always said ok:
    a worker whose scoring hung (its own /healthz 503) stayed up for good, its partitions
    undrained, and no liveness probe ever acted."""
    from prometheus_client import CollectorRegistry

    from sensorguard.service.metrics_http import serve_http, shutdown_http
    from sensorguard.service.workers import HEALTH_PROBE_S, HUNG_RESTART_S, Supervisor

    settings = _settings(tmp_path, partition=["a/#", "b/#"], workers=2)
    sup = Supervisor(settings, worker_settings(settings, 2), [(), ()])
    healthy = serve_http(CollectorRegistry(), "127.0.0.1", 0, lambda: True)
    hung = serve_http(CollectorRegistry(), "127.0.0.1", 0, lambda: True, alive=lambda: False)
    try:
        for slot, server in zip(sup.slots, (healthy, hung), strict=True):
            slot.process, slot.port, slot.loaded = _Running(), server[0].server_address[1], True
            slot.readings = sup.context.Value("d", 0.0, lock=False)
        now = time.monotonic()
        sup.watch(now)
        assert sup.slots[1].unhealthy_since == now and sup.alive()  # one failed probe: not yet
        sup.watch(now + HEALTH_PROBE_S / 2)
        assert not sup.slots[1].process.killed  # (not asked again before HEALTH_PROBE_S)
        sup._watched = now
        sup.slots[1].unhealthy_since = time.monotonic() - HUNG_RESTART_S
        assert not sup.alive()  # failing for HUNG_RESTART_S: the parent's /healthz says so
        sup.watch(now + HUNG_RESTART_S + HEALTH_PROBE_S)
        assert sup.slots[1].process.killed and not sup.slots[0].process.killed
        sup.stopping = True  # (found dead at the next round, not respawned here)
        sup.watch(now + HUNG_RESTART_S + 2 * HEALTH_PROBE_S)
        assert sup.slots[1].generation == 1 and sup.slots[1].unhealthy_since is None and sup.alive()
    finally:
        shutdown_http(*healthy)
        shutdown_http(*hung)


class _Stopping:
    """A worker process stand-in for a stop: at SIGTERM it exits with ``code``, or (None) hangs
    until killed (-9)."""

    pid = 4242

    def __init__(self, code: int | None) -> None:
        self.code, self.exitcode = code, None

    def is_alive(self) -> bool:
        return self.exitcode is None

    def terminate(self) -> None:
        self.exitcode = self.code

    def join(self, timeout: float | None = None) -> None:
        pass

    def kill(self) -> None:
        self.exitcode = -9


def test_a_worker_killed_at_stop_or_whose_final_save_failed_is_unsaved_at_stop(tmp_path, monkeypatch):
    """Found by review: a worker still running at ``STOP_TIMEOUT_S`` is killed before its final save,
    and serve looked only for a worker's ``EXIT_UNSAVED``: on its -9 serve exited 0, where the single
    daemon exits ``EXIT_UNSAVED``. The supervisor says ``unsaved_at_stop`` as the daemon does."""
    from sensorguard.service import workers
    from sensorguard.service.state_writes import EXIT_UNSAVED

    monkeypatch.setattr(workers, "STOP_TIMEOUT_S", 0.0)

    def unsaved(codes: tuple[int | None, int | None], state_dir: bool = True, dead: int | None = None,
                loaded: bool = True, said_loaded: bool = False) -> bool:
        s = _settings(tmp_path, partition=["a/#", "b/#"], workers=2, state_dir=str(tmp_path) if state_dir else None)
        sup = workers.Supervisor(s, worker_settings(s, 2), [(), ()])
        for slot, code in zip(sup.slots, codes, strict=True):
            slot.process = _Stopping(code)
        for slot in sup.slots:
            slot.loaded = loaded
        if dead is not None:  # died before the stop, its restart not due yet
            sup.slots[1].process.exitcode = dead
        if said_loaded:  # it said "loaded" and died before the watch read it (a review)
            import multiprocessing

            sup.slots[1].pipe, sent = multiprocessing.Pipe(duplex=False)
            sent.send("loaded")
        sup.stop()
        return sup.unsaved_at_stop

    assert not unsaved((0, 0))
    assert unsaved((0, EXIT_UNSAVED))  # its own final save failed
    assert unsaved((None, 0))  # hung: killed, its final save never made
    assert not unsaved((None, 0), state_dir=False)  # nothing to save
    # a walk: kill -9 of a worker, then SIGTERM of serve in the second before its restart: exit 0
    assert unsaved((0, 0), dead=-9)
    assert not unsaved((0, 0), dead=-9, state_dir=False)
    assert not unsaved((0, 0), dead=1, loaded=False)  # died loading its model: no state touched (a review)
    assert unsaved((0, 0), dead=-9, loaded=False, said_loaded=True)


def test_the_parent_reaches_its_workers_past_an_http_proxy():
    """Found by review: the loopback scrapes used urllib's default opener, which honours
    http_proxy (no_proxy=localhost does not cover 127.0.0.1): behind a proxy every worker looked
    dead, /readyz stayed 503 and every merged gauge was missing. The proxy is in the environment
    before Python starts, as a unit's is: an opener reads it when built, at import (set later, the
    default opener passed too: a test audit)."""
    script = (
        "from prometheus_client import CollectorRegistry\n"
        "from sensorguard.service.metrics_http import serve_http, shutdown_http\n"
        "from sensorguard.service.worker_http import fetch\n"
        "server = serve_http(CollectorRegistry(), '127.0.0.1', 0, lambda: True)\n"
        "try:\n"
        "    print(repr(fetch(server[0].server_address[1], '/readyz')))\n"
        "finally:\n"
        "    shutdown_http(*server)\n")
    proxied = clean_env(http_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",  # nothing listens there
                        no_proxy="", NO_PROXY="")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=proxied)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() not in ("", "None"), out.stdout


def test_a_reload_asked_while_a_worker_loads_reaches_it_once_loaded(tmp_path, monkeypatch):
    """Found by review: SIGHUP skipped a worker still loading (it would die of it) and forgot it;
    with a bundle folder, which reloads only on SIGHUP, that worker kept the old model."""
    import os

    from sensorguard.service.workers import Supervisor

    settings = _settings(tmp_path, partition=["a/#"], workers=1)
    sup = Supervisor(settings, worker_settings(settings, 1), [()])
    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    receive, send = sup.context.Pipe(duplex=False)
    slot = sup.slots[0]
    slot.process, slot.pipe = _Running(), receive
    sup.request_reload()  # still loading (asked on the signal relay's thread: the main loop passes it on)
    assert sent == [] and not slot.reload_pending
    sup.watch(time.monotonic())
    assert sent == [] and slot.reload_pending
    send.send("loaded")
    sup.watch(time.monotonic())
    assert sent == [(4242, signal.SIGHUP)] and not slot.reload_pending


def test_a_sighup_to_a_worker_that_just_ended_is_no_error():
    """Found by review: a worker that ended between the parent's is_alive() and its SIGHUP made
    os.kill raise ProcessLookupError, which ended the parent's watch loop."""
    import subprocess
    from types import SimpleNamespace

    from sensorguard.service.workers import hang_up

    ended = subprocess.Popen(["true"])
    ended.wait()  # reaped: its pid names no process now
    assert hang_up(SimpleNamespace(pid=ended.pid, is_alive=lambda: True)) is False
    assert hang_up(SimpleNamespace(pid=ended.pid, is_alive=lambda: False)) is False


def test_a_restarted_worker_serves_the_fleets_model_when_current_cannot_be_swapped_in(tmp_path, tiny_bundle,
                                                                                      caplog):
    """Found by review: the running workers refuse a CURRENT with other channels (a restart of the
    service takes it), but a worker restarted after a crash loaded it: one partition was served
    by another model. A restarted worker now serves the version the others announce, unless
    CURRENT can be swapped in."""
    from dataclasses import replace

    from prometheus_client import CollectorRegistry, Gauge

    from sensorguard.service.metrics_http import serve_http, shutdown_http
    from sensorguard.service.registry import publish
    from sensorguard.service.restart_model import worker_model
    from sensorguard.service.workers import Supervisor

    root = tmp_path / "registry"
    publish(tiny_bundle, root, "pump")  # v0001, served by the running workers
    publish(replace(tiny_bundle, channels=("a", "b", "d")), root, "pump")  # v0002: CURRENT, other channels
    settings = _settings(tmp_path, registry=str(root), name="pump", partition=["a/#", "b/#"], workers=2)
    served, _ = worker_model(settings, "v0001")
    assert served.version == "v0001" and served.channels == ("a", "b", "c")
    assert "model pump CURRENT not served: channels" in caplog.text
    assert worker_model(settings, None)[0].version == "v0002"  # the first start: CURRENT
    publish(tiny_bundle.with_threshold(0.7, {}), root, "pump")  # v0003: the others can swap it in
    assert worker_model(settings, "v0001")[0].version == "v0003"
    (root / "pump" / "v0003" / "bundle.json").write_text("{ broken")  # CURRENT does not load: theirs, not a
    assert worker_model(settings, "v0001")[0].version == "v0001"  # crash at every restart
    assert "it does not load" in caplog.text
    (root / "pump" / "v0001" / "bundle.json").write_text("{ broken too")
    from sensorguard.service.bundle import BundleError

    with pytest.raises(BundleError, match="v0003"):  # neither loads: CURRENT's own error is raised
        worker_model(settings, "v0001")

    sup = Supervisor(settings, worker_settings(settings, 2), [(), ()])
    registry = CollectorRegistry()
    Gauge("sensorguard_model_info", "The loaded model.", ["name", "version"], registry=registry).labels(
        "pump", "v0001").set(1)
    page = serve_http(registry, "127.0.0.1", 0, lambda: True)
    try:
        sup.slots[0].port = page[0].server_address[1]
        assert sup.fleet_version(sup.slots[1]) == "v0001"
        assert sup.fleet_version(sup.slots[0]) is None  # (its own page is not asked)
    finally:
        shutdown_http(*page)


def test_a_restarted_worker_serves_its_siblings_copy_when_the_files_moved_or_broke(tiny_bundle, tmp_path, caplog):
    """A walk under --workers 2: with ``--model DIR``, a restarted worker crash-looped with a
    traceback once DIR was moved away (its partitions unscored), or served the 5-channel bundle put
    in DIR meanwhile beside a sibling serving the 4-channel one (false missing-channel faults);
    with a registry, a hand edit that broke the served version's bundle.json crash-looped it too.
    Each worker keeps a copy of what it serves; a restarted one serves its siblings' copy."""
    from dataclasses import replace

    from sensorguard.service.bundle import BundleError, save_bundle
    from sensorguard.service.hotswap import load_model
    from sensorguard.service.registry import publish
    from sensorguard.service.restart_model import keep_served, worker_model

    copies, folder = tmp_path / "copies", tmp_path / "mdir"
    save_bundle(tiny_bundle, folder)
    settings = _settings(tmp_path, model=str(folder), partition=["a/#", "b/#"], workers=2)
    served, copied = worker_model(settings, None, str(copies))
    assert not copied and served.version.startswith("local-")
    keep_served(str(copies), 1, served)  # the sibling still running keeps its copy
    folder.rename(tmp_path / "away")
    with pytest.raises(BundleError):  # nothing to fall back on
        worker_model(settings, served.version, None)
    again, copied = worker_model(settings, served.version, str(copies))
    assert copied and (again.version, again.name, again.channels) == (served.version, served.name, served.channels)
    save_bundle(replace(tiny_bundle, channels=("a", "b", "c", "d")), folder)  # another model put in DIR
    again, copied = worker_model(settings, served.version, str(copies))
    assert copied and again.channels == ("a", "b", "c") and "serving " + served.version in caplog.text
    # a registry: the served version's own bundle.json broken by hand (CURRENT and theirs alike)
    root = tmp_path / "registry"
    publish(tiny_bundle, root, "pump")
    settings = _settings(tmp_path, registry=str(root), name="pump", partition=["a/#", "b/#"], workers=2)
    keep_served(str(copies), 1, load_model(settings))
    (root / "pump" / "v0001" / "bundle.json").write_text("{ broken")
    again, copied = worker_model(settings, "v0001", str(copies))
    assert (again.version, again.name, copied) == ("v0001", "pump", False)  # (its registry files are v0001's)


def test_keeping_a_copy_never_stops_a_worker(tiny_bundle, tmp_path, monkeypatch, caplog):
    """A review: torch.save says RuntimeError for a full disk, which the copy let through: every
    worker died at its start, and again at each restart. Serving goes on; the line says why."""
    from sensorguard.service import restart_model

    def full(*args):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(restart_model, "save_bundle", full)
    restart_model.keep_served(str(tmp_path), 0, tiny_bundle)
    assert "keeping a copy of the served model" in caplog.text and "unexpected pos" in caplog.text


def test_a_worker_serving_its_siblings_copy_loads_its_folder_at_a_reload(tiny_bundle, tmp_path):
    """Serving the copy, the restarted worker must not take the folder's unchanged files as served:
    a SIGHUP swaps every worker to them."""
    from sensorguard.service.bundle import save_bundle
    from tests.test_daemon import make

    folder = tmp_path / "mdir"
    save_bundle(tiny_bundle.with_threshold(0.7, {}), folder)
    daemon, _ = make(tiny_bundle, model=str(folder))
    assert daemon.models.check(force=True) is None  # (a daemon that loaded the folder: unchanged, served)
    daemon.models.serving_a_copy()
    assert daemon.models.check(force=True) is True and daemon.models.bundle.threshold_ == 0.7
    # a copy of the folder's very files (the sibling loaded them: its version is their digest) is no
    # reason to swap: a restarted worker swapped v -> v at every SIGHUP (a review)
    from sensorguard.service.hotswap import load_model

    twin, _ = make(load_model(daemon.settings), model=str(folder))
    twin.models.serving_a_copy()
    assert twin.models.check(force=True) is None and not twin.models.swaps
    save_bundle(tiny_bundle.with_threshold(0.8, {}), folder)  # the folder changed: swapped
    assert twin.models.check(force=True) is True and twin.models.bundle.threshold_ == 0.8


def test_each_reload_asked_reaches_the_runner_also_one_asked_before_it_ran():
    """signals.pass_on, which serve uses to hand the command's SIGHUP requests to the runner (serve
    installs no second handler: one left a gap in which a reload was lost; found by review): a
    request set before it runs, and each later one, reaches the runner."""
    from sensorguard.service.signals import pass_on

    asked, calls, called = threading.Event(), [], threading.Event()
    asked.set()  # a SIGHUP while the model loaded
    threading.Thread(target=pass_on, args=(asked, lambda: (calls.append(1), called.set())), daemon=True).start()
    assert called.wait(10) and not asked.is_set()
    called.clear()
    asked.set()
    assert called.wait(10) and len(calls) == 2


def test_the_parents_not_ready_names_each_worker_and_its_own_reasons(tmp_path):
    """The parent's /readyz 503 said only "not ready": which worker, and why, took a scrape of each."""
    from prometheus_client import CollectorRegistry

    from sensorguard.service.metrics_http import serve_http, shutdown_http
    from sensorguard.service.workers import Supervisor

    settings = _settings(tmp_path, partition=["a/#", "b/#", "c/#"], workers=3)
    sup = Supervisor(settings, worker_settings(settings, 3), [(), (), ()])
    ready = serve_http(CollectorRegistry(), "127.0.0.1", 0, lambda: True)
    down = serve_http(CollectorRegistry(), "127.0.0.1", 0, lambda: False,
                      why_not=lambda: ["not connected to the broker mqtt://b:1883"])
    try:
        sup.slots[0].port, sup.slots[1].port = ready[0].server_address[1], down[0].server_address[1]
        assert sup.not_ready() == ["worker w1: not connected to the broker mqtt://b:1883",
                                   "worker w2: not started, or restarting"]
        assert not sup.ready()
        sup.slots[2].port = ready[0].server_address[1]
        assert sup.not_ready() == ["worker w1: not connected to the broker mqtt://b:1883"]
    finally:
        shutdown_http(*ready)
        shutdown_http(*down)
    assert sup.not_ready()[0] == "worker w0: its endpoint does not answer"


def test_a_workers_log_lines_say_which_worker_wrote_them():
    """Two workers printed identical lines ("stopped" twice) and nothing told them apart (a walk)."""
    import io
    import json
    import logging

    from sensorguard.service.logs import configure_logging

    for json_lines in (False, True):
        out = io.StringIO()
        configure_logging(json_lines, "INFO", stream=out, who="plant-w1")
        logging.getLogger("sensorguard.test").info("stopped")
        line = out.getvalue().strip()
        said = json.loads(line)["worker"] == "plant-w1" if json_lines else " [plant-w1] sensorguard.test: " in line
        assert said, line
    configure_logging(False, "INFO")


def test_the_model_copies_of_a_parent_killed_without_stopping_are_removed_at_the_next_start(tmp_path):
    """A walk: ``kill -9`` of a ``serve --workers`` parent left its ``sensorguard-served-*`` folder (a
    copy of the served model) behind, at every such death. Each parent holds a lock in its folder; a
    start removes the folders whose lock is free, whatever their pid (a review: a container's PID 1
    restarts as PID 1), and keeps a running parent's and an older version's (no lock file)."""
    import fcntl

    from sensorguard.service.restart_model import OWNER, make_copies_dir

    dead = tmp_path / "sensorguard-served-4242-abcd"
    (dead / "w0").mkdir(parents=True)
    (dead / OWNER).touch()  # its parent's lock went with it
    running = tmp_path / f"sensorguard-served-{os.getpid()}-efgh"  # the same pid, another namespace's
    running.mkdir()
    (running / OWNER).touch()
    held = os.open(running / OWNER, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    older = tmp_path / "sensorguard-served-q1w2e3"
    older.mkdir()
    try:
        made, owner = make_copies_dir(str(tmp_path))
    finally:
        os.close(held)
    assert Path(made).name.startswith(f"sensorguard-served-{os.getpid()}-") and (Path(made) / OWNER).exists()
    assert not dead.exists() and running.is_dir() and older.is_dir()
    again, second = make_copies_dir(str(tmp_path))  # a second parent: the first's folder is locked, kept
    assert Path(made).is_dir() and not running.exists()  # (its lock was let go above)
    os.close(owner)
    os.close(second)
    _, third = make_copies_dir(str(tmp_path))
    os.close(third)
    assert not Path(made).exists() and not Path(again).exists()


def test_what_a_worker_counted_before_it_died_is_kept_though_no_scrape_came_between(tmp_path):
    """A walk: the parent read its workers' metrics only when scraped, so a worker killed before the
    next scrape lost what it had counted since the last one (an alert's ``alerts_total``, a silent
    asset's ``sensor_faults_total``: the shipped rules' inputs). The parent reads them every
    ``COLLECT_S`` in its loop; a death loses at most that much."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from sensorguard.service.workers import COLLECT_S, Supervisor

    page = PAGE.format(readings=10, connected=1, asset="a") + (
        "# HELP sensorguard_alerts_total Alerts raised.\n# TYPE sensorguard_alerts_total counter\n"
        'sensorguard_alerts_total{asset="a"} 1\n')

    class Worker(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = (page if self.path == "/metrics" else "ok\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Worker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s = _settings(tmp_path, partition=["a/#"])
    sup = Supervisor(s, worker_settings(s, 1), [()])

    class Process:
        pid, exitcode, alive = 4242, None, True

        def is_alive(self) -> bool:
            return self.alive

    slot = sup.slots[0]
    slot.readings, slot.process, slot.port, slot.started = sup.context.Value("d", 0.0, lock=False), Process(), \
        server.server_address[1], time.monotonic()
    now = time.monotonic()
    sup.watch(now)  # the worker's loop reads the page: no scrape
    server.shutdown()
    server.server_close()
    slot.process.alive, slot.process.exitcode = False, -9  # killed
    sup.stopping = True  # found dead, not respawned here
    sup.watch(now + COLLECT_S)
    assert _values(sup.collect())[("sensorguard_alerts_total", (("asset", "a"),))] == 1


def test_the_stop_line_counts_the_workers_that_were_running(tmp_path, caplog):
    """A walk: "stopped 2 workers" was logged with one of the two dead (restarting) at the stop."""
    import logging

    from sensorguard.service.workers import Supervisor

    class Stopping(_Running):
        def terminate(self) -> None:
            self.killed = True
            self.exitcode = 0

        def join(self, timeout=None) -> None:
            pass

    s = _settings(tmp_path, partition=["a/#", "b/#"])
    sup = Supervisor(s, worker_settings(s, 2), [(), ()])
    dead = Stopping()
    dead.killed, dead.exitcode = True, -9
    sup.slots[0].process, sup.slots[1].process = Stopping(), dead
    with caplog.at_level(logging.INFO, logger="sensorguard"):
        sup.stop()
    assert "stopped 1 of 2 workers" in caplog.text, caplog.text


def test_the_parent_logs_the_summed_metrics_endpoint_to_scrape(tmp_path, caplog, monkeypatch):
    """A docs walk: only the workers' own loopback ports were logged ("metrics on
    http://127.0.0.1:41055/metrics"), which an operator took for the endpoint to scrape."""
    import logging

    from sensorguard.service.workers import Supervisor

    s = _settings(tmp_path, partition=["a/#", "b/#"], metrics_port=0)
    sup = Supervisor(s, worker_settings(s, 2), [(), ()])
    monkeypatch.setattr(sup, "_spawn", lambda slot: None)  # (no worker process: the parent's side alone)
    try:
        with caplog.at_level(logging.INFO, logger="sensorguard"):
            sup.start()
        host, port = sup._http[0].server_address[:2]
        assert f"metrics of the 2 workers, summed, on http://{host}:{port}/metrics (scrape this one" in caplog.text
    finally:
        sup.stop()


def test_an_alerts_series_carried_by_two_slots_goes_from_both_at_once():
    """Two slots carry one asset's alert counter, the second from a scrape later (its worker showed
    the series until it died). Retired per slot, the first one's carry went a scrape before the
    second's: the summed counter fell from 5 to 3 for that scrape, which Prometheus reads as a counter
    reset (increase() counted 3 new alerts), before the series went."""
    from sensorguard.service.metrics import RETIRED_LABEL_S

    page = "# HELP sensorguard_alerts_total Alerts.\n# TYPE sensorguard_alerts_total counter\n{rows}"
    key = ("sensorguard_alerts", "sensorguard_alerts_total", (("asset", "x"),))
    series = ("sensorguard_alerts_total", (("asset", "x"),))
    slots, meta = [WorkerCounters(), WorkerCounters()], {}
    slots[0].last = {key: 2.0}
    slots[0].restarted()  # worker 0 died: it carries x's 2, worker 1 still shows x
    start = time.monotonic()
    shown = [parse(page.format(rows="")), parse(page.format(rows='sensorguard_alerts_total{asset="x"} 3\n'))]
    assert _values(merge(shown, slots, meta, now=start))[series] == 5
    slots[1].restarted()  # worker 1 died too, a scrape later: x is shown by no worker from now on
    empty = [parse(page.format(rows="")), parse(page.format(rows=""))]
    seen = [_values(merge(empty, slots, meta, now=start + 15.0 * n)).get(series)
            for n in range(1, int(RETIRED_LABEL_S / 15.0) + 3)]
    assert set(seen) == {5.0, None} and seen[-1] is None, sorted(set(seen), key=str)  # never 3

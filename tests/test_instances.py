"""Daemons side by side: instance statuses, partitions, and the refusal of overlapping ones."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sensorguard.service.config import load_settings
from sensorguard.service.instances import (
    check_instances,
    conflicts,
    filter_problems,
    filters_overlap,
    gone_here,
    read_statuses,
    running_here,
    served_meanwhile,
    stale_filters,
    status_payload,
)
from tests.conftest import epoch, plant_frame
from tests.mosquitto import Collector, Publisher, free_port, metric, start_daemon, wait_for

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ["c0", "c1", "c2"]


@pytest.mark.parametrize("a, b, overlap", [
    ("#", "site-a/pump-1/readings", True),
    ("site-a/#", "site-b/#", False),
    ("site-a/#", "+/pump-7/readings", True),
    ("+/pump-7/readings", "+/pump-8/readings", False),
    ("site-a/+/readings", "site-a/line-1/+/readings", False),  # different depths, no '#'
    ("site-a/#", "site-a", True),  # '#' also matches its parent level
    ("site-a/+", "site-a", False),
    ("a/b/c", "a/b/c", True),
])
def test_filters_overlap_when_some_topic_matches_both(a, b, overlap):
    assert filters_overlap(a, b) is overlap and filters_overlap(b, a) is overlap


def test_conflicts_name_the_other_instance_and_skip_offline_ones_and_itself():
    others = {
        "site-a": {"state": "online", "partitions": ["site-a/#"], "topic_prefix": "sensors"},
        "old": {"state": "offline", "partitions": ["#"], "topic_prefix": "sensors"},
        "me": {"state": "online", "partitions": ["#"], "topic_prefix": "sensors"},  # my previous run's status
        "plant-b": {"state": "online", "partitions": ["x/#"], "topic_prefix": "plant-b"},
    }
    found = conflicts("me", ("site-a/pump-1/#", "site-c/#"), "sensors", others, client_id="sg-me")
    assert len(found) == 2
    assert "partition 'site-a/pump-1/#' overlaps 'site-a/#' of the running instance 'site-a'" in found
    assert any("'plant-b' reads topic prefix 'plant-b'" in f and "output_prefix" in f for f in found)
    assert conflicts("me", ("site-c/#",), "sensors", {k: others[k] for k in ("site-a", "old")}) == []
    assert filter_problems(("a/#", "b/+/readings")) == []
    # an asset named alone, or a level of assets with '+', subscribed topics no reading is sent on (a walk)
    assert filter_problems(("pump-77",)) == ["'pump-77' matches no readings topic (<asset>/readings under "
                                             "topic_prefix): end it with '/#' (pump-77/#: that asset and those under "
                                             "it) or '/readings'"]
    assert len(filter_problems(("site/+", "pump-77/readings"))) == 1
    mine = {"me": {"state": "online", "client_id": "sg-me", "partitions": ["#"], "topic_prefix": "sensors"}}
    assert conflicts("me", ("#",), "sensors", mine, client_id="sg-me") == []  # my own earlier run
    assert "already online (client id 'sg-me')" in conflicts("me", ("#",), "sensors", mine, client_id="sg-other")[0]


def test_a_status_is_running_here_only_for_another_live_process_of_this_host():
    """The same client id online from a live process on this host is a second daemon; a dead pid,
    this very pid (a container's restarted pid 1) or another host is not (the broker may not have
    noticed the old run die yet)."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        here = socket.gethostname()
        assert running_here({"host": here, "pid": sleeper.pid}) == sleeper.pid
        assert running_here({"host": "elsewhere", "pid": sleeper.pid}) is None
        assert running_here({"host": here, "pid": os.getpid()}) is None
        assert running_here({"host": here, "pid": sleeper.pid}, pid=sleeper.pid) is None
        assert running_here({"host": here}) is None and running_here({"host": here, "pid": "7"}) is None
        mine = {"me": {"state": "online", "client_id": "sg-me", "partitions": ["#"], "topic_prefix": "sensors",
                       "host": here, "pid": sleeper.pid}}
        found = conflicts("me", ("#",), "sensors", mine, client_id="sg-me")
        assert len(found) == 1 and f"already running on this host (pid {sleeper.pid})" in found[0]
        assert "--client-id" in found[0]
        # the same client id under another instance name (one config file, two --instance values)
        found = conflicts("you", ("other/#",), "sensors", mine, client_id="sg-me")
        assert len(found) == 1 and "client id 'sg-me' (instance 'me') is already running" in found[0]
        assert all("overlaps" in f for f in conflicts("you", ("other/#",), "sensors", mine, client_id="sg-you"))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert running_here({"host": here, "pid": sleeper.pid}) is None  # dead: an earlier run's status
    assert conflicts("me", ("#",), "sensors", mine, client_id="sg-me") == []
    # its offline lost as it stopped: a restart under its name with another client id was refused for
    # good (a walk); a live process's status still counts, and another name still overlaps it (a
    # hostname is not unique enough: a review)
    assert gone_here(mine["me"]) and conflicts("me", ("#",), "sensors", mine, client_id="sg-new") == []
    assert "overlaps" in conflicts("you", ("#",), "sensors", mine, client_id="sg-you")[0]
    assert not gone_here({**mine["me"], "pid": os.getpid()}) and not gone_here({**mine["me"], "host": "elsewhere"})


def test_a_daemon_outside_the_cluster_is_refused_beside_its_workers_and_the_other_way_round():
    """Cluster workers list no partitions (theirs move), so a plain daemon on the same topic prefix
    started beside them, saw no overlap, and scored every asset a second time (a walk)."""
    worker = {"sg-1-w0": {"state": "online", "client_id": "sg-1-w0", "partitions": [], "topic_prefix": "sensors",
                          "cluster": True}}
    found = conflicts("plain", ("#",), "sensors", worker, client_id="plain")
    assert len(found) == 1 and "serves topic prefix 'sensors' in cluster mode" in found[0]
    assert "--cluster" in found[0]
    assert conflicts("sg-2-w0", (), "sensors", worker, client_id="sg-2-w0", cluster=True) == []  # another worker
    plain = {"plain": {"state": "online", "client_id": "plain", "partitions": ["#"], "topic_prefix": "sensors"}}
    found = conflicts("sg-2-w0", (), "sensors", plain, client_id="sg-2-w0", cluster=True)
    assert len(found) == 1 and "outside cluster mode" in found[0]
    assert conflicts("plain", ("#",), "other", worker, client_id="plain") != []  # (another prefix: its own message)
    older = {"sg-1-w0": {**worker["sg-1-w0"]}}
    del older["sg-1-w0"]["cluster"]  # a worker of a version before the field: no partitions listed
    assert conflicts("sg-2-w0", (), "sensors", older, client_id="sg-2-w0", cluster=True) == []  # an upgrade
    assert "in cluster mode" in conflicts("plain", ("#",), "sensors", older, client_id="plain")[0]
    assert json.loads(status_payload("w", "c", (), "sensors", True, cluster=True))["cluster"] is True


def test_an_instance_back_after_another_served_its_partitions_is_warned_of_its_sessions_backlog():
    """A walk: a daemon back under its old client id after another instance had served its topics
    judged its session's backlog again (4 alerts raised again, an answered one's ack and maintenance
    gone from the operator's view). Its start now warns, naming the instances and how to start
    without the backlog; one that stopped before this instance did, one of other topics or another
    prefix, one online (refused as a conflict instead) and a status without ``since`` are not said."""
    def status(state: str, client: str, parts: list[str], since: float | None, prefix: str = "sensors") -> dict:
        return {"state": state, "client_id": client, "partitions": parts, "topic_prefix": prefix,
                **({} if since is None else {"since": since})}

    statuses = {"sg-dw": status("offline", "sg-dw", ["#"], 100.0),
                "plant-w0": status("offline", "plant-w0", ["site-a/#"], 150.0),
                "plant-w1": status("offline", "plant-w1", ["site-b/#"], 90.0),  # stopped before it
                "lab": status("offline", "lab", ["lab/#"], 150.0, prefix="lab"),  # another prefix
                "old": status("offline", "old", ["#"], None),  # a version before since
                "live": status("online", "live", ["site-c/#"], 160.0)}
    found = served_meanwhile("sg-dw", "sg-dw", ("#",), "sensors", statuses)
    assert len(found) == 1 and found[0].startswith("instance 'plant-w0' served 'site-a/#' after this instance last "
                                                   "stopped") and "mosquitto_sub -i sg-dw -t x -E" in found[0]
    assert served_meanwhile("sg-dw", "sg-dw", ("site-b/#",), "sensors", statuses) == []  # (not theirs)
    assert served_meanwhile("sg-dw", "another-id", ("#",), "sensors", statuses) == []  # a new session: no backlog
    assert served_meanwhile("new", "new", ("#",), "sensors", statuses) == []  # never ran: no backlog
    written = json.loads(status_payload("w", "c", ("#",), "sensors", False))["since"]
    assert isinstance(written, float) and abs(written - time.time()) < 60


def test_a_partition_this_session_did_not_serve_before_has_no_backlog_to_warn_of():
    """``serve --workers`` going from 2 workers to 3 deals the partitions out again: w0 served a, c
    and now serves a, d. w1 (b, d) stopped a few ms after w0 at the same shutdown, so its status is
    newer; but w0's session never subscribed to d, so it holds no backlog of it: nothing is judged
    again, and the warning (at every such restart) was false. Only a partition this session served
    before, and serves now, is said."""
    statuses = {"sg-w0": {"state": "offline", "client_id": "sg-w0", "partitions": ["a/#", "c/#"],
                          "topic_prefix": "sensors", "since": 100.000},
                "sg-w1": {"state": "offline", "client_id": "sg-w1", "partitions": ["b/#", "d/#"],
                          "topic_prefix": "sensors", "since": 100.004}}
    assert served_meanwhile("sg-w0", "sg-w0", ("a/#", "d/#"), "sensors", statuses) == []
    # w1 served c after w0 stopped (c is w0's again now, and its session kept c's readings): said
    statuses["sg-w1"]["partitions"] = ["b/#", "c/#"]
    found = served_meanwhile("sg-w0", "sg-w0", ("a/#", "c/#"), "sensors", statuses)
    assert len(found) == 1 and "'c/#'" in found[0]


def test_stale_filters_are_what_this_sessions_earlier_run_served_and_this_one_does_not():
    statuses = {"old-name": {"client_id": "sg-1", "partitions": ["#"], "topic_prefix": "sensors"},
                "other": {"client_id": "sg-2", "partitions": ["site-b/#"], "topic_prefix": "sensors"}}
    assert stale_filters("sg-1", ("sensors/site-a/#",), statuses) == ("sensors/#",)
    assert stale_filters("sg-1", ("sensors/#",), statuses) == ()
    assert stale_filters("sg-3", ("sensors/site-a/#",), statuses) == ()  # another session: not ours to drop


@pytest.mark.integration
def test_two_instances_serve_their_partitions_and_a_third_that_overlaps_is_refused(mosquitto, trained, trained_dir):
    bundle = trained[0]
    base = {"model": str(trained_dir), "broker": mosquitto.url, "metrics_port": 0}
    suffix = free_port()
    a, url_a = start_daemon({**base, "client_id": f"sg-a-{suffix}", "instance": f"site-a-{suffix}",
                             "partition": ["site-a/#"]})
    b, url_b = start_daemon({**base, "client_id": f"sg-b-{suffix}", "instance": f"site-b-{suffix}",
                             "partition": ["site-b/#"]})
    try:
        watch = Collector(mosquitto, "sensorguard/status/#")
        statuses = wait_for(lambda: {t.rpartition("/")[2]: p for t, p, _ in watch.messages
                                     if isinstance(p, dict)} if len(watch.messages) >= 2 else None, 10, "statuses")
        assert statuses[f"site-a-{suffix}"] == {"state": "online", "instance": f"site-a-{suffix}",
                                                 "client_id": f"sg-a-{suffix}",
                                                 "partitions": ["site-a/#"], "topic_prefix": "sensors",
                                                 "cluster": False, "version": statuses[f"site-a-{suffix}"]["version"],
                                                 "host": socket.gethostname(), "pid": os.getpid(),
                                                 "since": statuses[f"site-a-{suffix}"]["since"]}
        assert abs(statuses[f"site-a-{suffix}"]["since"] - time.time()) < 60
        assert statuses[f"site-b-{suffix}"]["partitions"] == ["site-b/#"]
        assert metric(url_a, "sensorguard_partition_info", daemon=f"site-a-{suffix}", partition="site-a/#") == 1

        frame = plant_frame(rows=60, channels=3, seed=3)
        pub = Publisher(mosquitto)
        pub.samples("site-a/pump-1", epoch(frame), frame[CHANNELS].to_numpy(), CHANNELS)
        pub.samples("site-b/pump-1", epoch(frame)[:40], frame[CHANNELS].to_numpy()[:40], CHANNELS)
        pub.close()
        wait_for(lambda: metric(url_a, "sensorguard_readings_total") == 60
                 and metric(url_b, "sensorguard_readings_total") == 40, 15, "each instance its own readings")
        assert a.buffers.assets() == ["site-a/pump-1"] and b.buffers.assets() == ["site-b/pump-1"]

        overlapping = load_settings({**base, "client_id": f"sg-c-{suffix}", "partition": ["+/pump-1/readings"]}, {})
        found = check_instances(overlapping).conflicts
        assert len(found) == 2 and all("overlaps" in f for f in found)
        other_prefix = load_settings({**base, "client_id": f"sg-d-{suffix}", "topic_prefix": "plant-b",
                                      "partition": ["site-z/#"]}, {})
        assert all("topic prefix 'sensors'" in f for f in check_instances(other_prefix).conflicts)
        free = load_settings({**base, "client_id": f"sg-e-{suffix}", "partition": ["site-c/#"]}, {})
        assert check_instances(free).conflicts == []

        out = subprocess.run(
            [sys.executable, "-m", "sensorguard", "serve", "--model", str(trained_dir), "--broker", mosquitto.url,
             "--metrics-port", "0", "--client-id", f"sg-f-{suffix}", "--partition", "site-a/pump-1/#"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert f"overlaps 'site-a/#' of the running instance 'site-a-{suffix}'" in out.stderr
        # the same settings again (this test's process is daemon a): the two would take the session
        # from each other every second, each log saying only "disconnected (Unspecified error)"
        out = subprocess.run(
            [sys.executable, "-m", "sensorguard", "serve", "--model", str(trained_dir), "--broker", mosquitto.url,
             "--metrics-port", "0", "--client-id", f"sg-a-{suffix}", "--instance", f"site-a-{suffix}",
             "--partition", "site-a/#"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert f"already running on this host (pid {os.getpid()})" in out.stderr

        a.stop()  # its status goes offline: its partition is free again
        wait_for(lambda: watch.statuses()[-1:] == ["offline"], 10, "site-a offline")
        taken = load_settings({**base, "client_id": f"sg-g-{suffix}", "partition": ["site-a/#"]}, {})
        assert check_instances(taken).conflicts == []
        watch.close()
        assert bundle.channels == tuple(CHANNELS)
    finally:
        a.stop()
        b.stop()


@pytest.mark.integration
def test_a_restart_with_fewer_partitions_drops_the_old_subscription_from_its_session(mosquitto, trained_dir):
    """The persistent session keeps what an earlier run subscribed to: a daemon restarted on
    `site-a/#` after serving `#` would still get (and score) every other site's readings."""
    from sensorguard.service.daemon import Daemon
    from sensorguard.service.hotswap import load_model

    suffix = free_port()
    base = {"model": str(trained_dir), "broker": mosquitto.url, "metrics_port": 0, "client_id": f"sg-r-{suffix}"}
    first, _ = start_daemon(base)
    first.stop()  # a clean stop: the session and its `sensors/#` subscription stay at the broker
    settings = load_settings({**base, "partition": ["site-a/#"]}, {})
    check = check_instances(settings)
    assert check.conflicts == [] and check.stale_filters == ("sensors/#",)
    assert served_meanwhile(settings.instance_name, settings.client_id, ("site-a/#",), "sensors",
                            read_statuses(settings)) == []
    # another instance serves site-a while it is away: its backlog there is judged again, said at its start
    time.sleep(0.01)  # (the statuses' since is to the millisecond)
    other, _ = start_daemon({**base, "client_id": f"sg-o-{suffix}", "partition": ["site-a/#"]})
    other.stop()
    meanwhile = served_meanwhile(settings.instance_name, settings.client_id, ("site-a/#",), "sensors",
                                 read_statuses(settings))
    assert len(meanwhile) == 1 and meanwhile[0].startswith(f"instance 'sg-o-{suffix}' served 'site-a/#'")
    second = Daemon(settings, load_model(settings))
    second.connection.unsubscribe = check.stale_filters  # as serve() does
    second.start()
    try:
        host, port = second.metrics_address
        url = f"http://{host}:{port}"
        wait_for(lambda: second.ready(), 15, "connected")
        frame = plant_frame(rows=30, channels=3, seed=4)
        pub = Publisher(mosquitto)
        pub.samples("site-b/pump-1", epoch(frame), frame[CHANNELS].to_numpy(), CHANNELS)
        pub.samples("site-a/pump-1", epoch(frame), frame[CHANNELS].to_numpy(), CHANNELS)
        pub.close()
        wait_for(lambda: metric(url, "sensorguard_readings_total") == 30, 10, "site-a's readings")
        assert second.buffers.assets() == ["site-a/pump-1"]
    finally:
        second.stop()


def test_a_second_serve_on_a_state_dir_in_use_is_refused_naming_the_first(tiny_bundle, tmp_path):
    """A walk: two instances started from one settings file (their own partitions, client ids and
    metrics ports, as the scaling-out example has them) shared its state_dir and record_dir; each
    save replaced the other's assets.json and controls.json, a restart raised alerts again under new
    ids and lost holds, and one's start moved the other's recordings while it ran. The folder is
    held while a serve runs; a second is refused in one line, before it reads or moves anything."""
    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.folder_locks import LOCK_FILE, held_folders

    model = save_bundle(tiny_bundle, tmp_path / "m")
    state, records = tmp_path / "state", tmp_path / "rec"
    (records / "w0" / "20260101").mkdir(parents=True)
    state.mkdir()
    kept = records / "w0" / "20260101" / "kept.parquet"  # a running supervisor's worker's file: a serve of
    kept.write_bytes(b"x")  # one process (this argv) adopts such orphans into its own folder at start
    argv = [sys.executable, "-m", "sensorguard", "serve", "--model", str(model), "--metrics-port", "0",
            "--broker", f"mqtt://127.0.0.1:{free_port()}", "--state-dir", str(state), "--record-dir", str(records),
            "--partition", "site-b/#", "--client-id", "sg-b", "--instance", "site-b"]
    with held_folders({"state_dir": str(state), "record_dir": str(records)}, "site-a") as refused:
        assert refused == []
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    said = [line for line in out.stderr.splitlines() if "is in use by another sensorguard serve" in line]
    assert len(said) == 2 and all(f"(pid {os.getpid()}, instance 'site-a')" in line for line in said), out.stderr
    assert "give each instance its own state_dir" in out.stderr
    assert kept.exists() and (state / LOCK_FILE).exists()  # refused before it moved anything
    with held_folders({"state_dir": str(state)}, "site-a") as refused:  # released when its holder ends
        assert refused == []
    with held_folders({"state_dir": str(state), "record_dir": str(state)}, "site-a") as refused:
        assert refused == []  # one folder for both: held once, not refused by itself (a review)

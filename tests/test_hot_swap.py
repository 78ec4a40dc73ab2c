"""Hot swap of the served model: follow the registry's CURRENT, SIGHUP, refuse bad bundles.

A real Mosquitto, a really trained model, the daemon in-process (or as ``serve`` for SIGHUP).
Every reading published is accounted for across a swap: accepted once, each due window scored
once, by the model that held the lock when its batch ran. No fixed sleeps: waits poll with timeouts.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from sensorguard.service.bundle import save_bundle, write_files
from sensorguard.service.daemon import Daemon
from sensorguard.service.hotswap import local_version
from sensorguard.service.registry import publish, set_current
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
from tests.test_daemon_integration import CHANNELS, expected_windows

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
NAME = "pump"


@pytest.fixture
def registry(tmp_path, trained):
    """v0001 without the level term, so each window's ``error / score`` is the threshold that scored it."""
    root = tmp_path / "registry"
    assert publish(replace(trained[0], level=None), root, NAME) == "v0001"
    return root


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()


def start(daemons, mosquitto, **flags) -> tuple[Daemon, str]:
    flags = {"broker": mosquitto.url, "metrics_port": 0, "client_id": f"sg-swap-{mosquitto.port}", **flags}
    daemon, url = start_daemon(flags, ready_timeout=15)
    daemons.append(daemon)
    return daemon, url


def value(url: str, name: str, **labels) -> float:
    return metric(url, name, **labels) or 0.0


def model_infos(url: str) -> dict[str, float]:
    return {dict(k[1])["version"]: v for k, v in scrape(url).items() if k[0] == "sensorguard_model_info"}


class Stream(threading.Thread):
    """Publishes ``rows`` readings for each asset, round-robin, ``batch`` samples a message, paced."""

    def __init__(self, mosquitto, assets: list[str], rows: int, batch: int = 8, pause_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        frame = plant_frame(rows=rows, channels=3, seed=11)
        self.times, self.values = epoch(frame), frame[CHANNELS].to_numpy()
        self.pub = Publisher(mosquitto)
        self.assets, self.rows, self.batch, self.pause_s = assets, rows, batch, pause_s
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for start in range(0, self.rows, self.batch):
                stop = min(start + self.batch, self.rows)
                for asset in self.assets:
                    self.pub.samples(asset, self.times[start:stop], self.values[start:stop], CHANNELS,
                                     batch=self.batch)
                    self.sent += stop - start
                time.sleep(self.pause_s)  # pacing: a steady live rate, not a synchronisation
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.pub.close()


def test_swap_under_live_load_accounts_for_every_reading(daemons, mosquitto, registry, trained):
    bundle = replace(trained[0], level=None)  # (as v0001)
    daemon, url = start(daemons, mosquitto, registry=str(registry), name=NAME, reload_poll_s=0.1)
    scored = []
    daemon.add_listener(scored.append)
    events = Collector(mosquitto, "sensorguard/events")
    assets = [f"site/pump-{i}" for i in range(4)]
    rows = 1200
    stream = Stream(mosquitto, assets, rows)
    total = rows * len(assets)
    stream.start()
    wait_for(lambda: value(url, "sensorguard_readings_total") >= total // 4, 30, "a quarter of the stream")
    new_threshold = bundle.threshold_ * 2.0
    assert publish(bundle.with_threshold(new_threshold, {"method": "test"}), registry, NAME) == "v0002"
    wait_for(lambda: model_infos(url) == {"v0002": 1.0}, 10, "model_info of v0002 only")
    swapped_at = stream.sent
    stream.join(60)
    assert stream.error is None and not stream.is_alive()
    assert swapped_at < total, "the swap landed after the stream ended: not under load"

    n = len(assets) * expected_windows(rows, bundle.window, bundle.hop)
    wait_for(lambda: value(url, "sensorguard_windows_scored_total") == n, 30, f"{n} windows scored")
    wait_for(lambda: len(scored) == n, 10, "every scored window seen by the listener")
    metrics = scrape(url)
    assert metrics[("sensorguard_readings_total", ())] == total
    assert sum(v for k, v in metrics.items() if k[0] == "sensorguard_messages_rejected_total") == 0
    assert metrics[("sensorguard_reading_to_score_seconds_count", ())] == n
    assert metrics[("sensorguard_model_threshold", ())] == pytest.approx(new_threshold)
    assert metrics[("sensorguard_model_reload_failures_total", ())] == 0

    # each window exactly once, at exactly the hop rule's timestamps
    expected_ts = list(stream.times[bundle.window - 1 :: bundle.hop])
    for asset in assets:
        mine = [w for w in scored if w.asset == asset]
        assert [w.ts for w in mine] == expected_ts
        # score = error / threshold: each window's threshold says which model scored it; one switch
        used = [w.error / w.score for w in mine]
        old = [u == pytest.approx(bundle.threshold_, rel=1e-6) for u in used]
        new = [u == pytest.approx(new_threshold, rel=1e-6) for u in used]
        assert all(a or b for a, b in zip(old, new, strict=True))
        switch = new.index(True)
        assert all(old[:switch]) and all(new[switch:]) and 0 < switch < len(mine)

    swapped = wait_for(lambda: events.on("sensorguard/events"), 10, "model_swapped event")
    assert len(swapped) == 1
    event = swapped[0]
    assert {k: event[k] for k in ("event", "name", "from_version", "to_version")} == {
        "event": "model_swapped", "name": NAME, "from_version": "v0001", "to_version": "v0002"}
    assert event["ts"].endswith("Z")
    record = daemon.models.swaps[0]
    print(f"\nswap: load {record['load_s'] * 1000:.1f} ms, waited {record['lock_wait_s'] * 1000:.2f} ms for the "
          f"model lock; {swapped_at} of {total} readings sent when the swap was seen")
    events.close()


def corrupt_weights(version: Path) -> str:
    (version / "model.pt").write_bytes(b"\x80\x04garbage")
    return "model.pt"


def lying_shapes(version: Path) -> str:
    meta = json.loads((version / "bundle.json").read_text())
    meta["channels"].append("c3")  # four channels claimed, three in the weights
    meta["architecture"]["channels"] = 4
    meta["scaler"] = {k: v + [1.0] for k, v in meta["scaler"].items()}
    if meta.get("channel_weights"):
        meta["channel_weights"].append(1.0)
    if meta.get("sensors"):
        meta["sensors"]["c3"] = {"low": 0.0, "high": 1.0, "stuck_after": None}
    (version / "bundle.json").write_text(json.dumps(meta))
    return "weights do not match"


def renamed_channels(version: Path) -> str:
    meta = json.loads((version / "bundle.json").read_text())
    meta["channels"] = list(reversed(meta["channels"]))  # loads fine, but would read the wrong sensors
    (version / "bundle.json").write_text(json.dumps(meta))
    return "differ from the running model"


@pytest.mark.parametrize("damage", [corrupt_weights, lying_shapes, renamed_channels])
def test_bad_bundle_is_refused_once_and_the_old_model_keeps_serving(daemons, mosquitto, registry, trained,
                                                                     damage):
    bundle = replace(trained[0], level=None)  # (as v0001)
    daemon, url = start(daemons, mosquitto, registry=str(registry), name=NAME, reload_poll_s=0.05)
    events = Collector(mosquitto, "sensorguard/#")
    pub = Publisher(mosquitto)
    frame = plant_frame(rows=200, channels=3, seed=2)
    times, values = epoch(frame), frame[CHANNELS].to_numpy()
    pub.samples("pump-a", times[:100], values[:100], CHANNELS)

    version = publish(bundle.with_threshold(bundle.threshold_ * 3, {}), registry, NAME, make_current=False)
    needle = damage(registry / NAME / version)
    set_current(registry, NAME, version)
    wait_for(lambda: value(url, "sensorguard_model_reload_failures_total") == 1, 10, "one reload failure")
    checks = daemon.models.checks
    wait_for(lambda: daemon.models.checks >= checks + 10, 10, "ten more polls")
    assert value(url, "sensorguard_model_reload_failures_total") == 1  # not retried while CURRENT stays
    failed = wait_for(lambda: events.on("sensorguard/events"), 10, "model_reload_failed event")
    assert len(failed) == 1
    assert failed[0]["event"] == "model_reload_failed" and failed[0]["version"] == version
    assert needle in failed[0]["reason"]
    assert model_infos(url) == {"v0001": 1.0}
    assert value(url, "sensorguard_model_threshold") == pytest.approx(bundle.threshold_)

    # still scoring with v0001: a new asset's retained state names it
    pub.samples("pump-a", times[100:], values[100:], CHANNELS)
    pub.samples("pump-b", times, values, CHANNELS)
    n = expected_windows(200, bundle.window, bundle.hop) * 2
    wait_for(lambda: value(url, "sensorguard_windows_scored_total") == n, 20, f"{n} windows scored")
    state = wait_for(lambda: events.on("sensorguard/state/pump-b"), 10, "pump-b state")[-1]
    assert state["model"] == {"name": NAME, "version": "v0001"}
    assert state["threshold"] == pytest.approx(bundle.threshold_)

    # the refused version, repaired in place (a copy that was still in progress), is tried again;
    # a poll between two of the files written may refuse it once more, and is counted
    write_files(bundle.with_threshold(bundle.threshold_ * 3, {}), registry / NAME / version)
    wait_for(lambda: model_infos(url) == {version: 1.0}, 10, f"model_info of the repaired {version}")
    failures = value(url, "sensorguard_model_reload_failures_total")

    # a good version after the bad one is taken up
    good = publish(bundle.with_threshold(bundle.threshold_ * 1.5, {}), registry, NAME)
    wait_for(lambda: model_infos(url) == {good: 1.0}, 10, f"model_info of {good}")
    assert value(url, "sensorguard_model_reload_failures_total") == failures
    events.close()
    pub.close()


def test_window_change_is_refused(daemons, mosquitto, registry, tiny_bundle):
    """A bundle with another window would need resized buffers: refused, old model kept."""
    from dataclasses import replace

    daemon, url = start(daemons, mosquitto, registry=str(registry), name=NAME, reload_poll_s=0.05)
    events = Collector(mosquitto, "sensorguard/events")
    running = daemon.bundle.window
    other = replace(tiny_bundle, channels=tuple(CHANNELS))  # same channels, window 16
    assert other.window != running
    version = publish(other, registry, NAME)
    wait_for(lambda: value(url, "sensorguard_model_reload_failures_total") == 1, 10, "refused")
    failed = wait_for(lambda: events.on("sensorguard/events"), 10, "model_reload_failed event")
    assert [(e["event"], e["version"]) for e in failed] == [("model_reload_failed", version)]
    assert f"window {other.window} differs from the running model's {running}" in failed[0]["reason"], failed
    assert model_infos(url) == {"v0001": 1.0}
    assert daemon.bundle.version == "v0001"
    events.close()


@pytest.mark.parametrize("mode", ["registry", "model"])
def test_sighup_reloads_in_serve(tmp_path, mosquitto, registry, trained, mode):
    bundle = replace(trained[0], level=None)  # (as v0001)
    port = free_port()
    if mode == "registry":
        where = ["--registry", str(registry), "--name", NAME, "--reload-poll-s", "3600"]  # only SIGHUP can notice
    else:
        model_dir = save_bundle(bundle, tmp_path / "served")
        where = ["--model", str(model_dir)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sensorguard", "serve", *where, "--broker", mosquitto.url,
         "--metrics-port", str(port), "--client-id", f"sg-hup-{port}"],
        cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_status(f"{url}/readyz") == 200, 60, "serve ready")
        events = Collector(mosquitto, "sensorguard/events")
        new_threshold = bundle.threshold_ * 2
        if mode == "registry":
            publish(bundle.with_threshold(new_threshold, {}), registry, NAME)
            expected = {"v0002": 1.0}
        else:
            save_bundle(bundle.with_threshold(new_threshold, {}), model_dir)
            expected = {local_version(model_dir): 1.0}  # not "local" for every bundle (a walk)
        assert value(url, "sensorguard_model_threshold") == pytest.approx(bundle.threshold_)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: value(url, "sensorguard_model_threshold") == pytest.approx(new_threshold), 15,
                 "threshold of the reloaded model")
        assert model_infos(url) == expected
        swapped = wait_for(lambda: events.on("sensorguard/events"), 10, "model_swapped event")
        assert swapped[0]["event"] == "model_swapped"
        assert swapped[0]["to_version"] == next(iter(expected))
        assert http_status(f"{url}/readyz") == 200  # still serving
        events.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "model swapped" in out and "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)



def test_serve_without_current_is_one_line_and_exit_1(registry):
    """No CURRENT at all (the other unusable-CURRENT cases are in test_faults.py)."""
    (registry / NAME / "CURRENT").unlink()
    out = subprocess.run(
        [sys.executable, "-m", "sensorguard", "serve", "--registry", str(registry), "--name", NAME,
         "--broker", "mqtt://127.0.0.1:1", "--metrics-port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=clean_env(),
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"sensorguard serve: error: no current version of model {NAME!r} in registry {registry}"]


def test_a_version_refused_for_an_io_error_is_tried_again_with_its_files_unchanged(tiny_bundle, tmp_path,
                                                                                  monkeypatch):
    """An I/O error while loading (a network file system's hiccup) left the version refused until
    CURRENT or its files changed; it is now tried again after a poll period, backing off."""
    import torch

    from tests.test_daemon import make

    root = tmp_path / "registry"
    assert publish(tiny_bundle, root, NAME) == "v0001"
    daemon, _ = make(tiny_bundle, registry=str(root), name=NAME, reload_poll_s=0.5)
    assert publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 2, {}), root, NAME) == "v0002"
    real, calls = torch.load, []

    def flaky(*args, **kwargs):  # the weights' read fails twice, as on a network file system's hiccup
        calls.append(args)
        if len(calls) <= 2:
            raise OSError(5, "Input/output error")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", flaky)
    # the backoff's clock, stepped by hand (real sleeps flaked when a busy machine overshot one by 0.4 s)
    import sensorguard.service.hotswap as hotswap

    now = [1000.0]
    monkeypatch.setattr(hotswap, "time", SimpleNamespace(monotonic=lambda: now[0], perf_counter=time.perf_counter,
                                                         time=time.time))
    assert daemon.models.check() is False
    assert daemon.models.check() is None  # not at once: after reload_poll_s (0.5 s)
    now[0] += 0.49
    assert daemon.models.check() is None
    now[0] += 0.02
    assert daemon.models.check() is False  # failed again: the next try waits twice as long (1 s)
    now[0] += 0.99
    assert daemon.models.check() is None
    now[0] += 0.02
    assert daemon.models.check() is True and daemon.models.bundle.version == "v0002"
    assert daemon.registry.get_sample_value("sensorguard_model_reload_failures_total") == 2
    assert daemon.models.check() is None  # served: nothing more to try


def test_a_failing_follow_up_after_a_swap_leaves_the_metrics_and_event_right(tiny_bundle, tmp_path, caplog):
    """Found by review: when applying the new bundle's settings raised right after the swap, the
    metrics kept naming the old model and no model_swapped event went out, for good (the new
    CURRENT was already taken as acted on)."""
    from tests.test_daemon import make

    root = tmp_path / "registry"
    publish(tiny_bundle, root, NAME)
    daemon, client = make(tiny_bundle, registry=str(root), name=NAME)
    publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 2, {}), root, NAME)

    def broken(new) -> None:
        raise RuntimeError("cleaning policy could not be applied")

    daemon.models.on_swap = broken
    assert daemon.models.check() is True and daemon.models.bundle.version == "v0002"
    assert daemon.registry.get_sample_value("sensorguard_model_info", {"name": NAME, "version": "v0002"}) == 1
    assert any(b'"model_swapped"' in p for t, p, _ in client.published if t.endswith("/events"))
    assert "applying model v0002's settings after the swap failed" in caplog.text


def test_the_served_versions_edited_files_are_reloaded(tiny_bundle, tmp_path, caplog):
    """Found by review: operations.md says to fix a sensor's limits in the bundle's bundle.json and
    SIGHUP, but with a registry the check answered "already the current version" and kept the old
    bundle. The served version's files changing is now a reload, on SIGHUP and at the next poll."""
    import json

    from sensorguard.service.registry import load_current
    from tests.test_daemon import make

    root = tmp_path / "registry"
    assert publish(tiny_bundle, root, NAME) == "v0001"
    daemon, _ = make(load_current(root, NAME), registry=str(root), name=NAME, reload_poll_s=0.5)
    assert daemon.models.check(force=True) is None  # nothing changed: nothing to do
    meta_path = root / NAME / "v0001" / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta["threshold"] = 0.75
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.INFO, logger="sensorguard.service.hotswap"):
        assert daemon.models.check(force=True) is True  # SIGHUP
    assert daemon.models.bundle.version == "v0001" and daemon.models.bundle.threshold_ == 0.75
    # said as what it is, not "v0001 -> v0001" (a walk)
    assert f"model swapped: {NAME} v0001 reloaded, its files edited (threshold" in caplog.text, caplog.text
    assert daemon.models.check() is None  # taken: not reloaded again
    meta["threshold"] = 0.8
    meta_path.write_text(json.dumps(meta) + "\n")
    assert daemon.models.check() is True and daemon.models.bundle.threshold_ == 0.8  # a poll takes it too


def test_a_failed_reload_of_the_served_versions_edited_files_is_tried_again(tiny_bundle, tmp_path, monkeypatch):
    """Found by review: once a reload of the served version's edited files failed, a SIGHUP and the
    retry after an I/O error saw the files as already acted on and answered "already the current
    version", for good: the edit was compared with the files last looked at, not those served."""
    import json

    from sensorguard.service import hotswap
    from sensorguard.service.registry import load_current
    from tests.test_daemon import make

    root = tmp_path / "registry"
    assert publish(tiny_bundle, root, NAME) == "v0001"
    daemon, _ = make(load_current(root, NAME), registry=str(root), name=NAME, reload_poll_s=0.2)
    meta_path = root / NAME / "v0001" / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta["threshold"] = 0.75
    meta_path.write_text(json.dumps(meta))
    real, calls = hotswap.load_current, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")  # a network file system's hiccup
        return real(*args, **kwargs)

    monkeypatch.setattr(hotswap, "load_current", flaky)
    assert daemon.models.check() is False  # the poll sees the edit; reading it fails
    time.sleep(0.3)
    assert daemon.models.check() is True and daemon.models.bundle.threshold_ == 0.75  # the retry takes it
    meta_path.write_text("{ half written")
    assert daemon.models.check() is False
    assert daemon.models.check(force=True) is False  # SIGHUP tries it again (before: "already current")
    assert daemon.models.bundle.threshold_ == 0.75


def test_a_current_moved_while_loading_is_not_swapped_in_twice(tiny_bundle, tmp_path, monkeypatch):
    """Found by review: the files taken as served were those of the version CURRENT named before
    the load; when CURRENT moved meanwhile, the next poll saw the loaded version's files as an edit
    and swapped the same version in again (a second model_swapped)."""
    from sensorguard.service import hotswap
    from sensorguard.service.registry import load_current
    from tests.test_daemon import make

    root = tmp_path / "registry"
    publish(tiny_bundle, root, NAME)
    daemon, _ = make(load_current(root, NAME), registry=str(root), name=NAME, reload_poll_s=0.5)
    publish(tiny_bundle.with_threshold(0.6, {}), root, NAME)  # v0002: seen by the poll
    real = hotswap.load_current

    def moved_meanwhile(*args, **kwargs):
        monkeypatch.setattr(hotswap, "load_current", real)
        publish(tiny_bundle.with_threshold(0.7, {}), root, NAME)  # v0003 lands while v0002 is being read
        return real(*args, **kwargs)

    monkeypatch.setattr(hotswap, "load_current", moved_meanwhile)
    assert daemon.models.check() is True and daemon.models.bundle.version == "v0003"
    assert daemon.models.check() is None  # nothing new: not swapped in again


def test_a_version_current_moved_to_during_a_load_and_refused_is_refused_once(tiny_bundle, tmp_path, monkeypatch):
    """Found by review: the stamp acted on stayed the one taken before the load, so a version that
    CURRENT moved to meanwhile and that was refused was loaded and refused again at the next poll."""
    from dataclasses import replace

    from sensorguard.service import hotswap
    from sensorguard.service.registry import load_current
    from tests.test_daemon import make

    root = tmp_path / "registry"
    publish(tiny_bundle, root, NAME)
    daemon, _ = make(load_current(root, NAME), registry=str(root), name=NAME, reload_poll_s=0.5)
    publish(tiny_bundle.with_threshold(0.6, {}), root, NAME)
    real = hotswap.load_current

    def moved_meanwhile(*args, **kwargs):
        monkeypatch.setattr(hotswap, "load_current", real)
        publish(replace(tiny_bundle, channels=("a", "b", "z")), root, NAME)  # v0003: other channels
        return real(*args, **kwargs)

    monkeypatch.setattr(hotswap, "load_current", moved_meanwhile)
    assert daemon.models.check() is False  # v0003 refused
    assert daemon.models.check() is None  # and not tried again until it changes
    assert daemon.registry.get_sample_value("sensorguard_model_reload_failures_total") == 1


def test_every_retained_state_names_the_new_model_after_a_swap(tiny_bundle, tmp_path):
    """An asset's retained state (model version, line) is published when its status changes: after
    a swap, an asset normal all along kept naming the old version and threshold (a walk). Each is
    sent again by the scoring thread's next housekeeping, paced as after a broker lost them."""
    from sensorguard.service.registry import load_current
    from tests.test_daemon import T0, make, message

    root = tmp_path / "registry"
    publish(tiny_bundle, root, NAME)
    daemon, client = make(load_current(root, NAME), registry=str(root), name=NAME)
    for asset in ("pump-1", "pump-2"):
        for i in range(tiny_bundle.window):
            daemon.ingest.handle(client, message(asset, T0 + i, a=0.0, b=1.0, c=2.0))
    daemon.score_batch(daemon.ingest.next_batch(0.0)[0])

    def states() -> dict[str, dict]:
        return {t.rsplit("/", 1)[1]: json.loads(p) for t, p, r in client.published if "/state/" in t and r}

    assert {s["model"]["version"] for s in states().values()} == {"v0001"}
    publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 2, {}), root, NAME)
    assert daemon.models.check() is True
    client.published.clear()
    daemon.housekeeping(time.monotonic())
    assert sorted(states()) == ["pump-1", "pump-2"]
    assert {s["model"]["version"] for s in states().values()} == {"v0002"}


def test_a_bundle_directorys_version_is_its_files_hash(tiny_bundle, tmp_path):
    """Every bundle directory served as version "local": a SIGHUP swap read "local -> local" and
    an alert could not be traced to its bundle (a walk)."""
    bundle = replace(tiny_bundle, created="2026-12-05T10:00:00+00:00")  # (saved with it, not the clock's)
    first = local_version(save_bundle(bundle, tmp_path / "a"))
    assert first.startswith("local-") and len(first) == len("local-") + 8
    assert local_version(save_bundle(bundle, tmp_path / "b")) == first  # the same files
    assert local_version(save_bundle(bundle.with_threshold(0.75, {}), tmp_path / "a")) != first
    # retrained weights beside the same bundle.json are another version too (the digest of bundle.json
    # alone passed: a test audit)
    weights = {k: v + 1.0 if v.is_floating_point() else v for k, v in bundle.state_dict.items()}
    save_bundle(replace(bundle, state_dict=weights), tmp_path / "c")
    (tmp_path / "c" / "bundle.json").write_bytes((tmp_path / "b" / "bundle.json").read_bytes())
    assert local_version(tmp_path / "c") not in (first, local_version(tmp_path / "a"))


def test_a_sighup_with_the_same_model_directory_swaps_nothing(tiny_bundle, tmp_path):
    """It swapped to itself: a model_swapped event local-x -> local-x and every asset's state sent
    again, once per worker (a walk). An edited bundle still swaps."""
    from sensorguard.service.bundle_loading import load_bundle
    from tests.test_daemon import make

    served = save_bundle(tiny_bundle, tmp_path / "served")
    daemon, client = make(load_bundle(served), model=str(served))
    assert daemon.models.check(force=True) is None and not daemon.models.swaps
    assert not [t for t, _, _ in client.published if t == "sensorguard/events"]
    save_bundle(tiny_bundle.with_threshold(0.75, {}), served)
    assert daemon.models.check(force=True) is True and daemon.models.bundle.threshold_ == 0.75

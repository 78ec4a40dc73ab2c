"""Edges of the hot swap that no test pinned (found by mutating service/hotswap.py): what a swap
records, when a refused version is tried again and what a refusal or a shadow leaves behind."""

from __future__ import annotations

from sensorguard.service.registry import publish
from tests.test_daemon import make

NAME = "pump"


def registry_daemon(tiny_bundle, tmp_path, **overrides):
    """A daemon serving v0001 of a fresh registry, and the registry's root."""
    from sensorguard.service.registry import load_current

    root = tmp_path / "registry"
    assert publish(tiny_bundle, root, NAME) == "v0001"
    daemon, client = make(load_current(root, NAME), registry=str(root), name=NAME, **overrides)
    return daemon, client, root


def fake_clock(monkeypatch) -> list[float]:
    from types import SimpleNamespace

    from sensorguard.service import hotswap

    now = [1000.0]
    monkeypatch.setattr(hotswap, "time", SimpleNamespace(monotonic=lambda: now[0], perf_counter=lambda: 0.0,
                                                         time=lambda: 0.0))
    return now


def test_every_swap_is_recorded_with_its_versions(tiny_bundle, tmp_path):
    """``swaps`` keeps the newest ``SWAPS_KEPT`` (100) records, one a swap, each naming the versions
    it went from and to: logs, tests and benchmarks read them (kept one, a second swap lost the first)."""
    daemon, _, root = registry_daemon(tiny_bundle, tmp_path)
    for n in (2, 3):
        publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * n, {}), root, NAME)
        assert daemon.models.check() is True
    assert [(s["from_version"], s["to_version"]) for s in daemon.models.swaps] == [
        ("v0001", "v0002"), ("v0002", "v0003")]


def test_the_retry_after_an_io_error_backs_off_from_the_poll_period_to_its_cap(tiny_bundle, tmp_path,
                                                                               monkeypatch):
    """A version refused for an I/O error is tried again after ``reload_poll_s``, doubling while it
    keeps failing, at most ``RETRY_MAX_S`` (600 s) apart: not sooner (a registry on a failing disk was
    re-read every second), never later than the cap."""

    from sensorguard.service import hotswap

    daemon, _, root = registry_daemon(tiny_bundle, tmp_path, reload_poll_s=400.0)
    publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 2, {}), root, NAME)

    def failing(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(hotswap, "load_current", failing)
    now = fake_clock(monkeypatch)
    assert daemon.models.check() is False
    for wait in (400.0, 600.0, 600.0):  # 400, then 800 and 1600 held to 600
        now[0] += wait - 1.0
        assert daemon.models.check() is None
        now[0] += 1.0
        assert daemon.models.check() is False


def test_a_model_folder_missing_its_weights_while_a_copy_is_served_is_a_refusal(tiny_bundle, tmp_path, caplog):
    """Serving a sibling's copy, a SIGHUP compares the folder's digest with the served version; a
    folder whose weights are gone (mid-copy, deleted) cannot be digested and is refused, counted and
    announced as any unloadable bundle is, not an error out of the check."""
    from sensorguard.service.bundle import WEIGHTS_FILE, save_bundle

    folder = save_bundle(tiny_bundle.with_threshold(0.7, {}), tmp_path / "mdir")
    daemon, client = make(tiny_bundle, model=str(folder))
    daemon.models.serving_a_copy()
    (folder / WEIGHTS_FILE).unlink()
    assert daemon.models.check(force=True) is False
    assert daemon.registry.get_sample_value("sensorguard_model_reload_failures_total") == 1
    assert any(b'"model_reload_failed"' in p for _, p, _ in client.published)


def test_a_reload_request_forces_one_check_and_a_plain_wake_does_not(tiny_bundle, tmp_path, monkeypatch):
    """SIGHUP (``request_reload``) makes the watcher check *with force*, once per request: a bundle
    directory is reloaded only so, and a registry version refused before is tried again; a wake
    without a request (a shutdown) forces nothing."""
    import threading

    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.bundle_loading import load_bundle

    folder = save_bundle(tiny_bundle, tmp_path / "mdir")
    daemon, _ = make(load_bundle(folder), model=str(folder))
    forced, checked = [], threading.Event()

    def check(force: bool = False) -> None:
        forced.append(force)
        checked.set()

    monkeypatch.setattr(daemon.models, "check", check)
    stop = threading.Event()
    watcher = threading.Thread(target=daemon.models.watch, args=(stop.is_set,), daemon=True)
    watcher.start()
    try:
        for poke in (daemon.models.request_reload, daemon.models.wake):
            checked.clear()
            poke()
            assert checked.wait(10)
    finally:
        stop.set()
        daemon.models.wake()
        watcher.join(10)
    assert forced == [True, False]


def test_a_shadow_naming_the_served_version_is_not_run(tiny_bundle, tmp_path):
    """SHADOW naming the version served (it was promoted, or set by hand) runs no shadow: the model
    compared with itself. Once CURRENT moves off it, it is a candidate again and runs."""
    daemon, _, root = registry_daemon(tiny_bundle, tmp_path)
    (root / NAME / "SHADOW").write_text("v0001\n")
    daemon.models.check_shadow()
    assert daemon.models.shadow is None and daemon.models.shadow_failed is None
    publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 2, {}), root, NAME)
    assert daemon.models.check() is True
    daemon.models.check_shadow()
    assert daemon.models.shadow is not None and daemon.models.shadow.bundle.version == "v0001"


def shadowed(tiny_bundle, tmp_path):
    """A daemon serving v0001 with v0002 as SHADOW, taken up."""
    from sensorguard.service.registry import set_shadow

    daemon, client, root = registry_daemon(tiny_bundle, tmp_path)
    publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 2, {}), root, NAME, make_current=False)
    set_shadow(root, NAME, "v0002")
    daemon.models.check_shadow()
    assert daemon.models.shadow is not None and daemon.models.shadow.bundle.version == "v0002"
    return daemon, client, root


def test_a_shadow_unchanged_keeps_its_live_counts_from_poll_to_poll(tiny_bundle, tmp_path):
    """Each poll follows SHADOW and CURRENT, but acts only when one of them changed: the shadow
    running goes on, its live counts with it (started again at every poll, none ever added up)."""
    daemon, _, _ = shadowed(tiny_bundle, tmp_path)
    running = daemon.models.shadow
    running.alerts = 3
    daemon.models.check_shadow()
    assert daemon.models.shadow is running and running.alerts == 3


def test_a_swap_of_current_restarts_the_shadows_counts_without_reading_it_again(tiny_bundle, tmp_path):
    """CURRENT swapped: the shadow's counts start again against the new CURRENT, with the candidate
    already loaded (not read from its folder again: one unreadable meanwhile stopped a shadow that
    was running)."""
    from sensorguard.service.bundle import WEIGHTS_FILE

    daemon, _, root = shadowed(tiny_bundle, tmp_path)
    running = daemon.models.shadow
    publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 3, {}), root, NAME)
    assert daemon.models.check() is True
    (root / NAME / "v0002" / WEIGHTS_FILE).unlink()
    daemon.models.check_shadow()
    restarted = daemon.models.shadow
    assert restarted is not running and restarted.bundle is running.bundle
    assert restarted.current == "v0003" and daemon.models.shadow_failed is None


def test_a_shadow_with_other_channels_is_refused_and_reported(tiny_bundle, tmp_path):
    """A candidate that could not replace the served model (other channels, another window) is not
    run beside it: refused, with the reason kept for the live gate's report."""
    from dataclasses import replace

    from sensorguard.service.registry import set_shadow

    daemon, _, root = registry_daemon(tiny_bundle, tmp_path)
    publish(replace(tiny_bundle, channels=("a", "b", "d")), root, NAME, make_current=False)
    set_shadow(root, NAME, "v0002")
    daemon.models.check_shadow()
    assert daemon.models.shadow is None
    version, current, why = daemon.models.shadow_failed
    assert (version, current) == ("v0002", "v0001") and why.startswith("refused: channels")


def test_a_shadow_that_could_not_be_read_for_an_io_error_is_tried_at_the_next_poll(tiny_bundle, tmp_path,
                                                                                  monkeypatch):
    """An I/O error loading the shadow is no refusal: nothing is reported and the next poll tries
    it again (taken as refused, it was never run until SHADOW or CURRENT changed)."""
    from sensorguard.service import hotswap
    from sensorguard.service.registry import set_shadow

    daemon, _, root = registry_daemon(tiny_bundle, tmp_path)
    publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 2, {}), root, NAME, make_current=False)
    set_shadow(root, NAME, "v0002")
    real = hotswap.load_bundle

    def failing(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(hotswap, "load_bundle", failing)
    daemon.models.check_shadow()
    assert daemon.models.shadow is None and daemon.models.shadow_failed is None
    monkeypatch.setattr(hotswap, "load_bundle", real)
    daemon.models.check_shadow()
    assert daemon.models.shadow is not None and daemon.models.shadow.bundle.version == "v0002"


def test_a_failed_shadow_is_stopped_its_metric_cleared_and_a_newer_one_left_alone(tiny_bundle, tmp_path):
    """``stop_shadow``: the shadow that failed while scoring stops and ``shadow_info`` no longer
    names it; a failure reported for a shadow the watcher already replaced stops nothing (the new
    one ran on, not reported as failed)."""
    from dataclasses import replace

    daemon, _, _ = shadowed(tiny_bundle, tmp_path)
    failed = daemon.models.shadow
    info = "sensorguard_shadow_info"
    assert daemon.registry.get_sample_value(info, {"version": "v0002"}) == 1
    newer = replace(failed)
    daemon.models.shadow = newer
    daemon.models.stop_shadow(failed, "scoring failed (boom)")
    assert daemon.models.shadow is newer and daemon.models.shadow_failed is None
    daemon.models.stop_shadow(newer, "scoring failed (boom)")
    assert daemon.models.shadow is None
    assert daemon.models.shadow_failed == ("v0002", "v0001", "scoring failed (boom)")
    assert not daemon.registry.get_sample_value(info, {"version": "v0002"})


def test_a_retry_pending_for_an_io_error_ends_when_current_moves_on(tiny_bundle, tmp_path, monkeypatch):
    """A version refused for an I/O error is tried again after a poll period, but CURRENT moving to
    another version ends that retry: the new one, refused as wrong, is refused once, not again
    (counted and announced twice) when the old retry fell due."""
    import json

    from sensorguard.service import hotswap

    daemon, client, root = registry_daemon(tiny_bundle, tmp_path, reload_poll_s=10.0)
    publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 2, {}), root, NAME)
    now = fake_clock(monkeypatch)
    real = hotswap.load_current

    def failing(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(hotswap, "load_current", failing)
    assert daemon.models.check() is False  # v0002: tried again at 1010
    monkeypatch.setattr(hotswap, "load_current", real)
    publish(tiny_bundle, root, NAME)  # v0003, its bundle.json broken: wrong, not passing
    meta = root / NAME / "v0003" / "bundle.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "window": "sixteen"}))
    now[0] += 1.0
    assert daemon.models.check() is False
    now[0] += 20.0
    assert daemon.models.check() is None
    assert daemon.registry.get_sample_value("sensorguard_model_reload_failures_total") == 2


def test_a_served_version_whose_folder_cannot_be_listed_is_no_edit(tiny_bundle, tmp_path, monkeypatch):
    """The served version's files are reloaded when they *changed*; a folder that cannot be listed
    now (a hiccup) tells nothing: no reload (swapped in again, v0001 "reloaded, its files edited")."""
    from sensorguard.service import hotswap

    daemon, _, _ = registry_daemon(tiny_bundle, tmp_path)
    monkeypatch.setattr(hotswap, "_files", lambda version: None)
    assert daemon.models.check(force=True) is None
    assert not daemon.models.swaps


def test_a_bundle_directory_is_reloaded_only_when_asked(tiny_bundle, tmp_path):
    """With a bundle directory (no registry) only a SIGHUP reloads: a check without one (a wake, a
    shutdown) leaves even an edited directory alone."""
    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.bundle_loading import load_bundle

    folder = save_bundle(tiny_bundle, tmp_path / "mdir")
    daemon, _ = make(load_bundle(folder), model=str(folder))
    save_bundle(tiny_bundle.with_threshold(0.75, {}), folder)
    assert daemon.models.check() is None and not daemon.models.swaps
    assert daemon.models.check(force=True) is True and daemon.models.bundle.threshold_ == 0.75


def test_an_unreadable_current_for_an_io_error_is_read_again_after_a_poll_period(tiny_bundle, tmp_path,
                                                                                monkeypatch):
    """CURRENT unreadable for an I/O error is tried again after ``reload_poll_s`` though nothing
    changed (as a version that could not be read is); the model keeps serving meanwhile."""
    from sensorguard.service import hotswap
    from sensorguard.service.bundle import BundleError

    daemon, _, _ = registry_daemon(tiny_bundle, tmp_path, reload_poll_s=10.0)
    now = fake_clock(monkeypatch)

    def unreadable(*args):
        raise BundleError("CURRENT: cannot be read (Input/output error)", transient=True)

    monkeypatch.setattr(hotswap, "current_version", unreadable)
    assert daemon.models.check() is False
    now[0] += 9.0
    assert daemon.models.check() is None
    now[0] += 1.0
    assert daemon.models.check() is False
    assert daemon.registry.get_sample_value("sensorguard_model_reload_failures_total") == 2


def test_the_backoff_starts_again_once_current_is_the_served_version(tiny_bundle, tmp_path, monkeypatch):
    """A retry's backoff grows while one version keeps failing; CURRENT set back to the served
    version ends it, so the next version that cannot be read is tried again after one poll period,
    not after the doubled wait of the one before."""
    from sensorguard.service import hotswap
    from sensorguard.service.registry import set_current

    daemon, _, root = registry_daemon(tiny_bundle, tmp_path, reload_poll_s=10.0)
    now = fake_clock(monkeypatch)

    def failing(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(hotswap, "load_current", failing)
    publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 2, {}), root, NAME)
    assert daemon.models.check() is False
    now[0] += 10.0
    assert daemon.models.check() is False  # next in 20 s
    set_current(root, NAME, "v0001")
    assert daemon.models.check() is None
    publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 3, {}), root, NAME)
    assert daemon.models.check() is False
    now[0] += 10.0
    assert daemon.models.check() is False  # after one poll period again


def test_the_backoff_starts_again_after_a_version_loads(tiny_bundle, tmp_path, monkeypatch):
    """A swap ends the backoff of the I/O errors before it: the next version that cannot be read is
    tried again after one poll period, not after the doubled wait."""
    from sensorguard.service import hotswap

    daemon, _, root = registry_daemon(tiny_bundle, tmp_path, reload_poll_s=10.0)
    now = fake_clock(monkeypatch)
    real, fail = hotswap.load_current, [True]

    def flaky(*args, **kwargs):
        if fail[0]:
            raise OSError(5, "Input/output error")
        return real(*args, **kwargs)

    monkeypatch.setattr(hotswap, "load_current", flaky)
    publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 2, {}), root, NAME)
    assert daemon.models.check() is False
    now[0] += 10.0
    fail[0] = False
    assert daemon.models.check() is True
    fail[0] = True
    publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 3, {}), root, NAME)
    assert daemon.models.check() is False
    now[0] += 10.0
    assert daemon.models.check() is False  # after one poll period


def test_a_version_swapped_in_is_not_taken_as_edited_at_the_next_sighup(tiny_bundle, tmp_path):
    """After a swap the new version's files are the ones served: a SIGHUP with nothing changed
    reloads nothing (judged against the old version's files, it was "edited" and swapped in again)."""
    daemon, _, root = registry_daemon(tiny_bundle, tmp_path)
    publish(tiny_bundle.with_threshold(tiny_bundle.threshold_ * 2, {}), root, NAME)
    assert daemon.models.check() is True
    assert daemon.models.check(force=True) is None and len(daemon.models.swaps) == 1


def test_a_bundle_directory_has_no_shadow_to_follow(tiny_bundle, tmp_path):
    """Without a registry there is no SHADOW: following it does nothing (it raised at every wake,
    logged by the watcher as a failure)."""
    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.bundle_loading import load_bundle

    folder = save_bundle(tiny_bundle, tmp_path / "mdir")
    daemon, _ = make(load_bundle(folder), model=str(folder))
    daemon.models.check_shadow()
    assert daemon.models.shadow is None and daemon.models.shadow_failed is None

"""The served model and its hot swap: loading, compatibility, swapping under one lock.

A new bundle is loaded, validated and turned into a :class:`~sensorguard.service.scorer.Scorer`
off every lock; only the assignment of the new ``(bundle, scorer)`` pair happens under ``lock``,
which the scoring worker holds for the whole forward pass of one batch. So a swap lands between
two batches and each batch is scored entirely by one model. A new bundle must have the running
channels, in order, and the same window; otherwise it is refused: the old model keeps serving,
``model_reload_failures_total`` counts it and ``model_reload_failed`` is published. The daemon's
watcher thread runs :meth:`ModelHolder.watch`, which calls :meth:`ModelHolder.check` every
``reload_poll_s`` (with a registry) and on :meth:`ModelHolder.request_reload` (SIGHUP); on the
same poll :meth:`ModelHolder.check_shadow` follows the registry's ``SHADOW`` (``service.shadow``):
a candidate scored beside the served model under the same lock, never announced.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sensorguard.service.bundle import META_FILE, WEIGHTS_FILE, Bundle, BundleError
from sensorguard.service.bundle_loading import load_bundle, transient_error
from sensorguard.service.config import Settings
from sensorguard.service.logs import first_line
from sensorguard.service.metrics import Metrics
from sensorguard.service.publisher import Publisher, iso
from sensorguard.service.registry import current_version, load_current, shadow_version
from sensorguard.service.scorer import Scorer
from sensorguard.service.shadow import Shadow

log = logging.getLogger(__name__)

SWAPS_KEPT = 100  # swap records kept (the newest)
RETRY_MAX_S = 600.0  # a version refused for an I/O error is tried again, backing off to this


def load_model(settings: Settings) -> Bundle:
    """The bundle ``settings`` names: a directory, or the registry's current version of ``name``."""
    if settings.model:
        bundle = load_bundle(settings.model)
        name = bundle.name or Path(settings.model).resolve().name
        return _named(bundle, name, bundle.version or local_version(Path(settings.model)))
    if settings.registry and settings.name:
        return load_current(settings.registry, settings.name)
    raise ValueError("no model: give model (a bundle directory) or registry and name")


def local_version(directory: Path) -> str:
    """A bundle directory's version: ``local-`` and the first 8 hex digits of the SHA-256 of its
    ``bundle.json`` and weights. Every such bundle was version ``local``, so a SIGHUP swap read
    ``local -> local`` and an alert could not be traced to the bundle that raised it (a walk);
    the same files give the same version, on every worker and after a restart."""
    digest = hashlib.sha256()
    for name in (META_FILE, WEIGHTS_FILE):
        digest.update((directory / name).read_bytes())
    return f"local-{digest.hexdigest()[:8]}"


def _digest(directory: Path) -> str | None:
    """:func:`local_version` of ``directory``, None when its files cannot be read."""
    try:
        return local_version(directory)
    except OSError:
        return None


def _transient(exc: BaseException) -> bool:
    """An error that may pass (an I/O hiccup), as against a bundle or pointer that is wrong."""
    if isinstance(exc, BundleError):
        return bool(exc.transient)
    return transient_error(exc)


def _named(bundle: Bundle, name: str, version: str) -> Bundle:
    return replace(bundle, name=name, version=version)


def incompatible(running: Bundle, new: Bundle) -> str | None:
    """Why ``new`` cannot replace ``running`` without a restart, or None."""
    if new.channels != running.channels:
        return (f"channels {list(new.channels)} differ from the running model's {list(running.channels)} "
                "(names and order must match; restart to serve other channels)")
    if new.window != running.window:
        return f"window {new.window} differs from the running model's {running.window} (restart to change it)"
    return None


def _files(version: Path) -> tuple | None:
    """A version folder's files (name, size, times, inode), None when it cannot be listed.

    A refused version is tried again once these change: CURRENT moved to a version still being
    copied in by hand was refused once and then never taken up (until the next CURRENT or SIGHUP),
    though the copy completed a second later.
    """
    try:
        return tuple(sorted((p.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                            for p in version.iterdir() for st in [p.stat()]))
    except OSError:
        return None


class ModelHolder:
    """The ``(bundle, scorer)`` pair being served, the lock a swap takes, and the swap itself.

    hop: the daemon's cadence (a new bundle's hop is not adopted; the log says so).
    """

    def __init__(self, settings: Settings, bundle: Bundle, metrics: Metrics, publisher: Publisher, hop: int) -> None:
        self.settings = settings
        self.metrics = metrics
        self.publisher = publisher
        self.hop = hop
        self.lock = threading.Lock()
        self.bundle = bundle
        self.scorer = Scorer(bundle, device="cpu")
        self.checks = 0  # calls of check (polls and SIGHUPs)
        # one record per swap (versions, timings): logs, tests, benchmarks; the newest SWAPS_KEPT (a SIGHUP
        # from a config manager every minute reloads and adds one each time)
        self.swaps: deque[dict] = deque(maxlen=SWAPS_KEPT)
        # CURRENT and its version's files as last acted on (loaded or refused)
        registry = settings.registry and settings.name
        served = _files(Path(settings.registry) / settings.name / bundle.version) if registry else (
            _files(Path(settings.model)) if settings.model else None)
        self._pointer: tuple[str | None, tuple | None] = (bundle.version, served if registry else None)
        # the served version's files as loaded: an edit is judged against these, not the files last looked
        # at, so a failed reload of an edit is tried again (SIGHUP, I/O retry) rather than taken as served
        self._served_files = served
        self._retry_at: float | None = None  # monotonic time to try a version refused for an I/O error
        self._retry_s = 0.0
        self._wake = threading.Event()
        self._requests = 0  # reloads asked for (SIGHUP), and the count the watcher acted on: a counter, so a
        self._requests_seen = 0  # request landing while the watcher reads it is not cleared unseen
        self.on_swap: Callable[[Bundle], None] | None = None  # told of each new bundle, after the swap
        self.shadow: Shadow | None = None  # a candidate scored beside the served model (registry SHADOW)
        self._shadow_key: tuple[str | None, str] | None = None  # (SHADOW, CURRENT) as last acted on
        # the shadow this instance refused or stopped: (version, CURRENT, why), reported so the live gate
        # cannot promote it on the other instances' counts
        self.shadow_failed: tuple[str, str, str] | None = None

    def serving_a_copy(self) -> None:
        """The bundle served is a sibling worker's copy, not what the bundle directory holds now: a
        reload (SIGHUP) loads the directory, where its unchanged files were taken as served."""
        self._served_files = None

    def request_reload(self) -> None:
        """Check for a new model now (SIGHUP). Only sets flags, so it is safe in a signal handler.

        With a registry: load ``CURRENT`` if it names another version than the running one, even
        one refused before. With a bundle directory: reload that directory.
        """
        self._requests += 1
        self._wake.set()

    def wake(self) -> None:
        """Wake :meth:`watch` without asking for a reload (shutdown: it then sees ``stopping``)."""
        self._wake.set()

    def watch(self, stopping: Callable[[], bool]) -> None:
        """The watcher thread: check every ``reload_poll_s`` (registry) and on request, until ``stopping``."""
        s = self.settings
        poll = s.reload_poll_s if (s.registry and s.name) else None  # a bundle directory: SIGHUP only
        while not stopping():
            self._wake.wait(poll)
            if stopping():
                return
            self._wake.clear()
            requests = self._requests
            forced, self._requests_seen = requests != self._requests_seen, requests
            try:
                self.check(force=forced)
            except Exception:  # noqa: BLE001 - the watcher must survive; the old model keeps serving
                log.exception("checking for a new model failed")
            try:
                self.check_shadow()
            except Exception:  # noqa: BLE001 - the shadow is an experiment: serving goes on without it
                log.exception("checking for a shadow model failed")

    def check_shadow(self) -> None:
        """Follow the registry's ``SHADOW``: load a new one beside the served model, drop a removed
        one; a swap of ``CURRENT`` restarts the live counts (they compare the shadow with one model).
        A shadow naming the served version, or that cannot serve beside it, is not run."""
        s = self.settings
        if not (s.registry and s.name):
            return
        try:
            version = shadow_version(s.registry, s.name)
        except (BundleError, OSError) as exc:
            if _transient(exc):  # a file system hiccup: the shadow running keeps its counts
                log.warning("registry SHADOW unreadable, checked again at the next poll: %s", exc)
                return
            version = None
            log.warning("registry SHADOW ignored: %s", exc)
        if version == self.bundle.version:
            version = None  # promoted: nothing left to compare
        key = (version, self.bundle.version)
        if key == self._shadow_key:
            return
        old = self.shadow
        refused = None
        if version is None:
            new = None
        elif old is not None and old.bundle.version == version:
            new = Shadow(old.bundle, old.scorer, current=self.bundle.version)
        else:
            try:
                bundle = _named(load_bundle(Path(s.registry) / s.name / version), s.name, version)
                problem = self._incompatible(bundle)
                if problem:
                    raise BundleError(problem)
                new = Shadow(bundle, Scorer(bundle, device="cpu"), current=self.bundle.version)
            except Exception as exc:  # noqa: BLE001 - a shadow that cannot load is not run; serving goes on
                if _transient(exc):  # could not be read now: tried again at the next poll
                    log.warning("shadow model %s %s not read, tried again at the next poll: %s", s.name, version,
                                first_line(exc))
                    return
                log.error("shadow model %s %s refused: %s", s.name, version, first_line(exc),
                          extra={"event": "shadow_refused", "version": version})
                new, refused = None, (version, self.bundle.version, f"refused: {first_line(exc)}")
        self._shadow_key = key  # acted on: not again until SHADOW or CURRENT changes
        self.shadow_failed = refused
        with self.lock:  # (the metric too: a worker stopping it meanwhile must not be undone)
            self.shadow = new
            self.metrics.set_shadow(None if new is None else new.bundle.version)
        if new is not None and (old is None or old.bundle.version != version):
            log.info("shadow model %s %s scored beside %s; its alerts are counted, not published", s.name,
                     version, self.bundle.version, extra={"event": "shadow_started", "version": version})
        elif new is None and old is not None:
            log.info("shadow model %s stopped", old.bundle.version, extra={"event": "shadow_stopped"})

    def stop_shadow(self, failed: Shadow, why: str) -> None:
        """``failed`` failed while scoring (worker thread, ``lock`` held): stop it, so the served
        model's batches go on without it, until ``SHADOW`` or ``CURRENT`` changes. A shadow the
        watcher put in its place meanwhile is left alone."""
        if self.shadow is not failed:
            return
        self.shadow = None
        self.shadow_failed = (failed.bundle.version, failed.current, why)
        log.error("shadow model %s stopped: %s", failed.bundle.version, why,
                  extra={"event": "shadow_refused", "version": failed.bundle.version})
        self.metrics.set_shadow(None)

    def check(self, force: bool = False) -> bool | None:
        """Swap in the new model if there is one: True swapped, False refused, None nothing to do.

        Called by the watcher thread every ``reload_poll_s`` and on :meth:`request_reload`.
        """
        s = self.settings
        running = self.bundle
        self.checks += 1
        if s.registry and s.name:
            unreadable: BundleError | None = None
            try:
                version = current_version(s.registry, s.name)
                pointer = version or "<no CURRENT>"
            except BundleError as exc:
                version, pointer, unreadable = None, f"<unreadable: {exc}>", exc
            stamp = (pointer, None if version is None else _files(Path(s.registry) / s.name / version))
            due = self._retry_at is not None and time.monotonic() >= self._retry_at
            if stamp == self._pointer and not force and not due:
                return None  # unchanged since last acted on (loaded, or refused: not retried every poll)
            self._retry_at = None
            self._pointer = stamp
            # the served version's own files edited (its sensor limits, as operations.md advises): reloaded
            # as a new version is; a SIGHUP answered "already the current version" and kept the old limits
            edited = None not in (self._served_files, stamp[1]) and stamp[1] != self._served_files
            if version == running.version and not edited:
                self._retry_s = 0.0
                if force:
                    log.info("reload requested: model %s %s is already the current version", s.name, version)
                return None
            if version is None:
                reason = pointer.strip("<>") if pointer.startswith("<unreadable") else (
                    f"registry {s.registry} has no CURRENT for model {s.name!r}")
                self._refused(None, reason)
                self._retry_later(unreadable)
                return False

            def load() -> Bundle:
                return load_current(s.registry, s.name)
            files = stamp[1]
        else:
            if not force:
                return None
            version, files = None, _files(Path(s.model)) if s.model else None
            if files is not None and files == self._served_files:  # --model DIR, its files as served: it swapped
                # to itself, published model_swapped v -> v and restated every asset, once per worker (a walk)
                log.info("reload requested: model %s is unchanged (its files are those served)", s.model)
                return None
            if files is not None and self._served_files is None and running.version == _digest(Path(s.model)):
                # a sibling's copy of these very files (its version is their digest): a restarted worker
                # swapped v -> v at every SIGHUP, published it and restated every asset (a review)
                self._served_files = files
                log.info("reload requested: model %s is unchanged (the copy served holds its files)", s.model)
                return None

            def load() -> Bundle:
                return load_model(s)

        started = time.perf_counter()
        try:
            new = load()
            if s.registry and files is not None and new.version != version:  # CURRENT moved meanwhile: what
                files = _files(Path(s.registry) / s.name / new.version)  # loaded is what was acted on (not twice)
                self._pointer = (new.version, files)
            version = new.version
            problem = self._incompatible(new)
            if problem:
                raise BundleError(problem)
            scorer = Scorer(new, device="cpu")
        except Exception as exc:  # noqa: BLE001 - BundleError, OSError, torch errors: all mean "refuse"
            self._refused(version, first_line(exc))
            self._retry_later(exc)
            return False
        self._retry_s = 0.0
        loaded = time.perf_counter()
        with self.lock:  # waits for the batch being scored, if any
            locked = time.perf_counter()
            old = self.bundle
            self.bundle, self.scorer = new, scorer
        self._served_files = files
        swapped = time.perf_counter()
        self.metrics.set_model(new.name, new.version, new.threshold_,
                               new.calibration.get("expected_false_alarms_per_day"))
        now = time.time()
        record = {
            "name": new.name, "from_version": old.version, "to_version": new.version, "ts": iso(now),
            "load_s": loaded - started, "lock_wait_s": locked - loaded, "swap_s": swapped - started,
        }
        self.swaps.append(record)
        if self.on_swap is not None:  # (after the metrics: a failure here must not leave them naming the old one)
            try:
                self.on_swap(new)
            except Exception:  # noqa: BLE001 - the new model serves; its cleaning and guard band may lag
                log.exception("applying model %s's settings after the swap failed", new.version)
        self.publisher.daemon_event({"event": "model_swapped", "name": new.name, "from_version": old.version,
                                    "to_version": new.version, "ts": iso(now)})
        hop_note = f"; its hop {new.hop} is not adopted (serving keeps hop {self.hop})" if new.hop != self.hop else ""
        # the served version's files edited in place read "v0007 -> v0007", as if nothing had happened (a walk)
        what = (f"{new.version} reloaded, its files edited" if new.version == old.version
                else f"{old.version} -> {new.version}")
        log.info(
            "model swapped: %s %s (threshold %.4g -> %.4g); loaded in %.0f ms, waited %.1f ms for the "
            "batch in progress%s",
            new.name, what, old.threshold_, new.threshold_, 1000 * (loaded - started),
            1000 * (locked - loaded), hop_note,
            extra={"event": "model_swapped", "from_version": old.version, "to_version": new.version},
        )
        return True

    def _retry_later(self, exc: Exception | None) -> None:
        """An I/O error (a network file system's hiccup, too many open files, memory) may pass with
        the files unchanged: try again after ``reload_poll_s``, doubling to ``RETRY_MAX_S`` while it
        keeps failing. A bundle that is wrong (bad JSON, bad weights, other channels) waits for its
        files to change, as before."""
        if self.settings.registry and exc is not None and _transient(exc):
            self._retry_s = min(max(2 * self._retry_s, self.settings.reload_poll_s), RETRY_MAX_S)
            self._retry_at = time.monotonic() + self._retry_s
        else:
            self._retry_s = 0.0

    def _incompatible(self, new: Bundle) -> str | None:
        return incompatible(self.bundle, new)

    def _refused(self, version: str | None, reason: str) -> None:
        self.metrics.reload_failures.inc()
        log.error(
            "model %s %s refused, still serving %s: %s",  # (a bundle directory that would not load has no
            self.bundle.name, version or f"in {self.settings.model or self.settings.registry}",  # version: it
            self.bundle.version, reason,  # said "(none)", a walk)
            extra={"event": "model_reload_failed", "version": version},
        )
        self.publisher.daemon_event({"event": "model_reload_failed", "name": self.bundle.name, "version": version,
                                    "reason": reason, "ts": iso(time.time())})
